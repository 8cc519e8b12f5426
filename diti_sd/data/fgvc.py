"""FGVC-Aircraft from the official archive (fgvc-aircraft-2013b)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, DitiError
from .images import LabeledImages

LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
SPLITS = ("train", "val", "trainval", "test")
BANNER_PIXELS = 20
BOXES = "images_box.txt"


class ArchiveError(DitiError, FileNotFoundError):
    """The data set archive is missing files or is laid out differently from the official one."""


def find_data_dir(root: str | os.PathLike) -> Path:
    """Accept the folder holding ``fgvc-aircraft-2013b``, the archive folder itself or its ``data/``,
    and the CoOp / Tip-Adapter / TiF layout (``fgvc_aircraft/`` with ``images/`` and the variant lists)."""
    root = Path(root).expanduser()
    for candidate in (root / "fgvc-aircraft-2013b" / "data", root / "data", root / "fgvc_aircraft", root):
        if (candidate / "images").is_dir() or (candidate / "variants.txt").is_file():
            return candidate
    raise ArchiveError(
        f"no FGVC-Aircraft archive under {root}: expected fgvc-aircraft-2013b/data/ (or CoOp's fgvc_aircraft/) "
        "with images/ and variants.txt. Download fgvc-aircraft-2013b.tar.gz from the dataset's page, extract "
        "it there, and pass the folder that holds fgvc-aircraft-2013b as --data-root."
    )


def load_fgvc_aircraft(
    root: str | os.PathLike, split: str = "train", level: str = "variant", crop_banner: bool = False
) -> LabeledImages:
    """Images of one split, labelled at ``level``, in the file's order, classes in the official order.

    ``crop_banner`` drops the 20-pixel copyright banner at the bottom; it is off by default because
    the published baselines keep it.
    """
    if level not in LEVELS:
        raise ConfigError(f"unknown level {level!r}; choose from {sorted(LEVELS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {SPLITS}")
    data = find_data_dir(root)
    names_file = data / LEVELS[level]
    list_file = data / f"images_{level}_{split}.txt"
    missing = [p.name for p in (names_file, list_file, data / "images") if not p.exists()]
    if missing:
        raise ArchiveError(f"FGVC-Aircraft archive at {data} is missing {', '.join(missing)}; re-extract it")
    classnames = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(classnames)}
    images, labels, ids = [], [], []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        image_id, _, name = line.strip().partition(" ")
        if name not in index:
            raise ArchiveError(f"{list_file}:{n}: class {name!r} is not in {names_file.name}")
        images.append(data / "images" / f"{image_id}.jpg")
        labels.append(index[name])
        ids.append(image_id)
    absent = [p.name for p in images if not p.is_file()]
    if absent:
        raise ArchiveError(
            f"{len(absent)} image(s) listed in {list_file.name} are missing from {data / 'images'} "
            f"(first: {', '.join(absent[:3])}); re-extract the archive"
        )
    return LabeledImages(images, labels, classnames, ids, crop_bottom=BANNER_PIXELS if crop_banner else 0)


def load_fgvc_boxes(root: str | os.PathLike) -> dict[str, tuple[int, int, int, int]]:
    """The archive's aircraft boxes (``images_box.txt``: ``<id> xmin ymin xmax ymax``; its README puts the top-left
    pixel at (1, 1), and the corners are read as inside the box, MATLAB's convention) as image id -> (left, top,
    right, bottom) in 0-based pixels, right and bottom excluded, the file's frame (before the banner crop): what
    :func:`~diti_sd.data.masks.dataset_box_masks` draws."""
    path = find_data_dir(root) / BOXES
    if not path.is_file():
        raise ArchiveError(f"FGVC-Aircraft archive at {path.parent} has no {BOXES}; re-extract it (the annotations "
                           "archive fgvc-aircraft-2013b-annotations.tar.gz holds it too)")
    boxes = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            xmin, ymin, xmax, ymax = (int(v) for v in fields[1:])
        except ValueError:
            raise ArchiveError(f"{path}:{n}: expected '<id> xmin ymin xmax ymax' in whole pixels, got "
                               f"{line.strip()!r}") from None
        if xmax < xmin or ymax < ymin:
            raise ArchiveError(f"{path}:{n}: the box of {fields[0]} ends before it starts ({line.strip()!r})")
        if fields[0] in boxes:
            raise ArchiveError(f"{path}:{n}: a second box for {fields[0]}; the archive has one per image")
        boxes[fields[0]] = (xmin - 1, ymin - 1, xmax, ymax)
    return boxes
