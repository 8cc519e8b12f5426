"""Images to pixels at the model's resolution, the one transform that fitting and scoring share.

Scoring (and, by default, fitting) resizes the shorter side to the resolution (bicubic, antialiased) and
takes the centre square, as the Stable Diffusion training pipelines do. The reference trains on the
whole resized image (``fit.crop: none``, bilinear) or, as an option, on random square windows of it.
Pixels are kept as uint8 between steps (a quarter of the memory of floats) and turned into [-1, 1]
floats where the VAE reads them.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .data.images import as_image_sequence, load_image
from .data.masks import load_mask


def resize_short_side(batch: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Images (n, 3, H, W) in [0, 1] with the shorter side resized to ``size`` (antialiased). The long side
    is truncated, ``int(size * long / short)``, as torchvision's ``Resize(size)`` sizes it (the reference's)."""
    h, w = batch.shape[-2:]
    if min(h, w) == size:
        return batch
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)
    nh, nw = (size, new_long) if h <= w else (new_long, size)
    return torch.nn.functional.interpolate(batch, size=(nh, nw), mode=mode, align_corners=False,
                                           antialias=True).clamp(0, 1)


def resize_center_crop(batch: torch.Tensor, size: int) -> torch.Tensor:
    batch = resize_short_side(batch, size)
    nh, nw = batch.shape[-2:]
    # torchvision's CenterCrop: the offset rounded, half to even (Python's round)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return batch[..., top : top + size, left : left + size]


def _as_float(image: Image.Image) -> torch.Tensor:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected PIL images, got {type(image).__name__}")
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def to_pixels(images, resolution: int) -> torch.Tensor:
    """PIL images (or an image tensor batch in [0, 1]) -> pixels (n, 3, r, r) in [-1, 1]: the shorter side
    resized to ``resolution``, then the centre square; no flip, no random crop."""
    if isinstance(images, torch.Tensor):
        batch = images if images.dim() == 4 else images[None]
        return resize_center_crop(batch.float(), resolution) * 2 - 1
    out = [resize_center_crop(_as_float(image)[None], resolution) for image in images]
    return torch.cat(out) * 2 - 1 if out else torch.empty(0, 3, resolution, resolution)


def to_pixels_uncropped(images, resolution: int) -> list[torch.Tensor]:
    """PIL images -> pixels in [-1, 1], shorter side resized to ``resolution`` (bilinear, antialiased), not
    cropped: the reference's training transform. One (3, H, W) tensor each."""
    return [resize_short_side(_as_float(image)[None], resolution, "bilinear")[0] * 2 - 1 for image in images]


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] -> uint8."""
    return ((pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (as stored to save memory) -> floats in [-1, 1]; float input passes through."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images


def uint8_pixels(X, resolution: int, batch_size: int = 16, crop: bool = True):
    """Images (paths, PIL images or tensors) -> uint8 pixels at ``resolution``: a centre-cropped
    (n, 3, r, r) tensor, or with ``crop=False`` a list of images whose shorter side is at the resolution."""
    X = as_image_sequence(X)
    out = []
    for start in range(0, len(X), batch_size):
        images = [load_image(X[i]) for i in range(start, min(len(X), start + batch_size))]
        if crop:
            out.append(to_uint8(to_pixels(images, resolution)))
        else:
            out.extend(to_uint8(p) for p in to_pixels_uncropped(images, resolution))
    return torch.cat(out) if crop else out


def mask_pixels(masks, resolution: int, crop: bool = True):
    """Object masks (anything :func:`~diti_sd.data.masks.load_mask` reads, one per image, each its image's size,
    as ``check_masks`` checked) -> (1, r, r) bool at ``resolution``, resized and cropped by the functions that
    resize and crop the images (:func:`resize_center_crop`, bicubic; with ``crop=False`` :func:`resize_short_side`,
    bilinear, the shorter side at the resolution, as the whole-image training reads them), then above half. One
    at a time: a few-shot set's masks at full size can be gigabytes."""
    out = []
    for i in range(len(masks)):
        m = load_mask(masks[i]).float()[None, None]
        m = resize_center_crop(m, resolution) if crop else resize_short_side(m, resolution, "bilinear")
        out.append(m[0] >= 0.5)
    return torch.stack(out) if crop else out


def random_crop(image: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """A ``size`` x ``size`` window of ``image`` (..., H, W) at a position drawn from ``g``."""
    h, w = image.shape[-2:]
    top = int(torch.randint(h - size + 1, (1,), generator=g))
    left = int(torch.randint(w - size + 1, (1,), generator=g))
    return image[..., top : top + size, left : left + size]
