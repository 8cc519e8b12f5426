"""How the demo reads every row off one set of UNet calls per adapter set.

The (t, noise) pairs lie in up to three strata: below (none when the window starts at 0), inside and
above the recipe's scoring window, the same number in each, so every scoring window is judged on the
same number of pairs. Each stratum's pairs are the reference's even grid over it with the noise
``predict`` draws at each t (:func:`~diti_sd.timesteps.scoring_pairs`): with as many pairs as the
recipe's grid, the window's are the t ``predict`` scores. "All t" and TiF's weight use an equal share
of each stratum (the points of its grid that a coarser stage of the reference takes), again that
number in all, each pair weighted by its stratum's width so that the mean is uniform in t. Which
adapters were trained where and which window scores them are then two separate factors of one table.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ...lora.layer import NoAdapters
from ...scoring.engine import class_contexts, dense_errors
from ...scoring.replay import weighted_mean, window_weights
from ...seeding import TEST_PAIRS, VALIDATION_PAIRS, derive_seed
from ...timesteps import grid_subset, scoring_pairs, tif_weights
from .data import COLOUR_NAMES, background_count, background_of

SCORINGS = ("small t", "window", "large t", "all t", "TiF weight")
# how the pairs are laid out: studies that cache results read on them put it in their keys, so a result read on
# the pairs before eeb9df8 (a radical-inverse draw from each stratum's first t) is not taken for one read on these
PAIRS_RULE = {"pairs": "reference grid, predict's noise"}


def stratified_pairs(edges, counts, latent_shape, seed: int = 0):
    """``counts[i]`` pairs in each stratum [edges[i], edges[i + 1]) (empty strata skipped); each pair
    carries the weight that makes a window's mean uniform in t across strata."""
    ts, noises, weights = [], [], []
    for lo, hi, n in zip(edges[:-1], edges[1:], counts):
        if hi > lo and n > 0:
            t, noise = scoring_pairs(n, lo, hi, latent_shape, seed)
            ts.append(t)
            noises.append(noise)
            weights.append(torch.full((n,), (hi - lo) / n))
    return torch.cat(ts), torch.cat(noises), torch.cat(weights).numpy()


def pair_seeds(seed: int) -> tuple[int, int]:
    """The noise seeds of a seed's test and validation pairs, apart (a pair's noise is drawn from its seed and its
    t, so no validation pair shares a test pair's noise, nor one seed's another's)."""
    return derive_seed(seed, TEST_PAIRS), derive_seed(seed, VALIDATION_PAIRS, 0)


def scoring_weights(window: tuple[int, int], per_window: int, tif_d: float | None = None, latent_shape=(4, 8, 8),
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """The demo's pairs (their noise drawn from ``seed``; the t are the same for every seed) and, per
    scoring, a weight for each pair (zero: not used by that scoring). The window's pairs are those of
    ``predict``'s single stage of ``per_window`` t over the window under ``score.seed = seed``.

    Each of small t [0, window[0]), the window and large t [window[1], 1000) gets ``per_window`` pairs;
    all t and TiF's weight get ``per_window`` too, an equal share from each stratum. Small t is absent
    when the window starts at 0."""
    lo, hi = window
    strata = [(a, b) for a, b in ((0, lo), (lo, hi), (hi, 1000)) if b > a]
    if per_window < len(strata) or per_window % len(strata):
        fit = -(-per_window // len(strata)) * len(strata)
        raise ConfigError(f"pairs per window = {per_window}: it must be a positive multiple of {len(strata)} (the "
                          f"strata all t takes an equal share from); e.g. {fit}")
    t, noise, width = stratified_pairs([0, lo, hi, 1000], [per_window] * 3, latent_shape, seed)
    stratum = np.repeat(np.arange(len(strata)), per_window)
    share = np.zeros(per_window, bool)
    share[grid_subset(per_window, per_window // len(strata))] = True
    first = np.tile(share, len(strata))
    names = dict(zip([(0, lo), (lo, hi), (hi, 1000)], ("small t", "window", "large t")))
    out = {names[s]: np.where(stratum == i, width, 0.0) for i, s in enumerate(strata)}
    out["all t"] = np.where(first, width, 0.0)
    if tif_d is not None:
        out["TiF weight"] = out["all t"] * tif_weights(tif_d)[t.numpy()]
    return t, noise, out


def coarser_pairs(w: np.ndarray, n: int | None) -> np.ndarray:
    """``w`` (one stratum's pairs, in increasing t) with only the ``n`` of its used pairs kept that a coarser
    stage of the reference takes (None: all): a coarser reading of the same window. Even only where ``n`` divides
    the used pairs' count (else the reference's rule keeps a prefix-heavy share; the demo refuses such counts)."""
    used = np.flatnonzero(w > 0)
    if n is None or n >= len(used):
        return w
    out = np.zeros_like(w)
    keep = used[grid_subset(len(used), n)]
    out[keep] = w[keep]
    return out


def window_of(name: str, window: tuple[int, int]) -> tuple[int, int] | None:
    """The band of t a scoring covers (None for TiF's weight, which is a weight over all t)."""
    return {"small t": (0, window[0]), "window": tuple(window), "large t": (window[1], 1000),
            "all t": (0, 1000)}.get(name)


def window_accuracy(errors: np.ndarray, t: np.ndarray, weights: np.ndarray, labels: np.ndarray,
                    window: tuple[int, int]) -> float:
    """Accuracy when each image is scored by its weighted mean error over the pairs in ``window``."""
    w = window_weights(t, weights, window)
    return float("nan") if not (w > 0).any() else float((weighted_mean(errors, w).argmin(1) == labels).mean())


def prototype_logits(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor) -> np.ndarray:
    """Minus the distance to each class's mean train image (classes 0..C-1, all present in train_y)."""
    protos = torch.stack([train_x[torch.from_numpy(train_y == c)].mean(0) for c in np.unique(train_y)]).flatten(1)
    return -torch.cdist(test_x.flatten(1).float(), protos.float()).numpy()


def caption_prompts(spec) -> list[str]:
    """Every (class texture, background colour) pair in the caption form the tiny base was trained on
    (``attribute_caption`` in ``data.py``), texture-major."""
    return [f"a photo of a {texture} pattern on a {colour} background"
            for texture in spec.classnames for colour in COLOUR_NAMES[: background_count(spec)]]


def zero_shot_logits(backbone, latents: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, w: np.ndarray, spec,
                     label_of: dict) -> np.ndarray:
    """The base alone as a Diffusion Classifier asked only the texture: every caption pair scored on the
    pairs ``w`` keeps, a texture's logit the best of its pairs; columns in ``label_of``'s order."""
    keep = w > 0
    contexts = class_contexts(backbone, NoAdapters(), caption_prompts(spec))
    errors = dense_errors(backbone, NoAdapters(), latents, contexts, t[torch.from_numpy(keep)],
                          noise[torch.from_numpy(keep)])
    per_pair = -weighted_mean(errors, w[keep])
    per_texture = per_pair.reshape(len(latents), len(spec.classnames), background_count(spec)).max(2)
    out = np.empty_like(per_texture)
    for i, name in enumerate(spec.classnames):
        out[:, label_of[name]] = per_texture[:, i]
    return out


def background_classes(images, spec, label_of: dict) -> np.ndarray:
    """Per image, the class whose train images share its background colour (in ``label_of``'s order)."""
    out = []
    for image in images:
        b = background_of(image)
        if b >= spec.n_classes:
            raise ValueError(f"background {COLOUR_NAMES[b]} belongs to no class of a {spec.n_classes}-class split")
        out.append(label_of[spec.classnames[b]])
    return np.array(out)


def disagreement(predicted: np.ndarray, labels: np.ndarray, background: np.ndarray) -> dict:
    """On the images whose background belongs to another class: how many, the accuracy, and the share
    predicted as the background's class (what a classifier reading the background would answer)."""
    other = background != labels
    n = int(other.sum())
    if n == 0:
        return {"images": 0, "correct": 0, "to_background": 0}
    return {"images": n, "correct": int((predicted[other] == labels[other]).sum()),
            "to_background": int((predicted[other] == background[other]).sum())}
