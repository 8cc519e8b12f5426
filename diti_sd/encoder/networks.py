"""The image encoder E of the DiTi encoder: the reference's CelebA-64 network, or a plain conv stack for other sizes."""

from __future__ import annotations

import math

import torch
from torch import nn


class ImageEncoder(nn.Module):
    """x_0 in [-1, 1] -> z: strided conv stages, global average pool, linear (any image size; ``net.encoder:
    conv``)."""

    def __init__(self, z_dim: int, channels: list[int], in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        prev = channels[0]
        for ch in channels:
            layers += [
                nn.GroupNorm(min(32, prev // 4 or 1), prev), nn.SiLU(), nn.Conv2d(prev, ch, 3, padding=1),
                nn.GroupNorm(min(32, ch // 4 or 1), ch), nn.SiLU(), nn.Conv2d(ch, ch, 4, stride=2, padding=1),
            ]
            prev = ch
        layers += [nn.GroupNorm(min(32, prev // 4 or 1), prev), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention over positions with a residual, as guided diffusion's ``AttentionBlock`` (legacy
    head order: the channels split into heads before q, k and v); the output projection starts at zero."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(32, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        per_head = c // self.heads
        q, k, v = self.qkv(self.norm(flat)).reshape(b * self.heads, 3 * per_head, -1).split(per_head, dim=1)
        weights = torch.softmax(torch.einsum("bct,bcs->bts", q, k).float() / math.sqrt(per_head), dim=-1)
        out = torch.einsum("bts,bcs->bct", weights.to(v.dtype), v).reshape(b, c, -1)
        return (flat + self.proj_out(out)).reshape(b, c, *spatial)


class ReferenceCelebA64Encoder(nn.Module):
    """The DiTi reference's ``CELEBA64Encoder`` (``net.encoder: reference``): four stride-2 3x3 convolutions
    (64, 128, 128, 128 channels) with GroupNorm(32) and SiLU between them, 4-head self-attention after the second,
    the 4 x 4 x 128 map flattened into a linear layer; 1,487,104 parameters for z of 512. 64-px images only."""

    def __init__(self, z_dim: int, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 2, 1),
            nn.GroupNorm(32, 64), nn.SiLU(), nn.Conv2d(64, 128, 3, 2, 1),
            SelfAttention(128, 4),
            nn.GroupNorm(32, 128), nn.SiLU(), nn.Conv2d(128, 128, 3, 2, 1),
            nn.GroupNorm(32, 128), nn.SiLU(), nn.Conv2d(128, 128, 3, 2, 1),
            nn.GroupNorm(32, 128), nn.SiLU(), nn.Flatten(),
        )
        self.head = nn.Linear(128 * 4 * 4, z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
