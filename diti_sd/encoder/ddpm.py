"""A small unconditional DDPM of the real diffusers classes: the encoder's offline stand-in for a
pretrained face DDPM, trained in minutes on a CPU (tests, smoke runs, `diti-sd encoder train-ddpm`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..backbone import to_pixels
from .model import DDPM


def build_ddpm(sample_size: int = 16, channels: tuple[int, ...] = (32, 64), seed: int = 0) -> DDPM:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=sample_size, in_channels=3, out_channels=3, block_out_channels=channels,
        down_block_types=("DownBlock2D",) * len(channels), up_block_types=("UpBlock2D",) * len(channels),
        layers_per_block=1, norm_num_groups=min(32, channels[0] // 2),
    )
    return DDPM(unet, DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear"), "in-memory")


def train_ddpm(ddpm: DDPM, pixels: torch.Tensor, steps: int, batch_size: int = 64, lr: float = 2e-3,
               seed: int = 0, progress: bool = True) -> list[float]:
    """Plain DDPM training (epsilon MSE, t ~ U[0, T)) on uint8 images (N, 3, H, W)."""
    unet, sched = ddpm.unet, ddpm.scheduler
    device = next(unet.parameters()).device
    x_all = to_pixels(pixels)
    abar = sched.alphas_cumprod.to(device)
    unet.requires_grad_(True).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc="train DDPM", disable=not progress, leave=False):
        idx = torch.randint(len(x_all), (batch_size,), generator=g)
        x0 = x_all[idx].to(device)
        t = torch.randint(0, len(abar), (batch_size,), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        a = abar[t].view(-1, 1, 1, 1)
        loss = (unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample - noise).pow(2).mean()
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
