"""OpenCLIP zero-shot, Tip-Adapter and Tip-Adapter-F on shared, cached CLIP features.

Protocols as published (DESIGN.md section 2), with one deliberate difference: every choice that the
published code makes on the test set (Tip-Adapter-F's epoch) is made on validation here.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

TEMPLATES = {
    "fgvc-aircraft": ["a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."],
    "default": ["a photo of a {}.", "a photo of the {}."],
}


@dataclass
class ClipBackbone:
    model: torch.nn.Module
    preprocess: object  # the evaluation transform (resize, centre crop, normalise)
    tokenizer: object
    name: str
    pretrained: str
    image_size: int

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_openclip(name: str = "ViT-H-14", pretrained: str | None = "laion2b_s32b_b79k", device=None) -> ClipBackbone:
    """``name`` is a registered OpenCLIP model or a path to a model-config JSON (random weights unless
    ``pretrained`` names a tag or a checkpoint file)."""
    import open_clip

    if name.endswith(".json"):
        open_clip.add_model_config(name)
        name = Path(name).stem
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not pretrained:
        torch.manual_seed(0)  # random weights (speed runs, tests): the same ones every time
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained or None, device=device)
    except RuntimeError as err:
        raise ValueError(
            f"could not create OpenCLIP {name!r} with weights {pretrained!r}: {err}. Offline? Pass a local "
            "checkpoint file as --clip-pretrained."
        ) from err
    model.eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipBackbone(model, preprocess, open_clip.get_tokenizer(name), name, pretrained or "random", int(size))


def augmented_transform(clip: ClipBackbone):
    """Tip-Adapter's cache augmentation: RandomResizedCrop(scale 0.5-1), horizontal flip, CLIP normalise."""
    from torchvision import transforms

    normalize = [t for t in clip.preprocess.transforms if isinstance(t, transforms.Normalize)][0]
    return transforms.Compose([
        transforms.RandomResizedCrop(clip.image_size, scale=(0.5, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(p=0.5),
        transforms.ToTensor(),
        normalize,
    ])


@torch.no_grad()
def image_features(clip: ClipBackbone, images, transform=None, batch_size: int = 64, progress: bool = False,
                   desc: str = "CLIP features") -> torch.Tensor:
    """L2-normalised image features (N, D), float32 on CPU. ``images``: an indexable of PIL images."""
    transform = transform or clip.preprocess
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        batch = torch.stack([transform(images[i]) for i in range(start, min(len(images), start + batch_size))])
        feats = clip.model.encode_image(batch.to(clip.device)).float()
        out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def text_classifier(clip: ClipBackbone, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """Zero-shot weights (C, D): per class, the normalised mean of the normalised template embeddings."""
    weights = []
    for name in classnames:
        tokens = clip.tokenizer([t.format(name) for t in templates]).to(clip.device)
        emb = torch.nn.functional.normalize(clip.model.encode_text(tokens).float(), dim=-1)
        weights.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
    return torch.stack(weights).cpu()


class FeatureCache:
    """CLIP features on disk, keyed by model, weights, image ids and augmentation pass; computed once."""

    def __init__(self, folder: str | os.PathLike, clip: ClipBackbone):
        self.folder = Path(folder)
        self.clip = clip

    def get(self, images, ids: list[str], tag: str, augment_pass: int | None = None, progress: bool = False):
        key = hashlib.sha256(
            "|".join([self.clip.name, self.clip.pretrained, tag, str(augment_pass), *ids]).encode()
        ).hexdigest()[:20]
        path = self.folder / f"{tag}-{key}.safetensors"
        if path.is_file():
            return load_file(str(path))["features"]
        if augment_pass is None:
            feats = image_features(self.clip, images, progress=progress, desc=f"CLIP {tag}")
        else:
            torch.manual_seed(augment_pass)  # torchvision's random transforms draw from the global RNG
            feats = image_features(self.clip, images, augmented_transform(self.clip), progress=progress,
                                   desc=f"CLIP {tag} aug {augment_pass}")
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"  # processes may write the same entry
        save_file({"features": feats.contiguous()}, str(tmp))
        os.replace(tmp, path)
        return feats


def zero_shot_logits(features: torch.Tensor, text_weights: torch.Tensor) -> torch.Tensor:
    return 100.0 * features @ text_weights.T


def tip_logits(features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, clip_logits: torch.Tensor,
               alpha: float, beta: float) -> torch.Tensor:
    """Tip-Adapter: clip_logits + alpha * exp(-beta * (1 - f keys^T)) values."""
    affinity = features @ keys.T
    return clip_logits + alpha * torch.exp(-beta * (1 - affinity)) @ values


def cache_model(aug_features: list[torch.Tensor], labels: np.ndarray, n_classes: int):
    """Keys: the normalised mean of the augmented passes' features; values: one-hot labels."""
    keys = torch.nn.functional.normalize(torch.stack(aug_features).mean(0), dim=-1)
    values = torch.nn.functional.one_hot(torch.as_tensor(labels), n_classes).float()
    return keys, values


def search_alpha_beta(val_features, val_labels, keys, values, val_clip_logits, beta_range=(0.1, 30.0),
                      beta_steps: int = 200, alpha_range=(0.1, 30.0), alpha_steps: int = 20,
                      key_transform=None) -> tuple[float, float, float]:
    """Grid search on VALIDATION features and labels only; returns (alpha, beta, val accuracy)."""
    labels = torch.as_tensor(val_labels)
    affinity = val_features @ keys.T if key_transform is None else key_transform(val_features)
    best = (1.0, 1.0, -1.0)
    for beta in np.linspace(*beta_range, beta_steps):
        cache = torch.exp(-beta * (1 - affinity)) @ values
        for alpha in np.linspace(*alpha_range, alpha_steps):
            acc = float(((val_clip_logits + alpha * cache).argmax(1) == labels).float().mean())
            if acc > best[2]:
                best = (float(alpha), float(beta), acc)
    return best


def train_tip_adapter_f(aug_features: list[torch.Tensor], labels: np.ndarray, keys: torch.Tensor,
                        values: torch.Tensor, text_weights: torch.Tensor, val_features, val_labels,
                        alpha: float = 1.0, beta: float = 1.0, epochs: int = 20, lr: float = 1e-3,
                        batch_size: int = 256, seed: int = 0) -> tuple[torch.Tensor, int, float]:
    """Keys become a trainable linear layer (AdamW lr 1e-3, eps 1e-4, cosine, 20 epochs, batch 256).

    Each epoch trains on one augmented pass of the cached features (the published code re-augments
    images every epoch). The epoch kept is the best on validation, not on test. Returns the trained
    keys, the chosen epoch and its validation accuracy.
    """
    g = torch.Generator().manual_seed(seed)
    weight = torch.nn.Parameter(keys.clone())
    opt = torch.optim.AdamW([weight], lr=lr, eps=1e-4)
    n = len(labels)
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    target = torch.as_tensor(labels)
    val_target = torch.as_tensor(val_labels)
    best = (keys.clone(), 0, -1.0)
    for epoch in range(epochs):
        feats = aug_features[epoch % len(aug_features)]
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits = tip_logits(feats[idx], weight, values, zero_shot_logits(feats[idx], text_weights), alpha, beta)
            loss = torch.nn.functional.cross_entropy(logits, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            val_logits = tip_logits(val_features, weight, values, zero_shot_logits(val_features, text_weights),
                                    alpha, beta)
            acc = float((val_logits.argmax(1) == val_target).float().mean())
        if acc > best[2]:
            best = (weight.detach().clone(), epoch + 1, acc)
    return best
