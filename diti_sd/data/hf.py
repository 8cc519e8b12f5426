"""Hugging Face ``datasets``: a folder written by ``save_to_disk`` or a hub id."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingEntryError, MissingFileError
from .images import LabeledImages


def load_hf_dataset(
    source: str | os.PathLike,
    split: str = "train",
    image_column: str = "image",
    label_column: str = "label",
    name: str | None = None,
) -> LabeledImages:
    """Images stay as PIL objects in memory; class names come from the label column's ClassLabel."""
    import datasets

    path = Path(source).expanduser()
    if path.exists():
        data = datasets.load_from_disk(str(path))
    else:
        try:
            data = datasets.load_dataset(str(source), name)
        except Exception as err:  # the hub client raises many types; the message is what matters
            raise MissingFileError(
                f"could not load data set {source!r}: {err}. Pass a folder written by save_to_disk "
                "or a hub id you can reach."
            ) from err
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise MissingEntryError(f"data set {source} has no split {split!r}; it has {sorted(data)}")
        data = data[split]
    for column in (image_column, label_column):
        if column not in data.column_names:
            raise MissingEntryError(
                f"data set {source} has no column {column!r}; columns: {data.column_names}. "
                "Set image_column / label_column."
            )
    feature = data.features[label_column]
    raw = data[label_column]
    if hasattr(feature, "names"):
        classnames, labels = list(feature.names), [int(v) for v in raw]
    else:
        classnames = sorted({str(v) for v in raw})
        lookup = {c: i for i, c in enumerate(classnames)}
        labels = [lookup[str(v)] for v in raw]
    images = list(data[image_column])
    return LabeledImages(images, labels, classnames, [str(i) for i in range(len(images))])
