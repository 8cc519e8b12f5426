"""The DiTi encoder: image encoder E, shift network G, and the frozen DDPM they steer.

A frozen unconditional DDPM (a diffusers ``UNet2DModel`` and its scheduler) predicts the noise of x_t.
G(x_t, t, z * mask(t)) shifts that prediction, PDAE-style: eps = eps_ddpm + coef_t * G. Training E and
G to reconstruct x_0 with the cumulative mask on z = E(x_0) ties each subset of z to a time-step range.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from ..backbone import add_noise
from ..files import atomic_write, file_digest
from ..timesteps import signal_to_noise
from .config import GRADIENT_MODES, EncoderError, EncoderRecipe, load_encoder_recipe
from .ddpm import DDPM, load_ddpm
from .layout import SubsetLayout
from .networks import REFERENCE_ENCODERS, ImageEncoder, ReferenceEncoder, reference_image_size

FORMAT_VERSION = 2  # 2: the reference's subset layout and shift coefficient
MANIFEST = "encoder.json"
WEIGHTS = "encoder.safetensors"
RECIPE = "recipe.yaml"


class ShiftNetwork(nn.Module):
    """G(x_t, t, z): a diffusers UNet2DModel whose time embedding gets a projection of the masked z added
    (``class_embed_type="identity"``), so every resolution level is conditioned on z and t together.

    The reference's G (PDAE's) instead reuses the frozen DDPM's down path on x_t and trains its own middle and
    up blocks on those features. On the synthetic toy that form read the attributes from the same subsets
    as this one (docs/encoder.md), so the simpler separate network stays."""

    def __init__(self, z_dim: int, sample_size: int, channels: list[int], layers_per_block: int = 1,
                 attention: bool = False, in_channels: int = 3):
        super().__init__()
        from diffusers import UNet2DModel

        down = ["DownBlock2D"] * len(channels)
        up = ["UpBlock2D"] * len(channels)
        if attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
            block_out_channels=tuple(channels), down_block_types=tuple(down), up_block_types=tuple(up),
            layers_per_block=layers_per_block, norm_num_groups=min(32, channels[0] // 2),
            class_embed_type="identity",
        )
        embed_dim = self.unet.time_embedding.linear_2.out_features
        self.z_proj = nn.Linear(z_dim, embed_dim)
        # G starts at zero, so training starts from the DDPM's own prediction
        nn.init.zeros_(self.unet.conv_out.weight)
        nn.init.zeros_(self.unet.conv_out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z_masked: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t, class_labels=self.z_proj(z_masked).to(x_t.dtype)).sample


def check_schedule(linear_betas, ddpm: DDPM) -> None:
    """The DDPM's betas are the linear ones the recipe asks for (``ddpm_linear_betas``; None: any)."""
    if linear_betas is None:
        return
    cfg = ddpm.scheduler.config
    start, end = (float(v) for v in linear_betas)
    same = (cfg.beta_schedule == "linear" and cfg.trained_betas is None
            and math.isclose(cfg.beta_start, start, rel_tol=1e-6) and math.isclose(cfg.beta_end, end, rel_tol=1e-6))
    if not same:
        have = "given betas" if cfg.trained_betas is not None else \
            f"{cfg.beta_schedule} {cfg.beta_start}..{cfg.beta_end}"
        raise EncoderError(f"the recipe wants a DDPM on linear betas {start}..{end} (ddpm_linear_betas); "
                           f"{ddpm.source} has {have}: pass such a DDPM, or set ddpm_linear_betas=null to use its own")


class DiTiEncoder(nn.Module):
    """E and G with the frozen DDPM they steer. ``encode`` gives z; ``eps`` the shifted noise prediction."""

    def __init__(self, recipe: EncoderRecipe, ddpm: DDPM):
        super().__init__()
        self.recipe = recipe
        self.ddpm_source = ddpm.source
        self.scheduler = ddpm.scheduler
        check_schedule(recipe.ddpm_linear_betas, ddpm)
        self.layout = SubsetLayout(recipe.layout.stages, recipe.layout.subsets,
                                   ddpm.scheduler.config.num_train_timesteps, recipe.layout.k_per_stage)
        if self.layout.z_dim != recipe.z_dim:
            raise EncoderError(
                f"layout.stages give {self.layout.z_dim} dimensions but z_dim is {recipe.z_dim}; make them agree"
            )
        size = ddpm.unet.config.sample_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.in_channels = int(ddpm.unet.config.in_channels)
        # the initial weights come from the recipe's seed, not from whatever ran before
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.train.seed)
            if recipe.net.encoder in REFERENCE_ENCODERS:
                size = reference_image_size(recipe.net.encoder)
                if self.image_size != size:
                    raise EncoderError(f"net.encoder {recipe.net.encoder} is the reference's network for {size}-px "
                                       f"images; this DDPM makes {self.image_size}-px ones: set net.encoder=conv")
                self.encoder = ReferenceEncoder(recipe.net.encoder, recipe.z_dim, self.in_channels)
            else:
                self.encoder = ImageEncoder(recipe.z_dim, recipe.net.encoder_channels, self.in_channels)
            self.shift = ShiftNetwork(recipe.z_dim, self.image_size, recipe.net.shift_channels,
                                      recipe.net.shift_layers_per_block, recipe.net.shift_attention, self.in_channels)
        # the DDPM stays out of state_dict()/parameters(): it is frozen and saved by reference
        object.__setattr__(self, "unet", ddpm.unet)
        alphas_cumprod = ddpm.scheduler.alphas_cumprod.float()
        alphas = ddpm.scheduler.alphas.float()
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        if recipe.train.shift_coefficient == "pdae":
            # the reference's (model/diffusion/gaussian_diffusion.py, shift_coef): the mean shift Sigma_t * G in
            # epsilon units with Sigma_t the posterior variance; 0 at t = 0, where G does nothing
            abar_prev = torch.cat([torch.ones(1), alphas_cumprod[:-1]])
            coef = -alphas.sqrt() * (1 - abar_prev) / (1 - alphas_cumprod).sqrt()
            # its DDIM samplers (model/diffusion/ddim.py) shift by -sqrt(1 - alphabar_t) instead (a quirk):
            # within 2 % of the training coefficient from t = 100 on, 0.45 of it at t = 1
            sample_coef = -(1 - alphas_cumprod).sqrt()
        elif recipe.train.shift_coefficient == "one":
            coef = sample_coef = torch.ones_like(alphas)
        else:
            raise EncoderError(f"train.shift_coefficient must be pdae or one, not {recipe.train.shift_coefficient!r}")
        if recipe.train.gradient_mode not in GRADIENT_MODES:
            raise EncoderError(
                f"train.gradient_mode must be one of {', '.join(GRADIENT_MODES)}, not {recipe.train.gradient_mode!r}"
            )
        self.register_buffer("shift_coef", coef, persistent=False)
        self.register_buffer("sample_shift_coef", sample_coef, persistent=False)

    def to(self, *args, **kwargs):
        self.unet.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.encoder(x0)

    def at_initial_weights(self) -> DiTiEncoder:
        """The same recipe and DDPM before training: the baseline a probe of z must beat, since the
        random features of an untrained conv net already separate many attributes linearly."""
        fresh = type(self)(self.recipe, DDPM(self.unet, self.scheduler, self.ddpm_source))
        return fresh.to(self.device).eval()

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor, mask: bool = True,
            sampling: bool = False) -> torch.Tensor:
        """The DDPM's noise prediction shifted by G given z (masked to the subsets visible at t); ``sampling``:
        with the coefficient the reference's DDIM samplers use, not the training one."""
        with torch.no_grad():
            base = self.unet(x_t, t).sample
        return base + self._shift(x_t, t, z, mask, sampling)

    def _shift(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor, mask: bool = True,
               sampling: bool = False) -> torch.Tensor:
        z_in = z * self.layout.mask(t).to(z.dtype) if mask else z
        coef = (self.sample_shift_coef if sampling else self.shift_coef)[t].view(-1, 1, 1, 1).to(x_t.dtype)
        return coef * self.shift(x_t, t, z_in)

    def loss(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             z: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted epsilon MSE, weight SNR^p / (1 + SNR), per sample mean over pixels then batch mean.
        ``z`` defaults to ``encode(x0)``; pass one to train G on a given code (e.g. the true labels).
        ``train.gradient_mode`` says which subsets of z learn from time-step t (see EncoderTrainConfig)."""
        x_t = add_noise(self.alphas_cumprod, x0, noise, t)
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        z = self.encode(x0) if z is None else z
        mode = self.recipe.train.gradient_mode
        codes = []
        if mode in ("base", "dual"):
            codes.append(z)
        if mode in ("stop_grad", "dual"):
            codes.append(torch.where(self.layout.current(t), z, z.detach()))
        snr = signal_to_noise(abar.view(-1))
        weight = snr.pow(self.recipe.train.snr_power) / (1 + snr)
        with torch.no_grad():  # the frozen DDPM's prediction is the same for every code: run it once
            base = self.unet(x_t, t).sample
        total = 0.0
        for code in codes:
            err = (base + self._shift(x_t, t, code) - noise).float().pow(2).mean(dim=(1, 2, 3))
            total = total + (weight * err).mean()
        return total

    # -- files -------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        from ..version import __version__

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(path / WEIGHTS, lambda tmp: save_file(weights, str(tmp)))
        atomic_write(path / RECIPE, lambda tmp: tmp.write_text(self.recipe.to_yaml()))
        manifest = {
            "format_version": FORMAT_VERSION, "kind": "diti-encoder", "ddpm": self.ddpm_source,
            "image_size": self.image_size, "z_dim": self.recipe.z_dim, "subsets": self.layout.describe(),
            "package_version": __version__, **(extra or {}), "weights_sha256": file_digest(path / WEIGHTS),
        }
        atomic_write(path / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, ddpm: str | os.PathLike | DDPM | None = None,
                        device: str | torch.device = "cpu") -> DiTiEncoder:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise EncoderError(f"{path} is not a DiTi encoder (no {MANIFEST}); pass the --out folder of `encoder fit`")
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise EncoderError(f"{path}: encoder format {manifest.get('format_version')} is not this version's "
                               f"({FORMAT_VERSION}: the z layout and shift coefficient are now the reference's); "
                               "train the encoder again")
        if not (path / WEIGHTS).is_file() or manifest.get("weights_sha256") != file_digest(path / WEIGHTS):
            raise EncoderError(f"{path}/{WEIGHTS} is missing or does not match its manifest; re-save or refit")
        recipe = load_encoder_recipe(path / RECIPE)
        if not isinstance(ddpm, DDPM):
            ddpm = load_ddpm(ddpm or manifest["ddpm"], device)
        model = cls(recipe, ddpm)
        size = ddpm.unet.config.sample_size
        if model.image_size != manifest["image_size"]:
            raise EncoderError(
                f"the encoder in {path} was trained with a {manifest['image_size']}-px DDPM "
                f"({manifest['ddpm']}); {ddpm.source} is {size}-px. Pass the DDPM it was trained with"
            )
        missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS)), strict=False)
        if missing or unexpected:
            raise EncoderError(f"{path}: weights do not fit the recipe (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]})")
        model.manifest = manifest
        return model.to(device).eval()
