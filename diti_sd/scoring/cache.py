"""Scoring results on disk, one file per chunk of images, so that an interrupted pass continues."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import DitiWarning
from ..files import atomic_write
from ..recipes import ScoreConfig
from .engine import ScoreResult


def fitted_identity(base_fingerprint: str, prompts, lora, adapters) -> str:
    """A short hash of the fitted state scoring depends on: the base model, the prompts, the LoRA layout and a
    sample of every adapter weight (a cache is read back only by the state that wrote it)."""
    h = hashlib.sha256(f"{base_fingerprint}|{prompts}|{lora}".encode())
    for key, tensor in sorted(adapters.lora_state_dict().items()):
        flat = tensor.reshape(-1)
        h.update(key.encode())
        h.update(flat[:: max(1, flat.numel() // 256)][:256].numpy().tobytes())
    return h.hexdigest()[:20]


class ScoreCache:
    """A chunk's file is named by a hash of what decides its result: ``identity`` (the adapters, the base
    model, the prompts), the score configuration, the chunk's latents and candidate masks. Scoring a
    chunk does not depend on the other chunks (the noise at t is a function of t alone), so a resumed
    pass gives the numbers an uninterrupted one gives.
    """

    def __init__(self, folder: str | os.PathLike, identity: str, cfg: ScoreConfig, tif_d: float | None):
        self.folder = Path(folder)
        self.prefix = hashlib.sha256(
            json.dumps({"identity": identity, "score": score_key(cfg), "tif_d": tif_d}, sort_keys=True).encode()
        ).hexdigest()

    def path(self, latents, candidates: np.ndarray | None, cells=None) -> Path:
        h = hashlib.sha256(self.prefix.encode())
        h.update(latents.detach().float().cpu().contiguous().numpy().tobytes())
        if candidates is not None:
            h.update(np.ascontiguousarray(candidates, dtype=bool).tobytes())
        if cells is not None:
            h.update(cells.detach().float().cpu().contiguous().numpy().tobytes())
        return self.folder / f"{h.hexdigest()[:24]}.npz"

    def load(self, latents, candidates, cells=None) -> ScoreResult | None:
        path = self.path(latents, candidates, cells)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                result = ScoreResult(data["errors"], data["logits"], data["unet_calls"])
        except Exception as err:  # a damaged chunk is scored again, never read as numbers
            warnings.warn(f"score cache {path} is unreadable ({type(err).__name__}); scoring that chunk again",
                          DitiWarning, stacklevel=2)
            return None
        n = latents.shape[0]
        if (result.errors.shape[0] != n or result.logits.shape != result.errors.shape
                or result.unet_calls.shape != (n,)):
            warnings.warn(f"score cache {path} does not fit its chunk; scoring that chunk again", DitiWarning,
                          stacklevel=2)
            return None
        return result

    def save(self, latents, candidates, result: ScoreResult, cells=None) -> None:
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, errors=result.errors, logits=result.logits, unet_calls=result.unet_calls)

        atomic_write(self.path(latents, candidates, cells), write)


def score_key(cfg: ScoreConfig) -> dict:
    """The score configuration as a cache names results by; ``cells`` at its default is left out, so results kept
    before the key existed still count."""
    key = asdict(cfg)
    if key["cells"] == "all":
        del key["cells"]
    return key
