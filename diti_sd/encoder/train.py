"""Training the DiTi encoder: E and G learn, the DDPM stays frozen; an EMA of E and G is what is saved.

The batch of step s (images, flips, t, noise) comes from a generator seeded by (seed, s), so a run
resumed from a checkpoint draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._io import atomic_write
from ..backbone import uint8_to_float
from ..errors import ConfigError
from ..recipes import from_dict
from .attributed import AttributedDataset, AttributedImages
from .model import DiTiEncoder

CHECKPOINT = "checkpoint.pt"


def _generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


class _SeededBatches(torch.utils.data.Sampler):
    """Index batches for steps start..steps-1, batch s drawn from the (seed, s) generator."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, steps: int):
        self.n, self.batch_size, self.seed, self.start, self.steps = n, batch_size, seed, start, steps

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield torch.randint(self.n, (self.batch_size,), generator=_generator(self.seed, step)).tolist()


def _ema_update(ema: dict[str, torch.Tensor], model: DiTiEncoder, decay: float) -> None:
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[name].mul_(decay).add_(value.detach().float(), alpha=1 - decay)
            else:
                ema[name].copy_(value)


def _save_checkpoint(path: Path, model, ema, optimizer, step: int, losses: list[float]) -> None:
    state = {"model": model.state_dict(), "ema": ema, "optimizer": optimizer.state_dict(), "step": step,
             "losses": losses, "recipe": model.recipe.to_dict()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def fit_encoder(model: DiTiEncoder, data: AttributedImages, out: str | os.PathLike, steps: int | None = None,
                resume: bool = False, num_workers: int = 0, progress: bool = True) -> dict:
    """Train ``model`` on ``data`` and save the EMA weights to ``out`` (``DiTiEncoder.from_pretrained``)."""
    cfg = model.recipe.train
    steps = cfg.steps if steps is None else steps
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = model.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    ema = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    start, losses = 0, []
    ckpt_path = out / CHECKPOINT
    if ckpt_path.is_file() and not resume:
        raise ConfigError(f"{out} holds an interrupted encoder fit; pass --resume to continue it or delete {ckpt_path}")
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        # through the dataclass, so a key added since the checkpoint takes its default (gradient_mode: base)
        if from_dict(type(model.recipe), state["recipe"], "the checkpoint's recipe").to_dict() != model.recipe.to_dict():
            raise ConfigError(
                f"the checkpoint in {out} was made with another recipe; delete {ckpt_path} or pick another --out"
            )
        model.load_state_dict(state["model"])
        ema = state["ema"]
        optimizer.load_state_dict(state["optimizer"])
        start, losses = int(state["step"]), list(state["losses"])
    ema = {k: v.to(device) for k, v in ema.items()}
    use_amp = cfg.mixed_precision in ("fp16", "bf16") and device.type == "cuda"
    amp_dtype = torch.float16 if cfg.mixed_precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    dataset = AttributedDataset(data, model.image_size, model.recipe.data.crop)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_SeededBatches(len(dataset), cfg.batch_size, cfg.seed, start, steps),
        num_workers=num_workers, pin_memory=device.type == "cuda",
    )
    T = len(model.alphas_cumprod)
    model.train()
    bar = tqdm(total=steps, initial=start, desc="fit DiTi encoder", disable=not progress)
    step = start
    for step, pixels in enumerate(loader, start=start):
        g = _generator(cfg.seed + 1, step)
        x0 = uint8_to_float(pixels.to(device))
        if cfg.flip:
            flip = torch.rand(len(x0), generator=g) < 0.5
            x0 = torch.where(flip.view(-1, 1, 1, 1).to(device), x0.flip(-1), x0)
        t = torch.randint(0, T, (len(x0),), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            loss = model.loss(x0, t, noise)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # EMA warm-up (as diffusers' EMAModel): a short run is not frozen at its initial weights
        _ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4g}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
            _save_checkpoint(ckpt_path, model, ema, optimizer, step + 1, losses)
    bar.close()
    model.eval()
    trained = model.state_dict()
    model.load_state_dict({k: v.to(trained[k].dtype) for k, v in ema.items()})
    summary = {"steps": steps, "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])), "images": len(data)}
    model.save_pretrained(out, extra={"train": summary})
    (out / "losses.json").write_text(json.dumps(losses))
    if ckpt_path.is_file():
        ckpt_path.unlink()  # the finished encoder is on disk; a later fit into this folder starts afresh
    return summary
