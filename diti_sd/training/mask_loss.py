"""``fit.mask_loss``: each shot's denoising loss taken over its object alone (not in the reference).

Where every shot of a class shares its background by accident, an adapter that reconstructs the whole shot
learns the background with the class. Given an object mask per shot (``fit(masks=...)``), the loss is averaged
over the object only, so the background is never a target; the UNet still sees it as context. The prior images
keep their whole loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(squared: torch.Tensor, masks: list, factor: int) -> torch.Tensor:
    """Per sample, the mean of ``squared`` (n, C, h, w) over its object (``fit.mask_loss``): each mask (1, H, W) bool
    averaged over the ``factor`` x ``factor`` pixels of each latent cell (the rows and columns the autoencoder
    drops at the far edges dropped too), so a cell half on the object counts half. A sample without a mask (None)
    takes the whole mean; one whose mask keeps nothing of the latents (a crop that missed the object) counts
    nothing."""
    h, w = squared.shape[-2:]
    weights = []
    for mask in masks:
        if mask is None:
            weights.append(torch.ones(1, h, w))
        else:
            weights.append(F.avg_pool2d(mask[None, :, : h * factor, : w * factor].float(), factor)[0])
    weight = torch.stack(weights).to(squared.device)
    total = weight.flatten(1).sum(1) * squared.shape[1]
    return (squared * weight).flatten(1).sum(1) / total.clamp(min=1e-12)
