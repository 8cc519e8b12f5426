"""Image features of a frozen encoder, computed once and kept on disk."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import DitiWarning
from ..files import atomic_write
from .encoders import FrozenEncoder


@torch.no_grad()
def image_features(encoder: FrozenEncoder, images, transform=None, batch_size: int = 64, progress: bool = False,
                   desc: str = "features", normalize: bool = True) -> torch.Tensor:
    """L2-normalised image features (N, D), float32 on CPU (``normalize=False``: as the tower gives them,
    what Tip-Adapter's cache averages). ``images``: an indexable of PIL images."""
    transform = transform or encoder.preprocess
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        batch = torch.stack([transform(images[i]) for i in range(start, min(len(images), start + batch_size))])
        feats = encoder.encode(batch)
        out.append((torch.nn.functional.normalize(feats, dim=-1) if normalize else feats).cpu())
    return torch.cat(out)


class FeatureCache:
    """An encoder's features on disk, keyed by its identity, the images (ids and how they are cut, e.g.
    FGVC's banner) and the augmentation pass: computed once, whichever method asks first."""

    def __init__(self, folder: str | os.PathLike, encoder: FrozenEncoder):
        self.folder = Path(folder)
        self.encoder = encoder
        self.identity = encoder.identity()

    def get(self, images, ids: list[str], tag: str, augment_pass: int | None = None, progress: bool = False,
            variant: str = "", normalize: bool = True) -> torch.Tensor:
        """``variant`` names anything else that changes the pixels of these ids (a crop);
        ``normalize=False`` keeps the features unnormalised."""
        key = hashlib.sha256(
            "|".join([self.identity, tag, str(augment_pass), variant, "" if normalize else "raw", *ids]).encode()
        ).hexdigest()[:20]
        path = self.folder / f"{tag}-{key}.safetensors"
        if path.is_file():
            try:
                feats = load_file(str(path))["features"]
                if feats.shape[0] == len(ids):
                    return feats
            except Exception as err:  # damaged: computed again below and rewritten
                warnings.warn(f"feature cache {path} is unreadable ({type(err).__name__}); computing it again",
                              DitiWarning, stacklevel=2)
        transform, desc = None, f"{self.encoder.label} {tag}"
        if augment_pass is not None:
            # torchvision's random transforms draw from the global generator: one seed per pass
            torch.manual_seed(augment_pass)
            transform, desc = self.encoder.augmented(), f"{desc} aug {augment_pass}"
        feats = image_features(self.encoder, images, transform, progress=progress, desc=desc, normalize=normalize)
        atomic_write(path, lambda tmp: save_file({"features": feats.contiguous()}, str(tmp)))
        return feats
