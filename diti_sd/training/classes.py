"""One fit of a set of classes: from labelled images to trained adapters, prompts and what the shots showed.

What ``DiTiFewShotClassifier.fit`` runs once per fit (twice with ``auto_refit`` or, where it compares,
``fit.coarse_swap_auto``): the images at the model's resolution, TiF's per-t distance from their latents, the
coarse-shortcut check on their pixels (no UNet call), one rare token and prompt per class, the
prior-preservation images, and the training loop over the classes this process owns (``accelerate launch``
splits them)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import work_folders
from ..coarse import coarse_shortcut, fired, premise_applies, shortcut_warning, validation_breaks
from ..coarse_cutoff import edge_warning, resolve_coarse_sigma
from ..distributed import merge_class_shards, shard, world
from ..errors import CoarseShortcutWarning, ConfigError, DitiWarning
from ..lora.layer import ClassAdapters
from ..preprocessing import mask_pixels, uint8_pixels
from ..prompts import choose_tokens, class_prompts
from ..recipes import Recipe
from ..timesteps import tif_distance
from .early_stop import gather_summary
from .loop import FitData, fit_adapters
from .prior import prior_pixels


@dataclass
class FittedClasses:
    adapters: ClassAdapters
    prompts: list[str]
    tokens: list[str]
    summary: dict  # the loop's record without its losses, the shortcut check and the fit's UNet work
    loss_curve: list
    tif_d: float
    # the one the adapters were trained with: coarse_swap 1 where fit.coarse_swap_premise applied, coarse_sigma
    # resolved where it was auto
    recipe: Recipe


def shots_per_class(y, classes, fit) -> int:
    """The shots of the class with fewest images, or a ConfigError naming each class short of ``fit``'s
    ``needed_shots`` (the held-out image of early stopping included) and the fix."""
    counts = {c: sum(1 for v in y if v == c) for c in classes}
    short = {c: n for c, n in counts.items() if n < fit.needed_shots}
    if short:
        fix = "turn fit.early_stop_every off" if fit.needed_shots > fit.min_shots else "lower fit.min_shots"
        raise ConfigError(f"classes with fewer than {fit.needed_shots} images: {short}; add images or {fix}")
    return min(counts.values())


def fit_classes(backbone, recipe: Recipe, X, y, classes: np.ndarray, shots: int, *, seed, output_dir=None,
                resume=False, callback=None, prior_images=None, prior_dir=None, validation=None, warn=False,
                progress=True, stacklevel=2, keep_checkpoint=False, masks=None) -> FittedClasses:
    """Adapters for ``classes`` on images X with labels y (the recipe's settings for ``shots`` per class). ``warn``:
    give the coarse-shortcut warning before the training it concerns, with what the ``validation`` images (X,
    y), or (X, y, masks) given masks, say of it; ``stacklevel`` as :func:`warnings.warn`'s, from the caller.
    ``keep_checkpoint``: the finished fit's checkpoint stays in :func:`checkpoint_folder` (``output_dir``) until
    the set is saved there (:mod:`diti_sd.work_folders`). ``masks``: one object mask per image of X, which the
    coarse swap keeps (checked by :func:`~diti_sd.data.masks.check_masks`)."""
    crop = recipe.fit.crop == "center"
    mask_pixels_ = None if masks is None else mask_pixels(masks, backbone.resolution, crop=crop)
    pixels = uint8_pixels(X, backbone.resolution)
    index = {c: i for i, c in enumerate(classes.tolist())}
    label_index = [index[v] for v in y]
    members = [[j for j, c in enumerate(label_index) if c == k] for k in range(len(classes))]
    # TiF's per-t weight comes from the train latents as scoring sees them (centre crop, posterior mean)
    latents = backbone.encode_batches(pixels)
    tif_d = tif_distance(latents, label_index)
    recipe, cutoff = resolve_coarse_sigma(recipe, backbone, latents, pixels.shape)  # fit.coarse_sigma: auto
    if cutoff and cutoff["edge"] and warn and world()[0] == 0:
        warnings.warn(edge_warning(cutoff), DitiWarning, stacklevel=stacklevel + 1)
    # whether the shots' blur alone names their class (no UNet call): a shortcut every shot may share; given masks,
    # their backgrounds' blur, since the masks say the class is on the object
    objects = None if masks is None else mask_pixels_ if crop else mask_pixels(masks, backbone.resolution)
    shortcut = coarse_shortcut(pixels, label_index, recipe.fit.coarse_sigma, seed=seed, objects=objects)
    val_masks = validation[2] if validation is not None and len(validation) > 2 else None
    if validation is not None and fired(shortcut) and objects is not None and val_masks is None:
        # the check read the backgrounds; validation images without masks cannot be read for it (their whole blur
        # would be judged on the objects' coarse content, which the masks say may be the class)
        shortcut["validation"] = {"images": len(validation[0]), "breaking": [], "without_masks": True}
    elif validation is not None and fired(shortcut):  # which validation images break it: can the user's data tell
        images = validation[0]  # decoded a batch at a time: a validation split can be gigabytes of pixels
        starts = range(0, len(images), 64)
        batches = (uint8_pixels([images[j] for j in range(i, min(i + 64, len(images)))], backbone.resolution)
                   for i in starts)
        val_objects = None if objects is None else (
            mask_pixels([val_masks[j] for j in range(i, min(i + 64, len(images)))], backbone.resolution)
            for i in starts)
        shortcut["validation"] = validation_breaks(shortcut, pixels, label_index, batches,
                                                   [index[v] for v in validation[1]], objects, val_objects)
    if recipe.fit.coarse_swap_premise and premise_applies(shortcut):  # one fit, with the swap; its recipe says so
        recipe = replace(recipe, fit=replace(recipe.fit, coarse_swap=1.0, coarse_swap_auto=False,
                                             coarse_swap_premise=False))
    message = shortcut_warning(shortcut, recipe.fit.coarse_swap, recipe.fit.coarse_swap_auto) \
        if warn and world()[0] == 0 else None
    if message:
        warnings.warn(message, CoarseShortcutWarning, stacklevel=stacklevel + 1)
    if not crop:  # random windows of, or the whole of, the resized image
        uncropped = uint8_pixels(X, backbone.resolution, crop=False)
        by_class = [[uncropped[j] for j in m] for m in members]
    else:
        by_class = [pixels[m] for m in members]
    masks_by_class = None if masks is None else [[mask_pixels_[j] for j in m] for m in members]
    tokens = choose_tokens(backbone.tokenizer, len(classes), recipe.prompt.token)
    prompts = class_prompts([str(c) for c in classes], recipe.prompt.template, tokens, recipe.prompt.use_class_name)
    prior = None
    if recipe.fit.prior:
        prior = prior_pixels(backbone, recipe, prior_images, Path(prior_dir) / "prior" if prior_dir else None,
                             seed=seed, progress=progress)
    adapters = ClassAdapters(backbone, len(classes), recipe.lora, block_filter=recipe.filter_for(shots))
    rank, size = world()
    owned = shard(list(range(len(classes))), rank, size)  # `accelerate launch`: classes split over processes
    data = FitData(by_class, prompts, recipe.prompt.generic, prior, masks_by_class)
    summary = fit_adapters(backbone, adapters, data, recipe.fit,
                           recipe.steps_for(shots), seed=seed, classes=owned, checkpoint_dir=output_dir,
                           resume=resume, progress=progress and rank == 0, callback=callback,
                           checkpoint_name=checkpoint_name(), rescale_after=recipe.rescale_after(shots),
                           score_scales=(recipe.score.unet_scale, recipe.score.text_scale),
                           keep_checkpoint=keep_checkpoint)
    merge_class_shards(adapters, owned)
    summary = gather_summary(summary, len(classes))
    record = {**{k: v for k, v in summary.items() if k != "losses"}, "coarse_shortcut": shortcut,
              **({"coarse_sigma_auto": cutoff} if cutoff else {}),
              **({"masks": mask_record(mask_pixels_, recipe.fit)} if masks is not None else {}),
              # images denoised while training: the fit's UNet work
              "unet_samples": len(classes) * recipe.steps_for(shots) * (2 if recipe.fit.prior else 1)}
    return FittedClasses(adapters, prompts, tokens, record, summary["losses"], tif_d, recipe)


def mask_record(masks, fit) -> dict:
    """What the fit's summary says of the masks: how many, the share of the pixels they keep (at the resolution)
    and whether the swap (``fit.coarse_swap``) and the loss (``fit.mask_loss``) read them, their only readers in
    training (the shortcut check reads them too: ``coarse_shortcut["background_only"]``)."""
    share = float(np.mean([m.float().mean().item() for m in masks])) if len(masks) else 0.0
    return {"images": len(masks), "object_share": round(share, 4), "read_by_swap": fit.coarse_swap > 0,
            "read_by_loss": fit.mask_loss, **({"swap_background": fit.swap_background} if fit.coarse_swap > 0 else {})}


def checkpoint_name() -> str:
    """The folder in which this process keeps a fit's checkpoint (one a process under ``accelerate launch``: each
    trains its own classes)."""
    return work_folders.checkpoint_name(*world())


def checkpoint_folder(output_dir) -> Path:
    return Path(output_dir) / checkpoint_name()
