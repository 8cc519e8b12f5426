"""Zero-shot logits and Tip-Adapter(-F) on cached features, as the reference ran them
(docs/reference-parity.md): Tip-Adapter's cache of augmented k-shot features, its alpha/beta grid searched
on validation, Tip-Adapter-F's keys trained for a fixed number of epochs. The epoch kept is TiF's: the last
(its run_finegrain.py never updates ``best_acc``, so every epoch with a validation score above zero
replaces the saved one); the best epoch on validation is an option (``baselines.tipf_epoch: best``). The
original Tip-Adapter code chose it on test; this package never does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..metrics import metric_score
from ..seeding import torch_generator


def zero_shot_logits(features: torch.Tensor, text_weights: torch.Tensor, scale: float = 100.0,
                     bias: float | None = None) -> torch.Tensor:
    """``scale * f @ W (+ bias)``: CLIP's logits at TiF's fixed scale 100; a SigLIP tower's sigmoid logits
    with its own learned scale and bias (each class's logit stands alone, as its loss trained it)."""
    logits = scale * features @ text_weights.T
    return logits if bias is None else logits + bias


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
                        values: torch.Tensor, clip_logits_of, val_features, val_labels, val_clip_logits,
                        alpha: float = 5.0, beta: float = 1.0, epochs: int = 20, lr: float = 1e-3,
                        batch_size: int = 256, seed: int = 0, clip_weight: float = 1.0, metric: str = "accuracy",
                        keep: str = "last") -> tuple[torch.Tensor, int, float]:
    """Keys become a trainable linear layer (AdamW lr 1e-3, eps 1e-4, cosine, 20 epochs, batch 256),
    trained with the initial alpha and beta. Epoch e trains on ``aug_features[e]``: a fresh augmented view
    of the train images each epoch, as the reference's train loader draws them. ``clip_logits_of(features)``
    gives the zero-shot logits of a batch.

    ``keep``: "last", TiF's rule (the last epoch whose validation score is above zero), or "best" (the best
    validation epoch, the first of equals). Returns the kept keys, their epoch (1-based) and its validation
    score.
    """
    weight = torch.nn.Parameter(keys.clone())
    opt = torch.optim.AdamW([weight], lr=lr, eps=1e-4)
    n = len(labels)
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    target = torch.as_tensor(labels)
    g = torch_generator(seed)
    kept = (keys.clone(), 0, -1.0)
    for epoch in range(epochs):
        feats = aug_features[epoch]
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits = tip_logits(feats[idx], weight, values, clip_logits_of(feats[idx]), alpha, beta, clip_weight)
            loss = torch.nn.functional.cross_entropy(logits, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            val_logits = tip_logits(val_features, weight, values, val_clip_logits, alpha, beta, clip_weight)
            score = metric_score(val_logits.argmax(1).numpy(), np.asarray(val_labels), metric)
        if (keep == "last" and score > 0) or (keep == "best" and score > kept[2]):
            kept = (weight.detach().clone(), epoch + 1, score)
    return kept
