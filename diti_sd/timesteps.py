"""Time-step windows, fixed (t, noise) grids for scoring, per-t weights, training draws."""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import ConfigError
from .seeding import torch_generator


def signal_to_noise(alpha_bar):
    """The signal's power over the noise's in x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise: alpha_bar / (1 -
    alpha_bar) (a float, an array or a tensor)."""
    return alpha_bar / (1 - alpha_bar)

def even_grid(size: int, t_min: int, t_max: int) -> list[int]:
    """The reference's grid of ``size`` time-steps over [t_min, t_max): with L = t_max - t_min, t_min + (L // size
    // 2) + i (L // size), i < size (Diffusion Classifier's ``start = T // max_n // 2``, step ``T // max_n``,
    applied to the window)."""
    step = (t_max - t_min) // size
    if step < 1:
        raise ConfigError(f"a grid of {size} time-steps does not fit in [{t_min}, {t_max}): it needs a range at least "
                          f"{size} wide; take fewer time-steps or a wider range")
    return [t_min + step // 2 + i * step for i in range(size)]


def grid_subset(size: int, keep: int) -> list[int]:
    """Which ``keep`` points of a ``size``-point :func:`even_grid` a stage of grid size ``keep`` takes, as the
    reference selects them: every (size // keep)-th, from (size // keep // 2)."""
    step = size // keep
    return list(range(step // 2, size, step))[:keep]


def scoring_pairs(n_pairs: int, t_min: int, t_max: int, latent_shape, seed: int = 0):
    """The ``n_pairs`` t of :func:`even_grid` over [t_min, t_max), in increasing order, and the noise
    :func:`timestep_noise` draws at each from ``seed``: the t and the noise ``predict``'s single stage of that
    grid size evaluates under ``score.seed = seed``. Every class and every image is scored on the same pairs.
    """
    t = torch.tensor(even_grid(n_pairs, t_min, t_max), dtype=torch.long)
    return t, timestep_noise(t, latent_shape, seed)


def timestep_noise(t: torch.Tensor, latent_shape, seed: int = 0) -> torch.Tensor:
    """One noise tensor per time-step value, a function of (seed, t) alone: every class and image is
    scored with the same noise at a given t, and any schedule that evaluates t uses that noise (so
    schedules can be replayed on one exhaustive set of errors)."""
    out = torch.empty((len(t), *latent_shape))
    for i, value in enumerate(t.tolist()):
        g = torch_generator(seed, value)
        out[i] = torch.randn(tuple(latent_shape), generator=g)
    return out


def t_weights(t: torch.Tensor, weighting: str = "uniform", tau: float = 250.0, tif_d: float | None = None,
              num_train_timesteps: int = 1000) -> torch.Tensor:
    """Per-t weight of a pair's error.

    ``uniform``; ``exp``: exp(-t / tau), which peaks at t = 0; ``tif``: TiF's data-derived band
    (:func:`tif_weights`), which needs ``tif_d`` from the k-shot train latents (:func:`tif_distance`).
    """
    if weighting == "uniform":
        return torch.ones(t.shape, dtype=torch.float32)
    if weighting == "exp":
        return torch.exp(-t.float() / tau)
    if weighting == "tif":
        if tif_d is None:
            raise ConfigError("weighting 'tif' needs the distance d measured on the train latents at fit time; "
                             "this adapter set has none (fitted with another weighting?): refit, or pick "
                             "score.weighting=uniform or exp")
        table = tif_weights(tif_d, num_train_timesteps)
        return torch.from_numpy(table[t.long().numpy()]).float()
    if weighting == "auto":
        raise ConfigError("weighting 'auto' is a choice made on validation images, not a weight: resolve it "
                          "with diti_sd.scoring.auto.resolve before scoring")
    raise ValueError(f"unknown weighting {weighting!r}")  # recipes reject it when they load


def tif_weights(d: float, num_train_timesteps: int = 1000, n_coarse: int = 500) -> np.ndarray:
    """TiF's per-t weight for a fine-attribute distance ``d``: fine / (fine + coarse) with
    fine = 1 - erf(s_t d), coarse = 1e-18 + sum_j (1 - erf(s_t (d + 1 + j))), j < ``n_coarse``, and
    s_t = sqrt(abar_t) / (2 sqrt(2 (1 - abar_t))) on DDPM linear betas (1e-4 to 0.02), as the reference
    computes it whatever the model's own schedule. Zero below a t that grows with d (d = 10: t < 170),
    near 1 just above it, decaying at large t.

    ``1 - erf`` (not erfc) on purpose: it rounds to exactly 0 at small t, as the reference's does.
    """
    # the schedule in float32 as the reference computes it; the erf terms in float64
    abar = torch.cumprod(1 - torch.linspace(0.0001, 0.02, num_train_timesteps), 0)
    scale = (abar.sqrt() / (2 * (2 * (1 - abar)).sqrt())).double().numpy()
    erf = np.vectorize(math.erf)
    fine = 1 - erf(scale * d)
    shifts = d + 1 + np.arange(n_coarse, dtype=np.float64)
    coarse = 1e-18 + (1 - erf(scale[:, None] * shifts[None, :])).sum(1)
    return fine / (fine + coarse)


def tif_distance(latents: torch.Tensor, labels, same_class: float = 100.0, percentile: float = 0.1) -> float:
    """TiF's fine-attribute distance d from k-shot train latents (n, c, h, w) and their labels.

    Per latent location: the squared distances between all pairs of train latents there, pairs of the
    same class (and each latent with itself) set to ``same_class``, and the ``percentile``-th
    percentile of that whole matrix (linear interpolation, as numpy's default); d is the square root
    of their sum over locations. Runs where the latents are (a GPU takes seconds for 1,600 images).
    """
    x = latents.float()
    labels = torch.as_tensor(np.asarray(labels), device=x.device)
    same = labels[:, None] == labels[None, :]
    n, _, h, w = x.shape
    position = percentile / 100 * (n * n - 1)
    low, frac = int(math.floor(position)), position - math.floor(position)
    total = 0.0
    for v in x.permute(2, 3, 0, 1).reshape(h * w, n, -1):  # one location at a time: (n, channels)
        dist = torch.cdist(v[None], v[None])[0] ** 2
        dist[same] = same_class
        smallest = torch.topk(dist.reshape(-1), min(low + 2, n * n), largest=False).values
        upper = smallest[min(low + 1, len(smallest) - 1)]
        total += float(smallest[low] + (upper - smallest[low]) * frac)
    return float(math.sqrt(total))


def draw_train_t(n: int, t_min: int, t_max: int, generator: torch.Generator) -> torch.Tensor:
    """Training time-steps ~ U[t_min, t_max)."""
    return torch.randint(t_min, t_max, (n,), generator=generator)
