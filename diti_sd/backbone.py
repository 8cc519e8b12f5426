"""Stable Diffusion components and the few operations the rest of the package needs from them.

A :class:`Backbone` holds the named diffusers/transformers components (``vae``, ``unet``,
``text_encoder``, ``tokenizer``, ``scheduler``) as attributes, the way a diffusers pipeline does, and
adds: images -> latents, prompts -> embeddings, noising at t, the UNet's raw output and the epsilon it
implies (for epsilon- and v-prediction models alike).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DitiError
from .files import atomic_write
from .preprocessing import uint8_to_float
from .progress import quiet_libraries

COMPONENTS = {
    # subfolder -> the file(s) that must be there (any one of a tuple)
    "unet": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": (("vocab.json", "tokenizer.json"),),
    "scheduler": ("scheduler_config.json",),
}
BUILTIN_PREFIX = "builtin:"


class BackboneError(DitiError, ValueError):
    """The base model could not be found or is incomplete."""


@dataclass
class Backbone:
    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    model_id: str = "unknown"
    resolution: int = 512
    # a torch.compile'd UNet used by predict() when set (scoring); training always runs the plain one
    compiled_unet: object = None
    # what a classifier asked load_backbone for (model and settings), so that a refit asking the same reuses it
    loaded_with: object = None

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.vae_scale_factor
        return (self.unet.config.in_channels, side, side)

    def alphas_cumprod(self, device=None) -> torch.Tensor:
        return self.scheduler.alphas_cumprod.to(device or self.device, torch.float32)

    def to(self, device=None, dtype=None) -> Backbone:
        # only what is asked: diffusers warns on every to() that names a dtype, None included
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in (self.vae, self.unet, self.text_encoder):
            module.to(**moves)
        return self

    def requires_grad_(self, flag: bool) -> Backbone:
        for module in (self.vae, self.unet, self.text_encoder):
            module.requires_grad_(flag)
        return self

    # ----------------------------------------------------------------- latents
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> latents: the VAE posterior mean times the scaling factor."""
        return self.encode_posterior(pixels)[0]

    @torch.no_grad()
    def encode_batches(self, pixels: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Pixels (uint8, or floats in [-1, 1]) -> latents, ``batch_size`` images at a time."""
        return torch.cat([self.encode_images(uint8_to_float(part)) for part in pixels.split(batch_size)])

    @torch.no_grad()
    def encode_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [-1, 1] -> the VAE posterior's mean and standard deviation, times the scaling factor."""
        pixels = pixels.to(self.device, self.vae.dtype)
        posterior = self.vae.encode(pixels).latent_dist
        factor = self.vae.config.scaling_factor
        return (posterior.mean * factor).to(self.dtype), (posterior.std * factor).to(self.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1]."""
        latents = latents.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor
        return (self.vae.decode(latents).sample.float().clamp(-1, 1) + 1) / 2

    # ----------------------------------------------------------------- prompts
    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return ids.to(self.device)

    def encode_prompts(self, prompts: list[str], input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Prompts -> the text encoder's last hidden state, the UNet's cross-attention context."""
        ids = self.tokenize(prompts) if input_ids is None else input_ids.to(self.device)
        return self.text_encoder(ids)[0].to(self.dtype)

    # ----------------------------------------------------------------- diffusion
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return add_noise(self.alphas_cumprod(x0.device), x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to output: epsilon, or v = sqrt(a) eps - sqrt(1 - a) x0."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            a = _expand(self.alphas_cumprod(x0.device)[t.long()], x0)
            return (a.sqrt() * noise.float() - (1 - a).sqrt() * x0.float()).to(noise.dtype)
        raise BackboneError(f"unsupported prediction_type {self.prediction_type!r}")

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The UNet's raw output (epsilon or v, as the model was trained)."""
        unet = self.compiled_unet if self.compiled_unet is not None and not torch.is_grad_enabled() else self.unet
        return unet(x_t, t, encoder_hidden_states=context, return_dict=False)[0]

    def output_to_epsilon(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise a model output implies, so that errors compare across prediction types."""
        if self.prediction_type == "epsilon":
            return output
        a = _expand(self.alphas_cumprod(x_t.device)[t.long()], x_t)
        return (a.sqrt() * output.float() + (1 - a).sqrt() * x_t.float()).to(output.dtype)

    # ----------------------------------------------------------------- identity / io
    def fingerprint(self) -> str:
        """A short hash of the weights as loaded (:func:`diti_sd.base_identity.fingerprint`), computed once."""
        if not getattr(self, "_fingerprint", None):
            from .base_identity import fingerprint

            self._fingerprint = fingerprint(self)
        return self._fingerprint

    def save_pretrained(self, path: str | os.PathLike, progress: bool = True) -> Path:
        """Write the components in the diffusers Stable Diffusion folder layout."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with quiet_libraries(not progress):
            self.unet.save_pretrained(path / "unet")
            self.vae.save_pretrained(path / "vae")
            self.text_encoder.save_pretrained(path / "text_encoder")
            self.tokenizer.save_pretrained(path / "tokenizer")
            self.scheduler.save_pretrained(path / "scheduler")
        index = {
            "_class_name": "StableDiffusionPipeline",
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "unet": ["diffusers", type(self.unet).__name__],
            "vae": ["diffusers", type(self.vae).__name__],
        }
        atomic_write(path / "model_index.json", lambda tmp: tmp.write_text(json.dumps(index, indent=2)))
        return path


def add_noise(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, computed in fp32 and returned in x0's dtype (any
    DDPM schedule: the SD backbone's and the encoder's frozen DDPM share it)."""
    a = _expand(alphas_cumprod.to(x0.device)[t.long()], x0)
    return (a.sqrt() * x0.float() + (1 - a).sqrt() * noise.float()).to(x0.dtype)


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.float().reshape(-1, *([1] * (like.dim() - 1)))


# --------------------------------------------------------------------------- loading
def default_device() -> torch.device:
    """The GPU of this process (LOCAL_RANK under a multi-process launcher), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device=None) -> torch.device:
    """``device`` as torch reads it (None: :func:`default_device`); a bare "cuda" is this process's GPU, as the
    default is (``cuda:LOCAL_RANK`` under a multi-process launcher). A name torch does not know, or an accelerator
    this machine does not have, is a :class:`BackboneError` naming the fix before anything loads."""
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackboneError(f"device {device!r} is not one torch knows; pass cpu, cuda, cuda:1 or mps") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise BackboneError(f"device {device!r}: this machine has no CUDA GPU that torch can use; pass cpu, or "
                                "leave the device unset to take a GPU where there is one")
        if resolved.index is None:
            resolved = default_device()
        if resolved.index >= count:
            raise BackboneError(f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                                f"cuda:{count - 1}; pass one of them")
        return resolved
    backend = torch.backends.mps if resolved.type == "mps" else getattr(torch, resolved.type, None)
    if resolved.type not in ("cpu", "meta") and not getattr(backend, "is_available", lambda: True)():
        raise BackboneError(f"device {device!r}: no {resolved.type} device is available here; pass cpu")
    return resolved


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (half precision is slow and lossy there); bf16 on GPUs that have it, else fp16."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_model_path(model: str | os.PathLike) -> str:
    """A local folder, ``builtin:NAME`` (a model shipped inside the package), or a hub id."""
    model = str(model)
    if model.startswith(BUILTIN_PREFIX):
        name = model[len(BUILTIN_PREFIX) :]
        path = Path(__file__).parent / "assets" / name
        if not path.is_dir():
            available = sorted(p.name for p in (Path(__file__).parent / "assets").glob("*") if p.is_dir())
            raise BackboneError(f"no built-in model {name!r}; available: {available or 'none'}")
        return str(path)
    return model


def _native_resolution(unet_config, vae_config) -> int:
    """The image side a model was made for: the UNet's latent side times the VAE's downsampling."""
    return int(unet_config["sample_size"] * 2 ** (len(vae_config["block_out_channels"]) - 1))


def native_resolution(model: str | os.PathLike) -> int:
    """A local model folder's (or ``builtin:NAME``'s) native resolution, read from its configs without
    loading any weights."""
    path = Path(resolve_model_path(model))
    if not path.is_dir():
        raise BackboneError(f"{model!r} is not a local model folder; its resolution is read from unet/ and vae/")
    check_model_folder(path)
    return _native_resolution(*(json.loads((path / part / "config.json").read_text()) for part in ("unet", "vae")))


def check_model_folder(path: Path) -> None:
    missing = []
    for sub, files in COMPONENTS.items():
        for entry in files:
            options = entry if isinstance(entry, tuple) else (entry,)
            if not any((path / sub / f).is_file() for f in options):
                missing.append(f"{sub}/{' or '.join(options)}")
    if missing:
        raise BackboneError(
            f"{path} is not a complete diffusers Stable Diffusion folder: missing {', '.join(missing)}. "
            "Save one with StableDiffusionPipeline.save_pretrained, or pass a hub id such as "
            "stabilityai/stable-diffusion-2-base."
        )


def load_backbone(
    model: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    attention: str = "sdpa",
    resolution: int | None = None,
    local_files_only: bool | None = None,
    gpu_dtype: torch.dtype | str | None = None,
    progress: bool = True,
) -> Backbone:
    """Load the SD components from a local diffusers folder, ``builtin:NAME`` or a hub id.

    The same function loads Stable Diffusion 1.x and 2.x (epsilon or v-prediction) and the tiny
    models the project builds, so the tests exercise the path real models take. ``dtype`` applies
    everywhere; ``gpu_dtype`` only on a GPU (a recipe's precision, which a CPU run ignores: fp32 there).
    ``progress=False`` hides the libraries' own bars (loading weights, downloads) while loading.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = resolve_model_path(model)
    path = Path(source)
    is_local = path.exists()
    if is_local:
        if not path.is_dir():
            raise BackboneError(f"{path} is a file; pass the diffusers folder that holds unet/, vae/, ...")
        check_model_folder(path)
    elif source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise BackboneError(
            f"model {str(model)!r} is neither an existing folder nor a hub id like "
            "'stabilityai/stable-diffusion-2-base'"
        )
    device = resolve_device(device)
    if dtype is None and device.type == "cuda":
        dtype = gpu_dtype
    dtype = _as_dtype(dtype) or default_dtype(device)
    kwargs = {} if local_files_only is None else {"local_files_only": local_files_only}
    try:
        with quiet_libraries(not progress):
            unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kwargs)
            vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kwargs)
            text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype,
                                                         **kwargs)
            tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
            scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
    except OSError as err:
        where = "the folder" if is_local else "the Hugging Face hub (or its local cache)"
        raise BackboneError(
            f"could not load {source!r} from {where}: {err}. Offline? Download the model once with "
            "`hf download <id>` or pass a local diffusers folder."
        ) from err
    if resolution is None:
        resolution = _native_resolution(unet.config, vae.config)
    backbone = Backbone(vae, unet, text_encoder, tokenizer, scheduler, model_id=str(model),
                        resolution=int(resolution))
    if device.type != "cpu":
        backbone.to(device=device)
    backbone.requires_grad_(False)
    for module in (vae, unet, text_encoder):
        module.eval()
    set_attention_backend(backbone, attention)
    return backbone


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def _as_dtype(dtype):
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise BackboneError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        return DTYPES[dtype]
    return dtype


def set_attention_backend(backbone: Backbone, attention: str) -> None:
    """``sdpa`` (PyTorch scaled_dot_product_attention, the default) or ``xformers``."""
    if attention == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        backbone.unet.set_attn_processor(AttnProcessor2_0())
    elif attention == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError as err:
            raise BackboneError("attention='xformers' needs `pip install diti-sd[xformers]`") from err
        backbone.unet.enable_xformers_memory_efficient_attention()
    else:
        raise BackboneError(f"unknown attention backend {attention!r}; use 'sdpa' or 'xformers'")
