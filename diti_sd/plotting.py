"""Figures for reports: matplotlib on its file backend, written atomically."""

from __future__ import annotations

import os


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: reports are files, also on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110, **kwargs) -> None:
    """Write ``fig`` as a PNG (atomically, so a report never holds half a picture) and close it."""
    from .files import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", **kwargs))
    pyplot().close(fig)


def plot_reliability(curves: dict, title: str, path: str | os.PathLike) -> None:
    """Accuracy against confidence per bin, one line per entry of ``curves`` ({name: (bins, ECE)}, bins as
    ``calibration.reliability_bins`` gives them, pooled as wanted); the diagonal is perfect calibration."""
    import numpy as np

    fig, ax = pyplot().subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for name, (bins, ece) in curves.items():
        count = np.asarray(bins["count"], dtype=float)
        seen = count > 0
        ax.plot(np.asarray(bins["confidence"])[seen] / count[seen], np.asarray(bins["correct"])[seen] / count[seen],
                marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
