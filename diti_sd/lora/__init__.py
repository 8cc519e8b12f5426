"""Class adapters: every class's LoRA stacked in one layer (``layer``), its config beside it (``config``),
and the export of one class as a diffusers or peft LoRA (``export``).

The layer's names are imported on first use, so that a recipe (which holds a :class:`LoraConfig`) is
read and checked without loading torch.
"""

import importlib

from .config import BLOCK_FILTER, LoraConfig

_LAYER = ("ClassAdapters", "ClassRouter", "NoAdapters", "StackedLoRALinear", "filter_prefixes", "find_targets")

__all__ = ["BLOCK_FILTER", "LoraConfig", *_LAYER]


def __getattr__(name):
    if name in _LAYER:
        return getattr(importlib.import_module(".layer", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
