"""An adapter set on disk: ``manifest.json``, ``adapters.safetensors``, ``recipe.yaml``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ._io import atomic_write, file_digest
from .errors import DitiError

# 2: LoRA blocks chosen by the reference's filter names (0.1's depth counted levels differently)
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
WEIGHTS = "adapters.safetensors"
RECIPE = "recipe.yaml"


class AdapterSetError(DitiError, ValueError):
    """An adapter set is missing, malformed, or made for another base model."""


def write_adapter_set(path: str | os.PathLike, manifest: dict, weights: dict[str, torch.Tensor],
                      recipe_yaml: str) -> Path:
    """Each file is written beside its target and renamed over it; the manifest goes last and
    records the weights' hash, so a save cut short is detected on load instead of half-read."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / WEIGHTS, lambda tmp: save_file(weights, str(tmp)))
    atomic_write(path / RECIPE, lambda tmp: tmp.write_text(recipe_yaml))
    full = {"format_version": FORMAT_VERSION, **manifest, "weights_sha256": file_digest(path / WEIGHTS)}
    atomic_write(path / MANIFEST, lambda tmp: tmp.write_text(json.dumps(full, indent=2)))
    return path


def read_adapter_set(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], str]:
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise AdapterSetError(
            f"{path} is not an adapter set (no {MANIFEST}); pass the --out folder of `diti-sd fit`"
        )
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise AdapterSetError(
            f"{path}: adapter-set format {manifest.get('format_version')} is not supported by this "
            f"version (format {FORMAT_VERSION}); refit or upgrade diti-sd"
        )
    if not (path / WEIGHTS).is_file():
        raise AdapterSetError(f"{path} has a manifest but no {WEIGHTS}; the save was interrupted, refit")
    if manifest.get("weights_sha256") not in (None, file_digest(path / WEIGHTS)):
        raise AdapterSetError(f"{path}/{WEIGHTS} does not match its manifest (an interrupted save?); refit or re-save")
    recipe = (path / RECIPE).read_text() if (path / RECIPE).is_file() else ""
    return manifest, load_file(str(path / WEIGHTS)), recipe
