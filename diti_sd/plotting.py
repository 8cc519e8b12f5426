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
    from ._io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", **kwargs))
    pyplot().close(fig)
