"""The training loop for stacked class adapters.

Each optimiser iteration trains a group of classes; every class in the group gets one of its own
images under its own prompt and (with prior preservation) one generic image under the generic
prompt, both denoised with that class's adapter on. Every random draw of class c at its s-th step
comes from a generator seeded by (seed, c, s), and :class:`ClassAdamW` steps each class on its own
counter, so the adapters do not depend on how classes are grouped into batches or processes, and a
resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .backbone import to_pixels
from .optim import ClassAdamW, clip_grad_norm_per_class
from .recipes import FitConfig
from .timesteps import draw_train_t

CHECKPOINT = "checkpoint"


@dataclass
class FitData:
    instance_pixels: list[torch.Tensor]  # per class: (k, 3, H, W) uint8
    prompts: list[str]  # per class
    generic_prompt: str
    prior_latents: torch.Tensor | None = None  # (P, C, h, w)


def _generator(seed: int, c: int, s: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + c) * 1_000_033 + s) % (2**63 - 1))


def _jitter(pixels: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """ColorJitter's brightness and contrast on images in [-1, 1], one factor pair per image."""
    img = (pixels + 1) / 2 * brightness.view(-1, 1, 1, 1)
    img = img.clamp(0, 1)
    gray = (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]).mean((1, 2)).view(-1, 1, 1, 1)
    img = ((img - gray) * contrast.view(-1, 1, 1, 1) + gray).clamp(0, 1)
    return img * 2 - 1


def _signature(cfg: FitConfig, steps: int, seed: int, classes: list[int], data: FitData, adapters) -> str:
    blob = json.dumps(
        {
            "fit": asdict(cfg), "steps": steps, "seed": seed, "classes": classes, "prompts": data.prompts,
            "shots": [int(p.shape[0]) for p in data.instance_pixels], "lora": asdict(adapters.config),
            "prior": None if data.prior_latents is None else list(data.prior_latents.shape),
        },
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_checkpoint(folder: Path, adapters, optimizer, iteration: int, signature: str) -> None:
    """Write into a fresh folder, then swap it in: a crash leaves the old or the new one, never half."""
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(adapters.lora_state_dict(), str(tmp / "adapters.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"iteration": iteration, "signature": signature}))
    old = folder.parent / f".{folder.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, adapters, optimizer, signature: str) -> int:
    if not (folder / "state.json").is_file():
        old = folder.parent / f".{folder.name}.old"
        if not (old / "state.json").is_file():
            return 0
        folder = old
    state = json.loads((folder / "state.json").read_text())
    if state["signature"] != signature:
        raise ValueError(
            f"the checkpoint in {folder} was made by a fit with other data, classes or settings; "
            "delete it or choose another output folder to start afresh"
        )
    adapters.load_lora_state_dict(load_file(str(folder / "adapters.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    return int(state["iteration"])


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
) -> dict:
    """Train ``classes`` (default: all) for ``steps`` steps each. Returns a summary with the loss curve."""
    from accelerate import Accelerator

    classes = list(range(len(data.prompts))) if classes is None else list(classes)
    if cfg.prior and data.prior_latents is None:
        raise ValueError("prior preservation is on but no prior images were given")
    device = backbone.device
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=device.type == "cpu")
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
    optimizer = accelerator.prepare(ClassAdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay))
    all_params = [p for g in params for p in g["params"]]
    if cfg.gradient_checkpointing:
        backbone.unet.enable_gradient_checkpointing()
    backbone.unet.train()

    signature = _signature(cfg, steps, seed, classes, data, adapters)
    folder = Path(checkpoint_dir) / checkpoint_name if checkpoint_dir else None
    start = 0
    if folder is not None and resume:
        start = _load_checkpoint(folder, adapters, optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                                 signature)

    text_lora = bool(adapters.text_parameters())
    with torch.no_grad():
        fixed_context = None if text_lora else backbone.encode_prompts(data.prompts + [data.generic_prompt])
        jitter = cfg.brightness > 0 or cfg.contrast > 0
        cached = None if jitter else [backbone.encode_images(to_pixels(p)) for p in data.instance_pixels]

    losses = []
    bar = tqdm(total=total, initial=start, desc=f"fit {len(classes)} classes", disable=not progress, unit="it")
    ema = None
    try:
        for it in range(start, total):
            group = groups[it % len(groups)]
            class_step = it // len(groups)
            loss = _train_iteration(backbone, adapters, data, cfg, group, class_step, seed, cached,
                                    fixed_context, accelerator)
            accelerator.unscale_gradients(optimizer=optimizer)  # fp16 loss scaling: clip true gradients
            clip_grad_norm_per_class(all_params, cfg.grad_clip, torch.tensor(group))
            inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
            inner.active_classes = torch.tensor(group)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}")
            done = it + 1
            if folder is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
                _save_checkpoint(folder, adapters, inner, done, signature)
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
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    return {"iterations": total, "resumed_from": start, "losses": losses, "group_size": group_size}


def _train_iteration(backbone, adapters, data, cfg, group, class_step, seed, cached, fixed_context, accelerator):
    device = backbone.device
    x0, noise, t, unet_idx, text_idx, prompts, weights = [], [], [], [], [], [], []
    pixels, bright, contr = [], [], []
    for c in group:
        g = _generator(seed, c, class_step)
        k = data.instance_pixels[c].shape[0]
        j = int(torch.randint(k, (1,), generator=g))
        b = 1 + (torch.rand(1, generator=g) * 2 - 1) * cfg.brightness
        ct = 1 + (torch.rand(1, generator=g) * 2 - 1) * cfg.contrast
        t_inst = draw_train_t(1, cfg.t_min, cfg.t_max, g)
        n_inst = torch.randn((1, *backbone.latent_shape), generator=g)
        if cached is None:
            pixels.append(to_pixels(data.instance_pixels[c][j : j + 1]))
            bright.append(b)
            contr.append(ct)
            x0.append(None)
        else:
            x0.append(cached[c][j : j + 1])
        noise.append(n_inst)
        t.append(t_inst)
        unet_idx.append(c)
        text_idx.append(c)
        prompts.append(data.prompts[c])
        weights.append(1.0)
        if cfg.prior:
            p = int(torch.randint(data.prior_latents.shape[0], (1,), generator=g))
            x0.append(data.prior_latents[p : p + 1].to(device))
            noise.append(torch.randn((1, *backbone.latent_shape), generator=g))
            t.append(draw_train_t(1, cfg.t_min, cfg.t_max, g))
            unet_idx.append(c)
            text_idx.append(c)
            use_class_prompt = cfg.prior_prompt == "class"
            prompts.append(data.prompts[c] if use_class_prompt else data.generic_prompt)
            weights.append(cfg.prior_weight)
    if pixels:
        jittered = _jitter(torch.cat(pixels), torch.cat(bright), torch.cat(contr))
        encoded = iter(backbone.encode_images(jittered))
        x0 = [next(encoded)[None] if x is None else x for x in x0]
    x0 = torch.cat([x.to(device, backbone.dtype) for x in x0])
    noise = torch.cat(noise).to(device, backbone.dtype)
    t = torch.cat(t).to(device)
    # the routing stays on through backward: gradient checkpointing re-runs the forward pass there
    with adapters.use(unet_index=unet_idx, text_index=text_idx):
        with accelerator.autocast():
            if fixed_context is None:
                context = backbone.encode_prompts(prompts)
            else:
                lookup = {p: i for i, p in enumerate(data.prompts + [data.generic_prompt])}
                context = fixed_context[torch.tensor([lookup[p] for p in prompts], device=device)]
            x_t = backbone.add_noise(x0, noise, t)
            output = backbone.predict(x_t, t, context)
            target = backbone.target(x0, noise, t)
            per_sample = (output.float() - target.float()).pow(2).flatten(1).mean(1)
            # sum over classes of each class's own loss: every class gets the gradient it would get alone
            loss = (per_sample * torch.tensor(weights, device=device)).sum()
        accelerator.backward(loss)
    return float(loss.detach()) / len(group)
