"""The frozen DDPM the encoder steers: loading a pretrained one (a face DDPM from the hub or a folder),
and building and training a small one of the real diffusers classes, the encoder's offline stand-in
(tests, smoke runs, `diti-sd encoder train-ddpm`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..backbone import add_noise
from ..preprocessing import uint8_to_float
from ..seeding import torch_generator
from ..training.optim import one_cycle
from .config import EncoderError


@dataclass
class DDPM:
    unet: torch.nn.Module
    scheduler: object
    source: str


def load_ddpm(source: str | os.PathLike, device: str | torch.device = "cpu") -> DDPM:
    """A DDPM pipeline folder or hub id (``unet/`` and ``scheduler/``, e.g. google/ddpm-celebahq-256),
    a folder holding a UNet2DModel's own ``config.json`` plus a ``scheduler_config.json``, or
    ``builtin:granular-ddpm`` (the 16-px DDPM of the synthetic granular images shipped with the package)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from ..backbone import BackboneError, resolve_model_path

    try:
        path = Path(resolve_model_path(source)).expanduser()
    except BackboneError as err:
        raise EncoderError(str(err)) from None
    try:
        if path.is_dir() and (path / "unet").is_dir():
            unet = UNet2DModel.from_pretrained(path, subfolder="unet")
            scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise EncoderError(
                    f"{path} is not a DDPM: expected unet/ and scheduler/ (a DDPMPipeline folder) or a "
                    "UNet2DModel config.json with scheduler_config.json"
                )
            unet = UNet2DModel.from_pretrained(path)
            if not (path / "scheduler_config.json").is_file():
                raise EncoderError(f"{path} has a UNet but no scheduler_config.json; save the DDPM's scheduler there")
            scheduler = DDPMScheduler.from_pretrained(path)
        else:
            unet = UNet2DModel.from_pretrained(str(source), subfolder="unet")
            scheduler = DDPMScheduler.from_pretrained(str(source), subfolder="scheduler")
    except (OSError, ValueError) as err:
        if isinstance(err, EncoderError):
            raise
        raise EncoderError(
            f"could not load the DDPM {str(source)!r}: {err}. Pass a local DDPMPipeline folder or a "
            "reachable hub id such as google/ddpm-celebahq-256"
        ) from err
    if getattr(unet.config, "class_embed_type", None) is not None or unet.config.num_class_embeds:
        raise EncoderError(f"{source} is a class-conditional UNet; the DiTi encoder needs an unconditional DDPM")
    if scheduler.config.prediction_type != "epsilon":
        raise EncoderError(
            f"{source} predicts {scheduler.config.prediction_type!r}; only epsilon-prediction DDPMs are supported"
        )
    unet.requires_grad_(False).eval().to(device)
    return DDPM(unet, scheduler, str(source))


def _groups(channels) -> int:
    return min(32, channels[0] // 2)


def check_ddpm_shape(sample_size: int, channels) -> None:
    """A small DDPM's shape that its UNet can take, said before any image is read: GroupNorm's groups (half the
    first level's channels, at most 32) divide every level's channels, and each level below the first halves a
    side that stays whole."""
    groups = _groups(channels)
    if groups < 1:
        raise EncoderError(f"--channels {','.join(map(str, channels))}: the first level needs at least 2 channels "
                           "(GroupNorm takes half of them as groups); pass e.g. 16,32 or 32,64")
    if any(c % groups for c in channels):
        raise EncoderError(f"--channels {','.join(map(str, channels))}: every level's channels must be a multiple of "
                           f"{groups} (half the first level's, at most 32); pass e.g. 16,32 or 32,64")
    halvings = 2 ** (len(channels) - 1)
    if sample_size % halvings:
        raise EncoderError(f"--size {sample_size}: {len(channels)} levels halve the side {len(channels) - 1} "
                           f"time(s), so it must be a multiple of {halvings}; pass e.g. {halvings * 8}")


def build_ddpm(sample_size: int = 16, channels: tuple[int, ...] = (32, 64), seed: int = 0) -> DDPM:
    from diffusers import DDPMScheduler, UNet2DModel

    check_ddpm_shape(sample_size, channels)
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=sample_size, in_channels=3, out_channels=3, block_out_channels=channels,
        down_block_types=("DownBlock2D",) * len(channels), up_block_types=("UpBlock2D",) * len(channels),
        layers_per_block=1, norm_num_groups=_groups(channels),
    )
    return DDPM(unet, DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear"), "in-memory")


def train_ddpm(ddpm: DDPM, pixels: torch.Tensor, steps: int, batch_size: int = 64, lr: float = 2e-3,
               seed: int = 0, progress: bool = True) -> list[float]:
    """Plain DDPM training (epsilon MSE, t ~ U[0, T)) on uint8 images (N, 3, H, W)."""
    unet, sched = ddpm.unet, ddpm.scheduler
    device = next(unet.parameters()).device
    x_all = uint8_to_float(pixels)
    abar = sched.alphas_cumprod.to(device)  # float32 in diffusers' schedulers
    unet.requires_grad_(True).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    lr_sched = one_cycle(opt, lr, steps)
    g = torch_generator(seed)
    losses = []
    for _ in tqdm(range(steps), desc="train DDPM", disable=not progress, leave=False):
        idx = torch.randint(len(x_all), (batch_size,), generator=g)
        x0 = x_all[idx].to(device)
        t = torch.randint(0, len(abar), (batch_size,), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        loss = (unet(add_noise(abar, x0, noise, t), t).sample - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
        losses.append(float(loss.detach()))
    unet.requires_grad_(False).eval()
    return losses


def save_ddpm(ddpm: DDPM, path: str | os.PathLike) -> Path:
    """The DDPMPipeline layout (model_index.json, unet/, scheduler/), loadable by ``load_ddpm``."""
    from diffusers import DDPMPipeline

    path = Path(path)
    DDPMPipeline(unet=ddpm.unet, scheduler=ddpm.scheduler).save_pretrained(path)
    return path
