"""Encoder recipes: YAML files in ``recipes/encoder/`` loaded into dataclasses that reject unknown keys."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

from ..constraints import POSITIVE, PRECISIONS, Each, Interval, Options, Pattern, RecipeError, fail
from ..errors import ConfigError, DitiError
from ..recipes import RECIPE_DIR, RecipeMixin, load_registered
from .subsets import subset_plan

ENCODER_RECIPE_DIR = RECIPE_DIR / "encoder"
GRADIENT_MODES = ("base", "stop_grad", "dual")


class EncoderError(DitiError, ValueError):
    """An encoder folder or DDPM is missing, malformed or does not fit together."""


@dataclass
class LayoutConfig:
    # [last time-step of the stage (exclusive), dimensions in the stage]; the reference gives most
    # dimensions to t in 100..300, where face attributes of middle granularity die
    stages: list[list[int]] = field(
        default_factory=lambda: [[50, 10], [100, 25], [300, 327], [500, 100], [1000, 50]]
    )
    subsets: int = 64  # k: equal time-step ranges, each in the stage that holds its first time-step
    # subsets per stage instead of k equal ranges (the reference's option and its formula: subsets.py)
    k_per_stage: list[int] | None = None

    CONSTRAINTS: ClassVar[dict] = {"stages": Each(Each(Interval(1), min_len=2), min_len=1), "subsets": Interval(1),
                                   "k_per_stage": [None, Each(Interval(1), min_len=1)]}

    def check(self, where: str) -> None:
        ends = [s[0] for s in self.stages]
        if any(len(s) != 2 for s in self.stages) or any(a >= b for a, b in zip(ends, ends[1:])) or ends[-1] > 1000:
            fail(f"{where}.stages", self.stages, "[last time-step, dimensions] pairs with increasing "
                 "time-steps up to 1000")
        if self.subsets < len(self.stages):
            fail(f"{where}.subsets", self.subsets, f"at least the number of stages ({len(self.stages)})")
        try:  # before any work: every stage must get a subset, and every subset dimensions
            subset_plan(self.stages, self.subsets, self.stages[-1][0], self.k_per_stage)
        except ConfigError as err:
            raise RecipeError(f"{where}: {err}") from None


@dataclass
class NetConfig:
    # E: conv, strided convolutions of encoder_channels, global average pool and a linear layer (any size);
    # celeba64 or ffhq, the DiTi reference's networks for 64-px and 128-px images
    encoder: str = "conv"
    encoder_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    shift_channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    shift_layers_per_block: int = 1
    shift_attention: bool = False  # self-attention in the shift network's lowest-resolution block

    CONSTRAINTS: ClassVar[dict] = {"encoder": Options("conv", "celeba64", "ffhq"),
                                   "encoder_channels": Each(Interval(1), min_len=1),
                                   "shift_channels": Each(Interval(1), min_len=1),
                                   "shift_layers_per_block": Interval(1)}


@dataclass
class EncoderDataConfig:
    kind: str = "celeba"  # celeba | folder (FFHQ or any images) | hf | granular (synthetic, no root)
    crop: int | None = None  # centre crop (pixels) before resizing; None: the centred square
    crop_box: list[int] | None = None  # [top, left, height, width] instead (torchvision's F.crop), as the reference
    resize: str = "bilinear"  # to the DDPM's size: bilinear (torchvision's Resize on PIL images) or bicubic
    image_column: str = "image"  # hf only
    train_split: str = "train"
    test_split: str = "test"
    val_split: str | None = "val"

    CONSTRAINTS: ClassVar[dict] = {"kind": Options("celeba", "folder", "hf", "granular"), "crop": [None, Interval(1)],
                                   "crop_box": [None, Each(Interval(0), min_len=4)],
                                   "resize": Options("bilinear", "bicubic")}

    def check(self, where: str) -> None:
        if self.crop_box is not None and (len(self.crop_box) != 4 or min(self.crop_box[2:]) < 1):
            fail(f"{where}.crop_box", self.crop_box, "[top, left, height, width] with a positive height and width")


@dataclass
class EncoderTrainConfig:
    steps: int = 100_000
    batch_size: int = 64
    lr: float = 1e-4
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # the reference's EMA decays at ema_decay from the first step; true: diffusers' warm-up
    snr_power: float = 0.1  # loss weight SNR^p / (1 + SNR)
    # pdae: -sqrt(alpha_t) (1 - alphabar_{t-1}) / sqrt(1 - alphabar_t), the reference's; one: 1
    shift_coefficient: str = "pdae"
    # the reference's pdae_mode. base: every visible subset learns from every t. stop_grad: at t only the
    # subset whose range holds t learns; earlier subsets are read but detached (the reference's
    # diti64_stopgrad recipes). dual: the sum of both losses
    gradient_mode: str = "base"
    flip: bool = True  # horizontal flips (faces are roughly symmetric)
    mixed_precision: str = "no"  # no | fp16 | bf16
    checkpoint_every: int = 1000
    seed: int = 0

    CONSTRAINTS: ClassVar[dict] = {
        "steps": Interval(1), "batch_size": Interval(1), "lr": POSITIVE, "ema_decay": Interval(0, 1, closed="left"),
        "snr_power": Interval(0), "shift_coefficient": Options("pdae", "one"),
        "gradient_mode": Options(*GRADIENT_MODES), "mixed_precision": Options(*PRECISIONS),
        "checkpoint_every": Interval(0),
    }


@dataclass
class ProbeConfig:
    # lbfgs: a full-batch fit on standardised z with weight decay; reference: the DiTi reference's CelebA probe
    # (Adam, mirrored images, the epoch of best validation AP; needs a validation split, which folders lack)
    method: str = "lbfgs"
    epochs: int = 15  # reference: epochs, Adam's learning rate and batch
    lr: float = 1e-3
    train_batch_size: int = 128
    steps: int = 300  # lbfgs: L-BFGS iterations of the full-batch logistic regression
    weight_decay: float = 1e-4
    batch_size: int = 256  # images per encoder batch
    # the split the probe trains on (None: data.train_split); apart from the test split whenever the encoder
    # trained on every image (FFHQ's train_split all)
    train_split: str | None = None
    max_train: int | None = None  # cap on probe-train images (None: all)
    max_test: int | None = None
    # counterfactual swaps (encoder/transfer.py): image pairs per attribute (0: skip) and DDIM steps
    transfer_pairs: int = 16
    transfer_steps: int = 50

    CONSTRAINTS: ClassVar[dict] = {
        "method": Options("reference", "lbfgs"), "epochs": Interval(1), "lr": POSITIVE, "train_batch_size": Interval(1),
        "steps": Interval(1), "weight_decay": Interval(0), "batch_size": Interval(1), "max_train": [None, Interval(1)],
        "max_test": [None, Interval(1)], "transfer_pairs": Interval(0), "transfer_steps": Interval(1),
        "train_split": [None, Pattern(r".+", "a split name")],
    }


@dataclass
class EncoderRecipe(RecipeMixin):
    name: str = "custom"
    description: str = ""
    z_dim: int = 512
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    net: NetConfig = field(default_factory=NetConfig)
    data: EncoderDataConfig = field(default_factory=EncoderDataConfig)
    train: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # [beta_start, beta_end] of the linear schedule the DDPM must have (null: whatever it comes with); the
    # reference's losses, shift coefficient and DDPM all use linear betas 1e-4 .. 0.02
    ddpm_linear_betas: list[float] | None = None

    CONSTRAINTS: ClassVar[dict] = {"z_dim": Interval(1),
                                   "ddpm_linear_betas": [None, Each(Interval(0, 1, closed="neither"), min_len=2)]}

    def check(self, where: str) -> None:
        if sum(s[1] for s in self.layout.stages) != self.z_dim:
            total = sum(s[1] for s in self.layout.stages)
            fail(f"{where}.z_dim", self.z_dim, f"the sum of the stages' dimensions ({total})")


def available_encoder_recipes() -> list[str]:
    return sorted(p.stem for p in ENCODER_RECIPE_DIR.glob("*.yaml"))


def load_encoder_recipe(name_or_path: str | os.PathLike | EncoderRecipe,
                        overrides: dict | list[str] | None = None) -> EncoderRecipe:
    """A registered name (``celeba64``), a YAML path or a recipe; then dotted ``key=value`` overrides."""
    return load_registered(EncoderRecipe, ENCODER_RECIPE_DIR, name_or_path, overrides, "encoder recipe")
