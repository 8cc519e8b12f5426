"""Where a fit's validation images come from, and why: the one place ``DiTiFewShotClassifier.fit`` asks.

Two things spend validation images: ``score.weighting: auto`` chooses the scoring window on them, and a
calibration share chooses ``predict_proba``'s temperature. :func:`plan_validation` decides, from what the
caller gave, which images each uses and how many fits that takes; the plan's record goes into the fit
summary and the adapter set's manifest, so a second fit is never a surprise.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np

from .constraints import T_STEPS
from .data.images import as_image_sequence
from .data.masks import check_masks
from .errors import ConfigError, DitiWarning
from .seeding import numpy_rng

SOURCES = ("validation", "held-out share", "probe fit", "none")
# how a validation pass under score.cells: object gets its images' masks
PASS_HOW = ("pass these images' masks (masks=...; fit passes its validation_masks, or the shots' masks for the shots "
            "it holds out)")


def check_budget(budget) -> None:
    """``validation_budget``: a share in (0, 1] of the fit's UNet work, or None (no cap)."""
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not 0 < budget <= 1):
        raise ConfigError(f"validation_budget must be a share in (0, 1] of the fit's UNet work, or None; "
                          f"got {budget!r}")


@dataclass(frozen=True)
class ValidationPlan:
    """``source``: where auto's window is chosen (one of :data:`SOURCES`; "none" also when there is no auto).
    ``held_out``: images kept out of the fit for good (the calibration share); ``probe``: images kept out of
    a first fit only, chosen on, then fitted with the rest in a second fit."""

    source: str
    why: str
    held_out: tuple[int, ...] = ()
    probe: tuple[int, ...] = ()

    @property
    def fits(self) -> int:
        return 2 if self.probe else 1

    def record(self) -> dict:
        return {"source": self.source, "why": self.why, "fits": self.fits,
                "images": len(self.held_out) + len(self.probe)}


def check_validation(validation, classes, masks=None) -> tuple | None:
    """``validation`` as (images, labels), every label among the fitted ``classes``; None stays None. ``masks``:
    the images' object masks, checked and added as a third element (the shortcut check reads the images with them)."""
    if validation is None:
        return None
    try:
        images, labels = validation
    except (TypeError, ValueError):
        raise ConfigError("validation must be an (images, labels) pair") from None
    images, labels = as_image_sequence(images), list(labels)
    if not images or len(images) != len(labels):
        raise ConfigError(f"validation needs images with one label each; got {len(images)} images and "
                         f"{len(labels)} labels")
    unknown = sorted(set(labels) - set(classes), key=str)
    if unknown:
        raise ConfigError(f"validation labels {unknown[:5]} are not among the train classes")
    return (images, labels) if masks is None else (images, labels, check_masks(masks, images, stacklevel=3))


def check_pass_masks(plan, masks, validation, validation_attention, swap_auto: bool = False) -> None:
    """Under ``score.cells: object``, one line before any fit where images that fit scores would lack their masks:
    the validation images, which auto's pass (``plan``'s source "validation") and the coarse swap's comparison
    (``swap_auto``) score, need ``validation_masks``; the shots that ``plan`` holds out (a share, or auto's probe)
    need the fit's ``masks``."""
    from .scoring.cells import VALIDATION_HOW

    scored = validation is not None and (plan.source == "validation" or swap_auto)
    if scored and validation_attention is None and len(validation) < 3:
        raise ConfigError("this classifier scores each image's object cells (score.cells: object), and fit scores "
                          f"the validation images, but got no validation_masks; {VALIDATION_HOW}")
    if (plan.held_out or plan.probe) and masks is None:
        held = "auto's probe holds one shot per class" if plan.probe else "the calibration share holds shots"
        raise ConfigError("this classifier scores each image's object cells (score.cells: object), and "
                          f"{held} out of the fit to score, but fit got no masks: pass the shots' masks (masks=..., "
                          "diti-sd fit --masks DIR or --attention-masks WORD)")


def held_out(y, classes, share, min_shots: int, seed: int) -> list[int]:
    """Indices held out of the fit for calibration: round(share x n) of each class's n images (at least
    one), drawn with ``seed``; every class keeps ``fit.min_shots`` to fit on."""
    if share is None:
        return []
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ConfigError(f"calibration must be a share of each class's images in (0, 1), e.g. 0.25, or None; "
                         f"got {share!r}")
    rng = numpy_rng(seed)
    held = []
    for c in classes:
        members = [i for i, v in enumerate(y) if v == c]
        k = max(1, round(share * len(members)))
        if len(members) - k < max(1, min_shots):
            raise ConfigError(f"class {c!r} has {len(members)} image(s): holding out {k} for calibration leaves "
                             f"fewer than {max(1, min_shots)} to fit on; pass calibration=None and calibrate on "
                             "validation images with fit_temperature")
        held.extend(rng.choice(members, k, replace=False).tolist())
    return sorted(held)


def probe_shots(y, classes, min_shots: int, seed: int) -> list[int]:
    """One image per class, drawn with ``seed``, for a first fit to choose on; none when some class would
    keep fewer than ``fit.min_shots`` (or none) to fit on."""
    rng = numpy_rng(seed)
    members = [[i for i, v in enumerate(y) if v == c] for c in classes]
    if min(len(m) for m in members) - 1 < max(1, min_shots):
        return []
    return sorted(int(rng.choice(m)) for m in members)


def plan_validation(y, classes, *, auto: bool, validation: int = 0, calibration=None, auto_refit: bool = False,
                    min_shots: int = 1, seed: int = 0) -> ValidationPlan:
    """The plan for a fit on labels ``y`` of ``classes``. ``auto``: the recipe scores with weighting auto;
    ``validation``: how many validation images the caller gave; ``calibration``: the share of each class's
    images to hold out for the temperature; ``auto_refit``: with auto and nothing else to choose on, hold one
    image per class out of a first fit, choose on them, then fit again on every image (twice the work)."""
    held = tuple(held_out(y, classes, calibration, min_shots, seed))
    calibrated = f"; the temperature on the held-out share {calibration:g} of the shots" if held else ""
    if not auto:
        return ValidationPlan("none", "no window to choose" + calibrated, held)
    if validation:
        return ValidationPlan("validation", f"auto chooses the window on the {validation} validation images given"
                              + calibrated, held)
    if held:
        return ValidationPlan("held-out share", f"auto chooses the window on the held-out share {calibration:g} of "
                              "the shots, which also sets the temperature", held)
    probe = tuple(probe_shots(y, classes, min_shots, seed)) if auto_refit else ()
    if probe:
        return ValidationPlan("probe fit", f"auto_refit: one image per class ({len(probe)}) held out of a first fit "
                              "and the window chosen on them, then every image fitted again (two fits)", probe=probe)
    why = ("no validation images: scoring with TiF's weight (auto's tie rule); pass validation=(X, y), a "
           "calibration share, or auto_refit=True (a second fit)")
    if auto_refit:
        why = "no validation images and no class has an image to spare: scoring with TiF's weight (auto's tie rule)"
    return ValidationPlan("none", why)


# What one training sample (a forward and a backward pass of the UNet) costs in scoring UNet calls, both with
# the stacked class LoRAs, as this package runs them on one H200 (docs/benchmarks.md, "Measured speed")
TRAIN_SAMPLE_COST = 3.0
MIN_PAIRS = 6  # auto's thirds need two t each
MIN_IMAGES = 10  # fewer would choose a temperature, or a window, on noise


@dataclass(frozen=True)
class PassSize:
    images: int
    pairs: int
    calls: int  # at most: images x candidate classes x pairs


def fit_work(samples: int) -> float:
    """A fit's UNet work in scoring-call equivalents (``samples``: images denoised while training)."""
    return samples * TRAIN_SAMPLE_COST


def pass_size(n_images: int, n_classes: int, max_pairs: int, max_calls: float | None = None) -> PassSize | None:
    """How much of a validation pass fits in ``max_calls`` UNet calls (None: all of it): every image at
    ``max_pairs`` pairs when it fits, else fewer pairs (down to :data:`MIN_PAIRS`), then fewer images (down to
    :data:`MIN_IMAGES`); None when not even that fits."""
    if max_calls is None:
        return PassSize(n_images, max_pairs, n_images * n_classes * max_pairs)
    n = min(n_images, int(max_calls // (n_classes * MIN_PAIRS)))
    if n < min(MIN_IMAGES, n_images) or n == 0:
        return None
    pairs = min(max_pairs, int(max_calls // (n * n_classes)))
    return PassSize(n, pairs, n * n_classes * pairs)


def balanced_subset(labels, n: int, seed: int = 0) -> list[int]:
    """``n`` indices of ``labels``, as even over the classes as they allow: each class's images in a seeded
    order, taken one class at a time in turn."""
    rng = numpy_rng(seed)
    labels = list(labels)
    queues = [list(rng.permutation([i for i, v in enumerate(labels) if v == c])) for c in dict.fromkeys(labels)]
    out: list[int] = []
    while len(out) < min(n, len(labels)):
        for queue in queues:
            if queue and len(out) < n:
                out.append(int(queue.pop(0)))
    return sorted(out)


class ValidationMixin:
    """The classifier's validation pass (:mod:`diti_sd.scoring.validation_pass`): auto's window and the
    temperature from one set of UNet calls, its size held to a budget."""

    def validation_budget_calls(self) -> float | None:
        """The UNet calls ``validation_budget`` allows: that share of the fit's own UNet work (None: no limit)."""
        self._check_fitted()
        samples = self.fit_summary_.get("unet_samples")
        return None if self.validation_budget is None or not samples else self.validation_budget * fit_work(samples)

    def _validation_pass(self, X, y, candidates, max_calls, window, what: str, masks=None):
        """The pass on a class-balanced share of ``X`` that fits ``max_calls``: (errors, t, labels), or None
        with a warning when not even :data:`MIN_IMAGES` images fit. ``masks``: ``X``'s object masks, which
        ``score.cells: object`` weighs the pass's errors by as a test pass weighs them."""
        from .scoring.cells import cell_weights, require_masks
        from .scoring.validation_pass import validation_errors

        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = sorted(set(y) - set(index), key=str)
        if unknown:
            raise ConfigError(f"labels {unknown[:5]} are not among the fitted classes {self.classes_.tolist()[:10]}")
        X = as_image_sequence(X)
        require_masks(self.recipe_.score.cells, masks, what, PASS_HOW)
        if candidates is not None and np.asarray(candidates).shape != (len(X), len(self.classes_)):
            raise ConfigError(f"candidates must be (images, classes) = {(len(X), len(self.classes_))}, got "
                             f"{np.asarray(candidates).shape}")
        per_image = len(self.classes_) if candidates is None else int(np.asarray(candidates).sum(1).max())
        size = pass_size(len(X), per_image, self.recipe_.score.auto_pairs, max_calls)
        if size is None:
            warnings.warn(f"the validation budget ({max_calls:.0f} UNet calls, validation_budget="
                          f"{self.validation_budget}) cannot score {MIN_IMAGES} images against {per_image} classes: "
                          f"{what} skipped; raise validation_budget, or None for no limit", DitiWarning,
                          stacklevel=3)
            return None
        keep = balanced_subset([index[v] for v in y], size.images, self.random_state)
        cells = cell_weights(self.recipe_.score.cells, masks, X, self.backbone_, what, self.progress, rows=keep)
        latents = self.encode([X[i] for i in keep])
        cand = None if candidates is None else np.asarray(candidates)[keep]
        errors, t = validation_errors(self.backbone_, self.adapters_, latents, self.class_contexts(),
                                      self.recipe_.score, candidates=cand, progress=self.progress,
                                      n_pairs=size.pairs, window=window, cells=cells)
        return errors, t, np.array([index[y[i]] for i in keep])

    def choose_scoring(self, X, y, candidates=None, source: str = "validation images", max_calls=None,
                       calibrate: bool = True, masks=None):
        """``score.weighting: auto``: score images ``X`` (labels ``y``; never test data) once at
        ``score.auto_pairs`` time-steps over [0, 1000) (their own per image), replay each candidate window and
        weight on those errors, and score from now on with the best (ties: TiF's weight); ``calibrate``: the
        same errors, replayed under the choice, also set ``predict_proba``'s temperature. ``candidates``:
        (n, C) bool, the classes scored per image (a prefilter's top-k). ``max_calls`` caps the pass (fewer
        pairs, then fewer images, class-balanced). ``score_choice_`` and ``calibration_`` record what was
        chosen, on what, and the UNet calls spent. Works on adapters fitted under any weighting: their
        recipe's weighting becomes ``auto``. ``masks``: ``X``'s object masks, needed under ``score.cells: object``."""
        from .scoring.auto import choose, no_choice
        from .scoring.validation_pass import temperature_from_pass

        self._check_fitted()
        y = list(y)
        done = self._validation_pass(X, y, candidates, max_calls, (0, T_STEPS), "auto's choice", masks)
        score = dataclasses.replace(self.recipe_.score, weighting="auto")
        self.recipe_ = dataclasses.replace(self.recipe_, score=score)
        if done is None:
            self.score_choice_ = no_choice(score, f"the validation budget cannot score {MIN_IMAGES} images")
            return self
        errors, t, labels = done
        self.score_choice_ = choose(errors, t, labels, score, self.tif_d_, metric=self.recipe_.dataset.metric,
                                    source=source)
        if calibrate:
            pass_record = temperature_from_pass(errors, t, labels, self.score_choice_, self.tif_d_)
            self._set_temperature(pass_record.pop("temperature"),
                                  {"source": f"{source}: auto's pass, replayed under its choice", **pass_record})
        return self

    def fit_temperature(self, X, y, source: str = "validation images", max_calls=None, exact: bool = False,
                        masks=None):
        """Choose ``predict_proba``'s temperature by log-likelihood on held-out images (never test data).

        By default, one pass at ``score.auto_pairs`` pairs per image inside the scoring window, replayed under
        the scoring weight (``max_calls`` caps it, as for :meth:`choose_scoring`); ``exact=True`` scores the
        images as a test pass does (the same stages: as many UNet calls as that many test images).
        ``calibration_`` records ``source``, the images, the UNet calls and the NLL before and after. ``masks``:
        ``X``'s object masks, needed under ``score.cells: object``."""
        from .metrics import fit_temperature, nll
        from .scoring.validation_pass import temperature_from_pass

        self._check_fitted()
        y = list(y)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        if exact:
            from .scoring.cells import require_masks

            require_masks(self.recipe_.score.cells, masks, "the temperature", PASS_HOW)
            result = self.score_images(X, masks=masks, what="the temperature")
            target = np.array([index[v] for v in y])
            temperature, best = fit_temperature(result.logits, target)
            self._set_temperature(temperature, {"source": f"{source}: scored as a test pass", "images": len(target),
                                                "unet_calls": int(result.unet_calls.sum()),
                                                "nll_at_1": round(nll(result.logits, target), 6),
                                                "nll": round(best, 6)})
            return self
        cfg = self.scoring_config()
        done = self._validation_pass(X, y, None, max_calls, (cfg.t_min, cfg.t_max), "the temperature", masks)
        if done is not None:
            candidate = {"t_min": cfg.t_min, "t_max": cfg.t_max, "weighting": cfg.weighting,
                         "weight_tau": cfg.weight_tau}
            pass_record = temperature_from_pass(*done, candidate, self.tif_d_)
            self._set_temperature(pass_record.pop("temperature"),
                                  {"source": f"{source}: a pass in the scoring window", **pass_record})
        return self

    def _set_temperature(self, temperature: float, record: dict) -> None:
        """Keep the chosen temperature and its record; at the grid's floor, say what that means: every image
        was right by a wide margin, so the search found no lower bound and the probabilities are near one-hot,
        right where images resemble these and overconfident where they do not (validation images that share
        the shots' accidents do that)."""
        from .metrics import TEMPERATURES

        at_floor = temperature <= TEMPERATURES[0]
        self.temperature_ = float(temperature)
        self.calibration_ = {**record, "at_floor": bool(at_floor)}
        if at_floor:
            warnings.warn(f"predict_proba's temperature went to the lowest the search allows ({TEMPERATURES[0]:g}): "
                          f"every one of the {record.get('images', 'given')} images it was chosen on is right by a "
                          "wide margin, so probabilities will be near one-hot; if those images share the shots' "
                          "accidents, expect overconfidence on images that do not (docs/method.md, 'At the grid's "
                          "floor')",
                          DitiWarning, stacklevel=3)
