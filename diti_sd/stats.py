"""Paired comparisons of two methods scored on the same images, over several seeds."""

from __future__ import annotations

import numpy as np


def hierarchical_difference(a: list[np.ndarray], b: list[np.ndarray], n_boot: int = 4000, seed: int = 0) -> dict:
    """Mean of a - b (per-image scores of two methods on the same images, one array per seed) with a 95 %
    interval from a hierarchical bootstrap: seeds drawn with replacement, then images within each drawn
    seed, so the interval holds the seed-to-seed spread as well as the images'. Beside it, the seed-level
    t interval (:func:`seed_t_interval`) and the wider of the two (``wide_low``, ``wide_high``), which claims
    use. Also the per-seed means' standard deviation (ddof = 1) and standard error."""
    diffs = [np.asarray(x, float) - np.asarray(y, float) for x, y in zip(a, b)]
    if not diffs or any(len(d) == 0 for d in diffs):
        raise ValueError("every seed needs at least one image")
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for i in range(n_boot):
        picked = rng.integers(0, len(diffs), len(diffs))
        total = count = 0.0
        for s in picked:
            d = diffs[s]
            total += d[rng.integers(0, len(d), len(d))].sum()
            count += len(d)
        boot[i] = total / count
    per_seed = np.array([d.mean() for d in diffs])
    low, high = np.percentile(boot, [2.5, 97.5])
    sd = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan")
    t_low, t_high = seed_t_interval(per_seed)
    mean = float(np.concatenate(diffs).mean())
    # a claim uses the wider of the two: with few seeds the bootstrap interval is too narrow
    wide_low, wide_high = min(low, t_low), max(high, t_high)
    return {"mean": mean, "low": float(low), "high": float(high), "t_low": t_low, "t_high": t_high,
            "wide_low": float(wide_low), "wide_high": float(wide_high),
            "seeds": len(diffs), "images": int(sum(len(d) for d in diffs)), "seed_sd": sd,
            "seed_se": sd / np.sqrt(len(per_seed)) if len(per_seed) > 1 else float("nan")}


def seed_t_interval(per_seed, level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of per-seed values (each seed one observation): the interval that
    holds every source of seed-to-seed variation (split, fit, noise draws), nan for one seed."""
    from scipy.stats import t

    v = np.asarray(per_seed, float)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = float(t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return float(v.mean() - half), float(v.mean() + half)


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; nan for one value)."""
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error of the mean (ddof = 1; nan for one value): a paired gain's SE over seeds."""
    mean, sd = mean_sd(values)
    return mean, float(sd / np.sqrt(len(np.asarray(values))))


def beyond_2se(gain: float, se: float) -> bool:
    """The project's rule for a gain that counts: a mean of paired gains (per seed, or per image where a rule reads
    images) ahead by more than two of its standard errors; never where the SE is unknown (one value, or none)."""
    return bool(np.isfinite(se) and gain > 2 * se)


def paired_gain(a, b) -> dict:
    """Per-seed values ``a`` against ``b``: the mean gain, its standard error (:func:`mean_se`) and on how many
    seeds ``a`` is ahead and behind."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    gain, se = mean_se(a - b)
    return {"gain": gain, "se": se, "ahead": int((a > b).sum()), "behind": int((a < b).sum())}
