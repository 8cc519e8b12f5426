"""The validation pass: each validation image scored at (t, noise) pairs of its own, under its candidate
classes, then read again under any window or weight at no further UNet cost. One pass serves both things
validation images are spent on: ``score.weighting: auto``'s choice of window (:mod:`.auto`) and the
softmax temperature of ``predict_proba``.

Each validation image gets its own pairs: one t drawn uniformly inside each of ``n_pairs`` equal cells of
the window and a fresh noise tensor, from a generator seeded by (score.seed, image). A test pass shares
one noise per t across images; a validation pass that did the same would judge each window on the same
few draws for every image, and a draw that happens to favour one window would favour it everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import fit_temperature, nll, standardise
from ..recipes import T_STEPS, ScoreConfig
from ..seeding import VALIDATION_PAIRS, torch_generator
from ..timesteps import tif_weights
from .engine import batch_errors
from .replay import weighted_mean, window_weights


def validation_pairs(image: int, n_pairs: int, latent_shape, seed: int = 0,
                     window: tuple[int, int] = (0, T_STEPS)) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation image ``image``'s own pairs: a t drawn uniformly in each of ``n_pairs`` equal cells of
    ``window`` and a noise tensor each, from a generator seeded by (``seed``, ``image``)."""
    lo, hi = window
    g = torch_generator(seed, image, VALIDATION_PAIRS)
    u = torch.rand(n_pairs, generator=g, dtype=torch.float64)
    t = lo + ((torch.arange(n_pairs, dtype=torch.float64) + u) * (hi - lo) / n_pairs).long().clamp(0, hi - lo - 1)
    return t, torch.randn((n_pairs, *latent_shape), generator=g)


@torch.no_grad()
def validation_errors(backbone, adapters, latents: torch.Tensor, contexts: torch.Tensor, score: ScoreConfig,
                      candidates: np.ndarray | None = None, progress: bool = False, chunk: int = 8,
                      n_pairs: int | None = None, window: tuple[int, int] = (0, T_STEPS),
                      cells: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Errors (n, C, P) of every validation image under its candidate classes (nan elsewhere) at its own
    ``n_pairs`` pairs in ``window`` (default: ``score.auto_pairs`` over [0, 1000)), and their t (n, P).
    Images go ``chunk`` at a time, so their noise is never all in memory. ``cells`` (n, 1, h, w): the weight
    of each latent cell, as a test pass under ``score.cells: object`` weighs them."""
    n, n_classes, n_pairs = latents.shape[0], contexts.shape[0], n_pairs or score.auto_pairs
    alive = np.ones((n, n_classes), bool) if candidates is None else np.asarray(candidates, dtype=bool)
    errors = np.full((n, n_classes, n_pairs), np.nan)
    ts = np.zeros((n, n_pairs), dtype=np.int64)
    bar = tqdm(total=int(alive.sum()) * n_pairs, desc="validation pass", unit="call", disable=not progress,
               leave=False)
    for start in range(0, n, chunk):
        part = latents[start : start + chunk]
        pairs = [validation_pairs(start + i, n_pairs, latents.shape[1:], score.seed, window) for i in range(len(part))]
        t = torch.cat([p[0] for p in pairs])
        noise = torch.cat([p[1] for p in pairs])
        ts[start : start + len(part)] = t.view(len(part), n_pairs).numpy()
        # job (image i of the chunk, class c, its pair p) reads the chunk's row i * P + p of t and noise
        jobs = torch.tensor([(i, c, i * n_pairs + p) for i in range(len(part))
                             for c in np.flatnonzero(alive[start + i]) for p in range(n_pairs)], dtype=torch.long)
        for b in range(0, len(jobs), score.batch_size):
            ii, cc, pp = jobs[b : b + score.batch_size].unbind(1)
            err = batch_errors(backbone, adapters, part, contexts, t, noise, ii, cc, pp, score.unet_scale,
                               cells=None if cells is None else cells[start : start + chunk])
            errors[start + ii.numpy(), cc.numpy(), (pp % n_pairs).numpy()] = err
            bar.update(len(ii))
    bar.close()
    return errors, ts


def replay(errors: np.ndarray, t, candidate: dict, tif_d: float | None) -> np.ndarray:
    """Per image and class, the candidate's weighted mean error over the pairs (inf: class not scored, or
    no weight in the window). ``t``: the pairs' time-steps, (P,) shared by the images or (n, P) per image."""
    t = np.broadcast_to(np.asarray(t), (errors.shape[0], errors.shape[2]))
    if candidate["weighting"] == "tif":
        w = tif_weights(tif_d)[t]
    elif candidate["weighting"] == "exp":
        w = np.exp(-t / candidate.get("weight_tau", 250.0))
    else:
        w = np.ones(t.shape)
    mean = weighted_mean(errors, window_weights(t, w, (candidate["t_min"], candidate["t_max"])))
    # no weight in the window for an image (TiF's weight can vanish on a few pairs): nothing to rank on
    return np.where(np.isnan(mean), np.inf, mean)

def replayed_logits(errors: np.ndarray, t, candidate: dict, tif_d: float | None) -> np.ndarray:
    """The validation images' logits under ``candidate`` (a window and weighting): minus the replayed errors,
    standardised per image as ``predict_proba`` standardises them (-inf: a class not scored)."""
    return standardise(-replay(errors, t, candidate, tif_d))


def temperature_from_pass(errors: np.ndarray, t, labels, candidate: dict, tif_d: float | None) -> dict:
    """``predict_proba``'s temperature chosen on the pass's errors replayed under ``candidate``: the record
    ``calibration_`` keeps (the temperature, the images and pairs, the NLL at 1 and at the temperature)."""
    logits, labels = replayed_logits(errors, t, candidate, tif_d), np.asarray(labels)
    temperature, best = fit_temperature(logits, labels)
    return {"temperature": temperature, "images": int(len(labels)), "pairs_per_image": int(errors.shape[2]),
            "unet_calls": int(np.isfinite(errors).sum()), "window": [candidate["t_min"], candidate["t_max"]],
            "weighting": candidate["weighting"], "nll_at_1": round(nll(logits, labels), 6), "nll": round(best, 6)}
