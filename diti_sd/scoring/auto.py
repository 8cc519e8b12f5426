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
and cannot tell windows a few points apart; the rules compared, and how each did, are in
docs/notes/2026-12-01-auto-scoring-window.md. Every candidate's metric is recorded beside it.
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

from ..errors import ConfigError
from ..metrics import log_softmax, metric_score, standardise
from ..recipes import T_STEPS, ScoreConfig
from ..seeding import VALIDATION_PAIRS, torch_generator
from ..timesteps import tif_weights
from .engine import batch_errors
from .replay import weighted_mean, window_weights
from .schedule import Schedule

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


def validation_pairs(image: int, n_pairs: int, latent_shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation image ``image``'s own pairs: a t drawn uniformly in each of ``n_pairs`` equal cells of
    [0, 1000) and a noise tensor each, from a generator seeded by (``seed``, ``image``)."""
    g = torch_generator(seed, image, VALIDATION_PAIRS)
    u = torch.rand(n_pairs, generator=g, dtype=torch.float64)
    t = ((torch.arange(n_pairs, dtype=torch.float64) + u) * T_STEPS / n_pairs).long().clamp(0, T_STEPS - 1)
    return t, torch.randn((n_pairs, *latent_shape), generator=g)


@torch.no_grad()
def validation_errors(backbone, adapters, latents: torch.Tensor, contexts: torch.Tensor, score: ScoreConfig,
                      candidates: np.ndarray | None = None, progress: bool = False,
                      chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Errors (n, C, P) of every validation image under its candidate classes (nan elsewhere) at its own
    pairs, and their t (n, P). Images go ``chunk`` at a time, so their noise is never all in memory."""
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
            err = batch_errors(backbone, adapters, part, contexts, t, noise, ii, cc, pp, score.unet_scale)
            errors[start + ii.numpy(), cc.numpy(), (pp % n_pairs).numpy()] = err
            bar.update(len(ii))
    bar.close()
    return errors, ts


def replay(errors: np.ndarray, t, candidate: dict, tif_d: float | None) -> np.ndarray:
    """Per image and class, the candidate's weighted mean error over the pairs (inf: class not scored, or
    no weight in the window). ``t``: the pairs' time-steps, (P,) shared by the images or (n, P) per image."""
    t = np.broadcast_to(np.asarray(t), (errors.shape[0], errors.shape[2]))
    w = tif_weights(tif_d)[t] if candidate["weighting"] == "tif" else np.ones(t.shape)
    mean = weighted_mean(errors, window_weights(t, w, (candidate["t_min"], candidate["t_max"])))
    # no weight in the window for an image (TiF's weight can vanish on a few pairs): nothing to rank on
    return np.where(np.isnan(mean), np.inf, mean)


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
    log_p = log_softmax(standardise(-mean[keep]))
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


def resolve(score: ScoreConfig, choice: dict | None) -> ScoreConfig:
    """The score configuration a test pass runs: the recipe's, with an ``auto`` choice applied."""
    if score.weighting != "auto":
        return score
    if not choice:
        raise ConfigError("score.weighting is auto but no window has been chosen for these adapters: fit with "
                          "validation images, or call choose_scoring(X_val, y_val) before scoring")
    stages = Schedule.of(score).within(choice["t_min"], choice["t_max"])
    return dataclasses.replace(score, t_min=stages.t_min, t_max=stages.t_max, weighting=choice["weighting"],
                               rounds=[list(r) for r in stages.rounds])


def extra_call_share(choice: dict, test_calls_per_image: float, n_test: int) -> float:
    """The validation pass's UNet calls as a share of a test pass of ``n_test`` images."""
    total = test_calls_per_image * n_test
    return float(choice["unet_calls"] / total) if total else float("nan")
