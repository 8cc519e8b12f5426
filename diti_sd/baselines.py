"""OpenCLIP zero-shot, Tip-Adapter and Tip-Adapter-F on shared, cached CLIP features.

Protocols as the reference ran them (docs/reference-parity.md): Tip-Adapter's cache of augmented
k-shot features, its alpha/beta grid searched on validation, Tip-Adapter-F's epoch chosen on
validation (the original Tip-Adapter code chose it on test; TiF's runs and this package do not).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .errors import ConfigError
from .files import atomic_write
from .metrics import metric_score
from .seeding import torch_generator


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
        raise ConfigError(
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
                   desc: str = "CLIP features", normalize: bool = True) -> torch.Tensor:
    """L2-normalised image features (N, D), float32 on CPU (``normalize=False``: as the image tower gives
    them, what Tip-Adapter's cache averages). ``images``: an indexable of PIL images."""
    transform = transform or clip.preprocess
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        batch = torch.stack([transform(images[i]) for i in range(start, min(len(images), start + batch_size))])
        feats = clip.model.encode_image(batch.to(clip.device)).float()
        out.append((torch.nn.functional.normalize(feats, dim=-1) if normalize else feats).cpu())
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


def clip_identity(clip: ClipBackbone) -> str:
    """Everything about a CLIP backbone that changes its features: the model's config, its weights
    (tag, or the checkpoint file's size and time), and the evaluation and augmentation transforms."""
    import open_clip

    weights = clip.pretrained
    if os.path.isfile(weights):
        stat = os.stat(weights)
        weights = f"{os.path.abspath(weights)}:{stat.st_size}:{stat.st_mtime_ns}"
    config = open_clip.get_model_config(clip.name)
    parts = [clip.name, weights, json.dumps(config, sort_keys=True, default=str), repr(clip.preprocess),
             repr(augmented_transform(clip))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class FeatureCache:
    """CLIP features on disk, keyed by the backbone's identity (:func:`clip_identity`), the images (ids
    and how they are cut, e.g. FGVC's banner) and the augmentation pass; computed once."""

    def __init__(self, folder: str | os.PathLike, clip: ClipBackbone):
        self.folder = Path(folder)
        self.clip = clip
        self.identity = clip_identity(clip)

    def get(self, images, ids: list[str], tag: str, augment_pass: int | None = None, progress: bool = False,
            variant: str = "", normalize: bool = True):
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
                              stacklevel=2)
        if augment_pass is None:
            feats = image_features(self.clip, images, progress=progress, desc=f"CLIP {tag}", normalize=normalize)
        else:
            torch.manual_seed(augment_pass)  # torchvision's random transforms draw from the global RNG
            feats = image_features(self.clip, images, augmented_transform(self.clip), progress=progress,
                                   desc=f"CLIP {tag} aug {augment_pass}", normalize=normalize)
        atomic_write(path, lambda tmp: save_file({"features": feats.contiguous()}, str(tmp)))
        return feats


def zero_shot_logits(features: torch.Tensor, text_weights: torch.Tensor) -> torch.Tensor:
    return 100.0 * features @ text_weights.T


def tip_logits(features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, clip_logits: torch.Tensor,
               alpha: float, beta: float, clip_weight: float = 1.0) -> torch.Tensor:
    """Tip-Adapter: clip_weight * clip_logits + alpha * exp(-beta * (1 - f keys^T)) values."""
    affinity = features @ keys.T
    return clip_weight * clip_logits + alpha * torch.exp(-beta * (1 - affinity)) @ values


def cache_model(aug_features: list[torch.Tensor], labels: np.ndarray, n_classes: int):
    """Keys: the normalised mean of the augmented passes' features; values: one-hot labels.

    Pass the features unnormalised (``image_features(normalize=False)``): the reference averages the
    image tower's raw outputs over the passes and normalises the mean (methods/utils.py build_cache_model)."""
    keys = torch.nn.functional.normalize(torch.stack(aug_features).mean(0), dim=-1)
    values = torch.nn.functional.one_hot(torch.as_tensor(labels), n_classes).float()
    return keys, values


def search_grid(scale: float, steps: int) -> list[float]:
    """Tip-Adapter's search values: 0.1 + i (scale - 0.1) / steps for i < steps (so ``scale`` itself
    is not among them)."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


def search_alpha_beta(val_features, val_labels, keys, values, val_clip_logits, search_scale=(30.0, 30.0),
                      search_step=(200, 20), clip_weight: float = 1.0,
                      metric: str = "accuracy") -> tuple[float, float, float]:
    """Grid search on VALIDATION features and labels only, beta outer, alpha inner, the first best
    kept; returns (alpha, beta, validation score)."""
    labels = np.asarray(val_labels)
    affinity = val_features @ keys.T
    best = (1.0, 1.0, -1.0)
    for beta in search_grid(search_scale[0], search_step[0]):
        cache = torch.exp(-beta * (1 - affinity)) @ values
        for alpha in search_grid(search_scale[1], search_step[1]):
            acc = metric_score((clip_weight * val_clip_logits + alpha * cache).argmax(1).numpy(), labels, metric)
            if acc > best[2]:
                best = (float(alpha), float(beta), acc)
    return best


def train_tip_adapter_f(aug_features: list[torch.Tensor], labels: np.ndarray, keys: torch.Tensor,
                        values: torch.Tensor, text_weights: torch.Tensor, val_features, val_labels,
                        alpha: float = 5.0, beta: float = 1.0, epochs: int = 20, lr: float = 1e-3,
                        batch_size: int = 256, seed: int = 0, clip_weight: float = 1.0,
                        metric: str = "accuracy") -> tuple[torch.Tensor, int, float]:
    """Keys become a trainable linear layer (AdamW lr 1e-3, eps 1e-4, cosine, 20 epochs, batch 256),
    trained with the initial alpha and beta.

    Epoch e trains on augmented pass e % len(aug_features) of the cached features (pass as many as
    there are epochs to see fresh augmentations every epoch, as the reference does). The epoch kept is
    the best on validation at the initial alpha/beta, not on test. Returns the trained keys, the
    chosen epoch and its validation accuracy.
    """
    g = torch_generator(seed)
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
            logits = tip_logits(feats[idx], weight, values, zero_shot_logits(feats[idx], text_weights), alpha, beta,
                                clip_weight)
            loss = torch.nn.functional.cross_entropy(logits, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            val_logits = tip_logits(val_features, weight, values, zero_shot_logits(val_features, text_weights),
                                    alpha, beta, clip_weight)
            acc = metric_score(val_logits.argmax(1).numpy(), val_target.numpy(), metric)
        if acc > best[2]:
            best = (weight.detach().clone(), epoch + 1, acc)
    return best
