"""Training a small base model from scratch on a domain (the demo's shipped model, test fixtures).

Two stages, as latent diffusion does: an autoencoder (the VAE, reconstruction plus a small KL term),
then the UNet on the frozen VAE's latents. Each image is captioned either by the generic prompt alone
(``captions: generic``) or, as web captions describe real images, by its attributes (``captions:
attributes``: texture and background colour, the generic prompt for a ``caption_dropout`` share), so
that the base knows its domain's attributes by name and a class adapter can steer towards them. The
text encoder stays as built: it only has to give different captions different contexts.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import yaml
from tqdm.auto import tqdm

from ...constraints import POSITIVE, Each, Interval, Options
from ...errors import ConfigError
from ...seeding import torch_generator
from ...training.optim import one_cycle
from .base_checkpoint import StageCheckpoints


def train_vae(backbone, pixels: torch.Tensor, steps: int, batch_size: int = 16, lr: float = 1e-3,
              kl_weight: float = 1e-6, seed: int = 0, progress: bool = True, keep=None) -> list[float]:
    """Fit the VAE to reconstruct ``pixels`` (N, 3, H, W) in [-1, 1]; sets scaling_factor from the data.
    ``keep`` (a :class:`StageCheckpoints`) continues from its checkpoint and writes new ones."""
    vae = backbone.vae
    vae.requires_grad_(True)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    g = torch_generator(seed)
    losses = keep.restore("vae", backbone, opt, None, g) if keep else []
    for step in tqdm(range(len(losses), steps), initial=len(losses), total=steps, desc="train VAE",
                     disable=not progress, leave=False):
        idx = torch.randint(len(pixels), (batch_size,), generator=g)
        x = pixels[idx].to(backbone.device, vae.dtype)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g).to(x.device, x.dtype)
        recon = vae.decode(z).sample
        loss = (recon - x).pow(2).mean() + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if keep:
            keep.step("vae", step + 1, steps, backbone, opt, None, g)
    vae.eval()
    vae.requires_grad_(False)
    with torch.no_grad():
        # unit-variance latents, as SD's 0.18215 does for its VAE
        means = torch.cat([vae.encode(pixels[i : i + 64].to(backbone.device, vae.dtype)).latent_dist.mean
                           for i in range(0, len(pixels), 64)])
        vae.register_to_config(scaling_factor=float(1.0 / means.float().std()))
    return losses


def train_unet(backbone, pixels: torch.Tensor, prompt: str, steps: int, batch_size: int = 32, lr: float = 1e-3,
               seed: int = 0, progress: bool = True, latents: torch.Tensor | None = None,
               captions: list[str] | None = None, caption_dropout: float = 0.0, keep=None) -> list[float]:
    """Train the UNet (all weights) to denoise the images' latents, t ~ U[0, T), under ``prompt``, or
    under each image's caption in ``captions`` with ``prompt`` for a ``caption_dropout`` share of samples.
    ``keep`` (a :class:`StageCheckpoints`) continues from its checkpoint and writes new ones."""
    unet = backbone.unet
    if latents is None:
        latents = torch.cat([backbone.encode_images(pixels[i : i + 64]) for i in range(0, len(pixels), 64)])
    vocabulary = sorted(set(captions or [])) + [prompt]
    generic = len(vocabulary) - 1
    position = {c: i for i, c in enumerate(vocabulary[:-1])}
    caption_index = torch.tensor([position[c] for c in captions] if captions else [generic] * len(latents))
    with torch.no_grad():
        contexts = backbone.encode_prompts(vocabulary)
    unet.requires_grad_(True)
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    sched = one_cycle(opt, lr, steps)
    g = torch_generator(seed)
    losses = keep.restore("unet", backbone, opt, sched, g) if keep else []
    bar = tqdm(range(len(losses), steps), initial=len(losses), total=steps, desc="train UNet", disable=not progress,
               leave=False)
    for step in bar:
        idx = torch.randint(len(latents), (batch_size,), generator=g)
        x0 = latents[idx].to(backbone.device)
        noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
        t = torch.randint(0, backbone.num_train_timesteps, (batch_size,), generator=g).to(x0.device)
        which = caption_index[idx]
        if captions and caption_dropout > 0:
            which = torch.where(torch.rand(batch_size, generator=g) < caption_dropout, generic, which)
        out = backbone.predict(backbone.add_noise(x0, noise, t), t, contexts[which.to(contexts.device)])
        loss = (out.float() - backbone.target(x0, noise, t).float()).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if keep:
            keep.step("unet", step + 1, steps, backbone, opt, sched, g)
    unet.eval()
    unet.requires_grad_(False)
    return losses


@dataclass
class BaseRecipe:
    """How a tiny base model of the benchmark is made (``recipes/base/*.yaml``; one may ``inherit`` another)."""

    name: str = "custom"
    seed: int = 0
    resolution: int = 16
    latent_factor: int = 2
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64])
    cross_attention_dim: int = 32
    prediction_type: str = "epsilon"
    prompt: str = "a photo"  # the generic prompt
    captions: str = "generic"  # generic: every image under `prompt`; attributes: its texture and background
    caption_dropout: float = 0.1  # with attribute captions, the share of samples under `prompt`
    domain: dict = field(default_factory=dict)  # SyntheticSpec fields
    vae_from: str = ""  # a base model (folder or builtin:NAME) whose VAE is kept as it is; vae_* then unused
    n_images: int = 2000  # generic images of the domain (texture, background, shape all independent)
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_lr: float = 2e-3
    unet_steps: int = 1200
    unet_batch: int = 48
    unet_lr: float = 2e-3

    CONSTRAINTS: ClassVar[dict] = {
        "resolution": Interval(8), "latent_factor": Interval(1), "block_out_channels": Each(Interval(1), min_len=1),
        "cross_attention_dim": Interval(1), "prediction_type": Options("epsilon", "v_prediction"),
        "captions": Options("generic", "attributes"), "caption_dropout": Interval(0, 1), "n_images": Interval(1),
        "vae_steps": Interval(1), "vae_batch": Interval(1), "vae_lr": POSITIVE,
        "unet_steps": Interval(1), "unet_batch": Interval(1), "unet_lr": POSITIVE,
    }

    def check(self, where: str) -> None:
        """The domain's keys are :class:`SyntheticSpec`'s (but ``size``: the resolution); the VAE halves the side
        to the latents' in whole steps. Said when the recipe loads, before any image is drawn."""
        from ...recipes import from_dict
        from ...testing.tiny import check_tiny_shape
        from .data import SyntheticSpec

        if "size" in self.domain:
            raise ConfigError(f"{where}.domain.size: the images' side is the recipe's resolution; set resolution")
        from_dict(SyntheticSpec, self.domain, f"{where}.domain")
        check_tiny_shape(self.resolution, self.latent_factor)


def load_base_recipe(name_or_path: str | os.PathLike, overrides=None) -> BaseRecipe:
    """A base-model recipe registered in ``recipes/base/`` (``tiny-base``) or a YAML path."""
    from ...recipes import RECIPE_DIR, load_registered

    return load_registered(BaseRecipe, RECIPE_DIR / "base", name_or_path, overrides, "base-model recipe")


def kept_vae(source: str, config):
    """``vae_from``: another base's VAE, frozen, refused unless it has the shape ``config`` describes."""
    from diffusers import AutoencoderKL

    from ...backbone import resolve_model_path

    folder = Path(resolve_model_path(source)) / "vae"
    if not folder.is_dir():
        raise ConfigError(f"vae_from: no VAE at {folder}; name a base model folder (with vae/) or builtin:NAME")
    vae = AutoencoderKL.from_pretrained(folder)
    if (vae.config.sample_size, vae.config.latent_channels) != (config.sample_size, config.latent_channels):
        raise ConfigError(f"vae_from: {source}'s VAE is not this recipe's shape (sample size "
                          f"{vae.config.sample_size}, {vae.config.latent_channels} latent channels); use a base "
                          f"of the same resolution and latent_factor")
    return vae.requires_grad_(False).eval()


def train_base_model(recipe: BaseRecipe, out: str | os.PathLike, device: str = "cpu", progress: bool = True,
                     checkpoint_every: int = 200, resume: bool = False) -> dict:
    """Build a tiny SD, train its VAE then its UNet on the synthetic domain, save it in diffusers layout.

    Every ``checkpoint_every`` steps (0: never) the run's state goes to ``<out>/checkpoint``; ``resume`` continues
    from it, to the model an unbroken run saves (the same draws, on the same device)."""
    from ...backbone import resolve_device
    from ...testing.tiny import build_tiny_backbone
    from .data import SyntheticSpec, attribute_caption, make_split

    start = time.time()
    device = resolve_device(device)  # a device this machine lacks is said before any work
    spec = SyntheticSpec(size=recipe.resolution, **recipe.domain)
    n_per_class = max(1, recipe.n_images // spec.n_classes)
    generic = make_split(spec, "generic", n_per_class, recipe.seed)
    pixels = torch.stack(generic.images) * 2 - 1
    backbone = build_tiny_backbone(seed=recipe.seed, prediction_type=recipe.prediction_type,
                                   resolution=recipe.resolution, latent_factor=recipe.latent_factor,
                                   cross_attention_dim=recipe.cross_attention_dim,
                                   block_out_channels=tuple(recipe.block_out_channels))
    backbone.model_id = "tiny-base"
    backbone.to(device)
    keep = StageCheckpoints(out, {"recipe": dataclasses.asdict(recipe), "device": str(device)}, checkpoint_every,
                            resume)
    if recipe.vae_from:
        backbone.vae = kept_vae(recipe.vae_from, backbone.vae.config).to(device)
        vae_losses = []
    else:
        vae_losses = train_vae(backbone, pixels, recipe.vae_steps, recipe.vae_batch, recipe.vae_lr, seed=recipe.seed,
                               progress=progress, keep=keep)
    captions = None
    if recipe.captions == "attributes":
        captions = [attribute_caption(image, label, spec) for image, label in zip(generic.images, generic.labels)]
    unet_losses = train_unet(backbone, pixels, recipe.prompt, recipe.unet_steps, recipe.unet_batch, recipe.unet_lr,
                             seed=recipe.seed, progress=progress, captions=captions,
                             caption_dropout=recipe.caption_dropout, keep=keep)
    from ...files import atomic_folder

    def write(tmp: Path) -> None:
        backbone.save_pretrained(tmp, progress=progress)
        (tmp / "base_recipe.yaml").write_text(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False))

    out = atomic_folder(out, write)
    tail = max(1, len(unet_losses) // 20)
    return {"out": str(out), "seconds": round(time.time() - start, 1),
            "vae_loss": sum(vae_losses[-tail:]) / tail if vae_losses else None,
            "unet_loss": sum(unet_losses[-tail:]) / tail, "resumed_from": keep.resumed_from}
