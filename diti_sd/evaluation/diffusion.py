"""DiTi-SD in ``diti-sd eval``: an adapter set per split and fit settings, fitted once and reused, scored as
the run's recipe says; and Stable Diffusion zero-shot (Diffusion Classifier) on the same engine.

An adapter folder is named by everything that changes the adapters it holds (the base model, the data
set's pixels, the prompt, the LoRA and fit sections, the split), so a run with other settings fits its own
set instead of scoring another's and writing its figures onto that set's model card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from ..classifier import DiTiFewShotClassifier
from ..data.images import ImageSequence
from ..errors import ConfigError
from ..work_folders import finished_set

# the recipe sections a fit reads: two runs share an adapter set only when these agree
FIT_SECTIONS = ("model", "resolution", "gpu_dtype", "dataset", "prompt", "lora", "fit")


def fit_key(recipe, splits: str, pixels: str = "") -> str:
    """A hash of what decides a fit's adapters: the recipe's fit sections, where the split came from and the data
    set's preparation of its images (``LabeledImages.prepare``; none: left out, so such folders keep their names)."""
    data = recipe.to_dict()
    parts = {k: data[k] for k in FIT_SECTIONS} | {"splits": splits} | ({"pixels": pixels} if pixels else {})
    parts["dataset"] = {k: v for k, v in parts["dataset"].items() if k != "metric"}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


class DiffusionMethods:
    """DiTi-SD's adapter sets under ``adapters_dir`` and the base model alone, for one evaluation."""

    def __init__(self, recipe, adapters_dir: Path, splits: str, device=None, compile: bool = False,
                 progress: bool = True, pixels: str = ""):
        self.recipe, self.adapters_dir, self.splits, self.pixels = recipe, Path(adapters_dir), splits, pixels
        self.device, self.compile, self.progress = device, compile, progress
        self._zero_shot = None

    def folder(self, shots: int, seed: int) -> Path:
        tag = "-tifsplit" if self.splits != "coop" else ""
        key = fit_key(self.recipe, self.splits, self.pixels)
        return self.adapters_dir / f"{self.recipe.name}-{shots}shot-seed{seed}{tag}-{key}"

    def classifier(self, shots: int, seed: int, tr, cal, cal_candidates=None) -> DiTiFewShotClassifier:
        """The split's adapters (fitted once, then read from their folder), scored as this run's recipe says;
        with ``score.weighting: auto`` the window is chosen on ``cal``, the split's validation draw."""
        folder = self.folder(shots, seed)
        auto = self.recipe.score.weighting == "auto"
        if finished_set(folder):
            clf = DiTiFewShotClassifier.from_pretrained(folder, device=self.device, compile=self.compile,
                                                        progress=self.progress)
            saved, mine = clf.recipe_.to_dict(), self.recipe.to_dict()
            if mine["fit"]["coarse_sigma"] == "auto":  # the saved set holds the number it resolved from these shots
                mine["fit"]["coarse_sigma"] = saved["fit"]["coarse_sigma"]
            wrong = [k for k in FIT_SECTIONS if k != "model" and saved[k] != mine[k]]
            if wrong:
                raise ConfigError(f"the adapter set in {folder} was fitted with other {', '.join(wrong)} settings "
                                  "than this run's; remove the folder or pass another --adapters-dir")
            chosen_under = clf.recipe_.score
            clf.recipe_ = dataclasses.replace(clf.recipe_, score=dataclasses.replace(self.recipe.score))
            if auto and (not clf.score_choice_ or chosen_under != self.recipe.score):
                self.choose(clf, cal, cal_candidates)
            return clf
        clf = DiTiFewShotClassifier(recipe=self.recipe, random_state=seed, device=self.device, compile=self.compile,
                                    progress=self.progress)
        validation = (ImageSequence(cal), cal.label_names()) if auto else None
        clf.fit(ImageSequence(tr), tr.label_names(), validation=validation, validation_candidates=cal_candidates,
                output_dir=folder, resume=True)
        clf.save_pretrained(folder)
        return clf

    @staticmethod
    def choose(clf, cal, cal_candidates=None) -> None:
        clf.choose_scoring(ImageSequence(cal), cal.label_names(), candidates=cal_candidates,
                           source=f"the split's validation draw, {len(cal)} images (min(k, 4) per class)")

    def zero_shot(self, test, cal, template: str, cache_dir: Path) -> dict:
        """Stable Diffusion zero-shot (Diffusion Classifier, TiF's `--method diffusionclf`): the base model with
        the data set's template per class, no adapters; the recipe's stages, weighted uniformly as Diffusion
        Classifier weighs them. The test set is scored once for every (shots, seed); each split's validation
        draw (for the temperature) as it comes."""
        if self._zero_shot is None:
            clf = DiTiFewShotClassifier.zero_shot(
                test.classnames, template, recipe=self.recipe, device=self.device,
                overrides={"score.weighting": "uniform", "score.text_dropout": 0.0}, progress=self.progress)
            result = clf.score_images(ImageSequence(test), cache_dir=cache_dir)
            self._zero_shot = (clf, result.logits, float(result.unet_calls.mean()))
        clf, logits, calls = self._zero_shot
        cal_logits = clf.score_images(ImageSequence(cal), cache_dir=cache_dir).logits
        return {"test": logits, "cal": cal_logits, "calls": calls}


def in_class_order(logits: np.ndarray, fitted: list[str], classnames: list[str]) -> np.ndarray:
    """Columns of a classifier fitted on sorted class names, put in the data set's class order."""
    return logits[:, [fitted.index(name) for name in classnames]]
