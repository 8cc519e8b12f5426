"""``score.weighting: auto``: the scoring window chosen on the user's own validation images.

Where the time-steps that carry a class's fine attribute lie depends on the data; a window or a weight
chosen for somebody else's data can sit in the wrong place. So, after fitting, the validation images
are scored once on an even grid of ``score.auto_pairs`` time-steps over [0, 1000) against their
candidate classes (all of them, or a prefilter's top-k), and the errors are re-aggregated under each
candidate of a small fixed family, with no further UNet calls:

- TiF's per-t weight over [0, 1000) (needs the train latents' distance; absent for zero-shot),
- the recipe's own window, scored uniformly (when it is not one of the others),
- all of [0, 1000), the halves [0, 500) and [500, 1000), the thirds [0, 333), [333, 667), [667, 1000).

The best by the data set's metric on those images wins; ties go to the earlier candidate in that
order, so TiF's weight wins every tie. The test pass then runs the recipe's rounds inside the chosen
window (the same stages, so the same cost; a stage grid wider than a narrow window is capped at its
width). Every candidate reads the same (t, noise) pairs, each the ones in its window: the noise at t
is :func:`~diti_sd.timesteps.timestep_noise`'s, as in a test pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

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
    if n_pairs < 6:
        raise ConfigError(f"score.auto_pairs = {n_pairs} is too few: the thirds need at least two t each; use >= 6")
    return torch.tensor([int((i + 0.5) * T_STEPS / n_pairs) for i in range(n_pairs)], dtype=torch.long)


def replay(errors: np.ndarray, t: np.ndarray, candidate: dict, tif_d: float | None) -> np.ndarray:
    """Per image and class, the candidate's weighted mean error over the grid (inf: class not scored)."""
    t = np.asarray(t)
    keep = (t >= candidate["t_min"]) & (t < candidate["t_max"])
    w = np.ones(len(t))
    if candidate["weighting"] == "tif":
        w = tif_weights(tif_d)[t]
    w = np.where(keep, w, 0.0)
    if w.sum() <= 0:  # TiF's weight can be zero at every grid t for a huge d; the window then holds nothing
        return np.full(errors.shape[:2], np.inf)
    filled = np.where(np.isnan(errors), np.inf, errors)
    with np.errstate(invalid="ignore"):
        mean = (filled * w).sum(2) / w.sum()
    return np.where(np.isnan(mean), np.inf, mean)


def choose(errors: np.ndarray, t, labels, score: ScoreConfig, tif_d: float | None, metric: str = "accuracy",
           source: str = "validation images") -> dict:
    """The winning candidate on dense errors (n, C, P) at grid ``t`` (nan where a class was not scored).

    Returns what the manifest records: the choice (name, window, weighting), every candidate's score
    on these images, the images and UNet calls spent, and ``source``.
    """
    from .baselines import metric_score

    labels = np.asarray(labels)
    family = candidate_family(score, tif=tif_d is not None)
    scores = {}
    for cand in family:
        mean = replay(errors, t, cand, tif_d)
        predicted = np.where(np.isfinite(mean).any(1), mean.argmin(1), -1)
        scores[cand["name"]] = round(metric_score(predicted, labels, metric), 6)
    best = max(family, key=lambda c: scores[c["name"]])  # max keeps the first of equals: the tie order
    return {"name": best["name"], "t_min": best["t_min"], "t_max": best["t_max"], "weighting": best["weighting"],
            "metric": metric, "candidates": scores, "source": source, "images": int(len(labels)),
            "grid": [int(v) for v in np.asarray(t)], "unet_calls": int(np.isfinite(errors).sum())}


def no_choice(score: ScoreConfig, why: str) -> dict:
    """The record when nothing could be chosen on: TiF's weight, auto's tie rule."""
    return {"name": "tif weight", "t_min": 0, "t_max": T_STEPS, "weighting": "tif", "metric": None,
            "candidates": {}, "source": f"none: {why}", "images": 0, "grid": [], "unet_calls": 0}


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
