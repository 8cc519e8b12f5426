"""The prior-preservation images a fit denoises under the generic prompt with each class's adapter on."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.images import list_images
from ..distributed import is_main
from ..errors import MissingFileError
from ..files import atomic_write, write_json
from ..preprocessing import uint8_pixels
from ..recipes import Recipe
from ..sampling import sample_images

IDENTITY = "prior.json"  # beside the PNGs: what they were sampled from


def prior_pixels(backbone, recipe: Recipe, prior_images=None, cache_dir=None, seed: int = 0,
                 progress: bool = True) -> torch.Tensor:
    """The prior-preservation images as uint8 pixels: ``prior_images`` if given, else the recipe's
    ``fit.prior_folder``, else the base model's own samples under the generic prompt, cached as PNGs in
    ``cache_dir`` so that a resumed fit reads the same images instead of sampling again."""
    cfg = recipe.fit
    if prior_images is not None:
        return uint8_pixels(prior_images, backbone.resolution)
    if cfg.prior_folder:
        files = list_images(cfg.prior_folder)
        if not files:
            raise MissingFileError(f"fit.prior_folder {cfg.prior_folder} holds no images")
        return uint8_pixels(files[: cfg.prior_images], backbone.resolution)
    cache = Path(cache_dir) if cache_dir else None
    # what the cached PNGs were sampled from: a fit into a folder another base, prompt or sampler wrote (an
    # --overwrite) samples its own instead of training on theirs
    identity = {"base": backbone.fingerprint(), "prompt": recipe.prompt.generic, "images": cfg.prior_images,
                "steps": cfg.prior_sample_steps, "guidance": cfg.prior_guidance, "seed": int(seed),
                "resolution": backbone.resolution}
    if cache is not None and _read_identity(cache) == identity and len(list_images(cache)) >= cfg.prior_images:
        return uint8_pixels(list_images(cache)[: cfg.prior_images], backbone.resolution)
    images = sample_images(backbone, [recipe.prompt.generic] * cfg.prior_images, steps=cfg.prior_sample_steps,
                           guidance=cfg.prior_guidance, seed=seed, progress=progress, desc="prior images")
    # uint8 in the memory layout the PNG cache reads back: a resumed fit sees the same priors, bit for bit
    # (the VAE's convolutions round differently on the channels-last tensors the decoder returns)
    pixels = (images * 255).round().clamp(0, 255).to(torch.uint8).contiguous()
    if cache is not None and is_main():
        from PIL import Image

        (cache / IDENTITY).unlink(missing_ok=True)  # first: PNGs half rewritten are never read as the old set's
        # the PNGs hold these very bytes (torchvision's save_image rounds x * 255 + 0.5 down, which
        # differs from round() by one level on a few pixels, and a rerun read those)
        for i, image in enumerate(pixels):
            atomic_write(cache / f"{i:04d}.png", lambda tmp, image=image: Image.fromarray(
                image.permute(1, 2, 0).numpy()).save(tmp, format="png"))
        write_json(cache / IDENTITY, identity)  # last: the PNGs above are whole
    return pixels


def _read_identity(cache: Path) -> dict | None:
    try:
        return json.loads((cache / IDENTITY).read_text())
    except (OSError, ValueError):  # none yet, or a cache written before it was kept: sampled again
        return None
