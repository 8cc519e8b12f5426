"""One checkpoint convention for every training loop in the package (the adapters' fit, the DiTi encoder).

A checkpoint is a folder written atomically (a crash leaves the previous checkpoint or the new one):
``weights.safetensors`` (the tensors being learned), one ``<name>.pt`` per stateful helper (the optimiser,
the fp16 loss scaler, an EMA) and ``state.json`` (the step and what identifies the run). A damaged file
is a :class:`CheckpointError` naming the fix, never weights read half-right.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import DitiError
from ..files import atomic_folder, recover_folder, remove_folder, swapped_out

WEIGHTS = "weights.safetensors"
STATE = "state.json"


class CheckpointError(DitiError, RuntimeError):
    """A training checkpoint is damaged."""


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    helpers: dict[str, dict] = field(default_factory=dict)  # name -> state dict (optimizer, scaler, ema)
    state: dict = field(default_factory=dict)  # JSON: the step, the run's identity


def save_checkpoint(folder: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    def write(tmp: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in checkpoint.weights.items()}, str(tmp / WEIGHTS))
        for name, state in checkpoint.helpers.items():
            torch.save(state, tmp / f"{name}.pt")
        (tmp / STATE).write_text(json.dumps(checkpoint.state))

    return atomic_folder(folder, write)


def load_checkpoint(folder: str | os.PathLike, helpers: tuple[str, ...] = ()) -> Checkpoint | None:
    """The checkpoint in ``folder`` with the named ``helpers``' states, or None when there is none."""
    folder = recover_folder(folder)  # a crash between the swap's two renames left it beside its place
    if not (folder / STATE).is_file():
        return None
    try:
        return Checkpoint(load_file(str(folder / WEIGHTS)),
                          {name: torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
                           for name in helpers},
                          json.loads((folder / STATE).read_text()))
    except Exception as err:  # a damaged file: resuming from it could give wrong weights
        raise CheckpointError(
            f"the checkpoint in {folder} cannot be read ({type(err).__name__}: {err}); delete that folder to "
            "start afresh, or rerun without --resume"
        ) from err


def remove_checkpoint(folder: str | os.PathLike) -> None:
    """The run finished: its checkpoint is no longer needed. A swap's leftover old copy goes first (else a kill
    after the checkpoint went would let the next recovery put the old one back), then the checkpoint, renamed
    aside before it is deleted: a kill leaves the checkpoint whole or gone, never a ``state.json`` without its
    weights."""
    shutil.rmtree(swapped_out(folder), ignore_errors=True)
    remove_folder(folder)
