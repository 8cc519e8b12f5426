"""Where a fit's validation images come from, and why: the one place ``DiTiFewShotClassifier.fit`` asks.

Two things spend validation images: ``score.weighting: auto`` chooses the scoring window on them, and a
calibration share chooses ``predict_proba``'s temperature. :func:`plan_validation` decides, from what the
caller gave, which images each uses and how many fits that takes; the plan's record goes into the fit
summary and the adapter set's manifest, so a second fit is never a surprise.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data.images import as_image_sequence
from .errors import ConfigError
from .seeding import numpy_rng

SOURCES = ("validation", "held-out share", "probe fit", "none")


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


def check_validation(validation, classes) -> tuple[list, list] | None:
    """``validation`` as (images, labels), every label among the fitted ``classes``; None stays None."""
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
    return images, labels


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
