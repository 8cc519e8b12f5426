"""Coarse swap: an instance image's coarse content (a Gaussian low-pass) replaced by a prior image's.

Where every shot of a class shares a coarse attribute by accident (one site, one photographer, one
background), an adapter learns it with the class (the premise: diti_sd/coarse.py). Swapping the low-pass of
the shot for that of a generic image of the domain (the prior images) keeps the shot's fine detail and draws
its coarse content from the domain, the way Fourier domain adaptation (Yang and Soatto, CVPR 2020) swaps
low-frequency amplitudes. Given the shot's object mask (``fit(masks=...)``), the object's pixels stay as they are and
only the rest is swapped: its low-pass, or (``fit.swap_background: whole``) every pixel, the donor's background
then replacing the shot's with its fine detail (copy-paste augmentation, Ghiasi et al., CVPR 2021). Not in the
reference; off by default; it costs no UNet call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..coarse import coarse_sigma, gaussian_blur


def coarse_swap(instance: torch.Tensor, donor: torch.Tensor, sigma_fraction: float,
                keep: torch.Tensor | None = None, background: str = "coarse") -> torch.Tensor:
    """``instance`` (3, H, W) uint8 with its low-pass replaced by ``donor``'s (3, H', W' uint8, resized to
    H x W): ``instance - blur(instance) + blur(donor)``, clipped. ``sigma_fraction``: the blur's sigma as a
    fraction of the shorter side, so that the split between coarse and fine is the same at any resolution.
    ``keep``: (1, H, W) bool, the pixels (the object) that stay as they are. ``background``: what is replaced
    outside ``keep``, ``"coarse"`` (the low-pass) or ``"whole"`` (every pixel, by the donor's: needs ``keep``)."""
    if background not in ("coarse", "whole"):
        raise ValueError(f"background must be 'coarse' or 'whole'; got {background!r}")
    if background == "whole" and keep is None:
        raise ValueError("a whole-background swap keeps the object's pixels and replaces the rest: it needs keep")
    x = instance.float()[None]
    d = donor.float()[None]
    if d.shape[-2:] != x.shape[-2:]:
        d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
    if background == "whole":
        out = d.round().clamp(0, 255).to(torch.uint8)[0]
    else:
        sigma = coarse_sigma(sigma_fraction, x.shape)
        out = (x - gaussian_blur(x, sigma) + gaussian_blur(d, sigma)).round().clamp(0, 255).to(torch.uint8)[0]
    return out if keep is None else torch.where(keep, instance, out)
