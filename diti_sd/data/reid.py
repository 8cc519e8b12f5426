"""Re-identification sets as TiF classifies them: each identity a class, gallery images to learn from,
query images to test on. DukeMTMC-reID and VeRi-776 from their official folders."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from PIL import Image

from ..errors import ConfigError
from ..image_preparation import ARCHIVE_PREPARATION, AS_PROCESSED
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


def _processed_already(files: list[Path], sample: int = 8) -> bool:
    """Whether the folder holds TiF's processed files (``process_duke.py`` / ``process_veri.py`` write ``duke/`` and
    ``veri/``): each a padded square. The archives' person and vehicle crops are not square, so the first ``sample``
    images being square tells TiF's folder from the archive, whatever the folder is called."""
    shown = files[:sample]
    if not shown:
        return False
    for path in shown:
        try:
            with Image.open(path) as im:
                if im.width != im.height:
                    return False
        except OSError:  # unreadable (UnidentifiedImageError too): not TiF's; loading it says what is wrong
            return False
    return True


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
              prepare: str = ARCHIVE_PREPARATION["duke"]) -> LabeledImages:
    """DukeMTMC-reID (``DukeMTMC-reID/bounding_box_test`` and ``query``) as TiF's 150-way task.

    Classes: the identities with at least ``min_gallery`` gallery images, the ``n_classes`` of them with
    the most query images (ties by identity; the reference broke them in directory order). ``train`` is
    their gallery images, ``test`` their query images; named ``person <id>``. ``prepare``: TiF's processing of
    each image (crop to 1:2.5, pad square, saved as JPEG at quality 75); ``person-crop-pad`` skips the JPEG. TiF's
    processed folder (``duke/``, every image a padded square) is read as it is.
    """
    folder = _find(root, ("DukeMTMC-reID", "duke"), ("bounding_box_test", "query"), "DukeMTMC-reID")
    files = list_images(folder / "bounding_box_test")
    prepare = AS_PROCESSED if _processed_already(files) else prepare
    gallery = _by_identity(files)
    query = _by_identity(list_images(folder / "query"))
    qualified = [i for i in sorted(gallery) if len(gallery[i]) >= min_gallery and i in query]
    counts = Counter({i: len(query.get(i, [])) for i in qualified})
    chosen = sorted(qualified, key=lambda i: (-counts[i], i))[:n_classes]
    if len(chosen) < n_classes:
        raise ArchiveError(f"{folder} has {len(chosen)} identities with {min_gallery}+ gallery images; "
                           f"expected {n_classes} (is the archive complete?)")
    return _images(split, chosen, gallery, query, "person {}", prepare)


def load_veri(root: str | os.PathLike, split: str = "train",
              prepare: str = ARCHIVE_PREPARATION["veri"]) -> LabeledImages:
    """VeRi-776 (``VeRi/image_test`` and ``image_query``) as TiF's task: every identity of the test
    gallery is a class (``car <id>``); ``train`` is the gallery, ``test`` the queries. ``prepare``: TiF's
    processing of each image (pad square, saved as JPEG at quality 75); ``pad-square`` skips the JPEG. TiF's
    processed folder (``veri/``, every image a padded square) is read as it is."""
    folder = _find(root, ("VeRi", "veri"), ("image_test", "image_query"), "VeRi-776")
    files = list_images(folder / "image_test")
    prepare = AS_PROCESSED if _processed_already(files) else prepare
    gallery = _by_identity(files)
    query = _by_identity(list_images(folder / "image_query"))
    strangers = sorted(set(query) - set(gallery))
    if strangers:
        raise ArchiveError(f"{folder}/image_query holds identities absent from image_test (e.g. {strangers[:3]}); "
                           "extract the official VeRi-776 archive again")
    return _images(split, sorted(gallery), gallery, query, "car {}", prepare)
