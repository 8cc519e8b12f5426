"""Training the DiTi encoder: E and G learn, the DDPM stays frozen; an EMA of E and G is what is saved.

The batch of step s (images, flips, t, noise) comes from a generator seeded by (seed, s), so a run
resumed from a checkpoint draws exactly what the uninterrupted run would have. The EMA is diffusers'
``EMAModel``: at ``train.ema_decay`` from the second step, as the reference's (with ``train.ema_warmup``,
diffusers' warm-up (1 + s) / (10 + s) capped there); mixed precision and the
checkpoint follow the package's one convention (:mod:`diti_sd.training`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..distributed import barrier, world
from ..errors import ConfigError
from ..files import atomic_write, recover_folder
from ..preprocessing import uint8_to_float
from ..recipes import from_dict
from ..seeding import torch_generator
from ..training.checkpoint import Checkpoint, load_checkpoint, remove_checkpoint, save_checkpoint
from ..training.precision import MixedPrecision
from ..work_folders import CHECKPOINT
from .attributed import AttributedDataset, AttributedImages
from .model import MANIFEST, DiTiEncoder

HELPERS = ("optimizer", "ema", "scaler")


class _SeededBatches(torch.utils.data.Sampler):
    """Index batches for steps start..steps-1, batch s drawn from the (seed, s) generator; under ``accelerate
    launch`` each process takes its share of it (``rank::size``)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, steps: int, rank: int = 0, size: int = 1):
        self.n, self.batch_size, self.seed, self.start, self.steps = n, batch_size, seed, start, steps
        self.rank, self.size = rank, size

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.steps):
            batch = torch.randint(self.n, (self.batch_size,), generator=torch_generator(self.seed, step))
            yield batch[self.rank::self.size].tolist()


def run_identity(model: DiTiEncoder, data: AttributedImages) -> dict:
    """What a checkpoint must match beside the recipe: the DDPM the encoder trains against (its weights, hashed as
    they are sampled) and the images it reads (their ids, and their pixels or their files' places and sizes)."""
    ddpm = hashlib.sha256()
    for key, tensor in sorted(model.unet.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        ddpm.update(f"{key}{tuple(tensor.shape)}".encode())
        ddpm.update(flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy().tobytes())
    images = hashlib.sha256("\n".join(data.ids).encode())
    if isinstance(data.images, torch.Tensor):  # drawn in memory (the toy): the pixels themselves
        images.update(data.images.cpu().contiguous().numpy().tobytes())
    else:  # files: where each is and its size (another --data-root with the same names is other images); decoded
        for item in data.images:  # images (a Hugging Face data set's): their pixels
            if isinstance(item, (str, os.PathLike)) and Path(item).is_file():
                images.update(f"{Path(item).resolve()}:{Path(item).stat().st_size}".encode())
            elif hasattr(item, "tobytes"):
                images.update(f"{getattr(item, 'size', '')}{getattr(item, 'mode', '')}".encode() + item.tobytes())
            else:
                images.update(b"?")
    return {"ddpm": ddpm.hexdigest()[:16], "images": images.hexdigest()[:16]}


def _resume(folder: Path, model: DiTiEncoder, optimizer, ema: EMAModel, amp: MixedPrecision,
            identity: dict) -> tuple[int, list]:
    """Load the checkpoint in ``folder``; the step to continue from and the losses so far."""
    checkpoint = load_checkpoint(folder, HELPERS)
    if checkpoint is None:
        return 0, []
    # through the dataclass, so a key added since the checkpoint takes its default (gradient_mode: base)
    saved = from_dict(type(model.recipe), checkpoint.state["recipe"], "the checkpoint's recipe")
    if saved.to_dict() != model.recipe.to_dict():
        raise ConfigError(f"the checkpoint in {folder} was made with another recipe; delete it or pick another --out")
    # a checkpoint written before they were kept is judged by its recipe alone
    for key, what in (("ddpm", "another DDPM (--ddpm)"), ("images", "other images (--data-root, --max-images)")):
        if checkpoint.state.get(key, identity[key]) != identity[key]:
            raise ConfigError(f"the checkpoint in {folder} was made against {what}; rerun with the ones it was made "
                              "with, or pass --overwrite to start afresh")
    model.load_state_dict(checkpoint.weights)
    optimizer.load_state_dict(checkpoint.helpers["optimizer"])
    ema.load_state_dict(checkpoint.helpers["ema"])
    if checkpoint.helpers["scaler"] and amp.scaler.is_enabled():
        amp.load_state_dict(checkpoint.helpers["scaler"])
    return int(checkpoint.state["step"]), list(checkpoint.state["losses"])


def encoder_ema(params, cfg) -> EMAModel:
    """The EMA of E and G: without ``cfg.ema_warmup``, every step after the first at ``cfg.ema_decay`` (the
    reference's ``accumulate`` every step; diffusers' decay is 0 at the first, which copies the weights)."""
    return EMAModel(params, decay=cfg.ema_decay, min_decay=0.0 if cfg.ema_warmup else cfg.ema_decay)


def check_batch_split(cfg) -> None:
    """The batch must split evenly over the processes (``accelerate launch``), so each averages a share of one
    size."""
    size = world()[1]
    if cfg.batch_size % size:
        raise ConfigError(f"train.batch_size {cfg.batch_size} does not split evenly over {size} processes; "
                          f"use a multiple of {size}")


def fit_encoder(model: DiTiEncoder, data: AttributedImages, out: str | os.PathLike, steps: int | None = None,
                resume: bool = False, num_workers: int = 0, progress: bool = True, overwrite: bool = False) -> dict:
    """Train ``model`` on ``data`` and save the EMA weights to ``out`` (``DiTiEncoder.from_pretrained``);
    ``overwrite``: afresh over an encoder, or an interrupted fit, already there.

    Under ``accelerate launch`` (or ``torchrun``) the batch is split over the processes and their gradients
    averaged before each step: every draw is the whole batch's, so N processes train what one would, up to
    floating-point reduction order. The first process writes the checkpoints and the encoder."""
    cfg = model.recipe.train
    steps = cfg.steps if steps is None else steps
    check_batch_split(cfg)
    rank, size = world()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = model.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    ema = encoder_ema(params, cfg)
    amp = MixedPrecision(cfg.mixed_precision, device.type)
    folder = out / CHECKPOINT
    if overwrite:  # the model and data are made: the old encoder's manifest first, so a kill leaves no finished fit
        if rank == 0:
            (out / MANIFEST).unlink(missing_ok=True)
            remove_checkpoint(folder)
        barrier()
    if (folder / "state.json").is_file() and not resume:
        raise ConfigError(f"{out} holds an interrupted encoder fit; pass --resume to continue it or --overwrite to "
                          "start afresh")
    if resume and size > 1:  # one process finishes a folder swap a crash cut short; then all read the checkpoint
        if rank == 0:
            recover_folder(folder)
        barrier()
    identity = run_identity(model, data)
    start, losses = _resume(folder, model, optimizer, ema, amp, identity) if resume else (0, [])
    dataset = AttributedDataset.from_config(data, model.image_size, model.recipe.data)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_SeededBatches(len(dataset), cfg.batch_size, cfg.seed, start, steps, rank, size),
        num_workers=num_workers, pin_memory=device.type == "cuda",
    )
    T = len(model.alphas_cumprod)
    model.train()
    bar = tqdm(total=steps, initial=start, desc="fit DiTi encoder", disable=not progress or rank != 0)
    step, share = start, 0
    for step, pixels in enumerate(loader, start=start):
        g = torch_generator(cfg.seed + 1, step)  # the whole batch's draws; this process's share of each
        x0 = uint8_to_float(pixels.to(device))
        share, shape = len(x0), (cfg.batch_size, *x0.shape[1:])
        if cfg.flip:
            flip = (torch.rand(cfg.batch_size, generator=g) < 0.5)[rank::size]
            x0 = torch.where(flip.view(-1, 1, 1, 1).to(device), x0.flip(-1), x0)
        t = torch.randint(0, T, (cfg.batch_size,), generator=g)[rank::size].to(device)
        noise = torch.randn(shape, generator=g)[rank::size].to(device)
        with amp.autocast():
            loss = model.loss(x0, t, noise)
        optimizer.zero_grad(set_to_none=True)
        amp.backward(loss)
        value = _average_over_processes(params, loss.detach(), size)
        amp.step(optimizer)
        ema.step(params)
        losses.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4g}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps and rank == 0:
            helpers = {"optimizer": optimizer.state_dict(), "ema": ema.state_dict(), "scaler": amp.state_dict()}
            state = {"step": step + 1, "losses": losses, "recipe": model.recipe.to_dict(), **identity}
            save_checkpoint(folder, Checkpoint(model.state_dict(), helpers, state))
    bar.close()
    model.eval()
    ema.copy_to(params)
    summary = {"steps": steps, "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])), "images": len(data),
               "processes": size, "images_per_process_step": share}
    if rank == 0:
        # the losses before the manifest: a finished fit (a manifest, no checkpoint) always has them
        atomic_write(out / "losses.json", lambda tmp: tmp.write_text(json.dumps(losses)))
        model.save_pretrained(out, extra={"train": summary})
        remove_checkpoint(folder)  # the finished encoder is on disk; a later fit into this folder starts afresh
    barrier()
    return summary


def _average_over_processes(params, loss: torch.Tensor, size: int) -> float:
    """Each process's gradients (and loss) replaced by their mean over the processes: the whole batch's, as each
    process's share is the same size."""
    if size > 1:
        for p in params:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(size)
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss = loss / size
    return float(loss)
