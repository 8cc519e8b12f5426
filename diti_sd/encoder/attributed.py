"""Images with binary attributes, for the DiTi encoder: CelebA, image folders (FFHQ), HF ``datasets``.

The images are decoded lazily (CelebA has 200k files); ``AttributedDataset`` crops, resizes and returns
uint8 tensors so a DataLoader's workers do the decoding.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import list_images, load_image
from ..errors import ConfigError, DitiError, MissingEntryError, MissingFileError

CELEBA_FILES = ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt")
CELEBA_SPLITS = {"train": 0, "val": 1, "valid": 1, "test": 2, "all": None}


class CelebAError(DitiError, FileNotFoundError):
    """The CelebA folder lacks one of its official files."""


@dataclass
class AttributedImages:
    """``images``: uint8 tensor (N, 3, H, W) or a list of paths / PIL images; ``attributes``: (N, A)
    array of 0/1, or None when the data set has none (a plain folder); ``names``: the A attributes."""

    images: object
    attributes: np.ndarray | None
    names: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index) -> AttributedImages:
        index = list(index)
        if isinstance(self.images, torch.Tensor):
            images = self.images[torch.as_tensor(index, dtype=torch.long)]
        else:
            images = [self.images[i] for i in index]
        attrs = None if self.attributes is None else self.attributes[index]
        return AttributedImages(images, attrs, list(self.names), [self.ids[i] for i in index])

    def require_attributes(self, what: str) -> np.ndarray:
        if self.attributes is None or not self.names:
            raise ConfigError(
                f"{what} needs attribute labels, and this data set has none; use CelebA, a folder with "
                "an attributes.csv, or a Hugging Face data set with 0/1 attribute columns"
            )
        return self.attributes


class AttributedDataset(torch.utils.data.Dataset):
    """Index -> uint8 tensor (3, size, size): the crop (``crop_box``: [top, left, height, width], as
    torchvision's ``F.crop``; else a centre crop to ``crop`` pixels; else the centred square), then a resize
    (``resample``: bilinear, torchvision's ``Resize`` default on PIL images, or bicubic)."""

    def __init__(self, data: AttributedImages, size: int, crop: int | None = None,
                 crop_box: list[int] | None = None, resample: str = "bilinear"):
        self.data, self.size, self.crop, self.crop_box, self.resample = data, size, crop, crop_box, resample

    @classmethod
    def from_config(cls, data: AttributedImages, size: int, cfg) -> AttributedDataset:
        """As an encoder recipe's ``data`` section says (``crop``, ``crop_box``, ``resize``)."""
        return cls(data, size, cfg.crop, cfg.crop_box, cfg.resize)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        source = self.data.images[index]
        if isinstance(source, torch.Tensor) and source.dtype == torch.uint8:
            if source.shape[-1] != self.size:
                raise ConfigError(f"in-memory images are {source.shape[-1]} px; the DDPM needs {self.size} px")
            return source
        from PIL import Image

        image = load_image(source)
        if self.crop_box:
            top, left, height, width = self.crop_box
            image = image.crop((left, top, left + width, top + height))
        elif self.crop and min(image.size) > self.crop:
            left, top = (image.width - self.crop) // 2, (image.height - self.crop) // 2
            image = image.crop((left, top, left + self.crop, top + self.crop))
        elif image.width != image.height:
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        resample = Image.BILINEAR if self.resample == "bilinear" else Image.BICUBIC
        image = image.resize((self.size, self.size), resample)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_celeba(root: str | os.PathLike, split: str = "train") -> AttributedImages:
    """CelebA from its official files: ``img_align_celeba/``, ``list_attr_celeba.txt`` (a count line,
    the 40 attribute names, then ``<file> <+-1 x 40>``), ``list_eval_partition.txt`` (``<file> <0|1|2>``).
    ``root`` may also be the torchvision layout's parent (``root/celeba/...``)."""
    root = Path(root).expanduser()
    if not (root / CELEBA_FILES[1]).is_file() and (root / "celeba" / CELEBA_FILES[1]).is_file():
        root = root / "celeba"
    if split not in CELEBA_SPLITS:
        raise ConfigError(f"CelebA has splits train, val, test (or all), not {split!r}")
    for name in CELEBA_FILES:
        if not (root / name).exists():
            hint = " (unzip img_align_celeba.zip there)" if name == CELEBA_FILES[0] and \
                (root / "img_align_celeba.zip").is_file() else ""
            raise CelebAError(
                f"CelebA folder {root} has no {name}{hint}; it needs {', '.join(CELEBA_FILES)} from the "
                "official CelebA release (Align&Cropped images and the Anno/Eval text files)"
            )
    lines = (root / CELEBA_FILES[1]).read_text().splitlines()
    names = lines[1].split()
    files, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ConfigError(f"{root / CELEBA_FILES[1]} line {number}: expected a file name and {len(names)} values")
        files.append(parts[0])
        rows.append([1 if v == "1" else 0 for v in parts[1:]])
    partition = {}
    for line in (root / CELEBA_FILES[2]).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            partition[parts[0]] = int(parts[1])
    wanted = CELEBA_SPLITS[split]
    keep = [i for i, f in enumerate(files) if wanted is None or partition.get(f) == wanted]
    if not keep:
        raise ConfigError(f"CelebA split {split!r} is empty in {root / CELEBA_FILES[2]}")
    attrs = np.asarray(rows, dtype=np.int64)[keep]
    image_dir = root / CELEBA_FILES[0]
    return AttributedImages([image_dir / files[i] for i in keep], attrs, names, [files[i] for i in keep])


def load_attributed_folder(root: str | os.PathLike, split: str = "train", test_fraction: float = 0.1,
                           seed: int = 0) -> AttributedImages:
    """Every image under ``root`` (FFHQ's folders, or any). Attributes, if any, come from
    ``root/attributes.csv`` (a ``file`` column relative to root, then one 0/1 or -1/1 column per attribute).
    ``train``/``test`` are a seeded split of the sorted files (``all``: every file)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"image folder {root} does not exist; pass the folder that holds the images "
                               "(--data-root)")
    files = list_images(root)
    if not files:
        raise MissingFileError(f"{root} holds no images (.jpg, .png, ...); pass the folder that holds them "
                               "(--data-root)")
    names: list[str] = []
    attrs = None
    table = root / "attributes.csv"
    if table.is_file():
        with open(table, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "file" not in reader.fieldnames:
                raise ConfigError(f"{table} needs a 'file' column and one column per attribute")
            names = [n for n in reader.fieldnames if n != "file"]
            by_file = {row["file"]: [1 if float(row[n]) > 0 else 0 for n in names] for row in reader}
        rel = [str(p.relative_to(root)) for p in files]
        missing = [r for r in rel if r not in by_file]
        if missing:
            raise ConfigError(f"{table} has no row for {len(missing)} image(s), e.g. {missing[0]}; add them or "
                              "move them")
        attrs = np.asarray([by_file[r] for r in rel], dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(files))
    n_test = int(round(len(files) * test_fraction))
    if split == "all":
        index = np.arange(len(files))
    elif split == "test":
        index = np.sort(order[:n_test])
    elif split == "train":
        index = np.sort(order[n_test:])
    else:
        raise ConfigError(f"an image folder has splits train, test and all, not {split!r}")
    data = AttributedImages(files, attrs, names, [str(p.relative_to(root)) for p in files])
    return data.subset(index.tolist())


def load_attributed_hf(source: str | os.PathLike, split: str = "train",
                       image_column: str = "image") -> AttributedImages:
    """A Hugging Face data set (``save_to_disk`` folder or hub id); every bool column, and every integer
    column whose values are only 0/1 or -1/1, is an attribute."""
    import datasets

    path = Path(source).expanduser()
    data = datasets.load_from_disk(str(path)) if path.exists() else datasets.load_dataset(str(source))
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise MissingEntryError(f"data set {source} has no split {split!r}; it has {sorted(data)}")
        data = data[split]
    if image_column not in data.column_names:
        raise MissingEntryError(f"data set {source} has no column {image_column!r}; columns: {data.column_names}")
    names, columns = [], []
    for name in data.column_names:
        if name == image_column:
            continue
        dtype = getattr(data.features[name], "dtype", "")
        if dtype == "bool" or str(dtype).startswith("int"):
            values = np.asarray(data[name])
            if set(np.unique(values).tolist()) <= {-1, 0, 1}:
                names.append(name)
                columns.append((values > 0).astype(np.int64))
    attrs = np.stack(columns, axis=1) if columns else None
    images = list(data[image_column])
    return AttributedImages(images, attrs, names, [str(i) for i in range(len(images))])
