"""Coarse swap: an instance image's coarse content (a Gaussian low-pass) replaced by a prior image's.

The method's premise is that a fine-grained class lives in fine attributes, which diffusion noise destroys
first, while coarse ones (colour layout, lighting, background) survive it. Where every shot of a class
shares a coarse attribute by accident (one site, one photographer, one background), an adapter learns it
with the class. Swapping the low-pass of the shot for that of a generic image of the domain (the prior
images) keeps the shot's fine detail and draws its coarse content from the domain, the way Fourier domain
adaptation (Yang and Soatto, CVPR 2020) swaps low-frequency amplitudes. Not in the reference; off by
default; it costs no UNet call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, c, h, w) float images, ``sigma`` in pixels, reflected at the borders
    (the kernel is cut to the image so that reflection stays defined)."""
    h, w = images.shape[-2:]
    radius = min(math.ceil(3 * sigma), h - 1, w - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def coarse_swap(instance: torch.Tensor, donor: torch.Tensor, sigma_fraction: float) -> torch.Tensor:
    """``instance`` (3, H, W) uint8 with its low-pass replaced by ``donor``'s (3, H', W' uint8, resized to
    H x W): ``instance - blur(instance) + blur(donor)``, clipped. ``sigma_fraction``: the blur's sigma as a
    fraction of the shorter side, so that the split between coarse and fine is the same at any resolution."""
    x = instance.float()[None]
    d = donor.float()[None]
    if d.shape[-2:] != x.shape[-2:]:
        d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
    sigma = max(sigma_fraction * min(x.shape[-2:]), 0.5)
    out = x - gaussian_blur(x, sigma) + gaussian_blur(d, sigma)
    return out.round().clamp(0, 255).to(torch.uint8)[0]
