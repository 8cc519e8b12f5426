"""A synthetic fine-grained benchmark where the truth is known.

Every image shows one object on a background. The class is a faint, fine texture on the object (a
nuanced attribute that diffusion noise destroys at small t). The prominent attributes — background
colour, object shape, size and position — carry no class information by themselves, except in the
few-shot train split, where the background colour follows the class. On the ``decorrelated`` test
split the background is drawn independently of the class; on the ``correlated`` split it follows the
train correlation. A classifier that reads the background is right on ``correlated`` and at chance on
``decorrelated``; one that reads the texture is right on both.

Two more domains of the same form turn the attributes round, so that the informative time-steps lie
higher than on the texture task and small t reads the shortcut: the class is a coarse attribute that
survives more noise, and the spurious one is the fine texture, which follows the class in the train
split only. ``task="colour"``: the class is the background colour (the shape is noise everywhere);
``task="shape"``: the class is the object's shape (the background is noise everywhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ...data.images import LabeledImages
from ...errors import ConfigError

# Saturated, well-separated background colours; with the default 5 classes, class c's train colour is
# BACKGROUNDS[c].
BACKGROUNDS = (
    (0.85, 0.25, 0.2), (0.2, 0.7, 0.3), (0.2, 0.35, 0.85), (0.9, 0.8, 0.2), (0.7, 0.3, 0.8),
    (0.2, 0.8, 0.8), (0.95, 0.55, 0.2), (0.5, 0.5, 0.5),
)
COLOUR_NAMES = ("red", "green", "blue", "yellow", "purple", "cyan", "orange", "grey")  # of BACKGROUNDS
TEXTURES = ("horizontal", "vertical", "diagonal", "antidiagonal", "checker", "dots", "coarse-horizontal",
            "coarse-vertical")
SHAPES = ("disc", "square", "diamond")
SPLITS = ("train", "val", "correlated", "decorrelated", "generic")
# the many-class variant: fine stripes by orientation, period and width (24 textures, none the base's)
MANY_TEXTURES = tuple(f"stripes-{o}-p{p}-w{w}" for o in "hvda" for p in (4, 5, 6) for w in (1, 2))
# the fine detail of each background (``background_detail``), so that a site brings its colour and its detail
# together: thin stripes none of TEXTURES has (they are MANY_TEXTURES' thin ones: the variant needs the texture task).
# Each is on a stripe at the corner, where background_of reads the colour
BACKGROUND_DETAILS = tuple(f"stripes-{o}-p{p}-w1" for p in (6, 5) for o in "hvda")
# what that detail is (``background_detail_kind``): those thin stripes, or another class's own texture (colour b
# carries class b + 1's), detail at the classes' own scale that a model reading fine detail anywhere confuses with
# the object's. Each class texture of the first five is also on a stripe at the corner
BACKGROUND_DETAIL_KINDS = ("thin", "class")
TASKS = ("texture", "colour", "shape", "many")  # what the class is: a fine texture, or a coarse attribute


@dataclass
class SyntheticSpec:
    n_classes: int = 5
    size: int = 32
    texture_amplitude: float = 0.10  # +- on a [0, 1] scale: faint next to the background contrast
    object_level: float = 0.5  # mean grey level of the object
    min_extent: float = 0.40  # object size as a fraction of the image side
    max_extent: float = 0.70
    classnames: list[str] = field(default_factory=list)
    # texture: class = texture, spurious = background; colour / shape: class = background / shape, spurious = texture;
    # many: class = one of MANY_TEXTURES, spurious = one of the first five backgrounds (class c: c mod 5)
    task: str = "texture"
    # the textures the generic split draws (default: the class textures); a base trained on others has
    # never seen the benchmark's classes (recipes/base/tiny-base-unseen-textures.yaml)
    generic_textures: list[str] = field(default_factory=list)
    # in the splits where the spurious attribute follows the class (train, correlated), the share of images
    # where it does; the others draw it independently, as real shots break an accident now and then. 1: all
    shortcut_rate: float = 1.0
    # the background colours the generic split (the prior-preservation images, the coarse swap's donors) draws
    # from; empty: all of them, as the other splits. Fewer: generic images that do not span the test's coarse
    # variation, as a user's generic images of the domain may not
    generic_backgrounds: list[int] = field(default_factory=list)
    # the amplitude (+- on a [0, 1] scale, as texture_amplitude) of a fine pattern on the background, one per
    # background colour (BACKGROUND_DETAILS, or with background_detail_kind "class" the next class's texture), which
    # follows the class wherever the colour does: a photograph's background has detail of its own that an accident
    # carries with its colour. 0: flat backgrounds
    background_detail: float = 0.0
    background_detail_kind: str = "thin"

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"unknown synthetic task {self.task!r}; choose from {', '.join(TASKS)}")
        if not 0.0 <= self.shortcut_rate <= 1.0:
            raise ConfigError(f"shortcut_rate must be in [0, 1]; got {self.shortcut_rate}")
        if not 0.0 <= self.background_detail <= 0.2:  # the stripes of the lightest colours clip above 0.05
            raise ConfigError(f"background_detail must be in [0, 0.2]; got {self.background_detail}")
        if self.background_detail and self.task != "texture":
            raise ConfigError(f"background_detail draws stripes on the background, which the {self.task} task's "
                              "classes or accidents may be; it needs the texture task")
        if self.background_detail_kind not in BACKGROUND_DETAIL_KINDS:
            raise ConfigError(f"background_detail_kind must be one of {', '.join(BACKGROUND_DETAIL_KINDS)}; "
                              f"got {self.background_detail_kind!r}")
        if self.background_detail_kind == "class" and self.n_classes > 5:  # the sixth texture (dots) is off-stripe
            raise ConfigError("background_detail_kind 'class' draws the first five class textures on the backgrounds; "
                              f"it needs at most 5 classes, got {self.n_classes}")
        if self.generic_backgrounds and self.task not in ("texture", "many"):
            raise ConfigError(f"generic_backgrounds holds the generic images' background colours, the spurious "
                              f"attribute of a texture task; the {self.task} task's is another")
        if any(not 0 <= b < background_count(self) for b in self.generic_backgrounds):
            raise ConfigError(f"generic_backgrounds must index the {background_count(self)} background colours; "
                              f"got {self.generic_backgrounds}")
        names = {"texture": TEXTURES, "colour": COLOUR_NAMES, "shape": SHAPES, "many": MANY_TEXTURES}[self.task]
        if not 2 <= self.n_classes <= len(names):
            raise ConfigError(f"n_classes must be in 2..{len(names)} for the {self.task} task")
        if not self.classnames:
            self.classnames = list(names[: self.n_classes])
        unknown = sorted(set(self.generic_textures) - set(TEXTURES))
        if unknown or (self.generic_textures and self.task not in ("texture", "many")):
            raise ConfigError(f"generic_textures must name textures of {', '.join(TEXTURES)} and needs a texture "
                              f"task; got {self.generic_textures} for the {self.task} task")


def texture(kind: str, size: int) -> np.ndarray:
    """A zero-mean +-1 pattern of period 4 px (8 for the coarse ones): fine detail at 16-32 px.
    ``stripes-<o>-p<period>-w<width>``: stripes ``width`` px wide every ``period`` px, horizontal, vertical,
    diagonal or antidiagonal (o = h, v, d, a), +1 on the stripes and what keeps the mean zero elsewhere."""
    y, x = np.mgrid[0:size, 0:size]
    if kind.startswith("stripes-"):
        _, o, p, w = kind.split("-")
        period, width = int(p[1:]), int(w[1:])
        u = {"h": y, "v": x, "d": x + y, "a": x - y}[o] % period
        return np.where(u < width, 1.0, -width / (period - width))
    patterns = {
        "horizontal": np.where(y % 4 < 2, 1.0, -1.0),
        "vertical": np.where(x % 4 < 2, 1.0, -1.0),
        "diagonal": np.where((x + y) % 4 < 2, 1.0, -1.0),
        "antidiagonal": np.where((x - y) % 4 < 2, 1.0, -1.0),
        "checker": np.where((x // 2 + y // 2) % 2 == 0, 1.0, -1.0),
        "dots": np.where((x % 4 == 0) & (y % 4 == 0), 3.0, -0.2),
        "coarse-horizontal": np.where(y % 8 < 4, 1.0, -1.0),
        "coarse-vertical": np.where(x % 8 < 4, 1.0, -1.0),
    }
    return patterns[kind]


def shape_mask(size: int, shape: int, extent: float, center: tuple[float, float]) -> np.ndarray:
    """(size, size) bool: the object's pixels."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    cy, cx = center
    r = extent / 2
    dy, dx = np.abs(y - cy), np.abs(x - cx)
    return {"disc": dy**2 + dx**2 <= r**2, "square": (dy <= r * 0.85) & (dx <= r * 0.85),
            "diamond": dy + dx <= r * 1.2}[SHAPES[shape]]


def render(spec: SyntheticSpec, label: int | None, background: int, shape: int, extent: float,
           center: tuple[float, float], texture_kind: str | None = None) -> np.ndarray:
    """One HxWx3 image in [0, 1]."""
    s = spec.size
    mask = shape_mask(s, shape, extent, center)
    image = np.empty((s, s, 3))
    image[:] = BACKGROUNDS[background]
    if spec.background_detail:
        image += spec.background_detail * texture(background_detail_pattern(spec, background), s)[..., None]
    kind = texture_kind or TEXTURES[label]
    obj = spec.object_level + spec.texture_amplitude * texture(kind, s)
    image[mask] = obj[mask][:, None]
    return np.clip(image, 0, 1)


def background_detail_pattern(spec: SyntheticSpec, background: int) -> str:
    """The texture a background colour carries with ``background_detail`` (see BACKGROUND_DETAIL_KINDS)."""
    if spec.background_detail_kind == "class":
        return TEXTURES[(background + 1) % background_count(spec)]
    return BACKGROUND_DETAILS[background]


def background_count(spec: SyntheticSpec) -> int:
    """How many background colours a spec's images draw from: one per class, but five for ``many``."""
    return 5 if spec.task == "many" else spec.n_classes


def _draws(spec: SyntheticSpec, split: str, n_per_class: int, seed: int, shift: int = 0):
    """Per image of :func:`make_split`, what it renders: (label, background, texture kind, shape, extent, centre)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {SPLITS}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    n_bg = background_count(spec)
    for i in range(n_per_class * spec.n_classes):
        label = i % spec.n_classes
        if split == "generic":  # with generic_textures, the label indexes them, not the classes
            label = int(rng.integers(len(spec.generic_textures) or spec.n_classes))
        follows = split in ("train", "correlated")  # the spurious attribute follows the class
        if follows and spec.shortcut_rate < 1.0:  # draws nothing at rate 1: the default streams stay as they were
            follows = bool(rng.random() < spec.shortcut_rate)
        if split == "generic" and spec.generic_backgrounds:  # one draw, as below, among the allowed colours
            spurious = spec.generic_backgrounds[int(rng.integers(len(spec.generic_backgrounds)))]
        else:
            spurious = (label + shift) % n_bg if follows else int(rng.integers(n_bg))
        if spec.task in ("texture", "many"):
            names = spec.generic_textures if split == "generic" and spec.generic_textures else (
                MANY_TEXTURES if spec.task == "many" else TEXTURES)
            background, kind = spurious, names[label]
        elif spec.task == "colour":  # the class is the background; the texture is the shortcut
            background, kind = label, TEXTURES[spurious]
        else:  # the class is the shape; the texture is the shortcut; the background is noise everywhere
            background, kind = int(rng.integers(n_bg)), TEXTURES[spurious]
        extent = float(rng.uniform(spec.min_extent, spec.max_extent))
        margin = extent / 2
        center = (float(rng.uniform(margin, 1 - margin)), float(rng.uniform(margin, 1 - margin)))
        shape = label if spec.task == "shape" else int(rng.integers(len(SHAPES)))
        yield label, background, kind, shape, extent, center


def make_split(spec: SyntheticSpec, split: str, n_per_class: int, seed: int, shift: int = 0) -> LabeledImages:
    """``n_per_class`` images of each class (``generic``: n_per_class x n_classes unlabelled-in-spirit
    images whose texture, background and shape are all independent), as (3, H, W) tensors.
    ``spec.task`` says which attribute is the class and which one is spurious. ``shift``: in the splits where
    the spurious attribute follows the class, class c gets class (c + shift)'s instead, every other draw
    unchanged (the same images with another class's shortcut)."""
    images, labels = [], []
    for label, background, kind, shape, extent, center in _draws(spec, split, n_per_class, seed, shift):
        array = render(spec, label, background, shape, extent, center, texture_kind=kind)
        images.append(torch.from_numpy(array).permute(2, 0, 1).float())
        labels.append(label)
    return LabeledImages(images, labels, list(spec.classnames), [f"{split}-{seed}-{i}" for i in range(len(images))])


def object_masks(spec: SyntheticSpec, split: str, n_per_class: int, seed: int, shift: int = 0) -> list[torch.Tensor]:
    """The exact object masks ((H, W) bool) of :func:`make_split`'s images, in its order (a user's would come from
    a segmenter or annotations, less exact)."""
    return [torch.from_numpy(shape_mask(spec.size, shape, extent, center))
            for _, _, _, shape, extent, center in _draws(spec, split, n_per_class, seed, shift)]


def background_of(image: torch.Tensor, detail: float = 0.0) -> int:
    """The index in BACKGROUNDS of an image's background colour, read at a corner (objects never reach
    the corners: their extent is at most 0.7 of the side and they stay inside the image). ``detail``: the spec's
    ``background_detail``, whose every pattern is on a stripe (+detail) at the corner."""
    corner = image[:, 0, 0].numpy() - detail
    return int(np.argmin([np.abs(corner - np.array(c)).sum() for c in BACKGROUNDS]))


def attribute_caption(image: torch.Tensor, label: int, spec: SyntheticSpec) -> str:
    """What a web caption would say of the image: its texture and its background colour (``label`` indexes
    ``spec.generic_textures`` where the spec has them: only generic images are captioned then)."""
    texture_name = (spec.generic_textures or spec.classnames)[label]
    return f"a photo of a {texture_name} pattern on a {COLOUR_NAMES[background_of(image)]} background"


def background_class_dependence(data: LabeledImages, spec: SyntheticSpec) -> float:
    """Cramér's V between class and background colour (0: independent, 1: determined)."""
    bgs = [background_of(img, spec.background_detail) for img in data.images]
    table = np.zeros((spec.n_classes, len(BACKGROUNDS)))
    for label, bg in zip(data.labels, bgs):
        table[label, bg] += 1
    table = table[:, table.sum(0) > 0]
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / np.maximum(expected, 1e-12)).sum()
    k = min(table.shape) - 1
    return float(math.sqrt(chi2 / (table.sum() * k))) if k > 0 else 0.0
