"""The base model alone as a zero-shot classifier (Diffusion Classifier), a constructor of the facade."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .lora.layer import NoAdapters


class ZeroShotMixin:
    """``zero_shot``: a fitted-like classifier with no adapters, one prompt per class name."""

    @classmethod
    def zero_shot(cls, classes, template: str, model=None, recipe="image-folder", *, overrides=None, device=None,
                  dtype=None, attention="sdpa", progress=True):
        """The base model as a zero-shot classifier (Diffusion Classifier): class c's prompt is
        ``template.format(c)``, no adapters, scored by the same engine and schedule as a fitted set
        (the recipe's ``score`` section). TiF's weight and ``auto`` need train images: a recipe that
        scores with either falls back to Diffusion Classifier's ``uniform`` weighting, and asking for
        either in ``overrides`` is refused. Columns follow ``classes`` in the order given."""
        names = [str(c) for c in classes]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ConfigError(f"zero-shot classification needs two or more distinct class names, got {names[:5]}")
        if template.count("{}") != 1:
            raise ConfigError(f"the zero-shot template {template!r} needs exactly one {{}} for the class name")
        overrides = dict(overrides or {})
        clf = cls(model=model, recipe=recipe, overrides=overrides, device=device, dtype=dtype, attention=attention,
                  progress=progress)
        recipe = clf.resolved_recipe()
        if recipe.score.weighting in ("tif", "auto") and "score.weighting" not in overrides:
            clf.set_params(overrides={**overrides, "score.weighting": "uniform"})
            recipe = clf.resolved_recipe()
        if recipe.score.weighting in ("tif", "auto"):
            raise ConfigError(f"score.weighting {recipe.score.weighting} needs train images (TiF's weight is "
                             "measured on them), which zero-shot has none of; set score.weighting to uniform "
                             "(Diffusion Classifier's) or exp")
        backbone = clf._load_backbone(recipe)
        return clf._set_fitted(backbone, NoAdapters(), np.array(list(classes)), [template.format(n) for n in names],
                               [""] * len(names), recipe, shots=0, n_train=0, fit_summary={}, loss_curve=[],
                               temperature=1.0, tif_d=None)
