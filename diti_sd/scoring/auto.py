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

The validation pass itself (each image's own pairs, the replay) is :mod:`.validation_pass`; the same
pass then sets ``predict_proba``'s temperature under the chosen candidate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ConfigError
from ..metrics import log_softmax, metric_score, standardise
from ..recipes import T_STEPS, ScoreConfig
from .schedule import Schedule
from .validation_pass import replay

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
