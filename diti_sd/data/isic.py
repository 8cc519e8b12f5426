"""ISIC 2019 (dermoscopy, 8 diagnoses) from the official training archive, or TiF's processed folders."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

from ..errors import ConfigError
from ..image_preparation import ARCHIVE_PREPARATION, AS_PROCESSED
from .fgvc import ArchiveError
from .images import LabeledImages, list_images

# the ground truth's columns MEL, NV, BCC, AK, BKL, DF, VASC, SCC, in order (UNK has no training image)
CLASSNAMES = ["Melanoma", "Melanocytic Nevus", "Basal Cell Carcinoma", "Actinic Keratosis",
              "Benign Keratosis-like Lesions", "Dermatofibroma", "Vascular Lesion", "Squamous Cell Carcinoma"]
SPLITS = ("train", "val", "test")
MAX_TEST_PER_CLASS = 600  # TiF scores at most this many test images per class


def load_isic2019(root: str | os.PathLike, split: str = "train", seed: int = 0) -> LabeledImages:
    """One split of ISIC 2019's 25,331 training images, as TiF splits them: per class 10 % validation,
    50 % test (at most 600 scored per class), the rest train.

    Reads the official archive (``ISIC_2019_Training_Input/`` and ``ISIC_2019_Training_GroundTruth.csv``;
    the split is drawn per class with ``seed``, as the reference's unseeded draw cannot be repeated) or
    TiF's processed layout (``isic2019/<split>/<label>_<Name>/*.jpg``), whose split it keeps. The archive's
    images are processed on load as TiF's script wrote its files (a Lanczos resize to 512, the central 512 x 512,
    a JPEG at quality 75), so both sources give a fit the same kind of pixels.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {SPLITS}")
    root = Path(root).expanduser()
    processed = root / "isic2019" if (root / "isic2019" / split).is_dir() else root
    if (processed / split).is_dir() and not (processed / "ISIC_2019_Training_Input").is_dir():
        return _processed(processed / split, split)
    return _official(root, split, seed)


def _official(root: Path, split: str, seed: int) -> LabeledImages:
    images_dir = next((p for p in (root / "ISIC_2019_Training_Input", root) if list(p.glob("ISIC_*.jpg"))), None)
    truth = next((p for p in (root / "ISIC_2019_Training_GroundTruth.csv",
                              root / "ISIC_2019_Training_Input" / "ISIC_2019_Training_GroundTruth.csv")
                  if p.is_file()), None)
    if images_dir is None or truth is None:
        raise ArchiveError(
            f"no ISIC 2019 training archive under {root}: expected ISIC_2019_Training_Input/ (ISIC_*.jpg) and "
            "ISIC_2019_Training_GroundTruth.csv beside it, as the challenge distributes them"
        )
    pools: list[list[str]] = [[] for _ in CLASSNAMES]
    with open(truth, newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            values = [float(row[c]) for c in ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")]
            if values.count(1.0) != 1:
                raise ArchiveError(f"{truth}:{n}: {row['image']} has no single diagnosis among the 8 classes; is "
                                   "this ISIC 2019's training ground truth? Download it again")
            pools[values.index(1.0)].append(row["image"])
    images, labels = [], []
    for label, names in enumerate(pools):
        names = sorted(names)
        random.Random(seed * 1000 + label).shuffle(names)
        n_val, n_test = int(len(names) * 0.1), int(len(names) * 0.5)
        part = {"val": names[:n_val], "test": names[n_val : n_val + n_test][:MAX_TEST_PER_CLASS],
                "train": names[n_val + n_test :]}[split]
        images += [images_dir / f"{name}.jpg" for name in part]
        labels += [label] * len(part)
    absent = [p.name for p in images if not p.is_file()]
    if absent:
        raise ArchiveError(f"{len(absent)} image(s) in {truth.name} are missing from {images_dir} "
                           f"(first: {', '.join(absent[:3])}); re-extract the archive")
    # what TiF's process_isic.py wrote for each image (its 512 crop, as JPEG), as its processed folders hold them
    return LabeledImages(images, labels, list(CLASSNAMES), [p.stem for p in images],
                         prepare=ARCHIVE_PREPARATION["isic2019"])


def _processed(folder: Path, split: str) -> LabeledImages:
    images, labels, ids = [], [], []
    for label, name in enumerate(CLASSNAMES):
        sub = folder / f"{label}_{name.replace(' ', '_')}"
        if not sub.is_dir():
            raise ArchiveError(f"{folder} lacks {sub.name}/ (TiF's processed ISIC 2019 layout)")
        files = list_images(sub)
        if split == "test":
            files = files[:MAX_TEST_PER_CLASS]
        images += files
        labels += [label] * len(files)
        ids += [f"{label}/{p.stem}" for p in files]
    return LabeledImages(images, labels, list(CLASSNAMES), ids, prepare=AS_PROCESSED)  # TiF's files as they are
