"""The image encoder E of the DiTi encoder: one of the reference's networks, or a plain conv stack for any size."""

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


# the reference's encoders (model/representation/encoder/): stride-2 convolutions' channels, and after which
# convolution (0-based) the attention block sits; each ends on a 4 x 4 map, so takes 4 * 2^len(channels) px
REFERENCE_ENCODERS = {
    "celeba64": ([64, 128, 128, 128], 1),  # CELEBA64Encoder, 64 px
    "ffhq": ([64, 128, 256, 256, 256], 2),  # FFHQEncoder, 128 px
}


def reference_image_size(name: str) -> int:
    return 4 * 2 ** len(REFERENCE_ENCODERS[name][0])


class ReferenceEncoder(nn.Module):
    """One of the DiTi reference's image encoders (``net.encoder: celeba64`` or ``ffhq``): 3x3 stride-2
    convolutions with GroupNorm(32) and SiLU between them, 4-head self-attention after one of them, the final
    4 x 4 map flattened into a linear layer (1,487,104 parameters for CelebA-64 and z of 512)."""

    def __init__(self, name: str, z_dim: int, in_channels: int = 3):
        super().__init__()
        channels, attention_after = REFERENCE_ENCODERS[name]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, 2, 1)]
        for i in range(1, len(channels)):
            if i - 1 == attention_after:
                layers.append(SelfAttention(channels[i - 1], 4))
            layers += [nn.GroupNorm(32, channels[i - 1]), nn.SiLU(), nn.Conv2d(channels[i - 1], channels[i], 3, 2, 1)]
        layers += [nn.GroupNorm(32, channels[-1]), nn.SiLU(), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1] * 4 * 4, z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
