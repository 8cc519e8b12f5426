"""The training loop for stacked class adapters.

Each optimiser iteration trains a group of classes; every class in the group gets one of its own
images under its own prompt and (with prior preservation) one generic image under the generic
prompt, both denoised with that class's adapter on. Every random draw of class c at its s-th step
comes from a generator seeded by (seed, c, s), and :class:`ClassAdamW` steps each class on its own
counter, so the adapters do not depend on how classes are grouped into batches or processes, and a
resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..preprocessing import random_crop, uint8_to_float
from ..recipes import FitConfig
from ..seeding import TRAIN_DROPOUT, torch_generator
from ..timesteps import draw_train_t
from ..work_folders import CHECKPOINT
from .checkpoint import Checkpoint, load_checkpoint, remove_checkpoint, save_checkpoint
from .coarse_swap import coarse_swap
from .early_stop import HeldOutStop, checks, cost, split_held_out
from .mask_loss import masked_mean
from .optim import ClassAdamW, clip_grad_norm_per_class
from .precision import MixedPrecision
from .signature import fit_signature, pixels_digest, prior_digest

HELPERS = ("optimizer", "scaler")


@dataclass
class FitData:
    # per class, k uint8 images (3, H, W): square at the resolution, or with fit.crop = random, the
    # shorter side at the resolution (a (k, 3, H, W) tensor or a list of tensors)
    instance_pixels: list
    prompts: list[str]  # per class
    generic_prompt: str
    prior_pixels: torch.Tensor | None = None  # (P, 3, H, W) uint8 at the resolution
    # per class, k (1, H, W) bool object masks in the frames of instance_pixels: what the coarse swap keeps and
    # what fit.mask_loss takes the loss over
    instance_masks: list | None = None

    def reads_masks(self, cfg: FitConfig) -> bool:
        """Whether the fit's masks change what it trains (the swap keeps them, or the loss is taken over them)."""
        return self.instance_masks is not None and (cfg.coarse_swap > 0 or cfg.mask_loss)


def _jitter(pixels: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
            contrast_first: torch.Tensor | None = None) -> torch.Tensor:
    """ColorJitter's brightness and contrast on images in [-1, 1], one factor pair per image, applied
    in the order ColorJitter drew (``contrast_first`` per image; default brightness first)."""

    def bright(img):
        return (img * brightness.view(-1, 1, 1, 1)).clamp(0, 1)

    def contr(img):
        gray = (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]).mean((1, 2)).view(-1, 1, 1, 1)
        return ((img - gray) * contrast.view(-1, 1, 1, 1) + gray).clamp(0, 1)

    img = (pixels + 1) / 2
    out = contr(bright(img))
    if contrast_first is not None and contrast_first.any():
        out = torch.where(contrast_first.view(-1, 1, 1, 1), bright(contr(img)), out)
    return out * 2 - 1


def _per_step_encoding(cfg: FitConfig) -> bool:
    """Whether latents must be encoded every step (augmentation or posterior draws) or can be cached."""
    return (cfg.brightness > 0 or cfg.contrast > 0 or cfg.crop != "center" or cfg.latent == "sample"
            or cfg.shift > 0 or cfg.coarse_swap > 0)


def train_scales(cfg: FitConfig, rescale_after: int | None, class_step: int) -> tuple[float, float]:
    """The (UNet, text) LoRA scales that a class's step ``class_step`` (0-based) trains at.

    The reference's first save happens after its step ``rescale_after`` (1-based) and sets the live
    adapters to ``rescale_unet``/``rescale_text``, so its steps ``rescale_after + 1, ...`` train there.
    """
    if rescale_after is not None and class_step >= rescale_after:
        return cfg.rescale_unet, cfg.rescale_text
    return 1.0, 1.0


def _resume(folder: Path, adapters, optimizer, amp: MixedPrecision, identity: dict, stop=None) -> tuple[int, list]:
    """Load the checkpoint in ``folder`` into the adapters, the optimiser, the loss scaler and the early
    stop's best adapters; the iteration to continue from (0 when there is none) and the losses until then (none
    from a checkpoint written before they were kept)."""
    checkpoint = load_checkpoint(folder, HELPERS)
    if checkpoint is None:
        return 0, []
    # a checkpoint written before a part of the identity was kept is judged by the rest
    if any(checkpoint.state.get(key, value) != value for key, value in identity.items() if key != "signature") or \
            checkpoint.state.get("signature") != identity["signature"]:
        raise ConfigError(f"the checkpoint in {folder} was made by a fit with other data, classes, settings, base "
                          "model or precision; delete it or choose another output folder to start afresh")
    adapters.load_lora_state_dict(checkpoint.weights)
    optimizer.load_state_dict(checkpoint.helpers["optimizer"])
    if checkpoint.helpers["scaler"] and amp.scaler.is_enabled():
        amp.load_state_dict(checkpoint.helpers["scaler"])
    if stop:  # read only once the signature says the checkpoint is this fit's
        stop.load_state_dict(load_checkpoint(folder, ("early_stop",)).helpers["early_stop"])
    return int(checkpoint.state["iteration"]), list(checkpoint.state.get("losses", []))


def fit_adapters(
    backbone,
    adapters,
    data: FitData,
    cfg: FitConfig,
    steps: int,
    seed: int = 0,
    classes: list[int] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    callback=None,
    checkpoint_name: str = CHECKPOINT,
    rescale_after: int | None = None,
    score_scales: tuple[float, float] = (1.0, 1.0),
    keep_checkpoint: bool = False,
) -> dict:
    """Train ``classes`` (default: all) for ``steps`` steps each. Returns a summary with the loss curve.

    ``rescale_after``: the steps after this one train at the recipe's ``fit.rescale_unet``/``rescale_text``
    (``Recipe.rescale_after(shots)``; None: scale 1 throughout). ``score_scales``: the (UNet, text) LoRA
    scales the adapters will be scored at, where early stopping reads its held-out errors. ``keep_checkpoint``:
    leave the finished fit's checkpoint in place (removed once the set is saved, :mod:`diti_sd.work_folders`), so
    that a run killed in the work that follows (validation passes, a second fit, the save) resumes by loading these
    adapters, not by fitting them again."""
    classes = list(range(len(data.prompts))) if classes is None else list(classes)
    if cfg.prior and data.prior_pixels is None:
        raise ConfigError("prior preservation is on but no prior images were given")
    held = None
    if cfg.early_stop_every:
        few = {c: len(data.instance_pixels[c]) for c in classes if len(data.instance_pixels[c]) < 2}
        if few:
            raise ConfigError(f"fit.early_stop_every holds one image per class out, but classes {few} have fewer "
                              "than 2; add images or turn early stopping off")
        instance, held = split_held_out(data.instance_pixels, seed, classes)
        masks = None if data.instance_masks is None else split_held_out(data.instance_masks, seed, classes)[0]
        data = FitData(instance, data.prompts, data.generic_prompt, data.prior_pixels, masks)
    amp = MixedPrecision(cfg.mixed_precision, backbone.device.type)
    per_class = 2 if cfg.prior else 1
    group_size = max(1, min(len(classes), cfg.batch_size // per_class))
    groups = [classes[i : i + group_size] for i in range(0, len(classes), group_size)]
    total = steps * len(groups)

    params = [{"params": adapters.unet_parameters(), "lr": cfg.lr}]
    if adapters.text_parameters():
        params.append({"params": adapters.text_parameters(), "lr": cfg.text_lr})
    for group in params:
        for p in group["params"]:
            p.requires_grad_(True)
    optimizer = ClassAdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    all_params = [p for g in params for p in g["params"]]
    if cfg.gradient_checkpointing:
        backbone.unet.enable_gradient_checkpointing()
    backbone.unet.train()

    folder = Path(checkpoint_dir) / checkpoint_name if checkpoint_dir else None
    # what a checkpoint must match to be resumed into this fit
    identity = {"signature": fit_signature(cfg, steps, seed, classes, data, adapters, rescale_after)}
    if folder is not None:  # no checkpoint: nothing to match
        # the shots' and the prior images' pixels, the base (another --model in the same folder is another fit), and
        # the scales the early stop's kept errors were read at
        identity.update(pixels=pixels_digest(data), prior=prior_digest(data), base=backbone.fingerprint(),
                        **({"score_scales": list(score_scales)} if held else {}))
    stop = HeldOutStop(backbone, adapters, held, data.prompts, cfg, seed, classes, score_scales) if held else None
    stop_at = set(checks(steps, cfg.early_stop_every)) if stop else set()
    start, losses = 0, []
    if folder is not None and resume:
        start, losses = _resume(folder, adapters, optimizer, amp, identity, stop)

    text_lora = bool(adapters.text_parameters())
    with torch.no_grad():
        fixed_context = None if text_lora else backbone.encode_prompts(data.prompts + [data.generic_prompt])
        cached = None
        if not _per_step_encoding(cfg) and not data.reads_masks(cfg):  # masks ride with the pixels per step
            cached = ([backbone.encode_images(uint8_to_float(p)) for p in data.instance_pixels],
                      None if data.prior_pixels is None else backbone.encode_batches(data.prior_pixels))

    bar = tqdm(total=total, initial=start, desc=f"fit {len(classes)} classes", disable=not progress, unit="it")
    ema = None
    try:
        for it in range(start, total):
            group = groups[it % len(groups)]
            class_step = it // len(groups)
            loss = _train_iteration(backbone, adapters, data, cfg, group, class_step, seed, cached,
                                    fixed_context, amp, train_scales(cfg, rescale_after, class_step))
            optimizer.active_classes = torch.tensor(group)
            amp.step(optimizer, clip=lambda group=group: clip_grad_norm_per_class(all_params, cfg.grad_clip,
                                                                                  torch.tensor(group)))
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}")
            done = it + 1
            if stop and done % len(groups) == 0 and done // len(groups) in stop_at:
                stop.check(done // len(groups))
            if folder is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
                _checkpoint(folder, adapters, optimizer, amp, stop, done, identity, losses)
            if callback is not None:
                callback(done, loss)
    finally:
        bar.close()
        backbone.unet.eval()
        if cfg.gradient_checkpointing:
            backbone.unet.disable_gradient_checkpointing()
        for p in all_params:
            p.requires_grad_(False)
            p.grad = None
    summary = {"iterations": total, "resumed_from": start, "losses": losses, "group_size": group_size}
    if stop:
        stop.restore()
        summary.update(stop.summary(), early_stop_unet_samples=cost(steps, cfg.early_stop_every,
                                                                    cfg.early_stop_pairs, len(classes)))
    if folder is not None and keep_checkpoint:
        if start < total:  # the adapters as trained (an early stop's best is restored again on loading)
            _checkpoint(folder, adapters, optimizer, amp, stop, total, identity, losses)
    elif folder is not None:
        remove_checkpoint(folder)
    return summary


def _checkpoint(folder: Path, adapters, optimizer, amp: MixedPrecision, stop, done: int, identity: dict,
                losses: list) -> None:
    helpers = {"optimizer": optimizer.state_dict(), "scaler": amp.state_dict(),
               **({"early_stop": stop.state_dict()} if stop else {})}
    state = {"iteration": done, **identity, "losses": [float(v) for v in losses]}
    save_checkpoint(folder, Checkpoint(adapters.lora_state_dict(), helpers, state))


def _latent_shape(backbone, pixels: torch.Tensor) -> tuple[int, ...]:
    """The latent shape of an image of this size (the VAE halves each side, rounding down, per level)."""
    f = backbone.vae_scale_factor
    return (backbone.latent_shape[0], pixels.shape[-2] // f, pixels.shape[-1] // f)


def _train_iteration(backbone, adapters, data, cfg, group, class_step, seed, cached, fixed_context, amp,
                     scales=(1.0, 1.0)):
    device = backbone.device
    size = backbone.resolution
    jitter = cfg.brightness > 0 or cfg.contrast > 0
    whole = cfg.crop == "none"
    x0, noise, t, unet_idx, text_idx, prompts, weights = [], [], [], [], [], [], []
    raw, augment = [], []  # per-step encoding: the pixels of each sample, its jitter and posterior draws
    loss_masks = []  # per sample, the object mask its loss is taken over (fit.mask_loss), else None
    for c in group:
        g = torch_generator(seed, c, class_step)
        k = len(data.instance_pixels[c])
        j = int(torch.randint(k, (1,), generator=g))
        b = 1 + (torch.rand(1, generator=g) * 2 - 1) * cfg.brightness
        ct = 1 + (torch.rand(1, generator=g) * 2 - 1) * cfg.contrast
        image = data.instance_pixels[c][j]
        # the shot's object mask, which the swap keeps (and the masked loss reads): it follows the crop and the shift
        # as a fourth channel
        if data.reads_masks(cfg):
            image = torch.cat([image, data.instance_masks[c][j].to(torch.uint8)])
        # a whole image has its own latent shape; every other transform gives the square one
        shape = _latent_shape(backbone, image) if whole else backbone.latent_shape
        t.append(draw_train_t(1, cfg.t_min, cfg.t_max, g))
        noise.append(torch.randn((1, *shape), generator=g))
        unet_idx.append(c)
        text_idx.append(c)
        prompts.append(data.prompts[c])
        weights.append(1.0)
        if cfg.prior:
            p = int(torch.randint(len(data.prior_pixels), (1,), generator=g))
            noise.append(torch.randn((1, *backbone.latent_shape), generator=g))
            t.append(draw_train_t(1, cfg.t_min, cfg.t_max, g))
            unet_idx.append(c)
            text_idx.append(c)
            prompts.append(data.prompts[c] if cfg.prior_prompt == "class" else data.generic_prompt)
            weights.append(cfg.prior_weight)
        if cached is not None:
            x0.append(cached[0][c][j : j + 1])
            if cfg.prior:
                x0.append(cached[1][p : p + 1])
            continue
        # draws that only the reference's augmentation makes come last, so that a configuration without
        # it keeps the random stream it always had
        samples = [(image, b, ct)]
        if cfg.prior:
            samples.append((data.prior_pixels[p], 1 + (torch.rand(1, generator=g) * 2 - 1) * cfg.brightness,
                            1 + (torch.rand(1, generator=g) * 2 - 1) * cfg.contrast))
        for which, (pixels, bright, contr) in enumerate(samples):
            first = torch.rand(1, generator=g) < 0.5 if jitter else torch.zeros(1, dtype=torch.bool)
            if cfg.crop == "random":
                pixels = random_crop(pixels, size, g)
            if cfg.shift > 0 and which == 0:  # instance images only: the prior images stand for the domain as it is
                steps = cfg.shift // cfg.shift_step
                dy, dx = ((torch.randint(-steps, steps + 1, (2,), generator=g)) * cfg.shift_step).tolist()
                pixels = torch.roll(pixels, shifts=(dy, dx), dims=(-2, -1))
            keep = None
            if pixels.shape[0] == 4:
                pixels, keep = pixels[:3], pixels[3:].bool()
            if cfg.coarse_swap > 0 and which == 0:  # instance images only, drawn last as the shift is
                swap = bool(torch.rand(1, generator=g) < cfg.coarse_swap)
                donor = int(torch.randint(len(data.prior_pixels), (1,), generator=g))
                if swap:
                    pixels = coarse_swap(pixels, data.prior_pixels[donor], cfg.coarse_sigma, keep, cfg.swap_background)
            draw = (torch.randn((1, *_latent_shape(backbone, pixels)), generator=g)
                    if cfg.latent == "sample" else None)
            raw.append(pixels[None])
            augment.append((bright, contr, first, draw))
            # a window that misses the object teaches nothing (weight 0); a mask empty at the source, the whole shot
            loss_masks.append(keep if cfg.mask_loss and which == 0 and bool(image[3].any()) else None)
            x0.append(None)
    if raw:
        x0 = [None] * len(raw)
        for rows in _same_shape(raw):  # whole images of different shapes are encoded apart
            pixels = uint8_to_float(torch.cat([raw[i] for i in rows]))
            if jitter:
                bright, contr, first = (torch.cat([augment[i][k] for i in rows]) for k in range(3))
                pixels = _jitter(pixels, bright, contr, first)
            mean, std = backbone.encode_posterior(pixels)
            if cfg.latent == "sample":
                mean = mean + std * torch.cat([augment[i][3] for i in rows]).to(mean.device, mean.dtype)
            for i, latent in zip(rows, mean[:, None]):
                x0[i] = latent
    total = 0.0
    unet_scale, text_scale = scales
    # one mask stream per step, derived from it, so a resumed fit draws the masks an unbroken one draws
    drop = (cfg.dropout, torch_generator(seed, group[0], class_step, TRAIN_DROPOUT)) if cfg.dropout > 0 else None
    # one UNet batch per latent shape; each class's loss (and so its gradient) is what it would be alone
    for rows in _same_shape(x0):
        part = torch.cat([x0[i].to(device, backbone.dtype) for i in rows])
        eps = torch.cat([noise[i] for i in rows]).to(device, backbone.dtype)
        tt = torch.cat([t[i] for i in rows]).to(device)
        unet_rows = [unet_idx[i] for i in rows]
        text_rows = [text_idx[i] for i in rows]
        # the routing stays on through backward: gradient checkpointing re-runs the forward pass there
        with adapters.use(unet_index=unet_rows, text_index=text_rows, unet_scale=unet_scale, text_scale=text_scale,
                          unet_dropout=drop, text_dropout=drop):
            with amp.autocast():
                if fixed_context is None:
                    context = backbone.encode_prompts([prompts[i] for i in rows])
                else:
                    lookup = {p: i for i, p in enumerate(data.prompts + [data.generic_prompt])}
                    context = fixed_context[torch.tensor([lookup[prompts[i]] for i in rows], device=device)]
                x_t = backbone.add_noise(part, eps, tt)
                output = backbone.predict(x_t, tt, context)
                target = backbone.target(part, eps, tt)
                squared = (output.float() - target.float()).pow(2)
                masks = [loss_masks[i] for i in rows] if loss_masks else []
                per_sample = (masked_mean(squared, masks, backbone.vae_scale_factor)
                              if any(m is not None for m in masks) else squared.flatten(1).mean(1))
                # sum over classes of each class's own loss: every class gets the gradient it would get alone
                loss = (per_sample * torch.tensor([weights[i] for i in rows], device=device)).sum()
            amp.backward(loss)
        total += float(loss.detach())
    return total / len(group)


def _same_shape(tensors: list[torch.Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by shape, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, tensor in enumerate(tensors):
        groups.setdefault(tuple(tensor.shape), []).append(i)
    return list(groups.values())
