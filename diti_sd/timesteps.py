"""Time-step windows, fixed (t, noise) grids for scoring, per-t weights, training draws."""

from __future__ import annotations

import torch


def _van_der_corput(n: int) -> list[float]:
    # base-2 radical inverse: every prefix of the sequence spreads evenly over [0, 1)
    out = []
    for i in range(n):
        x, denom, k = 0.0, 1.0, i
        while k:
            denom *= 2
            x += (k & 1) / denom
            k >>= 1
        out.append(x)
    return out


def scoring_pairs(n_pairs: int, t_min: int, t_max: int, latent_shape, seed: int = 0):
    """``n_pairs`` time-steps on an even grid over [t_min, t_max) and one noise tensor each.

    The grid is visited in radical-inverse order, so the first m pairs of any round cover the whole
    window evenly (pruning rounds then compare classes on a representative subset). Every class and
    every image is scored on the same pairs.
    """
    if not 0 <= t_min < t_max:
        raise ValueError(f"bad scoring window [{t_min}, {t_max})")
    width = t_max - t_min
    order = _van_der_corput(n_pairs)
    t = torch.tensor([t_min + min(width - 1, int(u * width)) for u in order], dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((n_pairs, *latent_shape), generator=g)
    return t, noise


def t_weights(t: torch.Tensor, weighting: str = "uniform", tau: float = 250.0) -> torch.Tensor:
    """Per-t weight of a pair's error: uniform, or exp(-t / tau), which peaks at t = 0."""
    if weighting == "uniform":
        return torch.ones(t.shape, dtype=torch.float32)
    if weighting == "exp":
        return torch.exp(-t.float() / tau)
    raise ValueError(f"unknown weighting {weighting!r}; use 'uniform' or 'exp'")


def draw_train_t(n: int, t_min: int, t_max: int, generator: torch.Generator) -> torch.Tensor:
    """Training time-steps ~ U[t_min, t_max)."""
    return torch.randint(t_min, t_max, (n,), generator=generator)
