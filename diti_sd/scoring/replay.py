"""Dense errors read again under any window, weight or schedule, at no further UNet cost.

The live pass (:mod:`.engine`), the automatic window (:mod:`.auto`), the budget curves and the synthetic
benchmark all aggregate (image, class, pair) errors the same way: :func:`weighted_mean`, the one place
that formula is written.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .schedule import Schedule, prune


def weighted_mean(errors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per image and class, the weighted mean error over the pairs (the last axis of ``errors``, (n, C, P)).

    ``weights``: (P,) shared by the images, or (n, P) per image. Pairs of zero weight, and pairs whose
    error is nan (not evaluated: a pruned or prefiltered class), are left out; nan where none is left.
    """
    errors = np.asarray(errors, dtype=float)
    w = np.asarray(weights, dtype=float)
    if w.ndim == 1 and not np.isnan(errors).any():  # dense errors, shared weights: one sum over the used pairs
        keep = w > 0
        if not keep.any():
            return np.full(errors.shape[:2], np.nan)
        return (errors[:, :, keep] * w[keep]).sum(2) / w[keep].sum()
    w = np.broadcast_to(w[:, None, :] if w.ndim == 2 else w, errors.shape)
    w = np.where(np.isnan(errors), 0.0, w)
    total = w.sum(2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.where(w > 0, errors, 0.0) * w).sum(2) / total
    return np.where(total > 0, mean, np.nan)


def window_weights(t: np.ndarray, weights: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """``weights`` with every pair outside [window[0], window[1]) set to zero (``t`` and ``weights`` alike:
    (P,), or (n, P) per image)."""
    t = np.asarray(t)
    return np.where((t >= window[0]) & (t < window[1]), weights, 0.0)


def simulate_rounds(errors: np.ndarray, error_t, schedule: Schedule, weights: np.ndarray | None = None,
                    candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What the live pass would decide under ``schedule``, replayed on errors (n, C, P) whose column p holds
    time-step ``error_t[p]`` (noised with :func:`~diti_sd.timesteps.timestep_noise`, as the live pass is).

    Returns (predicted class, UNet calls) per image; accuracy-against-budget curves come from one
    exhaustive set of UNet calls this way. ``weights``: per column, as ``t_weights`` gives them.
    """
    column = {int(t): p for p, t in enumerate(np.asarray(error_t).tolist())}
    missing = sorted(set(schedule.timesteps) - set(column))
    if missing:
        raise ConfigError(f"the errors hold no column for t = {missing[:5]}")
    order = [column[t] for t in schedule.timesteps]
    errors = np.asarray(errors)[:, :, order]
    w = np.ones(len(order)) if weights is None else np.asarray(weights, dtype=float)[order]
    n, n_classes, _ = errors.shape
    alive = np.ones((n, n_classes), bool) if candidates is None else candidates.astype(bool).copy()
    calls = np.zeros(n, dtype=np.int64)
    done = 0
    for new, keep in zip(schedule.stages, schedule.keeps):
        calls += alive.sum(1) * len(new)
        done += len(new)
        mean = weighted_mean(errors[:, :, :done], w[:done])
        prune(alive, _ranked(mean, alive), keep)
    return _ranked(weighted_mean(errors[:, :, :done], w[:done]), alive).argmin(1), calls


def _ranked(mean: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Mean errors to rank live classes by: a class with no weight in the window after every live one with
    some, and dead classes after all."""
    return np.where(alive, np.nan_to_num(mean, nan=np.finfo(float).max), np.inf)
