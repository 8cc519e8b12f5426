"""Denoising errors of test images under each candidate class, with pruning rounds.

An image's latent is noised at time-steps of the scoring window, one noise tensor per t shared by
every class; each candidate class's adapter and prompt predict the noise; the class with the lowest
(weighted) epsilon error wins. Rounds drop the worst candidates early, which is where the compute
budget goes. ``score.rounds`` are the reference's (Diffusion Classifier's) stages ``[grid size,
classes kept]``: stage r evaluates an even grid of that many t over the window, minus the t already
evaluated, then keeps the best classes by their mean error over every t so far.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ._io import atomic_write
from .calibration import softmax  # noqa: F401  (scoring's public softmax; calibration owns it)
from .constraints import check_rounds, check_window
from .errors import ConfigError
from .recipes import ScoreConfig
from .timesteps import t_weights, timestep_noise


@dataclass
class ScoreResult:
    errors: np.ndarray  # (n, C): weighted mean epsilon error over the pairs each class saw; nan if none
    logits: np.ndarray  # (n, C): ranking scores; classes pruned early rank below the survivors
    unet_calls: np.ndarray  # (n,): UNet sample-evaluations spent per image

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1)


class ScoreCache:
    """Scoring results on disk, one file per chunk of images, so that an interrupted pass continues.

    A chunk's file is named by a hash of what decides its result: ``identity`` (the adapters, the base
    model, the prompts), the score configuration, the chunk's latents and candidate masks. Scoring a
    chunk does not depend on the other chunks (the noise at t is a function of t alone), so a resumed
    pass gives the numbers an uninterrupted one gives.
    """

    def __init__(self, folder: str | os.PathLike, identity: str, cfg: ScoreConfig, tif_d: float | None):
        self.folder = Path(folder)
        self.prefix = hashlib.sha256(
            json.dumps({"identity": identity, "score": asdict(cfg), "tif_d": tif_d}, sort_keys=True).encode()
        ).hexdigest()

    def path(self, latents: torch.Tensor, candidates: np.ndarray | None) -> Path:
        h = hashlib.sha256(self.prefix.encode())
        h.update(latents.detach().float().cpu().contiguous().numpy().tobytes())
        if candidates is not None:
            h.update(np.ascontiguousarray(candidates, dtype=bool).tobytes())
        return self.folder / f"{h.hexdigest()[:24]}.npz"

    def load(self, latents, candidates) -> ScoreResult | None:
        path = self.path(latents, candidates)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                result = ScoreResult(data["errors"], data["logits"], data["unet_calls"])
        except Exception as err:  # a damaged chunk is scored again, never read as numbers
            warnings.warn(f"score cache {path} is unreadable ({type(err).__name__}); scoring that chunk again",
                          stacklevel=2)
            return None
        n = latents.shape[0]
        if result.errors.shape[0] != n or result.logits.shape != result.errors.shape or result.unet_calls.shape != (n,):
            warnings.warn(f"score cache {path} does not fit its chunk; scoring that chunk again", stacklevel=2)
            return None
        return result

    def save(self, latents, candidates, result: ScoreResult) -> None:
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, errors=result.errors, logits=result.logits, unet_calls=result.unet_calls)

        atomic_write(self.path(latents, candidates), write)


def validate_rounds(rounds: list[list[int]], t_min: int = 0, t_max: int = 1000) -> list[tuple[int, int]]:
    """``score.rounds`` as (grid size, classes kept) pairs, checked by the recipe's rule."""
    try:
        pairs = [[int(v) for v in entry] for entry in rounds]
    except (TypeError, ValueError):
        pairs = rounds
    check_rounds("score", pairs, t_min, t_max)
    return [(size, keep) for size, keep in pairs]


def stage_timesteps(rounds: list[list[int]], t_min: int = 0, t_max: int = 1000) -> list[list[int]]:
    """The new t each stage evaluates, as the reference selects them.

    With L = t_max - t_min and m the largest grid size, the base grid is t_min + (L // m // 2) +
    i (L // m), i < m; a stage of size n takes every (m // n)-th point of it, starting at (m // n // 2),
    and drops the t earlier stages evaluated. For [0, 1000) and sizes 20/50/100/500 the stages add
    20/50/80/350 t (20, 70, 150 and 500 in all).
    """
    check_window("score", t_min, t_max)
    stages = validate_rounds(rounds, t_min, t_max)
    width, largest = t_max - t_min, max(size for size, _ in stages)
    base = list(range(width // largest // 2, width, width // largest))[:largest]
    seen, out = set(), []
    for size, _ in stages:
        picked = base[len(base) // size // 2 :: len(base) // size][:size]
        new = [t for t in picked if t not in seen]
        seen.update(new)
        out.append([t_min + t for t in new])
    return out


def budget(rounds: list[list[int]], n_classes: int, t_min: int = 0, t_max: int = 1000) -> int:
    """UNet evaluations per image that a round schedule costs for ``n_classes`` candidates."""
    total, alive = 0, n_classes
    for new, (_, keep) in zip(stage_timesteps(rounds, t_min, t_max), validate_rounds(rounds, t_min, t_max)):
        total += alive * len(new)
        alive = min(alive, keep)
    return total


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
        generator = torch.Generator().manual_seed(seed * 1_000_003 + c)
        with adapters.use(text_index=[c], text_scale=text_scale, text_dropout=(dropout, generator)):
            out.append(backbone.encode_prompts([prompt]))
    return torch.cat(out)


@torch.no_grad()
def score_latents(
    backbone,
    adapters,
    latents: torch.Tensor,
    contexts: torch.Tensor,
    cfg: ScoreConfig,
    candidates: np.ndarray | None = None,
    progress: bool = False,
    tif_d: float | None = None,
) -> ScoreResult:
    """Score every image in ``latents`` (n, c, h, w) against the classes of ``contexts``.

    ``candidates`` (n, C) bool restricts each image's first round (a prefilter's top-k). ``tif_d``:
    the distance TiF's weight needs (measured on the train latents at fit time).
    """
    rounds = validate_rounds(cfg.rounds, cfg.t_min, cfg.t_max)
    stages = stage_timesteps(cfg.rounds, cfg.t_min, cfg.t_max)
    ends = np.cumsum([len(s) for s in stages]).tolist()
    n, n_classes = latents.shape[0], contexts.shape[0]
    t = torch.tensor([v for s in stages for v in s], dtype=torch.long)
    noise = timestep_noise(t, latents.shape[1:], cfg.seed)
    w = t_weights(t, cfg.weighting, cfg.weight_tau, tif_d)
    err_sum = np.zeros((n, n_classes))
    w_sum = np.zeros((n, n_classes))
    alive = np.ones((n, n_classes), bool) if candidates is None else candidates.astype(bool).copy()
    if not alive.any(1).all():
        raise ConfigError("every image needs at least one candidate class")
    dropped_at = np.full((n, n_classes), -1)  # round after which a class was dropped
    calls = np.zeros(n, dtype=np.int64)
    total_jobs = _count_jobs(alive, ends, rounds)
    bar = tqdm(total=total_jobs, desc="scoring", unit="call", disable=not progress, leave=False)
    done_pairs = 0
    for r, (pairs, (_, keep)) in enumerate(zip(ends, rounds)):
        jobs = [(i, c, p) for i in range(n) for c in np.flatnonzero(alive[i]) for p in range(done_pairs, pairs)]
        for start in range(0, len(jobs), cfg.batch_size):
            batch = jobs[start : start + cfg.batch_size]
            ii = torch.tensor([j[0] for j in batch])
            cc = torch.tensor([j[1] for j in batch])
            pp = torch.tensor([j[2] for j in batch])
            err = _batch_errors(backbone, adapters, latents, contexts, t, noise, ii, cc, pp, cfg.unet_scale)
            wb = w[pp].numpy()
            np.add.at(err_sum, (ii.numpy(), cc.numpy()), err * wb)
            np.add.at(w_sum, (ii.numpy(), cc.numpy()), wb)
            np.add.at(calls, ii.numpy(), 1)
            bar.update(len(batch))
        done_pairs = pairs
        mean = np.where(w_sum > 0, err_sum / np.maximum(w_sum, 1e-12), np.inf)
        for i in range(n):
            live = np.flatnonzero(alive[i])
            if len(live) > keep:
                order = live[np.argsort(mean[i, live], kind="stable")]
                for c in order[keep:]:
                    alive[i, c] = False
                    dropped_at[i, c] = r
    bar.close()
    errors = np.where(w_sum > 0, err_sum / np.maximum(w_sum, 1e-12), np.nan)
    return ScoreResult(errors, _rank_logits(errors, dropped_at, len(rounds)), calls)


def _batch_errors(backbone, adapters, latents, contexts, t, noise, ii, cc, pp, unet_scale) -> np.ndarray:
    """Epsilon MSE of images ii, noised with pairs pp, denoised by classes cc (one UNet batch)."""
    device = backbone.device
    x0 = latents[ii].to(device, backbone.dtype)
    eps = noise[pp].to(device, backbone.dtype)
    tt = t[pp].to(device)
    x_t = backbone.add_noise(x0, eps, tt)
    with adapters.use(unet_index=cc, unet_scale=unet_scale):
        out = backbone.predict(x_t, tt, contexts[cc.to(contexts.device)].to(device))
    eps_hat = backbone.output_to_epsilon(out, x_t, tt)
    return (eps_hat.float() - eps.float()).pow(2).flatten(1).mean(1).cpu().numpy()


def _count_jobs(alive: np.ndarray, ends, rounds) -> int:
    total, done = 0, 0
    counts = alive.sum(1)
    for pairs, (_, keep) in zip(ends, rounds):
        total += int(counts.sum()) * (pairs - done)
        counts = np.minimum(counts, keep)
        done = pairs
    return total


def _rank_logits(errors: np.ndarray, dropped_at: np.ndarray, n_rounds: int) -> np.ndarray:
    """-error, except that a class dropped in round r ranks below every class that outlived round r.

    Each image's errors are standardised (z-scores over its evaluated classes), so that logits are
    comparable across images and a single temperature turns them into probabilities. A pruned class
    keeps the error it had when it was dropped (its mean over the t it saw): the classes dropped in one
    round are shifted down together until the best of them sits just below the worst class that went
    on, so they keep their order and their gaps (no ties, no zero probabilities). Classes a prefilter
    kept out were never scored: -inf.
    """
    logits = np.full(errors.shape, -np.inf)
    for i in range(errors.shape[0]):
        seen = ~np.isnan(errors[i])
        e = errors[i, seen]
        z = -(e - e.mean()) / (e.std() + 1e-12) if len(e) > 1 else np.zeros_like(e)
        row = np.full(errors.shape[1], -np.inf)
        row[seen] = z
        # from the last round back: cap each round's dropped classes below the classes that went on
        for r in range(n_rounds - 1, -1, -1):
            later = seen & ((dropped_at[i] > r) | (dropped_at[i] == -1))
            now = dropped_at[i] == r
            if now.any() and later.any():
                excess = row[now].max() - (row[later].min() - 1e-3)
                if excess > 0:
                    row[now] -= excess
        logits[i] = row
    return logits


@torch.no_grad()
def dense_errors(backbone, adapters, latents: torch.Tensor, contexts: torch.Tensor, t: torch.Tensor,
                 noise: torch.Tensor, batch_size: int = 256, unet_scale: float = 1.0,
                 progress: bool = False, candidates: np.ndarray | None = None) -> np.ndarray:
    """Epsilon error of every (image, class, pair): (n, C, P). For analyses over scoring windows,
    which then cost no further UNet calls. ``candidates`` (n, C) bool: only those classes are scored
    for each image (a prefilter's top-k); the others are nan."""
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
        out[flat[start : start + batch_size].numpy()] = _batch_errors(backbone, adapters, latents, contexts, t, noise,
                                                                      ii, cc, pp, unet_scale)
        bar.update(len(ii))
    bar.close()
    return out.reshape(n, n_classes, n_pairs)


def simulate_rounds(errors: np.ndarray, error_t, rounds: list[list[int]], t_min: int = 0, t_max: int = 1000,
                    weights: np.ndarray | None = None,
                    candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`score_latents` would decide, replayed on precomputed errors (n, C, P) whose column p
    holds time-step ``error_t[p]`` (noised with :func:`~diti_sd.timesteps.timestep_noise`).

    Returns (predicted class, UNet calls) per image; used to draw accuracy-against-budget curves
    from one exhaustive set of UNet calls. ``weights``: per column, as ``t_weights`` gives them.
    """
    rounds = validate_rounds(rounds, t_min, t_max)
    column = {int(t): p for p, t in enumerate(np.asarray(error_t).tolist())}
    stages = stage_timesteps(rounds, t_min, t_max)
    missing = sorted({t for s in stages for t in s} - set(column))
    if missing:
        raise ConfigError(f"the errors hold no column for t = {missing[:5]}")
    order = [column[t] for s in stages for t in s]
    errors = errors[:, :, order]
    w = np.ones(len(order)) if weights is None else np.asarray(weights, dtype=float)[order]
    n, n_classes, _ = errors.shape
    alive = np.ones((n, n_classes), bool) if candidates is None else candidates.astype(bool).copy()
    calls = np.zeros(n, dtype=np.int64)
    done = 0
    for new, (_, keep) in zip(stages, rounds):
        calls += alive.sum(1) * len(new)
        done += len(new)
        mean = (errors[:, :, :done] * w[:done]).sum(2) / max(w[:done].sum(), 1e-12)
        mean = np.where(alive, mean, np.inf)
        for i in range(n):
            live = np.flatnonzero(alive[i])
            if len(live) > keep:
                ranked = live[np.argsort(mean[i, live], kind="stable")]
                alive[i, ranked[keep:]] = False
    final = np.where(alive, (errors[:, :, :done] * w[:done]).sum(2) / max(w[:done].sum(), 1e-12), np.inf)
    return final.argmin(1), calls
