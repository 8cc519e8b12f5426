"""The recipe's sections as dataclasses: every number a run uses, each with the values it accepts.

``CONSTRAINTS`` declares each field's allowed values (checked by :mod:`diti_sd.constraints` when a recipe
is built); ``check(where)`` holds the rules that join fields. :mod:`diti_sd.recipes.loading` builds these
from YAML; the resolved recipe is saved beside the adapters it made.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import ClassVar

import yaml

from ..constraints import (
    NAME,
    POSITIVE,
    PRECISIONS,
    T_STEPS,
    Each,
    Interval,
    Options,
    Pattern,
    RecipeError,
    Table,
    check_rounds,
    check_window,
    fail,
)
from ..evaluation.methods import TIPF_EPOCHS, VAL_PROTOCOLS
from ..lora.config import LoraConfig
from ..metrics import METRICS

# The allowed values the code elsewhere dispatches on, declared once here
DATASET_KINDS = ("fgvc-aircraft", "image-folder", "hf", "isic2019", "duke", "veri", "synthetic")
WEIGHTINGS = ("uniform", "exp", "tif", "auto")
CELLS = ("all", "object")


def _check_format(where: str, template: str, **fields) -> None:
    """A template that ``str.format`` fills with ``fields`` alone (no other {placeholders})."""
    try:
        template.format(**fields) if fields else template.format("x")
    except (KeyError, IndexError, ValueError):
        names = ", ".join("{" + k + "}" for k in fields) if fields else "{}"
        fail(where, template, f"a text whose only placeholders are {names}")


@dataclass
class DatasetConfig:
    kind: str = "image-folder"  # fgvc-aircraft | image-folder | hf | isic2019 | duke | veri | synthetic
    level: str = "variant"  # fgvc-aircraft only
    crop_banner: bool = False  # fgvc-aircraft only: drop the 20-px copyright banner
    image_column: str = "image"  # hf only
    label_column: str = "label"  # hf only
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"
    metric: str = "accuracy"  # accuracy | macro-f1: what eval reports and every validation choice maximises

    CONSTRAINTS: ClassVar[dict] = {
        "kind": Options(*DATASET_KINDS), "level": Options("variant", "family", "manufacturer"),
        "image_column": NAME, "label_column": NAME, "train_split": NAME, "val_split": [None, NAME],
        "test_split": NAME, "metric": Options(*METRICS),
    }


@dataclass
class PromptConfig:
    template: str = "a photo of a {token} {name}."
    generic: str = "a photo"
    # one rare token for every class ("hta"), or "auto": a distinct rare token per class, assigned in
    # class order from the tokenizer's single-token candidates (for classes without useful names)
    token: str = "hta"
    use_class_name: bool = True

    CONSTRAINTS: ClassVar[dict] = {"token": Pattern(r"\S+", "one word (no spaces), or auto")}

    def check(self, where: str) -> None:
        _check_format(f"{where}.template", self.template, token="x", name="y")
        if "{token}" not in self.template:
            fail(f"{where}.template", self.template, "a text holding {token}, where the rare token goes")


@dataclass
class FitConfig:
    steps_by_shots: dict[int, int] = field(default_factory=lambda: {1: 150, 2: 300, 4: 600, 8: 900, 16: 1000})
    steps: int | None = None  # per class; overrides steps_by_shots
    lr: float = 1e-4
    text_lr: float = 5e-5
    weight_decay: float = 1e-2
    batch_size: int = 2  # samples per optimiser iteration (instances plus prior images)
    t_min: int = 0
    t_max: int = 1000
    prior: bool = True  # prior preservation: generic images denoised with the class adapter on
    prior_weight: float = 1.0
    prior_images: int = 100
    prior_folder: str | None = None  # generic images from a folder instead of the base model's samples
    prior_prompt: str = "generic"  # generic | class: which prompt conditions the prior images
    prior_sample_steps: int = 50
    prior_guidance: float = 7.5
    grad_clip: float = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    # ColorJitter(brightness, contrast), drawn per sample, in random order, on instance and prior images
    brightness: float = 0.0
    contrast: float = 0.0
    # the training transform after the shorter side is resized to the resolution (bilinear): "none" trains
    # on the whole image, as the reference does (classes whose images differ in shape run as separate UNet
    # batches); "random": a random square crop per step; "center": the scoring transform's centre crop
    crop: str = "center"
    latent: str = "mean"  # "sample": a draw from the VAE posterior per step, as the reference trains
    # translation of instance images by up to +-shift pixels in multiples of shift_step (wrapping round):
    # moves the object while a texture of period shift_step stays in phase. Not in the reference.
    shift: int = 0
    shift_step: int = 1
    # coarse swap (diti_sd/training/coarse_swap.py; not in the reference): the probability that an instance
    # image's low-pass (a Gaussian of sigma coarse_sigma x its shorter side) is replaced by a prior image's,
    # so that coarse attributes every shot shares by accident are not learnt with the class. Needs prior images.
    # coarse_sigma is also the shortcut check's blur; "auto": per fit, where the shots' latent power falls below
    # the noise at the scoring window's last time-step (diti_sd/coarse_cutoff.py), the resolved value recorded
    coarse_swap: float = 0.0
    coarse_sigma: float | str = 0.125
    # where the shots' blur names their class and some validation images break that accident, fit a second
    # set with coarse_swap 1 and keep the one more accurate on those images (ties: without). A second fit,
    # only then; the kept set's resolved recipe says which (diti_sd/swap_choice.py). Not in the reference
    coarse_swap_auto: bool = False
    # with coarse_swap_auto: where the shots' blur names their class (for most shots: coarse.names_outright) and
    # no validation image breaks that accident (nothing the user holds can tell it from the class), take the
    # method's premise, that coarse content is not the class, and fit with coarse_swap 1 (one fit). Where images
    # break it, the comparison decides; where the blur names nothing or only narrows the class, no swap. Not in
    # the reference
    coarse_swap_premise: bool = False
    # with object masks (fit(masks=...)): each shot's denoising loss is taken over its object alone (the mask at
    # the latents' resolution, area-averaged), so the background is never a target; a mask that keeps nothing
    # leaves its shot's loss whole. Prior images keep theirs whole, and early stopping's held-out shot is scored
    # whole. Not in the reference
    mask_loss: bool = False
    # with object masks, what the coarse swap replaces outside them: "coarse", the low-pass (the background's fine
    # detail stays, as without masks); "whole", every pixel, with the donor's (copy-paste: a background's own
    # detail, which an accident carries with its colour, goes too). Needs masks. Not in the reference
    swap_background: str = "coarse"
    checkpoint_every: int = 200  # optimiser iterations
    min_shots: int = 1
    # The reference's LoRA scale switch: its checkpoint-saving block sets the live adapters' scales to
    # 0.6 (UNet) and 0.7 (text encoder) for its sample images and never sets them back, so every step
    # after its first save trains at those scales. {shots: the step of that first save}; the steps after
    # it train at rescale_unet / rescale_text. Empty: scale 1 throughout.
    rescale_after_by_shots: dict[int, int] = field(default_factory=dict)
    rescale_unet: float = 1.0
    rescale_text: float = 1.0
    # dropout on the UNet and text adapters' outputs while training (lora_diffusion's dropout_p; 0: off)
    dropout: float = 0.0
    # early stopping on a held-out shot (diti_sd/training/early_stop.py; not in the reference): every this
    # many steps of a class, one image kept out of its training is denoised at early_stop_pairs fixed
    # (t, noise) draws over the fit's window, and the class keeps its adapter of the lowest error. 0: off
    early_stop_every: int = 0
    early_stop_pairs: int = 16

    CONSTRAINTS: ClassVar[dict] = {
        "steps_by_shots": Table(Interval(1)), "steps": [None, Interval(1)], "lr": POSITIVE,
        "text_lr": POSITIVE, "weight_decay": Interval(0), "batch_size": Interval(1),
        "t_min": Interval(0, T_STEPS - 1), "t_max": Interval(1, T_STEPS), "prior_weight": Interval(0),
        "prior_images": Interval(1), "prior_prompt": Options("generic", "class"),
        "prior_sample_steps": Interval(1), "prior_guidance": Interval(0), "grad_clip": POSITIVE,
        "mixed_precision": Options(*PRECISIONS), "brightness": Interval(0, 1), "contrast": Interval(0, 1),
        "crop": Options("center", "random", "none"), "latent": Options("mean", "sample"), "shift": Interval(0),
        "shift_step": Interval(1), "coarse_swap": Interval(0, 1), "coarse_sigma": [POSITIVE, Options("auto")],
        "swap_background": Options("coarse", "whole"),
        "checkpoint_every": Interval(0), "min_shots": Interval(1),
        "rescale_after_by_shots": Table(Interval(0), empty=True), "rescale_unet": Interval(0),
        "rescale_text": Interval(0), "dropout": Interval(0, 1, closed="left"),
        "early_stop_every": Interval(0), "early_stop_pairs": Interval(1),
    }

    @property
    def needed_shots(self) -> int:
        """Images a class needs to be fitted: ``min_shots``, and one more to hold out with early stopping."""
        return max(self.min_shots, 2) if self.early_stop_every else self.min_shots

    @property
    def coarse_swap_asked(self) -> bool:
        """Whether a fit may train with the coarse swap (always, or where ``coarse_swap_auto`` chooses it)."""
        return self.coarse_swap > 0 or self.coarse_swap_auto

    @property
    def reads_masks(self) -> bool:
        """Whether object masks change the fit: the coarse swap keeps them, or the loss is taken over them."""
        return self.coarse_swap_asked or self.mask_loss

    def check(self, where: str) -> None:
        check_window(where, self.t_min, self.t_max, T_STEPS)
        if self.dropout > 0 and self.gradient_checkpointing:
            # the recomputed forward pass would draw other masks than the one the loss was taken with
            raise RecipeError(f"{where}.dropout = {self.dropout} is not allowed with {where}.gradient_checkpointing: "
                              f"set one of them off")
        if self.coarse_swap > 0 and not self.prior:
            raise RecipeError(f"{where}.coarse_swap = {self.coarse_swap} draws coarse content from the prior images: "
                              f"set {where}.prior: true, or {where}.coarse_swap: 0")
        if self.coarse_swap_auto and (self.coarse_swap > 0 or not self.prior):
            raise RecipeError(f"{where}.coarse_swap_auto compares a fit without the swap (coarse_swap 0) with one with "
                              f"it, whose coarse content comes from the prior images: set {where}.coarse_swap: 0 and "
                              f"{where}.prior: true, or {where}.coarse_swap_auto: false")
        if self.swap_background != "coarse" and not self.coarse_swap_asked:
            raise RecipeError(f"{where}.swap_background = {self.swap_background!r} says what the coarse swap replaces "
                              f"outside each shot's mask, but the swap is off: set {where}.coarse_swap (or "
                              f"{where}.coarse_swap_auto), or {where}.swap_background: coarse")
        if self.coarse_swap_premise and not self.coarse_swap_auto:
            raise RecipeError(f"{where}.coarse_swap_premise decides where {where}.coarse_swap_auto's comparison "
                              f"cannot: set {where}.coarse_swap_auto: true, or {where}.coarse_swap_premise: false")


@dataclass
class ScoreConfig:
    t_min: int = 0
    t_max: int = 1000
    # the reference's (Diffusion Classifier's) stages, [grid size, classes kept after the stage]: each
    # stage evaluates an even grid of that many t over [t_min, t_max), minus the t already evaluated
    rounds: list[list[int]] = field(default_factory=lambda: [[20, 20], [50, 10], [100, 5], [500, 1]])
    # uniform | exp (w = exp(-t / weight_tau), peaks at t = 0) | tif (TiF's band, from the train latents) |
    # auto: the window or weight chosen on validation images after fitting (diti_sd/scoring/auto.py)
    weighting: str = "uniform"
    auto_pairs: int = 24  # auto: time-steps of the validation pass, evenly over [0, 1000)
    weight_tau: float = 250.0
    unet_scale: float = 1.0  # LoRA scale at test time
    text_scale: float = 1.0
    # dropout on the text LoRA's output while the class prompts are embedded for scoring: the reference
    # injects its test-time text LoRA with p = 0.1 in train mode before it switches to eval. One seeded
    # draw per class (score.seed, class index); 0: off
    text_dropout: float = 0.0
    batch_size: int = 32
    seed: int = 0
    # with a prefilter (`diti-sd eval --prefilter tip-adapter`), only its top-k classes enter the rounds
    prefilter_k: int | None = None
    # which latent cells an image's error is taken over: all (the reference's), or object: each cell weighted by
    # its share of the image's object mask, so that a background the shots shared cannot vote (every scored
    # image then needs a mask: predict(X, masks=...), and fit's validation images theirs)
    cells: str = "all"

    CONSTRAINTS: ClassVar[dict] = {
        "t_min": Interval(0, T_STEPS - 1), "t_max": Interval(1, T_STEPS), "weighting": Options(*WEIGHTINGS),
        "auto_pairs": Interval(6), "weight_tau": POSITIVE, "unet_scale": Interval(0), "text_scale": Interval(0),
        "text_dropout": Interval(0, 1, closed="left"),
        "batch_size": Interval(1),
        "prefilter_k": [None, Interval(1)], "cells": Options(*CELLS),
    }

    def check(self, where: str) -> None:
        check_window(where, self.t_min, self.t_max, T_STEPS)
        check_rounds(where, self.rounds, self.t_min, self.t_max)


@dataclass
class BaselineConfig:
    """The CLIP baselines of ``diti-sd eval`` for this data set."""

    # OpenCLIP zero-shot: the templates averaged into each class's text embedding
    zeroshot_templates: list[str] = field(default_factory=lambda: ["a photo of a {}.", "a photo of the {}."])
    # Tip-Adapter(-F) as the reference ran it (TiF inference/configs/tip/*.yaml, datasets/*.py templates);
    # the first is also Stable Diffusion zero-shot's prompt (`diti-sd eval --methods sd-zeroshot`)
    tip_templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    # the validation images every choice of `diti-sd eval` is made on (its --val-protocol overrides):
    # coop = min(k, 4) per class; full = the data set's whole validation split
    val_protocol: str = "coop"
    augment_passes: int = 10  # augmented passes averaged into the cache keys (augment_epoch)
    init_alpha: float = 5.0  # Tip-Adapter-F trains, and picks its epoch, with these
    init_beta: float = 1.0
    search_scale: list[float] = field(default_factory=lambda: [30.0, 30.0])  # largest beta, alpha searched
    search_step: list[int] = field(default_factory=lambda: [200, 20])  # grid points for beta, alpha
    clip_weight: float = 1.0  # weight of the zero-shot logits in Tip-Adapter's sum (0 for ids as class names)
    tipf_epochs: int = 20
    tipf_lr: float = 1e-3
    # Tip-Adapter-F's epoch kept: "last", TiF's (its run_finegrain.py never updates best_acc, so the last epoch
    # with a validation score above zero is saved), or "best": the best on validation
    tipf_epoch: str = "last"

    CONSTRAINTS: ClassVar[dict] = {
        "zeroshot_templates": Each(NAME, min_len=1), "tip_templates": Each(NAME, min_len=1),
        "augment_passes": Interval(1), "search_scale": Each(Interval(0.1, None, closed="neither"), min_len=2),
        "search_step": Each(Interval(1), min_len=2), "clip_weight": Interval(0), "tipf_epochs": Interval(1),
        "tipf_lr": POSITIVE, "val_protocol": Options(*VAL_PROTOCOLS), "tipf_epoch": Options(*TIPF_EPOCHS),
    }

    def check(self, where: str) -> None:
        for name in ("zeroshot_templates", "tip_templates"):
            for template in getattr(self, name):
                _check_format(f"{where}.{name}", template)
        for name in ("search_scale", "search_step"):
            if len(getattr(self, name)) != 2:
                fail(f"{where}.{name}", getattr(self, name), "two values: [beta's, alpha's]")


class RecipeMixin:
    """to_dict / to_yaml for the recipe dataclasses (the resolved recipe is saved beside the weights)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@dataclass
class Recipe(RecipeMixin):
    name: str = "custom"
    description: str = ""
    model: str = "stabilityai/stable-diffusion-2-base"
    resolution: int | None = None  # None: the model's native resolution
    # the base model's weights on a GPU, for fitting and scoring: fp16 | bf16 | fp32; None: bf16 where
    # the GPU has it. CPUs always run fp32.
    gpu_dtype: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)

    CONSTRAINTS: ClassVar[dict] = {
        "model": NAME, "resolution": [None, Interval(8)], "gpu_dtype": [None, Options("fp16", "bf16", "fp32")],
    }

    def check(self, where: str) -> None:
        if self.resolution is not None and self.resolution % 8:
            fail(f"{where}.resolution", self.resolution, "a multiple of 8 (the VAE's downsampling)")
        if self.fit.coarse_sigma == "auto" and (self.score.t_max >= T_STEPS or self.score.weighting == "auto"):
            # the noise at t = 999 drowns every frequency, and an auto window is not known before the fit
            raise RecipeError(f"{where}.fit.coarse_sigma = 'auto' reads where coarse ends at the scoring window's "
                              f"last time-step, which this recipe does not fix before fitting (score.t_max = "
                              f"{self.score.t_max}, score.weighting = {self.score.weighting}): set score.t_max below "
                              f"{T_STEPS} with a fixed weighting, or fit.coarse_sigma to a number (0.125 by default)")

    def steps_for(self, shots: int) -> int:
        return self.fit.steps if self.fit.steps is not None else _lookup(self.fit.steps_by_shots, shots, "steps")

    def rescale_after(self, shots: int) -> int | None:
        """The step after which fitting trains at ``fit.rescale_unet``/``rescale_text`` (None: never)."""
        table = self.fit.rescale_after_by_shots
        return _lookup(table, shots, "rescale step") if table else None

    def filter_for(self, shots: int) -> str:
        if not self.lora.filter_by_shots:
            return "none"
        return _lookup(self.lora.filter_by_shots, shots, "LoRA filter")


def _lookup(table: dict[int, typing.Any], shots: int, what: str):
    keys = sorted(k for k in table if k <= shots)
    if not keys:
        raise RecipeError(f"the recipe's {what} table has no entry for {shots} shots (keys: {sorted(table)})")
    return table[keys[-1]]
