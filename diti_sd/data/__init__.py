"""Data sets, k-shot splits and the synthetic benchmark."""

from ..errors import ConfigError
from .fgvc import ArchiveError, load_fgvc_aircraft
from .folder import load_image_folder
from .hf import load_hf_dataset
from .images import ImageReadError, LabeledImages, load_image
from .isic import load_isic2019
from .kshot import KShotSplit, TooFewImagesError, load_split, make_kshot_split
from .reid import load_duke, load_veri

__all__ = [
    "ArchiveError",
    "ImageReadError",
    "KShotSplit",
    "LabeledImages",
    "TooFewImagesError",
    "load_configured_split",
    "load_dataset",
    "load_duke",
    "load_fgvc_aircraft",
    "load_hf_dataset",
    "load_image",
    "load_image_folder",
    "load_isic2019",
    "load_split",
    "load_veri",
    "make_kshot_split",
]

KINDS = ("fgvc-aircraft", "image-folder", "hf", "isic2019", "duke", "veri")


def load_dataset(kind: str, root, split: str, **options) -> LabeledImages:
    """One entry point for the recipe's ``dataset.kind`` (:data:`KINDS`)."""
    if kind == "fgvc-aircraft":
        return load_fgvc_aircraft(root, split, **options)
    if kind == "image-folder":
        return load_image_folder(root, split)
    if kind == "hf":
        return load_hf_dataset(root, split, **options)
    if kind == "isic2019":
        return load_isic2019(root, split)
    if kind == "duke":
        return load_duke(root, split)
    if kind == "veri":
        return load_veri(root, split)
    if kind == "synthetic":
        raise ConfigError("the synthetic benchmark's images are generated, not read from a folder: run "
                          "`diti-sd demo` (recipe synthetic), or DiTiFewShotClassifier(recipe='synthetic') from Python")
    raise ConfigError(f"unknown data set kind {kind!r}; choose from {', '.join(KINDS)}")


def load_configured_split(ds, root, split_name):
    """One split of the data set a recipe's ``dataset`` section describes; None if it has no such split
    (``split_name`` None, or an image folder without that sub-folder)."""
    from pathlib import Path

    if split_name is None:
        return None
    options = {}
    if ds.kind == "fgvc-aircraft":
        options = {"level": ds.level, "crop_banner": ds.crop_banner}
    elif ds.kind == "hf":
        options = {"image_column": ds.image_column, "label_column": ds.label_column}
    elif ds.kind == "image-folder" and split_name != ds.train_split and not (Path(root) / split_name).is_dir():
        return None
    return load_dataset(ds.kind, root, split_name, **options)
