"""One entry point for an encoder recipe's data set: ``data.kind`` -> its images and attributes."""

from __future__ import annotations

from ..errors import ConfigError
from .attributed import AttributedImages, load_attributed_folder, load_attributed_hf, load_celeba
from .granular import make_granular


def check_root(kind: str, root) -> None:
    """Every data kind but the built-in ``granular`` is read from ``root``, which ``granular`` never reads: said
    before anything loads."""
    if kind == "granular" and root is not None:
        raise ConfigError(f"the granular data set is drawn, not read: --data-root {root} would be ignored; leave it "
                          "out, or name a recipe whose data is a folder (--dataset)")
    if kind != "granular" and root is None:
        raise ConfigError(f"the {kind!r} data set needs --data-root (its folder, or a hub id for hf)")


def load_attributed(kind: str, root, split: str, image_column: str = "image", limit: int | None = None,
                    size: int = 16) -> AttributedImages:
    """One split of an encoder recipe's data set (``data.kind``), at most ``limit`` images.

    ``granular`` needs no root: fixed sizes and seeds per split, so probe-train and test never share an
    image; ``size`` is its image side."""
    if kind not in ("granular", "celeba", "folder", "ffhq", "hf"):
        raise ConfigError(f"unknown encoder data kind {kind!r}; choose celeba, folder (FFHQ or any), hf or granular")
    check_root(kind, root)
    if kind == "granular":
        n, seed = {"train": (2000, 0), "val": (300, 2), "test": (600, 1)}.get(split, (600, 1))
        data = make_granular(n if limit is None else min(n, limit), size=size, seed=seed)
    elif kind == "celeba":
        data = load_celeba(root, split)
    elif kind == "hf":
        data = load_attributed_hf(root, split, image_column)
    else:
        data = load_attributed_folder(root, split)
    if limit is not None and len(data) > limit:
        data = data.subset(range(limit))
    return data
