"""``score.weighting: auto``: the scoring window chosen on the user's own validation images.

Where the time-steps that carry a class's fine attribute lie depends on the data; a window or a weight
chosen for somebody else's data can sit in the wrong place. So, after fitting, the validation images
are scored once on an even grid of ``score.auto_pairs`` time-steps over [0, 1000) against their
candidate classes (all of them, or a prefilter's top-k), and the errors are re-aggregated under each
candidate of a small fixed family, with no further UNet calls:

- TiF's per-t weight over [0, 1000) (needs the train latents' distance; absent for zero-shot),
- the recipe's own window, scored uniformly (when it is not one of the others),
- all of [0, 1000), the halves [0, 500) and [500, 1000), the thirds [0, 333), [333, 667), [667, 1000).

The candidate under which the validation images' true classes are most probable wins (mean
log-probability, softmax over each image's standardised minus errors, as ``predict_proba``
standardises them; class-balanced where the data set's metric is macro F1); ties go to the earlier
candidate in that order, so TiF's weight wins every tie. The log-probability is used rather than the
accuracy because on CoOp's few validation images (4 per class) accuracy moves in steps of one image
and cannot tell windows a few points apart; on two synthetic domains' validation streams (20 seeds),
the log-probability's pick scored +0.023 [+0.001, +0.050] above accuracy's
(docs/notes/2026-12-01-auto-scoring-window.md). A rule that keeps the recipe's own window unless
another candidate beats it by two standard errors was compared there too and not adopted: on 40
validation seeds it was level with this one (+0.005 [-0.018, +0.025]), losing where the recipe's
window was wrong and the images too few to prove it. Every candidate's metric is recorded beside it.
The test pass then runs the recipe's rounds inside the chosen window (the same stages, so the same
cost; a stage grid wider than a narrow window is capped at its width).

Each validation image gets its own pairs: one t drawn uniformly inside each of the ``auto_pairs``
equal cells of [0, 1000) and a fresh noise tensor, from a generator seeded by (score.seed, image).
A test pass shares one noise per t across images; a validation pass that did the same would judge
each window on the same few draws for every image (about 8 per third), and a draw that happens to
favour one window would favour it on every image and every data set scored with that seed. With
draws of their own, a window's validation score averages over as many draws as images x pairs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import ConfigError
from .recipes import T_STEPS, ScoreConfig
from .timesteps import tif_weights

THIRDS = ((0, 333), (333, 667), (667, 1000))
HALVES = ((0, 500), (500, 1000))


def candidate_family(score: ScoreConfig, tif: bool = True) -> list[dict]:
    """The candidates in tie-breaking order: name, window and weighting of each."""
    out = [{"name": "tif weight", "t_min": 0, "t_max": T_STEPS, "weighting": "tif"}] if tif else []
    windows = [(0, T_STEPS), *HALVES, *THIRDS]
    own = (score.t_min, score.t_max)
    if own not in windows:
        out.append({"name": f"recipe's [{own[0]}, {own[1]})", "t_min": own[0], "t_max": own[1],
                    "weighting": "uniform"})
    out += [{"name": f"[{lo}, {hi})", "t_min": lo, "t_max": hi, "weighting": "uniform"} for lo, hi in windows]
    return out


def auto_grid(n_pairs: int) -> torch.Tensor:
    """``n_pairs`` time-steps evenly over [0, 1000), at the middle of equal cells."""
    _check_pairs(n_pairs)
    return torch.tensor([int((i + 0.5) * T_STEPS / n_pairs) for i in range(n_pairs)], dtype=torch.long)


def _check_pairs(n_pairs: int) -> None:
    if n_pairs < 6:
        raise ConfigError(f"score.auto_pairs = {n_pairs} is too few: the thirds need at least two t each; use >= 6")


def validation_pairs(image: int, n_pairs: int, latent_shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation image ``image``'s own pairs: a t drawn uniformly in each of ``n_pairs`` equal cells of
    [0, 1000) and a noise tensor each, from a generator seeded by (``seed``, ``image``)."""
    _check_pairs(n_pairs)
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(image)) * 7_919 + 1)
    u = torch.rand(n_pairs, generator=g, dtype=torch.float64)
    t = ((torch.arange(n_pairs, dtype=torch.float64) + u) * T_STEPS / n_pairs).long().clamp(0, T_STEPS - 1)
    return t, torch.randn((n_pairs, *latent_shape), generator=g)


@torch.no_grad()
def validation_errors(backbone, adapters, latents: torch.Tensor, contexts: torch.Tensor, score: ScoreConfig,
                      candidates: np.ndarray | None = None, progress: bool = False,
                      chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Errors (n, C, P) of every validation image under its candidate classes (nan elsewhere) at its own
    pairs, and their t (n, P). Images go ``chunk`` at a time, so their noise is never all in memory."""
    from .scoring import _batch_errors

    n, n_classes, n_pairs = latents.shape[0], contexts.shape[0], score.auto_pairs
    alive = np.ones((n, n_classes), bool) if candidates is None else np.asarray(candidates, dtype=bool)
    errors = np.full((n, n_classes, n_pairs), np.nan)
    ts = np.zeros((n, n_pairs), dtype=np.int64)
    bar = tqdm(total=int(alive.sum()) * n_pairs, desc="choosing the window", unit="call", disable=not progress,
               leave=False)
    for start in range(0, n, chunk):
        part = latents[start : start + chunk]
        pairs = [validation_pairs(start + i, n_pairs, latents.shape[1:], score.seed) for i in range(len(part))]
        t = torch.cat([p[0] for p in pairs])
        noise = torch.cat([p[1] for p in pairs])
        ts[start : start + len(part)] = t.view(len(part), n_pairs).numpy()
        # job (image i of the chunk, class c, its pair p) reads the chunk's row i * P + p of t and noise
        jobs = torch.tensor([(i, c, i * n_pairs + p) for i in range(len(part))
                             for c in np.flatnonzero(alive[start + i]) for p in range(n_pairs)], dtype=torch.long)
        for b in range(0, len(jobs), score.batch_size):
            ii, cc, pp = jobs[b : b + score.batch_size].unbind(1)
            err = _batch_errors(backbone, adapters, part, contexts, t, noise, ii, cc, pp, score.unet_scale)
            errors[start + ii.numpy(), cc.numpy(), (pp % n_pairs).numpy()] = err
            bar.update(len(ii))
    bar.close()
    return errors, ts


def replay(errors: np.ndarray, t, candidate: dict, tif_d: float | None) -> np.ndarray:
    """Per image and class, the candidate's weighted mean error over the pairs (inf: class not scored).
    ``t``: the pairs' time-steps, (P,) shared by the images or (n, P) per image."""
    t = np.broadcast_to(np.asarray(t), (errors.shape[0], errors.shape[2]))
    keep = (t >= candidate["t_min"]) & (t < candidate["t_max"])
    w = tif_weights(tif_d)[t] if candidate["weighting"] == "tif" else np.ones(t.shape)
    w = np.where(keep, w, 0.0)
    total = w.sum(1)
    filled = np.where(np.isnan(errors), np.inf, errors)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (filled * w[:, None, :]).sum(2) / total[:, None]
    # no weight in the window for an image (TiF's weight can vanish on a few pairs): nothing to rank on
    return np.where(np.isnan(mean) | (total[:, None] <= 0), np.inf, mean)


def per_image_log_likelihood(mean: np.ndarray, labels) -> np.ndarray:
    """Each image's log-probability of its true class, softmax over its standardised minus errors
    (``mean``: (n, C), inf where a class was not scored). nan for an image whose true class was not
    scored, or with fewer than two classes scored: it says nothing about a window."""
    labels = np.asarray(labels)
    finite = np.isfinite(mean)
    rows = np.arange(len(labels))
    keep = finite[rows, labels] & (finite.sum(1) >= 2)
    out = np.full(len(labels), np.nan)
    if not keep.any():
        return out
    z = np.where(finite, -mean, np.nan)[keep]
    z = (z - np.nanmean(z, 1, keepdims=True)) / (np.nanstd(z, 1, keepdims=True) + 1e-12)
    z = np.where(np.isnan(z), -np.inf, z)
    top = z.max(1, keepdims=True)
    log_p = z - top - np.log(np.exp(z - top).sum(1, keepdims=True))
    out[keep] = log_p[np.arange(int(keep.sum())), labels[keep]]
    return out


def log_likelihood(mean: np.ndarray, labels, balanced: bool = False) -> float:
    """Mean log-probability of the true class over the images that say something about a window
    (``per_image_log_likelihood``); ``balanced`` averages within each class first. -inf when none do."""
    ll, labels = per_image_log_likelihood(mean, labels), np.asarray(labels)
    keep = ~np.isnan(ll)
    if not keep.any():
        return float("-inf")
    if balanced:
        return float(np.mean([ll[keep & (labels == c)].mean() for c in np.unique(labels[keep])]))
    return float(ll[keep].mean())


def choose(errors: np.ndarray, t, labels, score: ScoreConfig, tif_d: float | None, metric: str = "accuracy",
           source: str = "validation images") -> dict:
    """The winning candidate on dense errors (n, C, P) at time-steps ``t`` ((P,) or (n, P)), nan where a
    class was not scored: the highest mean log-probability of the true class (module docstring).

    Returns what the manifest records: the choice (name, window, weighting), every candidate's
    log-likelihood and metric on these images, the images and UNet calls spent, and ``source``.
    """
    from .baselines import metric_score

    labels = np.asarray(labels)
    family = candidate_family(score, tif=tif_d is not None)
    scores, likelihood = {}, {}
    for cand in family:
        mean = replay(errors, t, cand, tif_d)
        predicted = np.where(np.isfinite(mean).any(1), mean.argmin(1), -1)
        scores[cand["name"]] = round(metric_score(predicted, labels, metric), 6)
        likelihood[cand["name"]] = round(log_likelihood(mean, labels, balanced=metric != "accuracy"), 6)
    best = max(family, key=lambda c: likelihood[c["name"]])  # max keeps the first of equals: the tie order
    return {"name": best["name"], "t_min": best["t_min"], "t_max": best["t_max"], "weighting": best["weighting"],
            "rule": "log-likelihood", "log_likelihood": likelihood, "metric": metric, "candidates": scores,
            "source": source, "images": int(len(labels)), "pairs_per_image": int(errors.shape[2]),
            "unet_calls": int(np.isfinite(errors).sum())}


def no_choice(score: ScoreConfig, why: str) -> dict:
    """The record when nothing could be chosen on: TiF's weight, auto's tie rule."""
    return {"name": "tif weight", "t_min": 0, "t_max": T_STEPS, "weighting": "tif", "metric": None,
            "candidates": {}, "source": f"none: {why}", "images": 0, "pairs_per_image": 0, "unet_calls": 0}


def capped_rounds(rounds: list[list[int]], width: int) -> list[list[int]]:
    """The recipe's stages inside a window of ``width`` t: a grid wider than the window is cut to its
    width (a t cannot be evaluated twice); stages left with equal grids merge into the later one."""
    out: list[list[int]] = []
    for size, keep in rounds:
        size = min(int(size), width)
        if out and out[-1][0] >= size:
            out[-1][1] = int(keep)
        else:
            out.append([size, int(keep)])
    return out


def resolve(score: ScoreConfig, choice: dict | None) -> ScoreConfig:
    """The score configuration a test pass runs: the recipe's, with an ``auto`` choice applied."""
    if score.weighting != "auto":
        return score
    if not choice:
        raise ConfigError("score.weighting is auto but no window has been chosen for these adapters: fit with "
                          "validation images, or call choose_scoring(X_val, y_val) before scoring")
    return dataclasses.replace(score, t_min=choice["t_min"], t_max=choice["t_max"], weighting=choice["weighting"],
                               rounds=capped_rounds(score.rounds, choice["t_max"] - choice["t_min"]))


def extra_call_share(choice: dict, test_calls_per_image: float, n_test: int) -> float:
    """The validation pass's UNet calls as a share of a test pass of ``n_test`` images."""
    total = test_calls_per_image * n_test
    return float(choice["unet_calls"] / total) if total else float("nan")
