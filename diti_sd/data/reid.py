"""Re-identification sets as TiF classifies them: each identity a class, gallery images to learn from,
query images to test on. DukeMTMC-reID and VeRi-776 from their official folders."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ..errors import ConfigError
from .fgvc import ArchiveError
from .images import LabeledImages, list_images

SPLITS = ("train", "test")


def _find(root: str | os.PathLike, names: tuple[str, ...], needed: tuple[str, ...], what: str) -> Path:
    root = Path(root).expanduser()
    for candidate in [root / n for n in names] + [root]:
        if all((candidate / sub).is_dir() for sub in needed):
            return candidate
    raise ArchiveError(
        f"no {what} under {root}: expected {names[0]}/ with {', '.join(s + '/' for s in needed)} as the "
        f"official archive extracts; pass the folder that holds {names[0]} as --data-root"
    )


def _by_identity(files: list[Path]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in files:
        out.setdefault(path.name[:4], []).append(path)
    return out


def _images(split: str, identities: list[str], gallery, query, classname: str, prepare: str) -> LabeledImages:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; re-identification sets have {SPLITS} (gallery, query)")
    pool = gallery if split == "train" else query
    index = {identity: i for i, identity in enumerate(identities)}
    images, labels = [], []
    for identity in identities:
        for path in pool.get(identity, []):
            images.append(path)
            labels.append(index[identity])
    names = [classname.format(int(identity)) for identity in identities]
    return LabeledImages(images, labels, names, [p.stem for p in images], prepare=prepare)


def load_duke(root: str | os.PathLike, split: str = "train", n_classes: int = 150, min_gallery: int = 16,
              prepare: str = "tif-duke") -> LabeledImages:
    """DukeMTMC-reID (``DukeMTMC-reID/bounding_box_test`` and ``query``) as TiF's 150-way task.

    Classes: the identities with at least ``min_gallery`` gallery images, the ``n_classes`` of them with
    the most query images (ties by identity; the reference broke them in directory order). ``train`` is
    their gallery images, ``test`` their query images; named ``person <id>``. ``prepare``: TiF's processing of
    each image (crop to 1:2.5, pad square, saved as JPEG at quality 75); ``person-crop-pad`` skips the JPEG.
    """
    folder = _find(root, ("DukeMTMC-reID", "duke"), ("bounding_box_test", "query"), "DukeMTMC-reID")
    gallery = _by_identity(list_images(folder / "bounding_box_test"))
    query = _by_identity(list_images(folder / "query"))
    qualified = [i for i in sorted(gallery) if len(gallery[i]) >= min_gallery and i in query]
    counts = Counter({i: len(query.get(i, [])) for i in qualified})
    chosen = sorted(qualified, key=lambda i: (-counts[i], i))[:n_classes]
    if len(chosen) < n_classes:
        raise ArchiveError(f"{folder} has {len(chosen)} identities with {min_gallery}+ gallery images; "
                           f"expected {n_classes} (is the archive complete?)")
    return _images(split, chosen, gallery, query, "person {}", prepare)


def load_veri(root: str | os.PathLike, split: str = "train", prepare: str = "tif-veri") -> LabeledImages:
    """VeRi-776 (``VeRi/image_test`` and ``image_query``) as TiF's task: every identity of the test
    gallery is a class (``car <id>``); ``train`` is the gallery, ``test`` the queries. ``prepare``: TiF's
    processing of each image (pad square, saved as JPEG at quality 75); ``pad-square`` skips the JPEG."""
    folder = _find(root, ("VeRi", "veri"), ("image_test", "image_query"), "VeRi-776")
    gallery = _by_identity(list_images(folder / "image_test"))
    query = _by_identity(list_images(folder / "image_query"))
    strangers = sorted(set(query) - set(gallery))
    if strangers:
        raise ArchiveError(f"{folder}/image_query holds identities absent from image_test (e.g. {strangers[:3]})")
    return _images(split, sorted(gallery), gallery, query, "car {}", prepare)
