"""Reading images from whatever a user passes: paths, PIL images, arrays or tensors."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DitiError
from ..image_preparation import PREPARE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageReadError(DitiError, ValueError):
    """An image file is missing or cannot be decoded."""


def load_image(source, crop_bottom: int = 0, prepare: str = "", geometry_only: bool = False) -> Image.Image:
    """Return an RGB PIL image from a path, a PIL image, an HxWx3 uint8 array or a 3xHxW tensor in [0, 1].

    ``crop_bottom`` removes that many pixel rows at the bottom (FGVC-Aircraft's copyright banner).
    ``prepare`` processes the image as a data set's reference preprocessing wrote its files (:data:`PREPARE`):
    its crop, pad or resize, then its JPEG re-encoding unless ``geometry_only`` (a mask takes the frame alone).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageReadError(f"image file not found: {path}")
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ImageReadError(f"cannot read image {path}: {err}. Re-download or remove the file.") from err
    elif isinstance(source, Image.Image):
        image = source.convert("RGB")
    elif isinstance(source, torch.Tensor):
        if source.dim() != 3 or source.shape[0] not in (1, 3):
            raise ImageReadError(f"expected an image tensor of shape (3, H, W), got {tuple(source.shape)}")
        array = (source.detach().float().clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).cpu().numpy() * 255)
        image = Image.fromarray(array.round().astype(np.uint8))
    elif isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3:
            raise ImageReadError(f"expected an HxWx3 array, got shape {source.shape}")
        array = source if source.dtype == np.uint8 else (np.clip(source, 0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(array)
    else:
        raise ImageReadError(f"cannot use {type(source).__name__} as an image; pass a path, PIL image or tensor")
    if crop_bottom:
        if crop_bottom >= image.height:
            raise ImageReadError(f"cannot crop {crop_bottom} rows from an image {image.height} pixels high")
        image = image.crop((0, 0, image.width, image.height - crop_bottom))
    if prepare:
        if prepare not in PREPARE:
            raise ConfigError(f"unknown image preparation {prepare!r}; choose from {', '.join(PREPARE)}")
        image = PREPARE[prepare].apply(image, geometry_only)
    return image


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under a folder, sorted (hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


@dataclass
class LabeledImages:
    """Images (paths or in-memory) with integer labels into ``classnames``.

    ``ids`` identify images within their data set (file stems for archives) so that a saved k-shot
    split can name exactly which images it holds.
    """

    images: list
    labels: list[int]
    classnames: list[str]
    ids: list[str] = field(default_factory=list)
    crop_bottom: int = 0
    prepare: str = ""  # a reference preprocessing applied on load (see load_image)

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ConfigError(f"{len(self.images)} images but {len(self.labels)} labels")
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.images))]
        bad = [lab for lab in self.labels if not 0 <= lab < len(self.classnames)]
        if bad:
            raise ConfigError(f"labels {sorted(set(bad))[:5]} are outside 0..{len(self.classnames) - 1}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> LabeledImages:
        indices = list(indices)
        return LabeledImages(
            [self.images[i] for i in indices],
            [self.labels[i] for i in indices],
            list(self.classnames),
            [self.ids[i] for i in indices],
            self.crop_bottom,
            self.prepare,
        )

    def load(self, index: int) -> Image.Image:
        return load_image(self.images[index], crop_bottom=self.crop_bottom, prepare=self.prepare)

    def label_names(self) -> list[str]:
        return [self.classnames[i] for i in self.labels]


class ImageSequence:
    """A lazy, indexable view of a LabeledImages' images (decoded on access, banner cropped)."""

    def __init__(self, data: LabeledImages):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Image.Image:
        return self.data.load(index)


def as_image_sequence(X):
    """Keep indexable inputs lazy (paths or views decoded on access); materialise iterators; a (n, 3, H, W)
    tensor becomes a list of images."""
    if hasattr(X, "__len__") and hasattr(X, "__getitem__") and not isinstance(X, (str, torch.Tensor)):
        return X
    if isinstance(X, torch.Tensor):
        return list(X) if X.dim() == 4 else [X]
    return list(X)


def read_preparation(X) -> str | None:
    """The preparation reading ``X`` gives its images: a data set's view its own (``LabeledImages.prepare``, "" for
    none); "" for image files, read as they are; None for images already read (their caller may have prepared
    them)."""
    if isinstance(X, ImageSequence):
        return X.data.prepare
    if isinstance(X, (list, tuple)) and X and all(isinstance(x, (str, os.PathLike)) for x in X):
        return ""
    return None


def images_digest(X) -> str:
    """A short digest of the images of ``X`` as decoded (mode, size and pixels): what a cache of something read off
    them is keyed by."""
    digest = hashlib.sha256()
    X = as_image_sequence(X)
    for i in range(len(X)):
        image = load_image(X[i])
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()[:16]
