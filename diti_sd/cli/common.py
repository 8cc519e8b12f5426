"""Options and helpers shared by the subcommands."""

from __future__ import annotations


def add_runtime_arguments(parser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                        help="base model precision (default: fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "xformers"])
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def load_split_data(recipe, data_root, split_name):
    """The recipe's data set at ``data_root``, one split (None when the recipe has no such split)."""
    from ..data import load_dataset

    if split_name is None:
        return None
    ds = recipe.dataset
    options = {}
    if ds.kind == "fgvc-aircraft":
        options = {"level": ds.level, "crop_banner": ds.crop_banner}
    elif ds.kind == "hf":
        options = {"image_column": ds.image_column, "label_column": ds.label_column}
    if ds.kind == "image-folder":
        from pathlib import Path

        if split_name != ds.train_split and not (Path(data_root) / split_name).is_dir():
            return None
    return load_dataset(ds.kind, data_root, split_name, **options)
