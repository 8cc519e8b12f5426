"""One seed of the synthetic benchmark, drawn the same way by every experiment that runs per seed.

The demo, ``eval/tune_synthetic.py``, ``eval/budget_curve.py`` and ``eval/auto_window.py`` each fit
adapters on a seed's k-shot train split, with prior preservation on the seed's generic images, and score
them on one of the seed's streams. Which stream comes from which generator seed is what keeps the test
streams sealed (docs/benchmarks.md): tuning reads the validation streams, and only ``diti-sd demo
--full`` reads the test streams of the sealed seeds. So the offsets are written down once, here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from ...backbone import native_resolution, resolve_model_path
from ...classifier import DiTiFewShotClassifier
from ...data.images import LabeledImages
from ...data.masks import bounding_box, box_mask, grow_mask
from ...errors import CoarseShortcutWarning, ConfigError
from ...recipes import Recipe
from .data import SyntheticSpec, make_split, object_masks

MASK_KINDS = ("object", "box")  # what SyntheticSeed.fit's masks hold: each shot's object, or its bounding box

# stream -> (split, generator seed = offset + seed, shortcut shift). "val" is what a user's validation images
# are: drawn as the shots are, the spurious attribute following the class; every setting, window and
# temperature is chosen on it. "oracle val" draws the spurious attribute independently of the class, as the
# decorrelated test does: a labelled oracle only. "second ..." streams choose how auto chooses
# (eval/auto_window.py). "held-out shots" are more images drawn like the shots; "train, other backgrounds"
# are the shots themselves with the next class's shortcut (memorisation measured without the shortcut).
# "shots without the shortcut" are k-shot train images whose background is independent of the class: a
# control a user never has, which prices the shortcut (what the same recipe learns from shots that lack it).
CONTROL_SHOTS = "shots without the shortcut"
STREAMS = {
    "train": ("train", 0, 0),
    "decorrelated": ("decorrelated", 1000, 0),
    "correlated": ("correlated", 1000, 0),
    "val": ("train", 5000, 0),
    "oracle val": ("val", 5000, 0),
    "second val": ("train", 6000, 0),
    "second oracle val": ("val", 6000, 0),
    "generic": ("generic", 7000, 0),
    "held-out shots": ("train", 8000, 0),
    "train, other backgrounds": ("train", 0, 1),
    CONTROL_SHOTS: ("val", 9000, 0),
}
TRAIN_STREAMS = ("train", CONTROL_SHOTS)  # what adapters may be fitted on
# what a study may score: never the sealed test streams (decorrelated, correlated)
VALIDATION_STREAMS = ("second oracle val", "oracle val", "second val", "val")


def base_textures(model: str) -> list[str]:
    """The textures a benchmark base model's generic images showed (its ``base_recipe.yaml``), empty when it
    saw every texture or has no such record."""
    path = Path(resolve_model_path(model)) / "base_recipe.yaml"
    if not path.is_file():
        return []
    return list((yaml.safe_load(path.read_text()).get("domain") or {}).get("generic_textures") or [])


@dataclass
class SyntheticSeed:
    """A seed's k-shot train split, its prior-preservation images and its other streams. ``train_stream``:
    the stream the shots come from (the control ``"shots without the shortcut"`` in diagnostics only)."""

    seed: int
    shots: int
    spec: SyntheticSpec
    train_stream: str = "train"

    def __post_init__(self):
        if self.train_stream not in TRAIN_STREAMS:
            raise ConfigError(f"train_stream must be one of {', '.join(TRAIN_STREAMS)}; got {self.train_stream!r}")

    @classmethod
    def for_recipe(cls, recipe: Recipe, seed: int, shots: int, task: str = "texture",
                   n_classes: int | None = None, train_stream: str = "train",
                   shortcut_rate: float = 1.0, generic_backgrounds: list[int] | None = None,
                   background_detail: float = 0.0, background_detail_kind: str = "thin") -> SyntheticSeed:
        """The domain at the recipe's resolution (the base model's own, read from its configs, if it sets none);
        its generic images (the prior-preservation images) show only the textures the base was trained on.
        ``shortcut_rate``: the share of the shots (and of the streams drawn as they are) whose spurious
        attribute follows the class. ``generic_backgrounds``: the background colours the generic images draw from
        (default: all). ``background_detail``: the amplitude of the fine pattern each background colour carries
        (default: flat backgrounds); ``background_detail_kind``: what that pattern is (thin stripes, or another
        class's texture)."""
        size = recipe.resolution or native_resolution(recipe.model)
        extra = {} if n_classes is None else {"n_classes": n_classes}
        if shortcut_rate != 1.0:
            extra["shortcut_rate"] = shortcut_rate
        if generic_backgrounds:
            extra["generic_backgrounds"] = list(generic_backgrounds)
        if background_detail:
            extra["background_detail"] = background_detail
        if background_detail_kind != "thin":
            extra["background_detail_kind"] = background_detail_kind
        if task in ("texture", "many"):
            extra["generic_textures"] = base_textures(recipe.model)
        return cls(seed, shots, SyntheticSpec(size=size, task=task, **extra), train_stream)

    def stream(self, name: str, per_class: int) -> LabeledImages:
        if name not in STREAMS:
            raise ConfigError(f"unknown stream {name!r}; choose from {', '.join(STREAMS)}")
        split, offset, shift = STREAMS[name]
        return make_split(self.spec, split, per_class, offset + self.seed, shift)

    @cached_property
    def train(self) -> LabeledImages:
        return self.stream(self.train_stream, self.shots)

    def stream_masks(self, name: str, per_class: int) -> list:
        """The exact object masks of :meth:`stream`'s images, in its order, from the generator."""
        if name not in STREAMS:
            raise ConfigError(f"unknown stream {name!r}; choose from {', '.join(STREAMS)}")
        split, offset, shift = STREAMS[name]
        return object_masks(self.spec, split, per_class, offset + self.seed, shift)

    @cached_property
    def train_masks(self) -> list:
        """The shots' exact object masks, from the generator (``fit(masks=...)``)."""
        return self.stream_masks(self.train_stream, self.shots)

    def names(self, data: LabeledImages) -> list[str]:
        return [self.spec.classnames[i] for i in data.labels]

    def prior(self, recipe: Recipe) -> list:
        """Generic images of the domain for prior preservation: the role "a photo of an aircraft" plays
        for SD; the tiny base's own samples are too crude for it."""
        return self.stream("generic", max(1, recipe.fit.prior_images // self.spec.n_classes)).images

    def fit(self, recipe: Recipe, validation: LabeledImages | None = None, device: str = "cpu", masks: bool = False,
            mask_rim: int = 0, mask_kind: str = "object", **estimator) -> DiTiFewShotClassifier:
        """Adapters fitted on the train split (``estimator``: further DiTiFewShotClassifier parameters; ``masks``:
        give the fit the shots' object masks, grown by ``mask_rim`` pixels, or shrunk where negative:
        :func:`~.data.grow_mask`; ``mask_kind="box"``: each object's filled bounding box instead, as a data set's
        box annotation gives). The fit's coarse-shortcut warning is held back: the benchmark's
        shots carry the shortcut by design, and the demo's report gives the check's figures
        (``fit_summary_["coarse_shortcut"]``)."""
        if mask_kind not in MASK_KINDS:
            raise ConfigError(f"unknown mask kind {mask_kind!r}; choose from {', '.join(MASK_KINDS)}")
        clf = DiTiFewShotClassifier(recipe=recipe, random_state=self.seed, device=device, progress=False, **estimator)
        val = None if validation is None else (validation.images, self.names(validation))
        given = None
        if masks:
            given = [grow_mask(m, mask_rim) for m in self.train_masks]
            if mask_kind == "box":
                if not all(bool(m.any()) for m in given):
                    raise ConfigError(f"mask_rim {mask_rim} shrinks some of the shots' objects to nothing: no box "
                                      "to draw around them")
                given = [box_mask(tuple(m.shape[::-1]), bounding_box(m)) for m in given]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CoarseShortcutWarning)
            return clf.fit(self.train.images, self.names(self.train), prior_images=self.prior(recipe),
                           validation=val, masks=given)

    def labels(self, data: LabeledImages, clf: DiTiFewShotClassifier) -> np.ndarray:
        """``data``'s labels as indices into ``clf.classes_`` (the column order of its scores)."""
        index = {c: i for i, c in enumerate(clf.classes_.tolist())}
        return np.array([index[n] for n in self.names(data)])
