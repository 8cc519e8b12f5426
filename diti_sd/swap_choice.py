"""``fit.coarse_swap_auto``: the coarse swap chosen on the user's own evidence, the validation images that break
the shots' accident.

Where every shot of a class shares a coarse attribute by accident, validation images drawn where the shots came
from share it too, except those that break it (``diti_sd.coarse.validation_breaks``: their blur lies nearer another
class's shots than their own class's, by more than a shot lies from its own). A fit that reads the accident gets
exactly those wrong. So, when the shortcut check fires and such images exist, a second set is fitted with
``fit.coarse_swap`` 1 and the two are compared on them by accuracy; the swap stays only if it is more accurate
there. Where no image breaks the accident the data cannot tell it from the class, and nothing is refitted. Not in
the reference; a second fit, so opt-in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import work_folders
from .coarse import fired, names_outright, validation_unread
from .distributed import world
from .recipes import load_recipe
from .scoring.auto import no_choice


def swap_choice_record(shortcut: dict, without: float | None = None, with_swap: float | None = None, *,
                       unet_calls: int = 0, unet_samples: int = 0, premise: bool = False,
                       premise_asked: bool = False) -> dict:
    """What ``fit_summary_["coarse_swap_choice"]`` holds: the fit kept (``chosen``: "swap" or "none"), why, the
    breaking images' accuracy under each fit, and what the comparison cost (the second fit's training samples
    and the scoring's UNet calls). ``premise``: ``fit.coarse_swap_premise`` applied, and the one fit had the swap;
    ``premise_asked``: it was set (the record then says why it did not apply)."""
    breaking = len((shortcut.get("validation") or {}).get("breaking", []))
    record = {"breaking_images": breaking, "accuracy": {"without": without, "with_swap": with_swap},
              "fits": 1 if with_swap is None else 2, "second_fit_unet_samples": unet_samples, "unet_calls": unet_calls}
    unread = ("the validation images come without masks, so they cannot be read for the backgrounds' accident"
              if validation_unread(shortcut) else "no validation image breaks that accident")
    read = "backgrounds name" if shortcut.get("background_only") else "blur names"
    if premise:
        return {**record, "chosen": "swap", "why": f"fit.coarse_swap_premise: the shots' {read} their class and "
                f"{unread}, so the method's premise decides (one fit, with the swap)"}
    if with_swap is None:
        why = ("the shots' blur does not name their class" if not fired(shortcut) else
               "no validation images were given" if shortcut.get("validation") is None else
               f"{unread}: the data cannot tell it from the class")
        if premise_asked and fired(shortcut) and not names_outright(shortcut):
            why += (f"; the blur points to their own class for only {shortcut['accuracy']:.0%} of the shots "
                    "(leave-one-out: it narrows the class, or names it weakly), so fit.coarse_swap_premise, which "
                    "takes a blur that names it for most shots, does not apply")
        return {**record, "chosen": "none", "why": why}
    chosen = "swap" if with_swap > without else "none"
    return {**record, "chosen": chosen, "why": f"accuracy on the {breaking} validation images that break the "
            f"accident: {without:.3f} without the swap, {with_swap:.3f} with it"}


class SwapChoiceMixin:
    """The comparison as a step of ``DiTiFewShotClassifier.fit``, after the first fit and before the validation
    pass (the window and the temperature are chosen for the set that stays)."""

    def _choose_coarse_swap(self, recipe, backbone, X, y, classes, shots, output_dir, resume, prior_images, val,
                            masks=None):
        """``fit.coarse_swap_auto``: on the validation images that break the shots' accident, the fitted set
        against a second fit with the swap; the one more accurate on them stays (ties: the first)."""
        first = self.fit_summary_["coarse_shortcut"]
        breaking = (first.get("validation") or {}).get("breaking", [])
        swap_dir = None if output_dir is None else Path(output_dir) / work_folders.SWAP
        if self.recipe_.fit.coarse_swap > 0:  # fit.coarse_swap_premise applied: the one fit had the swap
            self.fit_summary_["coarse_swap_choice"] = swap_choice_record(first, premise=True)
            return
        if not breaking:
            self.fit_summary_["coarse_swap_choice"] = swap_choice_record(
                first, premise_asked=self.recipe_.fit.coarse_swap_premise)
            return
        images, labels = [val[0][i] for i in breaking], [val[1][i] for i in breaking]
        # score.cells: object scores them on their masks' cells, as predict will (fit refused to start without the
        # validation images' masks under it)
        cells = None if recipe.score.cells == "all" else [val[2][i] for i in breaking]
        kept = ({k: v.clone() for k, v in self.adapters_.lora_state_dict().items()}, self.fit_summary_,
                self.loss_curve_)
        without, calls = self._accuracy_and_calls(images, labels, cells)
        done = ["fit.coarse_swap_auto=false", "fit.coarse_swap_premise=false"]  # the saved recipes refit without it
        swap_recipe = load_recipe(recipe, ["fit.coarse_swap=1.0", *done])
        # each fit's checkpoint stays until the set is saved: a run killed before then reloads both sets
        self._fit_adapters(swap_recipe, backbone, X, y, classes, shots, swap_dir, resume, None, prior_images,
                           prior_dir=output_dir, validation=val, masks=masks)
        with_swap, more = self._accuracy_and_calls(images, labels, cells)
        record = swap_choice_record(first, without, with_swap, unet_calls=calls + more,
                                    unet_samples=self.fit_summary_["unet_samples"])
        if record["chosen"] == "swap":
            self.fit_summary_["coarse_swap_choice"] = record
        else:  # the first set back, under the first fit's records
            self.adapters_.load_lora_state_dict(kept[0])
            # as the first fit resolved it (fit.coarse_sigma: auto reads the same shots, so both fits agree)
            # (and no swap: what it would have replaced is moot, and a whole-background swap needs the swap on)
            self.recipe_ = load_recipe(recipe, [*done, f"fit.coarse_sigma={first['sigma_fraction']!r}",
                                                "fit.swap_background=coarse"])
            self.fit_summary_, self.loss_curve_ = {**kept[1], "coarse_swap_choice": record}, kept[2]
            self._contexts, backbone.compiled_unet = None, None

    def _accuracy_and_calls(self, images, labels, masks=None) -> tuple[float, int]:
        """Accuracy on labelled images as ``predict`` scores them (``auto``, whose window is chosen after this: at
        TiF's weight; ``masks``: theirs, under ``score.cells: object``). Not counted in ``validation_budget``: the
        record gives its UNet calls."""
        if self.recipe_.score.weighting == "auto":
            self.score_choice_ = no_choice(self.recipe_.score, "the coarse swap's comparison comes first")
        # `accelerate launch` splits the images over processes: a handful of them is padded to one a process
        pad = max(0, world()[1] - len(images))
        result = self.score_images(list(images) + [images[0]] * pad,
                                   masks=None if masks is None else list(masks) + [masks[0]] * pad)
        self.score_choice_ = None
        right = self.classes_[result.logits[: len(labels)].argmax(1)] == np.asarray(labels)
        return float(right.mean()), int(result.unet_calls[: len(labels)].sum())

