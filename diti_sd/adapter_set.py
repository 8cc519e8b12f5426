"""An adapter set on disk: ``manifest.json``, ``adapters.safetensors``, ``recipe.yaml``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import DitiError
from .files import atomic_write, file_digest
from .work_folders import MANIFEST

# 2: LoRA blocks chosen by the reference's filter names (0.1's depth counted levels differently)
FORMAT_VERSION = 2
WEIGHTS = "adapters.safetensors"
RECIPE = "recipe.yaml"


class AdapterSetError(DitiError, ValueError):
    """An adapter set is missing, malformed, or made for another base model."""


@dataclass
class Manifest:
    """What ``manifest.json`` records beside the weights: enough to rebuild the classifier and to refuse
    a base model the adapters were not fitted on."""

    base_model: str
    base_fingerprint: str  # backbone.fingerprint() of the base the adapters were fitted on
    prediction_type: str
    resolution: int
    classes: list[dict]  # per class, in ``classes_`` order: name, prompt, token
    label_type: str = "str"  # int | str: the type the class names are turned back into
    generic_prompt: str = ""
    lora: dict = field(default_factory=dict)  # the recipe's lora section plus block_filter and module counts
    train_window: list[int] = field(default_factory=list)
    score_window: list[int] = field(default_factory=list)
    shots: int | None = None  # images of the class with the fewest
    n_train: int | None = None  # images fitted on, all classes
    tif_d: float | None = None  # TiF's per-t weight parameter, from the train latents
    random_state: int = 0
    temperature: float = 1.0
    calibration: dict = field(default_factory=dict)  # how the temperature was chosen (source, images, NLL)
    # score.weighting auto: the window chosen on validation images, every candidate's score, the calls spent
    score_choice: dict | None = None
    fit: dict = field(default_factory=dict)  # iterations, resumed_from, group_size, loss_curve
    diti_sd_version: str = ""
    # base_identity.weights_probe() of that base: the same base read in another precision is known by it
    base_probe: dict | None = None

    def labels(self) -> np.ndarray:
        names = [c["name"] for c in self.classes]
        return np.array([int(n) for n in names] if self.label_type == "int" else names)

    @classmethod
    def from_json(cls, data: dict, where: str) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise AdapterSetError(f"{where}: the manifest lacks {', '.join(missing)}; refit")
        return cls(**{k: v for k, v in data.items() if k in known})


def write_adapter_set(path: str | os.PathLike, manifest: Manifest, weights: dict[str, torch.Tensor],
                      recipe_yaml: str) -> Path:
    """Each file is written beside its target and renamed over it; the manifest goes last and
    records the weights' hash, so a save cut short is detected on load instead of half-read."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / WEIGHTS, lambda tmp: save_file(weights, str(tmp)))
    atomic_write(path / RECIPE, lambda tmp: tmp.write_text(recipe_yaml))
    full = {"format_version": FORMAT_VERSION, **dataclasses.asdict(manifest),
            "weights_sha256": file_digest(path / WEIGHTS)}
    atomic_write(path / MANIFEST, lambda tmp: tmp.write_text(json.dumps(full, indent=2)))
    return path


def read_adapter_set(path: str | os.PathLike) -> tuple[Manifest, dict[str, torch.Tensor], str]:
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise AdapterSetError(
            f"{path} is not an adapter set (no {MANIFEST}); pass the --out folder of `diti-sd fit`"
        )
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterSetError(f"{path}/{MANIFEST} is damaged ({err}); refit, or restore it from a copy") from None
    if not isinstance(manifest, dict):
        raise AdapterSetError(f"{path}/{MANIFEST} is damaged (not a JSON object); refit, or restore it from a copy")
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
    return Manifest.from_json(manifest, str(path / MANIFEST)), load_file(str(path / WEIGHTS)), recipe
