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

import torch
import torch.nn.functional as F

from ..attention_masks import AttentionMasks, resolve_masks
from ..data.images import as_image_sequence
from ..data.masks import MaskError, as_mask_sequence, check_masks
from ..errors import ConfigError
from ..preprocessing import mask_pixels

HOW = "pass each image's object mask (masks=..., diti-sd predict --masks DIR or --attention-masks WORD)"
VALIDATION_HOW = ("pass the validation images' masks (fit's validation_masks=..., diti-sd fit --masks DIR holding "
                  "theirs too), or the shots' masks where a share of them is held out (fit's masks=...)")


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


def cell_weights(cells: str, masks, X, backbone, what: str = "predict", progress: bool = False, rows=None):
    """The weights ``score.cells`` scores images ``X`` with: None under ``all``; under ``object``,
    :func:`object_cells` of ``masks`` (or of the masks an :class:`AttentionMasks` reads off ``backbone``), each
    image's mask checked against it and required to keep some pixel at the model's resolution. ``rows``: only
    these images' (a process's share), the masks' count still checked against all of ``X``."""
    require_masks(cells, masks, what)
    if cells == "all":
        return None
    X = as_image_sequence(X)
    if not isinstance(masks, AttentionMasks):
        masks = as_mask_sequence(masks)
        if len(masks) != len(X):
            raise MaskError(f"{what} got {len(masks)} masks for {len(X)} images; pass one mask per image, in their "
                            "order")
    if rows is not None:
        X = [X[i] for i in rows]
        masks = masks if isinstance(masks, AttentionMasks) else [masks[i] for i in rows]
    if isinstance(masks, AttentionMasks):
        masks = resolve_masks(masks, backbone, X, progress)[0]
    masks = check_masks(masks, X, what=what)
    weights = object_cells(masks, backbone.resolution, backbone.vae_scale_factor)
    empty = [i for i, w in enumerate(weights) if not float(w.sum()) > 0]
    if empty:
        raise MaskError(f"{len(empty)} of {len(X)} masks keep no pixel at the model's resolution (first: mask "
                        f"{empty[0]}), so score.cells: object has nothing to score those images on; check that the "
                        "object is bright in them")
    return weights
