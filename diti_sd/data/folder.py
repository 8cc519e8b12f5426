"""Any image-folder data set: ``root/<class name>/*.jpg``, optionally ``root/<split>/<class name>/``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingFileError
from .images import LabeledImages, list_images


def load_image_folder(root: str | os.PathLike, split: str | None = None) -> LabeledImages:
    """Classes are the sub-folder names, sorted; with ``split`` the folder ``root/split`` is read.

    When ``split`` is given but ``root/split`` does not exist, the whole of ``root`` is that split's
    pool (k-shot sampling then cuts train and validation from it).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"image folder {root} does not exist; pass the folder that holds one sub-folder of "
                               "images per class")
    base = root / split if split and (root / split).is_dir() else root
    class_dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise MissingFileError(f"{base} has no class sub-folders; lay it out as {base}/<class name>/<images>")
    images, labels, ids = [], [], []
    for label, folder in enumerate(class_dirs):
        files = list_images(folder)
        if not files:
            raise MissingFileError(f"class folder {folder} holds no images (.jpg, .png ...); add its images or remove "
                                   "the folder")
        for path in files:
            images.append(path)
            labels.append(label)
            ids.append(str(path.relative_to(base)))
    return LabeledImages(images, labels, [p.name for p in class_dirs], ids)
