"""The live scoring pass: denoising errors of images under each candidate class, stage by stage.

An image's latent is noised at the time-steps of the schedule (:mod:`.schedule`), one noise tensor per t
shared by every class and image; each candidate class's adapter and prompt predict the noise; the class
with the lowest (weighted) epsilon error wins. After each stage the worst classes are dropped, which is
where the compute budget goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..metrics import standardise
from ..recipes import ScoreConfig
from ..seeding import torch_generator
from ..timesteps import t_weights, timestep_noise
from .replay import weighted_mean
from .schedule import Schedule, prune


@dataclass
class ScoreResult:
    errors: np.ndarray  # (n, C): weighted mean epsilon error over the pairs each class saw; nan if none
    logits: np.ndarray  # (n, C): ranking scores; classes pruned early rank below the survivors
    unet_calls: np.ndarray  # (n,): UNet sample-evaluations spent per image

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1)


@torch.no_grad()
def class_contexts(backbone, adapters, prompts: list[str], text_scale: float = 1.0, dropout: float = 0.0,
                   seed: int = 0) -> torch.Tensor:
    """Each class's prompt embedding under its own text adapter: (C, L, D), computed once.

    ``dropout`` > 0 reproduces the reference's test-time text LoRA, whose dropout is active while the
    class embeddings are computed: each class's embedding is one draw, from a generator seeded by
    (``seed``, class), so it does not depend on which other classes are embedded with it.
    """
    if dropout <= 0:
        with adapters.use(text_index=list(range(len(prompts))), text_scale=text_scale):
            return backbone.encode_prompts(prompts)
    out = []
    for c, prompt in enumerate(prompts):
        with adapters.use(text_index=[c], text_scale=text_scale, text_dropout=(dropout, torch_generator(seed, c))):
            out.append(backbone.encode_prompts([prompt]))
    return torch.cat(out)


def batch_residuals(backbone, adapters, latents, contexts, t, noise, ii, cc, pp, unet_scale) -> torch.Tensor:
    """Predicted minus true noise (fp32, on the backbone's device) of images ``ii`` noised with pairs ``pp``
    (rows of ``t`` and ``noise``), denoised by classes ``cc``: one UNet batch."""
    device = backbone.device
    x0 = latents[ii].to(device, backbone.dtype)
    eps = noise[pp].to(device, backbone.dtype)
    tt = t[pp].to(device)
    x_t = backbone.add_noise(x0, eps, tt)
    with adapters.use(unet_index=cc, unet_scale=unet_scale):
        out = backbone.predict(x_t, tt, contexts[cc.to(contexts.device)].to(device))
    return backbone.output_to_epsilon(out, x_t, tt).float() - eps.float()


def batch_errors(backbone, adapters, latents, contexts, t, noise, ii, cc, pp, unet_scale,
                 cells: torch.Tensor | None = None) -> np.ndarray:
    """Epsilon MSE of images ``ii`` noised with pairs ``pp``, denoised by classes ``cc``: one UNet batch.
    ``cells`` (n, 1, h, w): a weight per latent cell of each image (``score.cells: object``: its share of object
    pixels), the MSE then a weighted mean over the cells; None: every cell alike."""
    residual = batch_residuals(backbone, adapters, latents, contexts, t, noise, ii, cc, pp, unet_scale)
    if cells is None:
        return residual.pow(2).flatten(1).mean(1).cpu().numpy()
    w = cells[ii].to(residual.device, torch.float32)
    return ((residual.pow(2) * w).flatten(1).sum(1) / (w.flatten(1).sum(1) * residual.shape[1])).cpu().numpy()


@torch.no_grad()
def score_latents(backbone, adapters, latents: torch.Tensor, contexts: torch.Tensor, cfg: ScoreConfig,
                  candidates: np.ndarray | None = None, progress: bool = False,
                  tif_d: float | None = None, cells: torch.Tensor | None = None) -> ScoreResult:
    """Score every image in ``latents`` (n, c, h, w) against the classes of ``contexts`` under the stages
    of ``cfg`` (a resolved score configuration: no ``auto``).

    ``candidates`` (n, C) bool restricts each image's first stage (a prefilter's top-k). ``tif_d``: the
    distance TiF's weight needs (measured on the train latents at fit time). ``cells``: the weight of each
    latent cell (:func:`batch_errors`).
    """
    schedule = Schedule.of(cfg)
    n, n_classes = latents.shape[0], contexts.shape[0]
    t = torch.tensor(schedule.timesteps, dtype=torch.long)
    noise = timestep_noise(t, latents.shape[1:], cfg.seed)
    w = t_weights(t, cfg.weighting, cfg.weight_tau, tif_d).numpy()
    errors = np.full((n, n_classes, len(t)), np.nan)
    alive = np.ones((n, n_classes), bool) if candidates is None else candidates.astype(bool).copy()
    if not alive.any(1).all():
        raise ConfigError("every image needs at least one candidate class")
    dropped_at = np.full((n, n_classes), -1)  # the stage after which a class was dropped
    calls = np.zeros(n, dtype=np.int64)
    bar = tqdm(total=_calls(alive, schedule), desc="scoring", unit="call", disable=not progress, leave=False)
    done = 0
    for r, (new, keep) in enumerate(zip(schedule.stages, schedule.keeps)):
        jobs = torch.tensor([(i, c, p) for i in range(n) for c in np.flatnonzero(alive[i])
                             for p in range(done, done + len(new))], dtype=torch.long).view(-1, 3)
        for start in range(0, len(jobs), cfg.batch_size):
            ii, cc, pp = jobs[start : start + cfg.batch_size].unbind(1)
            errors[ii.numpy(), cc.numpy(), pp.numpy()] = batch_errors(backbone, adapters, latents, contexts, t,
                                                                      noise, ii, cc, pp, cfg.unet_scale, cells=cells)
            np.add.at(calls, ii.numpy(), 1)
            bar.update(len(ii))
        done += len(new)
        mean = weighted_mean(errors[:, :, :done], w[:done])
        dropped_at[prune(alive, np.where(np.isnan(mean), np.inf, mean), keep)] = r
    bar.close()
    final = weighted_mean(errors, w)
    return ScoreResult(final, rank_logits(final, dropped_at, len(schedule.rounds)), calls)


def _calls(alive: np.ndarray, schedule: Schedule) -> int:
    """UNet calls the stages will spend on these candidates (the progress bar's total)."""
    counts, total = alive.sum(1), 0
    for new, keep in zip(schedule.stages, schedule.keeps):
        total += int(counts.sum()) * len(new)
        counts = np.minimum(counts, keep)
    return total


def rank_logits(errors: np.ndarray, dropped_at: np.ndarray, n_stages: int) -> np.ndarray:
    """-error, except that a class dropped after stage r ranks below every class that outlived stage r.

    Each image's errors are standardised (z-scores over its evaluated classes), so that logits are
    comparable across images and a single temperature turns them into probabilities. A pruned class
    keeps the error it had when it was dropped (its mean over the t it saw): the classes dropped in one
    stage are shifted down together until the best of them sits just below the worst class that went
    on, so they keep their order and their gaps (no ties, no zero probabilities). Classes a prefilter
    kept out were never scored: -inf.
    """
    logits = standardise(-errors)
    seen = np.isfinite(logits)
    for i in range(errors.shape[0]):
        row = logits[i]
        # from the last stage back: cap each stage's dropped classes below the classes that went on
        for r in range(n_stages - 1, -1, -1):
            later = seen[i] & ((dropped_at[i] > r) | (dropped_at[i] == -1))
            now = dropped_at[i] == r
            if now.any() and later.any():
                excess = row[now].max() - (row[later].min() - 1e-3)
                if excess > 0:
                    row[now] -= excess
    return logits


@torch.no_grad()
def dense_errors(backbone, adapters, latents: torch.Tensor, contexts: torch.Tensor, t: torch.Tensor,
                 noise: torch.Tensor, batch_size: int = 256, unet_scale: float = 1.0,
                 progress: bool = False, candidates: np.ndarray | None = None,
                 cells: torch.Tensor | None = None) -> np.ndarray:
    """Epsilon error of every (image, class, pair): (n, C, P). For analyses over scoring windows,
    which then cost no further UNet calls (:mod:`.replay`). ``candidates`` (n, C) bool: only those
    classes are scored for each image (a prefilter's top-k); the others are nan. ``cells``: the weight of
    each latent cell (:func:`batch_errors`)."""
    n, n_classes, n_pairs = latents.shape[0], contexts.shape[0], t.shape[0]
    grid = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n_classes), torch.arange(n_pairs),
                                      indexing="ij"), -1).reshape(-1, 3)
    if candidates is not None:
        grid = grid[torch.from_numpy(np.asarray(candidates, dtype=bool)).reshape(-1).repeat_interleave(n_pairs)]
    out = np.full(n * n_classes * n_pairs, np.nan)
    flat = (grid[:, 0] * n_classes + grid[:, 1]) * n_pairs + grid[:, 2]
    bar = tqdm(total=len(grid), desc="scoring", unit="call", disable=not progress, leave=False)
    for start in range(0, len(grid), batch_size):
        ii, cc, pp = grid[start : start + batch_size].unbind(1)
        out[flat[start : start + batch_size].numpy()] = batch_errors(backbone, adapters, latents, contexts, t,
                                                                     noise, ii, cc, pp, unet_scale, cells=cells)
        bar.update(len(ii))
    bar.close()
    return out.reshape(n, n_classes, n_pairs)
