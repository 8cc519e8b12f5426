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


def shortcut_rows(shot_labels, breaking_labels=(), max_classes: int = 10) -> list:
    """The classes :func:`plot_coarse_shortcut` shows, a row each: those with validation images that break the
    accident first, then the others, each group in sorted order, at most ``max_classes``."""
    breaking = sorted(set(breaking_labels))
    return (breaking + [c for c in sorted(set(shot_labels)) if c not in set(breaking)])[:max_classes]


def first_of_each(labels, classes, per_class: int) -> list[int]:
    """The indices of the first ``per_class`` images of each of ``classes`` in ``labels``: the images a picture
    shows, so that only those need decoding."""
    wanted, taken, out = set(classes), {}, []
    for i, label in enumerate(labels):
        if label in wanted and taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            out.append(i)
    return out


def plot_coarse_shortcut(shots, shot_labels, report: dict, path: str | os.PathLike, breaking=None,
                         breaking_labels=None, max_classes: int = 10, per_class: int = 6, max_breaking: int = 3,
                         n_classes: int | None = None) -> list[tuple]:
    """What the shortcut check saw, for a user to judge whether it is an accident: a row per class
    (:func:`shortcut_rows`), up to ``per_class`` of its shots as the check blurs them, and beside them up to
    ``max_breaking`` of its validation images that break the accident, as they are. ``shots``: uint8 (n, 3, H, W),
    ``shot_labels`` one per shot; ``breaking`` and ``breaking_labels`` likewise (or None); ``report``:
    ``coarse.coarse_shortcut``'s, for its figures and sigma; ``n_classes``: the classes the check read, where the
    shots given are those of some of them. Returns the rows: (class, shots shown, breaking images shown)."""
    import textwrap

    import numpy as np

    from .coarse import coarse_sigma, gaussian_blur

    shown = shortcut_rows(shot_labels, [] if breaking_labels is None else breaking_labels, max_classes)
    shot_labels = np.asarray(shot_labels)
    breaking_labels = np.asarray([] if breaking_labels is None else breaking_labels)
    n_shots = min(per_class, max(int((shot_labels == c).sum()) for c in shown))
    n_breaking = min(max_breaking, max([int((breaking_labels == c).sum()) for c in shown] + [0]))
    sigma = coarse_sigma(report["sigma_fraction"], shots.shape)
    columns = n_shots + n_breaking
    width = max(4.5, 1.2 * columns + 0.8)
    fig, axes = pyplot().subplots(len(shown), columns, figsize=(width, 1.2 * len(shown) + 0.8), squeeze=False)
    rows = []
    for row, c in enumerate(shown):
        own = shots[np.flatnonzero(shot_labels == c)[:n_shots]].float() / 255
        caption = "shot, blurred (the check\nread its background alone)" if report.get("background_only") else \
            "shot, as the check blurs it"
        cells = [(image, "" if row else caption)
                 for image in gaussian_blur(own, sigma).clamp(0, 1)] if len(own) else []
        theirs = [(breaking[i].float() / 255, "validation image\nthat breaks it")
                  for i in np.flatnonzero(breaking_labels == c)[:n_breaking]]
        rows.append((c, len(cells), len(theirs)))
        cells += [None] * (n_shots - len(cells)) + theirs + [None] * (n_breaking - len(theirs))
        for ax, cell in zip(axes[row], cells):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if cell is not None:
                ax.imshow(cell[0].permute(1, 2, 0).numpy())
                ax.set_title(cell[1], fontsize=5)
        axes[row][0].set_ylabel(str(c), fontsize=7, rotation=0, ha="right", va="center")
    n_classes = n_classes or len(set(shot_labels.tolist()))
    more = "" if len(shown) >= n_classes else f"; {len(shown)} of {n_classes} classes shown" + (
        ", those with breaking images first" if len(breaking_labels) else "")
    title = ("one shot a class: the check has nothing to leave out" if report["accuracy"] is None else
             f"the shots' blur points to their class for {report['accuracy']:.0%} of {report['images']} shots "
             f"({report['chance']:.0%} with the labels permuted, p = {report['p_value']:.3f})")
    fig.suptitle(textwrap.fill(title + more, int(width * 16)), fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return rows


def plot_masks(images, masks, labels, path: str | os.PathLike, title: str, per_row: int = 8) -> int:
    """Images with their object masks, for a user to check masks read off a model: each image as it is and with
    everything outside its mask dimmed. ``images``: uint8 (n, 3, H, W); ``masks``: bool (n, H, W) at the same size;
    ``labels``: a caption each. Returns the number of images shown."""
    import textwrap

    n = len(images)
    columns = min(per_row, n)
    rows = -(-n // columns)
    fig, axes = pyplot().subplots(2 * rows, columns, figsize=(1.2 * columns + 0.6, 2.4 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    for i in range(n):
        image = images[i].float().permute(1, 2, 0) / 255
        kept = image * (0.25 + 0.75 * masks[i].float()[..., None])
        top, bottom = axes[2 * (i // columns)][i % columns], axes[2 * (i // columns) + 1][i % columns]
        top.imshow(image.numpy())
        top.set_title(str(labels[i]), fontsize=6)
        bottom.imshow(kept.numpy())
    fig.suptitle(textwrap.fill(title, int((1.2 * columns + 0.6) * 16)), fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return n
