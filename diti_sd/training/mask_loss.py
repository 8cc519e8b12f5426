"""``fit.mask_loss``: each shot's denoising loss taken over its object alone (not in the reference).

Where every shot of a class shares its background by accident, an adapter that reconstructs the whole shot
learns the background with the class. Given an object mask per shot (``fit(masks=...)``), the loss is averaged
over the object only, so the background is never a target; the UNet still sees it as context. The prior images
keep their whole loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(squared: torch.Tensor, masks: list) -> torch.Tensor:
    """Per sample, the mean of ``squared`` (n, C, h, w) over its object (``fit.mask_loss``): each mask (1, H, W) bool
    area-averaged to the latents' (h, w), so a latent cell half on the object counts half. A sample without a mask,
    or whose mask keeps nothing there, takes the whole mean."""
    weights = []
    for mask in masks:
        w = None if mask is None else F.interpolate(mask.float()[None], size=squared.shape[-2:], mode="area")[0]
        weights.append(torch.ones(1, *squared.shape[-2:]) if w is None or not w.sum() else w)
    w = torch.stack(weights).to(squared.device)
    return (squared * w).flatten(1).sum(1) / (w.flatten(1).sum(1) * squared.shape[1])
