"""Class adapters: every class's LoRA stacked in one layer, selected per sample by a class index.

Split like peft: the config is :class:`diti_sd.lora.config.LoraConfig`, the layer is
:class:`StackedLoRALinear`, the model-level object is :class:`ClassAdapters`. One batch can mix
classes, so many classes train or score together (peft's mixed-adapter batches loop over adapters
per layer and work in inference only).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ConfigError
from ..seeding import torch_generator
from .config import LoraConfig

FEED_FORWARD_TARGETS = ("ff.net.0.proj", "ff.net.2")

# The reference's `unet_lora_filter` (TiF, lora/train_lora_dreambooth.py): "<mode>-<level>" keeps the
# modules under these blocks; "none" keeps every block. Level 2 is the most selective.
_FILTER_DOWN = {0: (0, 1, 2), 1: (1, 2), 2: (2,)}
_FILTER_UP = {0: (1, 2, 3), 1: (1, 2), 2: (1,)}
FILTER_MODES = ("down", "mirror", "all")


class ClassRouter:
    """Shared by the layers of one model: which class each sample of the current batch uses.

    ``index`` is a LongTensor (batch,); -1 means no adapter for that sample; None disables all.
    """

    def __init__(self):
        self.index: torch.Tensor | None = None
        self.scale: float = 1.0
        # (p, generator): dropout on the adapter's output, as lora_diffusion's LoraInjectedLinear in train
        # mode applies it; None: off
        self.dropout: tuple[float, torch.Generator] | None = None


class StackedLoRALinear(nn.Module):
    """``base(x) + scale * (alpha / r) * B[c] A[c] x`` with c the sample's class.

    lora_A: (classes, r, in), lora_B: (classes, out, r). B starts at zero (the adapter starts as the
    identity). A is drawn from a seeded generator: ``normal`` N(0, (1/r)^2) as the reference's LoRA
    (lora_diffusion) draws it, or ``kaiming`` as peft does (Kaiming-uniform, 2-4x smaller on SD's
    layers, so adapters move more slowly at the same learning rate).
    """

    def __init__(self, base: nn.Linear, num_classes: int, rank: int, alpha: float, router: ClassRouter,
                 generator: torch.Generator | None = None, init: str = "normal"):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = alpha / rank
        self.router = router
        shape = (num_classes, rank, base.in_features)
        if init == "normal":
            a = torch.randn(shape, generator=generator) / rank
        elif init == "kaiming":
            bound = 1 / math.sqrt(base.in_features)  # kaiming_uniform_(a=sqrt(5)) on a (r, in) matrix
            a = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        else:
            raise ConfigError(f"unknown LoRA init {init!r}; use 'normal' or 'kaiming'")
        self.lora_A = nn.Parameter(a.to(base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(num_classes, base.out_features, rank, device=base.weight.device))

    @property
    def num_classes(self) -> int:
        return self.lora_A.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        index = self.router.index
        if index is None:
            return y
        n = x.shape[0]
        if index.shape[0] != n:
            raise RuntimeError(f"class index has {index.shape[0]} entries for a batch of {n}")
        rows = index.clamp(min=0)
        a = self.lora_A[rows].to(x.dtype)  # (n, r, in)
        b = self.lora_B[rows].to(x.dtype)  # (n, out, r)
        h = torch.bmm(x.reshape(n, -1, x.shape[-1]), a.transpose(1, 2))
        delta = torch.bmm(h, b.transpose(1, 2))
        if self.router.dropout is not None:
            p, generator = self.router.dropout
            keep = torch.rand(delta.shape, generator=generator) >= p  # drawn on the CPU: one stream everywhere
            delta = delta * keep.to(delta.device, delta.dtype) / (1 - p)
        gain = (index >= 0).to(x.dtype) * (self.scaling * self.router.scale)
        return y + (delta * gain.view(n, 1, 1)).reshape(y.shape)


def filter_prefixes(spec: str | None) -> tuple[str, ...] | None:
    """The UNet blocks a reference filter name keeps (``all-2`` -> down_blocks.2, up_blocks.1,
    mid_block); None for ``none`` (every block)."""
    if spec in (None, "none"):
        return None
    mode, _, level = str(spec).partition("-")
    if mode not in FILTER_MODES or level not in ("0", "1", "2"):
        raise ConfigError(f"unknown LoRA block filter {spec!r}; use none or <down|mirror|all>-<0|1|2>")
    prefixes = [f"down_blocks.{i}" for i in _FILTER_DOWN[int(level)]]
    if mode in ("mirror", "all"):
        prefixes += [f"up_blocks.{i}" for i in _FILTER_UP[int(level)]]
    if mode == "all":
        prefixes.append("mid_block")
    return tuple(prefixes)


def find_targets(model: nn.Module, targets: list[str], block_filter: str | None = None) -> list[str]:
    """Names of the nn.Linear modules whose name ends with a target, inside the blocks that
    ``block_filter`` (a reference filter name, see :func:`filter_prefixes`) keeps."""
    prefixes = filter_prefixes(block_filter)
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
        and (prefixes is None or name.startswith(tuple(p + "." for p in prefixes)))
    ]


def _inject(model: nn.Module, names: list[str], num_classes: int, rank: int, alpha: float, router: ClassRouter,
            generator: torch.Generator, init: str) -> dict[str, StackedLoRALinear]:
    layers = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        layer = StackedLoRALinear(base, num_classes, rank, alpha, router, generator, init)
        setattr(parent, child, layer)
        layers[name] = layer
    return layers


class ClassAdapters(nn.Module):
    """All classes' LoRAs on a backbone's UNet (and optionally its text encoder).

    Injected on construction; :meth:`remove` restores the original modules, so a backbone can be
    reused by a later fit that must not see this one's adapters.
    """

    def __init__(self, backbone, num_classes: int, config: LoraConfig, block_filter: str | None = None):
        super().__init__()
        if num_classes < 1:
            raise ConfigError("need at least one class")
        self.backbone = [backbone]  # a list so nn.Module does not register the backbone as a child
        self.num_classes = num_classes
        self.config = config
        self.block_filter = block_filter or "none"
        self.unet_router, self.text_router = ClassRouter(), ClassRouter()
        g = torch_generator(config.init_seed)
        extra = list(FEED_FORWARD_TARGETS) if config.feed_forward else []
        targets = list(dict.fromkeys(list(config.targets) + extra))
        self.unet_names = find_targets(backbone.unet, targets, block_filter)
        if not self.unet_names:
            raise ConfigError(f"no UNet linear layer matches the LoRA targets {targets} in the blocks that "
                             f"filter {self.block_filter!r} keeps")
        alpha = config.alpha or config.rank
        self.unet_layers = nn.ModuleDict(
            {_key(n): m for n, m in _inject(backbone.unet, self.unet_names, num_classes, config.rank, alpha,
                                            self.unet_router, g, config.init).items()}
        )
        self.text_names = []
        self.text_layers = nn.ModuleDict()
        if config.text_rank:
            self.text_names = find_targets(backbone.text_encoder, list(config.text_targets))
            self.text_layers = nn.ModuleDict(
                {_key(n): m for n, m in _inject(backbone.text_encoder, self.text_names, num_classes,
                                                config.text_rank, config.text_rank, self.text_router, g,
                                                config.init).items()}
            )
        # the base weights are not ours: keep them out of this module's state_dict
        for layer in list(self.unet_layers.values()) + list(self.text_layers.values()):
            layer.base.requires_grad_(False)

    # ----------------------------------------------------------------- parameters and state
    def unet_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.unet_layers.values() for p in (layer.lora_A, layer.lora_B)]

    def text_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.text_layers.values() for p in (layer.lora_A, layer.lora_B)]

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for prefix, names, layers in (("unet", self.unet_names, self.unet_layers),
                                      ("text_encoder", self.text_names, self.text_layers)):
            for name in names:
                layer = layers[_key(name)]
                out[f"{prefix}.{name}.lora_A"] = layer.lora_A.detach().float().cpu().contiguous()
                out[f"{prefix}.{name}.lora_B"] = layer.lora_B.detach().float().cpu().contiguous()
        return out

    def load_lora_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.lora_state_dict()
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise ConfigError(
                f"adapter weights do not fit this model: {len(missing)} missing (e.g. {missing[:2]}), "
                f"{len(extra)} unexpected (e.g. {extra[:2]}); was it made with another LoRA config?"
            )
        with torch.no_grad():
            for prefix, names, layers in (("unet", self.unet_names, self.unet_layers),
                                          ("text_encoder", self.text_names, self.text_layers)):
                for name in names:
                    layer = layers[_key(name)]
                    for part in ("lora_A", "lora_B"):
                        tensor = state[f"{prefix}.{name}.{part}"]
                        if tensor.shape != getattr(layer, part).shape:
                            raise ConfigError(f"{prefix}.{name}.{part}: shape {tuple(tensor.shape)}, "
                                             f"expected {tuple(getattr(layer, part).shape)}")
                        getattr(layer, part).copy_(tensor)

    def class_weights(self, c: int, part: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """Class c's LoRA on ``part`` (``unet`` or ``text_encoder``): module name -> (A, B, alpha / r)."""
        names, layers = (self.unet_names, self.unet_layers) if part == "unet" else (self.text_names, self.text_layers)
        out = {}
        for name in names:
            layer = layers[_key(name)]
            out[name] = (layer.lora_A[c].detach().float().cpu().contiguous(),
                         layer.lora_B[c].detach().float().cpu().contiguous(), layer.scaling)
        return out

    def class_lora_state_dict(self, c: int) -> dict[str, torch.Tensor]:
        """One class as a standard diffusers LoRA state dict (``unet.<module>.lora_A.weight``).

        The LoRA scale alpha / r is folded into B, so loaders that assume alpha = r reproduce it.
        """
        out = {}
        for part in ("unet", "text_encoder"):
            for name, (a, b, scaling) in self.class_weights(c, part).items():
                out[f"{part}.{name}.lora_A.weight"] = a
                out[f"{part}.{name}.lora_B.weight"] = (b * scaling).contiguous()
        return out

    # ----------------------------------------------------------------- routing
    @contextmanager
    def use(self, unet_index=None, text_index=None, unet_scale: float = 1.0, text_scale: float = 1.0,
            text_dropout: tuple[float, torch.Generator] | None = None,
            unet_dropout: tuple[float, torch.Generator] | None = None):
        """Route the next forward passes: per-sample class indices for the UNet and the text encoder.
        ``text_dropout``, ``unet_dropout``: (p, generator) for dropout on the adapters' output (see
        ClassRouter)."""
        device = self.backbone[0].device
        u, tx = self.unet_router, self.text_router
        prev = (u.index, tx.index, u.scale, tx.scale, tx.dropout, u.dropout)
        u.index = None if unet_index is None else torch.as_tensor(unet_index, device=device).long()
        tx.index = None if text_index is None else torch.as_tensor(text_index, device=device).long()
        u.scale, tx.scale, tx.dropout, u.dropout = unet_scale, text_scale, text_dropout, unet_dropout
        try:
            yield self
        finally:
            u.index, tx.index, u.scale, tx.scale, tx.dropout, u.dropout = prev

    def remove(self) -> None:
        """Put the backbone's original linear layers back."""
        backbone = self.backbone[0]
        for model, names, layers in ((backbone.unet, self.unet_names, self.unet_layers),
                                     (backbone.text_encoder, self.text_names, self.text_layers)):
            for name in names:
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                if getattr(parent, child) is layers[_key(name)]:
                    setattr(parent, child, layers[_key(name)].base)
        self.unet_names, self.text_names = [], []


class NoAdapters:
    """The base model alone behind the adapters' interface: scoring with it is Diffusion Classifier's
    zero-shot classification (each class only a prompt)."""

    block_filter = "none"
    unet_names: list = []
    text_names: list = []

    @contextmanager
    def use(self, *args, **kwargs):
        yield self

    def lora_state_dict(self) -> dict:
        return {}

    def remove(self) -> None:
        pass


def _key(name: str) -> str:
    return name.replace(".", "__")
