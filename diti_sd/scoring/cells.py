"""Which latent cells an image's denoising error is taken over (``score.cells``).

The reference takes the error over the whole latent (``all``). Under ``object`` each cell's squared error is
weighted by the share of the cell's pixels inside the image's object mask, so that where the shots' backgrounds
shared an accident (a colour, a texture) the background's cells do not vote. Every image scored that way needs a
mask: the test images' (``predict(X, masks=...)``) and the validation pass's (fit's ``validation_masks``, or the
shots' own masks for a held-out share), given as such or read off the base
(:class:`~diti_sd.attention_masks.AttentionMasks`, images x prompts x times more UNet calls). The weights cost no
UNet call: the masks are cropped as the images are (:func:`~diti_sd.preprocessing.mask_pixels`) and averaged over
each latent cell's pixels.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..attention_masks import AttentionMasks, resolve_masks
from ..data.images import as_image_sequence
from ..data.masks import MaskError, as_mask_sequence, check_masks
from ..errors import ConfigError, DitiWarning
from ..preprocessing import mask_pixels

HOW = "pass each image's object mask (masks=..., diti-sd predict --masks DIR or --attention-masks WORD)"
VALIDATION_HOW = ("pass the validation images' masks (fit's validation_masks=...; diti-sd fit --masks DIR holding "
                  "theirs too, or --attention-masks WORD)")


def require_masks(cells: str, masks, what: str, fix: str = HOW) -> None:
    """One line before any work where ``masks`` and ``score.cells`` disagree: masks that scoring would not read,
    or images that ``score.cells: object`` cannot score without theirs (``fix`` says how to give them)."""
    if cells == "all" and masks is not None:
        raise ConfigError(f"{what} got masks, but this classifier scores whole images (score.cells: all); leave "
                          "the masks out, or fit with score.cells: object")
    if cells == "object" and masks is None:
        raise ConfigError(f"this classifier scores each image's object cells (score.cells: object), but {what} got "
                          f"no masks; {fix}")


def object_cells(masks, resolution: int, factor: int) -> torch.Tensor:
    """Object masks (one per image, each its image's size) -> (n, 1, r / f, r / f) float: each latent cell's
    share of object pixels, the masks resized and cropped as the images are for scoring."""
    return F.avg_pool2d(mask_pixels(masks, resolution).float(), factor)


def cell_weights(cells: str, masks, X, backbone, what: str = "predict", progress: bool = False, rows=None,
                 path=None):
    """The weights ``score.cells`` scores images ``X`` with: None under ``all``; under ``object``,
    :func:`object_cells` of ``masks`` (or of the masks an :class:`AttentionMasks` reads off ``backbone``).
    ``rows``: only these images' (a process's share, or a class-balanced subset). Masks given as such are checked
    against every image of ``X`` (their count, sizes, and that each keeps some pixel at the model's resolution),
    so that every process stops alike and an error names the image by its place in ``X``. Masks read off the base
    are read for ``rows`` alone, each with the noise of its place in ``X``; one that keeps nothing leaves its
    image scored on every cell, with a warning; with ``path`` they are kept there and read back by a rerun on the
    same images (:func:`~diti_sd.attention_masks.resolve_masks`)."""
    require_masks(cells, masks, what)
    if cells == "all":
        return None
    X = as_image_sequence(X)
    rows = list(range(len(X))) if rows is None else [int(i) for i in rows]
    factor = backbone.vae_scale_factor
    if isinstance(masks, AttentionMasks):
        read = resolve_masks(masks, backbone, [X[i] for i in rows], progress, path, resume=True, indices=rows)[0]
        weights = object_cells(read, backbone.resolution, factor)
        empty = weights.flatten(1).sum(1) == 0
        if empty.any():
            warnings.warn(f"{int(empty.sum())} of {len(rows)} masks read off the base keep no pixel at the model's "
                          "resolution: those images are scored on every cell", DitiWarning, stacklevel=3)
            weights[empty] = 1.0
        return weights
    masks = check_masks(as_mask_sequence(masks), X, what=what)
    weights = object_cells(masks, backbone.resolution, factor)
    empty = [i for i, w in enumerate(weights) if not float(w.sum()) > 0]
    if empty:
        raise MaskError(f"{len(empty)} of {len(X)} masks keep no pixel at the model's resolution (first: mask "
                        f"{empty[0]}), so score.cells: object has nothing to score those images on; check that the "
                        "object is bright in them")
    return weights[rows]
