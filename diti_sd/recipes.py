"""Recipes: YAML files in ``recipes/`` loaded into dataclasses that reject unknown keys.

A recipe holds every number a run uses; the resolved recipe is saved beside the adapters it made.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from .constraints import (
    POSITIVE,
    PRECISIONS,
    Each,
    Interval,
    Options,
    Pattern,
    RecipeError,
    Table,
    check_rounds,
    check_window,
    fail,
    validate,
)
from .methods import VAL_PROTOCOLS


def _recipe_dir() -> Path:
    """The top-level ``recipes/`` of a checkout (editable install, PYTHONPATH); a wheel carries the same
    folder as ``diti_sd/_recipes`` (pyproject.toml maps it there), so no symlink is needed."""
    packaged = Path(__file__).parent / "_recipes"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "recipes"


RECIPE_DIR = _recipe_dir()


# The allowed values the code elsewhere dispatches on, declared once here
DATASET_KINDS = ("fgvc-aircraft", "image-folder", "hf", "isic2019", "duke", "veri", "synthetic")
METRICS = ("accuracy", "macro-f1")
WEIGHTINGS = ("uniform", "exp", "tif", "auto")
T_STEPS = 1000  # the training time-steps of every Stable Diffusion and DDPM scheduler this package loads
_NAME = Pattern(r"\S(.*\S)?", "a non-empty name")
_BLOCK_FILTER = Pattern(r"none|(down|mirror|all)-[012]", "none or <down|mirror|all>-<0|1|2>")


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
        "image_column": _NAME, "label_column": _NAME, "train_split": _NAME, "val_split": [None, _NAME],
        "test_split": _NAME, "metric": Options(*METRICS),
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
class LoraConfig:
    rank: int = 16
    alpha: float | None = None  # None: alpha = rank (scale 1)
    # the linears of every attention module and the GEGLU input projection: what the reference's
    # LoRA (lora_diffusion, targets Attention/CrossAttention/GEGLU) adapts; not ff.net.2
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj"])
    feed_forward: bool = False  # also both feed-forward linears, ff.net.0.proj and ff.net.2
    # the reference's unet_lora_filter by shots (the largest key <= shots applies): "none" adapts every
    # block; "all-1" down_blocks.1-2, up_blocks.1-2, mid_block; "all-2" down_blocks.2, up_blocks.1,
    # mid_block; also "down-<l>" and "mirror-<l>". Empty: every block.
    filter_by_shots: dict[int, str] = field(default_factory=dict)
    text_rank: int = 0  # 0: no text-encoder LoRA
    text_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])
    init: str = "normal"  # A ~ N(0, 1/r^2) as the reference; "kaiming": peft's Kaiming-uniform
    init_seed: int = 0

    CONSTRAINTS: ClassVar[dict] = {
        "rank": Interval(1), "alpha": [None, POSITIVE], "targets": Each(_NAME, min_len=1),
        "filter_by_shots": Table(_BLOCK_FILTER, empty=True), "text_rank": Interval(0),
        "text_targets": Each(_NAME, min_len=1), "init": Options("normal", "kaiming"),
    }


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
    checkpoint_every: int = 200  # optimiser iterations
    min_shots: int = 1
    # The reference's LoRA scale switch: its checkpoint-saving block sets the live adapters' scales to
    # 0.6 (UNet) and 0.7 (text encoder) for its sample images and never sets them back, so every step
    # after its first save trains at those scales. {shots: the step of that first save}; the steps after
    # it train at rescale_unet / rescale_text. Empty: scale 1 throughout.
    rescale_after_by_shots: dict[int, int] = field(default_factory=dict)
    rescale_unet: float = 1.0
    rescale_text: float = 1.0

    CONSTRAINTS: ClassVar[dict] = {
        "steps_by_shots": Table(Interval(1)), "steps": [None, Interval(1)], "lr": POSITIVE,
        "text_lr": POSITIVE, "weight_decay": Interval(0), "batch_size": Interval(1),
        "t_min": Interval(0, T_STEPS - 1), "t_max": Interval(1, T_STEPS), "prior_weight": Interval(0),
        "prior_images": Interval(1), "prior_prompt": Options("generic", "class"),
        "prior_sample_steps": Interval(1), "prior_guidance": Interval(0), "grad_clip": POSITIVE,
        "mixed_precision": Options(*PRECISIONS), "brightness": Interval(0, 1), "contrast": Interval(0, 1),
        "crop": Options("center", "random", "none"), "latent": Options("mean", "sample"), "shift": Interval(0),
        "shift_step": Interval(1), "checkpoint_every": Interval(0), "min_shots": Interval(1),
        "rescale_after_by_shots": Table(Interval(0), empty=True), "rescale_unet": Interval(0),
        "rescale_text": Interval(0),
    }

    def check(self, where: str) -> None:
        check_window(where, self.t_min, self.t_max, T_STEPS)


@dataclass
class ScoreConfig:
    t_min: int = 0
    t_max: int = 1000
    # the reference's (Diffusion Classifier's) stages, [grid size, classes kept after the stage]: each
    # stage evaluates an even grid of that many t over [t_min, t_max), minus the t already evaluated
    rounds: list[list[int]] = field(default_factory=lambda: [[20, 20], [50, 10], [100, 5], [500, 1]])
    # uniform | exp (w = exp(-t / weight_tau), peaks at t = 0) | tif (TiF's band, from the train latents) |
    # auto: the window or weight chosen on validation images after fitting (diti_sd/score_choice.py)
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

    CONSTRAINTS: ClassVar[dict] = {
        "t_min": Interval(0, T_STEPS - 1), "t_max": Interval(1, T_STEPS), "weighting": Options(*WEIGHTINGS),
        "auto_pairs": Interval(6), "weight_tau": POSITIVE, "unet_scale": Interval(0), "text_scale": Interval(0), "text_dropout": Interval(0, 1, closed="left"),
        "batch_size": Interval(1),
        "prefilter_k": [None, Interval(1)],
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

    CONSTRAINTS: ClassVar[dict] = {
        "zeroshot_templates": Each(_NAME, min_len=1), "tip_templates": Each(_NAME, min_len=1),
        "augment_passes": Interval(1), "search_scale": Each(Interval(0.1, None, closed="neither"), min_len=2),
        "search_step": Each(Interval(1), min_len=2), "clip_weight": Interval(0), "tipf_epochs": Interval(1),
        "tipf_lr": POSITIVE, "val_protocol": Options(*VAL_PROTOCOLS),
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
        "model": _NAME, "resolution": [None, Interval(8)], "gpu_dtype": [None, Options("fp16", "bf16", "fp32")],
    }

    def check(self, where: str) -> None:
        if self.resolution is not None and self.resolution % 8:
            fail(f"{where}.resolution", self.resolution, "a multiple of 8 (the VAE's downsampling)")

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


def from_dict(cls, data: dict | None, where: str = "recipe"):
    """Build a dataclass from a dict, recursing into nested dataclasses; unknown keys are errors."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"unknown key(s) {unknown} in {where}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = _check_type(value, hint, f"{where}.{name}")
    obj = cls(**kwargs)
    validate(obj, where)
    return obj


def _check_type(value, hint, where):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except RecipeError as err:
                errors.append(str(err))
        raise RecipeError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[]") for v in value] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return {_check_type(k, args[0], where): _check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"{where}: expected a number, got {value!r}") from None
    if hint is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise RecipeError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def available_recipes() -> list[str]:
    """Registered recipe names; files starting with ``_`` are shared parts that recipes inherit."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def load_recipe(name_or_path: str | os.PathLike | Recipe, overrides: dict | list[str] | None = None) -> Recipe:
    """A registered recipe name (``fgvc-aircraft``), a YAML path, or a Recipe; then dotted overrides."""
    return load_registered(Recipe, RECIPE_DIR, name_or_path, overrides, "recipe")


def load_registered(cls, registry: Path, name_or_path, overrides=None, what: str = "recipe"):
    """A recipe dataclass ``cls`` from a name registered in ``registry``, a YAML path or an instance."""
    if isinstance(name_or_path, cls):
        data = name_or_path.to_dict()
    else:
        data = _read_yaml(registry, name_or_path, what)
    return from_dict(cls, apply_overrides(data, overrides))


def _read_yaml(registry: Path, name_or_path, what: str, seen: tuple = ()) -> dict:
    """A recipe file as a dict; ``inherit: NAME`` merges it over the registered recipe NAME."""
    path = Path(name_or_path)
    if not path.suffix:
        path = registry / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in registry.glob("*.yaml") if not p.stem.startswith("_")))
        raise RecipeError(f"no {what} {str(name_or_path)!r}; registered: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    if parent is not None:
        if parent in seen:
            raise RecipeError(f"{path}: recipes inherit in a circle ({' -> '.join((*seen, parent))})")
        base = _read_yaml(registry, parent, what, (*seen, str(parent)))
        base.pop("name", None)
        data = _merge(base, data)
    data.setdefault("name", path.stem)
    return data


def _merge(base: dict, top: dict) -> dict:
    """Sections merge key by key; a value inside a section (a shots table too) replaces the base's whole."""
    out = dict(base)
    for key, value in top.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_overrides(data: dict, overrides: dict | list[str] | None) -> dict:
    """Set dotted ``section.key`` overrides in a nested recipe dict (in place; returned for chaining)."""
    for key, value in _parse_overrides(overrides).items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def _parse_overrides(overrides) -> dict:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like section.key=value, e.g. fit.lr=1e-4")
        parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return parsed
