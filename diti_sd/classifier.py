"""``DiTiFewShotClassifier``: the one facade over backbone, adapters, fit and scoring.

A scikit-learn classifier (``BaseEstimator``, ``ClassifierMixin``): ``__init__`` only stores its
arguments, ``fit`` returns ``self``, learned state ends in ``_``, and ``classes_`` orders the columns
of ``predict_proba``; ``clone``, ``cross_val_score`` and ``GridSearchCV`` work on lists of images.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from tqdm.auto import tqdm

from . import work_folders
from .attention_masks import AttentionMasks, resolve_masks
from .backbone import load_backbone
from .data.images import as_image_sequence, read_preparation
from .data.masks import check_masks, warn_masks_unread
from .distributed import barrier, gather_rows, is_main, shard, world
from .errors import ConfigError, DitiError, DitiWarning
from .metrics import softmax
from .persistence import PersistenceMixin
from .preprocessing import uint8_pixels
from .recipes import Recipe, load_recipe
from .sampling import SamplingMixin
from .scoring.auto import no_choice, resolve
from .scoring.cache import ScoreCache, fitted_identity
from .scoring.cells import cell_weights
from .scoring.engine import ScoreResult, dense_errors, score_latents
from .scoring.engine import class_contexts as embed_class_prompts
from .seeding import check_seed
from .swap_choice import SwapChoiceMixin
from .training.classes import fit_classes, shots_per_class
from .validation import ValidationMixin, check_budget, check_pass_masks, check_validation, fit_work, plan_validation
from .zero_shot import ZeroShotMixin


class NotFittedError(DitiError, SklearnNotFittedError):
    """Used before ``fit`` or ``from_pretrained``; ``except`` clauses written for scikit-learn's catch it."""


class DiTiFewShotClassifier(PersistenceMixin, ZeroShotMixin, ValidationMixin, SwapChoiceMixin, SamplingMixin,
                            ClassifierMixin, BaseEstimator):
    """Few-shot classifier from per-class Stable Diffusion adapters scored at small time-steps.

    Parameters
    ----------
    model : base model (hub id, local diffusers folder or ``builtin:NAME``); None takes the recipe's.
    recipe : a registered recipe name, a YAML path, or a :class:`~diti_sd.recipes.Recipe`.
    rank, steps : LoRA rank and fit steps per class (None: the recipe's).
    train_window, score_window : (t_min, t_max) of training and scoring time-steps (None: the recipe's);
        ``score_window="auto"`` chooses the scoring window on validation images after fitting
        (``score.weighting: auto``, see ``fit``).
    prior : prior preservation on/off (None: the recipe's, on by default).
    overrides : further recipe values as ``{"section.key": value}``.
    auto_refit : with ``score_window="auto"`` and no validation images or calibration share to choose on,
        hold one image per class out of a first fit, choose the window on them, then fit again on every
        image: twice the fit's work. False (the default): score with TiF's weight, with a warning.
    validation_budget : the validation pass (auto's choice and the temperature, one set of UNet calls) costs at
        most this share of the fit's own UNet work: fewer pairs per image, then fewer images (class-balanced).
        None: every validation image at ``score.auto_pairs`` pairs.
    random_state : seed of the adapters' initialisation, the training draws and the scoring pairs.
    device, dtype, attention : where and how the base model runs.
    compile : score with a torch.compile'd UNet (the first call compiles; later class mixes reuse it).
    progress : show progress bars.
    """

    def __init__(self, model=None, recipe="image-folder", *, rank=None, steps=None, train_window=None,
                 score_window=None, prior=None, overrides=None, auto_refit=False, validation_budget=0.2,
                 random_state=0, device=None, dtype=None, attention="sdpa", compile=False, progress=True):
        self.model = model
        self.recipe = recipe
        self.rank = rank
        self.steps = steps
        self.train_window = train_window
        self.score_window = score_window
        self.prior = prior
        self.overrides = overrides
        self.auto_refit = auto_refit
        self.validation_budget = validation_budget
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.attention = attention
        self.compile = compile
        self.progress = progress

    def resolved_recipe(self) -> Recipe:
        """The recipe with this estimator's parameters applied; every value checked (a bad one is a
        :class:`~diti_sd.recipes.RecipeError` naming it)."""
        over = dict(self.overrides or {})
        if self.model is not None:
            over["model"] = str(self.model)
        if self.rank is not None:
            over["lora.rank"] = int(self.rank)
        if self.steps is not None:
            over["fit.steps"] = int(self.steps)
        if self.prior is not None:
            over["fit.prior"] = bool(self.prior)
        score_window = self.score_window
        if isinstance(score_window, str) and score_window == "auto":  # chosen on validation after fitting
            over["score.weighting"], score_window = "auto", None
        for section, window in (("fit", self.train_window), ("score", score_window)):
            if window is not None:
                try:
                    over[f"{section}.t_min"], over[f"{section}.t_max"] = (int(v) for v in window)
                except (TypeError, ValueError):
                    name = "train_window" if section == "fit" else "score_window"
                    extra = ' or "auto"' if section == "score" else ""
                    raise ConfigError(f"{name} must be a (t_min, t_max) pair of integers{extra}, "
                                      f"got {window!r}") from None
        return load_recipe(self.recipe, over)

    def _check_fitted(self) -> None:
        if not hasattr(self, "adapters_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted; call fit() or from_pretrained()")

    def _load_backbone(self, recipe: Recipe):
        """The base model as these parameters ask for it; the fitted one again when they ask for the same."""
        request = dict(device=self.device, dtype=self.dtype, attention=self.attention, resolution=recipe.resolution,
                       gpu_dtype=recipe.gpu_dtype)
        previous = getattr(self, "backbone_", None)
        if previous is not None and previous.loaded_with == (recipe.model, request):
            return previous
        backbone = load_backbone(recipe.model, progress=self.progress, **request)
        backbone.loaded_with = (recipe.model, request)  # on the base itself: a failed fit's is not kept
        return backbone

    # ----------------------------------------------------------------- fit
    def fit(self, X, y, *, calibration=None, validation=None, validation_candidates=None, prior_images=None,
            masks=None, validation_masks=None, output_dir=None, resume=False, callback=None):
        """Fit one adapter (and prompt) per class on images ``X`` with class labels ``y``.

        X: paths, PIL images or (3, H, W) tensors in [0, 1]. ``calibration``: a share of each class's
        images (e.g. 0.25; at least one per class) held out of the fit to choose ``predict_proba``'s
        temperature on, or None (temperature 1; ``fit_temperature`` can set it later from validation
        images). ``validation``: (images, labels) that ``score.weighting: auto`` chooses the scoring
        window on (``validation_candidates``: (n, C) bool, a prefilter's top classes per image, columns in
        ``classes_`` order); without them, auto uses the calibration share, or else, with ``auto_refit``,
        holds one image per class out, fits on the rest, chooses on the held-out images and refits on all
        (two fits); else it scores with TiF's weight. :func:`~diti_sd.validation.plan_validation` decides;
        ``fit_summary_["validation"]`` (and the manifest) records which, and how many fits it took.
        ``prior_images`` overrides the generic prior-preservation images. ``masks``: an object mask per image of
        X, its size (paths, PIL images or (H, W) arrays; the object bright): the coarse swap then keeps the object
        and swaps only the rest (:mod:`diti_sd.data.masks`), or an :class:`~diti_sd.attention_masks.AttentionMasks` to
        read them off the base; ``validation_masks``: the validation images' own (or an ``AttentionMasks``), which
        the shortcut check then reads them with. ``output_dir`` keeps checkpoints and the prior images
        there, so an interrupted fit can continue with ``resume=True``; the finished training's checkpoint stays
        until ``save_pretrained(output_dir)``, so a run killed in a validation pass or the save resumes without
        training again (:mod:`diti_sd.work_folders`). A new fit forgets the previous one.
        """
        recipe = self.resolved_recipe()  # every parameter checked here, before any work
        check_budget(self.validation_budget)
        check_seed(self.random_state)
        X, y = as_image_sequence(X), list(y)
        if not X:
            raise ConfigError("fit got no images")
        prepared = read_preparation(X)
        if len(X) != len(y):
            raise ConfigError(f"fit got {len(X)} images but {len(y)} labels")
        # under score.cells: object the validation pass weighs the cells by the masks: the fit's are read where it
        # holds shots out to score (a calibration share, auto's probe)
        object_cells = recipe.score.cells == "object"
        held_scored = object_cells and (calibration is not None or bool(self.auto_refit))
        mask_checks = dict(read=recipe.fit.reads_masks or held_scored, loss=recipe.fit.mask_loss,
                           needed=recipe.fit.swap_background == "whole")
        if not isinstance(masks, AttentionMasks):  # those are read off the base once it is loaded, then checked
            masks = check_masks(masks, X, **mask_checks)
        elif not mask_checks["read"]:
            warn_masks_unread()
            mask_checks["read"] = True  # said once
        classes = np.array(sorted(set(y), key=lambda v: (str(type(v)), v)))
        if len(classes) < 2:
            raise ConfigError(f"need at least two classes, got {list(classes)}")
        val_attention = validation_masks if isinstance(validation_masks, AttentionMasks) else None
        val = check_validation(validation, classes.tolist(), None if val_attention else validation_masks)
        plan = plan_validation(y, classes.tolist(), auto=recipe.score.weighting == "auto",
                               validation=0 if val is None else len(val[1]), calibration=calibration,
                               auto_refit=bool(self.auto_refit), min_shots=recipe.fit.needed_shots,
                               seed=self.random_state)
        held = list(plan.held_out)
        if object_cells:
            check_pass_masks(plan, masks, val, val_attention, recipe.fit.coarse_swap_auto)
        if held:
            held_X, held_y = [X[i] for i in held], [y[i] for i in held]
            held_masks = masks if masks is None or isinstance(masks, AttentionMasks) else [masks[i] for i in held]
            kept = sorted(set(range(len(y))) - set(held))
            X, y = as_image_sequence([X[i] for i in kept]), [y[i] for i in kept]
            masks = masks if masks is None or isinstance(masks, AttentionMasks) else [masks[i] for i in kept]
        shots = shots_per_class(y, classes, recipe.fit)

        backbone = self._load_backbone(recipe)
        if output_dir is not None and not resume:  # afresh, its checks passed: an earlier fit's work there goes
            if is_main():
                work_folders.clear_earlier_work(output_dir)
            barrier()
        kept_in = (lambda name: None) if output_dir is None else (lambda name: Path(output_dir) / name)
        masks, made = resolve_masks(masks, backbone, X, self.progress, kept_in("attention-masks.pt"), resume)
        masks = check_masks(masks, X, **mask_checks) if made else masks
        if val is not None and val_attention is not None:
            val_masks, made_val = resolve_masks(val_attention, backbone, val[0], self.progress,
                                                kept_in("attention-masks-validation.pt"), resume)
            val = (*val[:2], check_masks(val_masks, val[0]))
        choice = None
        if plan.probe:
            rest = [i for i in range(len(y)) if i not in set(plan.probe)]
            self._fit_adapters(recipe, backbone, as_image_sequence([X[i] for i in rest]), [y[i] for i in rest],
                               classes, shots, None if output_dir is None else Path(output_dir) / work_folders.PROBE,
                               resume, None, prior_images, prior_dir=output_dir, warn=True,
                               masks=None if masks is None else [masks[i] for i in rest])
            self.choose_scoring([X[i] for i in plan.probe], [y[i] for i in plan.probe], calibrate=False,
                                source=f"one held-out image per class ({len(plan.probe)}), chosen on a fit of the "
                                       "others; then refitted on all", max_calls=self.validation_budget_calls(),
                                masks=None if not object_cells else [masks[i] for i in plan.probe])
            choice = self.score_choice_
        self._fit_adapters(recipe, backbone, X, y, classes, shots, output_dir, resume, callback, prior_images,
                           prior_dir=output_dir, warn=not plan.probe, validation=val, masks=masks)
        if recipe.fit.coarse_swap_auto:
            self._choose_coarse_swap(recipe, backbone, X, y, classes, shots, output_dir, resume, prior_images, val,
                                     masks)
        # image_preparation: how diti-sd predict reads new images to match (None: the images came read)
        self.fit_summary_.update(validation=plan.record(), image_preparation=prepared)
        if made:
            self.fit_summary_["masks"]["made"] = made
        if val is not None and val_attention is not None:
            self.fit_summary_["validation_masks_made"] = made_val
        if plan.source == "probe fit":
            self.score_choice_ = choice
        elif plan.source == "validation":
            self.choose_scoring(*val[:2], candidates=validation_candidates, source=f"validation images ({len(val[1])})",
                                max_calls=self.validation_budget_calls(), masks=val[2] if object_cells else None)
        elif plan.source == "held-out share":
            self.choose_scoring(held_X, held_y, source=f"held-out share {calibration:g} of the shots",
                                max_calls=self.validation_budget_calls(), masks=held_masks if object_cells else None)
        elif recipe.score.weighting == "auto":
            self.score_choice_ = no_choice(recipe.score, plan.why)
            warnings.warn(f"score.weighting is auto, but {plan.why}", DitiWarning, stacklevel=2)
        if held and plan.source != "held-out share":  # that pass set the temperature already
            self.fit_temperature(held_X, held_y, source=f"held-out share {calibration:g} of the shots",
                                 max_calls=self.validation_budget_calls(), masks=held_masks if object_cells else None)
        spent = (self.score_choice_ or {}).get("unet_calls", 0) if plan.source in ("validation", "held-out share") \
            else self.calibration_.get("unet_calls", 0)
        self.fit_summary_["validation"]["unet_calls"] = spent
        self.fit_summary_["validation"]["share_of_fit"] = round(spent / fit_work(self.fit_summary_["unet_samples"]), 4)
        # its work folders stay until save_pretrained(output_dir); resolved now, as a later chdir would not move them
        self._fit_dir = None if output_dir is None else Path(output_dir).resolve()
        return self

    def _fit_adapters(self, recipe, backbone, X, y, classes, shots, output_dir, resume, callback, prior_images,
                      prior_dir=None, warn=False, validation=None, masks=None):
        """Adapters for ``classes`` on images X (settings of ``shots`` per class); sets the fitted state.
        ``warn``: give the coarse-shortcut warning (before the training it concerns), with what the
        ``validation`` images (X, y) say of it."""
        if hasattr(self, "adapters_"):
            self.adapters_.remove()
            del self.adapters_
        backbone.compiled_unet = None  # compiled around the old adapters
        fitted = fit_classes(backbone, recipe, X, y, classes, shots, seed=self.random_state, output_dir=output_dir,
                             resume=resume, callback=callback, prior_images=prior_images, prior_dir=prior_dir,
                             validation=validation, warn=warn, progress=self.progress, stacklevel=3,
                             keep_checkpoint=True, masks=masks)  # until the set is saved (work_folders)
        self._set_fitted(backbone, fitted.adapters, classes, fitted.prompts, fitted.tokens, fitted.recipe,
                         shots=shots, n_train=len(X), fit_summary=fitted.summary, loss_curve=fitted.loss_curve,
                         temperature=1.0, tif_d=fitted.tif_d)

    def _set_fitted(self, backbone, adapters, classes, prompts, tokens, recipe, *, shots, n_train, fit_summary,
                    loss_curve, temperature, tif_d, calibration=None, score_choice=None) -> DiTiFewShotClassifier:
        """The learned state, the same whether it came from ``fit`` or ``from_pretrained``."""
        self.backbone_ = backbone
        self.adapters_ = adapters
        self.classes_ = classes
        self.prompts_ = prompts
        self.tokens_ = tokens
        self.recipe_ = recipe
        self.shots_ = shots
        self.n_train_ = n_train
        self.fit_summary_ = fit_summary
        self.loss_curve_ = list(loss_curve)
        self.temperature_ = float(temperature)
        # how temperature_ was chosen: {"source": "none"} or the images and log-likelihoods behind it
        self.calibration_ = dict(calibration or {"source": "none"})
        self.tif_d_ = tif_d
        # score.weighting auto: the window chosen on validation images, its rivals' scores and its cost
        self.score_choice_ = score_choice
        self.base_fingerprint_ = backbone.fingerprint()
        self._contexts = None
        self._fit_dir = None  # fit sets it once done
        return self

    # ----------------------------------------------------------------- inference
    def class_contexts(self) -> torch.Tensor:
        """Each class's prompt embedding under its own text adapter (C, L, D), as scoring uses it; computed
        once per fitted state."""
        self._check_fitted()
        if self._contexts is None:
            score = self.recipe_.score
            self._contexts = embed_class_prompts(self.backbone_, self.adapters_, self.prompts_, score.text_scale,
                                            dropout=score.text_dropout, seed=score.seed)
        return self._contexts

    def dense_errors(self, latents: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, **kwargs) -> np.ndarray:
        """Every (image, class, pair) error (n, C, P) at the recipe's test-time text and UNet scales, as
        ``predict`` scores: for analyses that replay windows over one set of UNet calls. Under ``score.cells:
        object`` pass ``cells`` (:func:`~diti_sd.scoring.cells.cell_weights`), or it would score whole images."""
        if self.recipe_.score.cells != "all" and kwargs.get("cells") is None:
            raise ConfigError("this classifier scores each image's object cells (score.cells: object): pass "
                              "dense_errors(..., cells=...) (diti_sd.scoring.cells.cell_weights)")
        return dense_errors(self.backbone_, self.adapters_, latents, self.class_contexts(), t, noise,
                            unet_scale=self.recipe_.score.unet_scale, **kwargs)

    def scoring_config(self):
        """The score configuration a test pass runs: the recipe's, with an ``auto`` choice applied."""
        self._check_fitted()
        return resolve(self.recipe_.score, self.score_choice_)

    def encode(self, X, batch_size: int = 16) -> torch.Tensor:
        """Images -> the latents that scoring noises (VAE posterior mean x scaling factor)."""
        self._check_fitted()
        X = as_image_sequence(X)
        if not len(X):
            raise ConfigError("got no images")
        out = []
        for start in range(0, len(X), batch_size):
            part = [X[i] for i in range(start, min(len(X), start + batch_size))]
            out.append(self.backbone_.encode_batches(uint8_pixels(part, self.backbone_.resolution)).cpu())
        return torch.cat(out)

    def score_images(self, X, candidates=None, chunk: int = 64, cache_dir=None, masks=None, what: str = "predict"):
        """Full scoring result (errors, ranking logits, UNet calls per image) for images ``X``.

        ``cache_dir``: each chunk of ``chunk`` images is written there as soon as it is scored, and a
        later call with the same adapters, settings and images reads it back instead of scoring it again
        (a reference pass over a test set takes GPU-hours; an interruption loses one chunk at most).
        ``masks``: under ``score.cells: object``, each image's object mask (or an
        :class:`~diti_sd.attention_masks.AttentionMasks` to read them off the base): :mod:`diti_sd.scoring.cells`;
        ``what``: who scores, as errors name it."""
        cfg = self.scoring_config()
        X = as_image_sequence(X)
        rank, size = world()
        mine = shard(list(range(len(X))), rank, size)  # `accelerate launch`: images split over processes
        if not mine:
            raise ConfigError("got no images" if not len(X) else f"fewer images ({len(X)}) than processes ({size})")
        kept = None if cache_dir is None else Path(cache_dir) / f"attention-masks-{rank}.pt"  # a rerun reads them
        cells = cell_weights(cfg.cells, masks, X, self.backbone_, what, self.progress, rows=mine, path=kept)
        latents = self.encode([X[i] for i in mine])
        if candidates is not None:
            candidates = np.asarray(candidates)[mine]
        contexts = self.class_contexts()
        if self.compile and self.backbone_.compiled_unet is None:
            self.backbone_.compiled_unet = torch.compile(self.backbone_.unet)
        cache = None if cache_dir is None else ScoreCache(
            cache_dir, fitted_identity(self.base_fingerprint_, self.prompts_, self.recipe_.lora, self.adapters_),
            cfg, self.tif_d_)
        parts = []
        bar = tqdm(total=len(latents), desc="predict", unit="img", disable=not self.progress or rank > 0)
        for start in range(0, len(latents), chunk):
            part = latents[start : start + chunk]
            cand = None if candidates is None else np.asarray(candidates)[start : start + chunk]
            weights = None if cells is None else cells[start : start + chunk]
            result = None if cache is None else cache.load(part, cand, weights)
            if result is None:
                result = score_latents(self.backbone_, self.adapters_, part, contexts, cfg, cand, tif_d=self.tif_d_,
                                       cells=weights)
                if cache is not None:
                    cache.save(part, cand, result, weights)
            parts.append(result)
            bar.update(len(part))
        bar.close()
        return ScoreResult(*(gather_rows(np.concatenate([getattr(p, f) for p in parts]), len(X))
                             for f in ("errors", "logits", "unet_calls")))

    def decision_function(self, X, *, masks=None) -> np.ndarray:
        """Ranking logits (n, C), columns in ``classes_`` order; ``masks``: as :meth:`score_images`'."""
        return self.score_images(X, masks=masks).logits

    def predict_proba(self, X, *, masks=None) -> np.ndarray:
        return softmax(self.decision_function(X, masks=masks), self.temperature_)

    def predict(self, X, *, masks=None) -> np.ndarray:
        """The most likely class of each image of ``X``, read as given: adapters fitted on a data set whose reader
        prepares its images (ISIC 2019, DukeMTMC-reID, VeRi-776; ``fit_summary_.get("image_preparation")``, None
        where unknown) expect new images prepared alike, ``load_image(path, prepare="tif-duke")`` (as ``diti-sd
        predict`` does)."""
        self._check_fitted()
        return self.classes_[self.decision_function(X, masks=masks).argmax(1)]

    def score(self, X, y, sample_weight=None, *, masks=None) -> float:
        """Accuracy on images ``X`` with labels ``y`` (weighted by ``sample_weight``, as scikit-learn's)."""
        self._check_fitted()
        y = np.asarray(list(y))
        unknown = sorted(set(y.tolist()) - set(self.classes_.tolist()), key=str)
        if unknown:
            raise ConfigError(f"labels {unknown[:5]} are not among the fitted classes {self.classes_.tolist()[:10]}")
        return float(np.average(self.predict(X, masks=masks) == y, weights=sample_weight))
