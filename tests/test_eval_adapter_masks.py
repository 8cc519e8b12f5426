"""eval/adapter_masks.py: masks read off a first fit's gain over the base, and the fits given them (ours)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import eval_script


def test_mask_quality_counts_background_kept_and_object_lost():
    script = eval_script("adapter_masks")
    exact = torch.zeros(4, 4, dtype=torch.bool)
    exact[1:3, 1:3] = True  # 4 object pixels, 12 background
    derived = torch.zeros(4, 4, dtype=torch.bool)
    derived[1, 1:4] = True  # 2 of the object, 1 of the background
    q = script.quality([derived], [exact])
    assert q["iou"] == pytest.approx(2 / 5) and q["background kept"] == pytest.approx(1 / 12)
    assert q["object lost"] == pytest.approx(2 / 4)


def test_the_derived_masks_reach_the_masked_fits_and_the_exact_ones_come_back(monkeypatch):
    script = eval_script("adapter_masks")
    seen = {}
    exact_property = script.SyntheticSeed.train_masks

    def maps(clf, images, labels, pairs, seed):  # each shot's map: its object, moved one pixel right
        return torch.stack([torch.roll(m, 1, 1).float() for m in clf.masks])

    def fit(self, recipe, **kw):
        return type("Fitted", (), {"masks": self.train_masks})()

    def evaluate(overrides, seeds, shots, per_class, cache=None, masks=False, key_extra=None, background_detail=0.0,
                 background_detail_kind="thin"):
        run = script.SyntheticSeed.for_recipe(script.load_recipe("synthetic"), seeds[0], shots)
        seen[(tuple(overrides), masks, key_extra is not None)] = run.train_masks
        hits = [np.arange(10) < (7 if key_extra else 6 if masks else 5) for _ in seeds]
        return {"oracle": {(0, 200): hits}}

    monkeypatch.setattr(script, "gain_maps", maps)
    monkeypatch.setattr(script.SyntheticSeed, "fit", fit)
    monkeypatch.setattr(script.tune, "evaluate", evaluate)
    out = script.main(["--seeds", "11", "--smoke", "--shots", "2"])
    run = script.SyntheticSeed.for_recipe(script.load_recipe("synthetic"), 11, 2)
    derived = seen[(tuple(script.SWAP), True, True)]
    assert all(torch.equal(d, torch.roll(e, 1, 1)) for d, e in zip(derived, run.train_masks))
    assert all(torch.equal(a, b) for a, b in zip(seen[(tuple(script.SWAP), True, False)], run.train_masks))
    assert script.SyntheticSeed.train_masks is exact_property  # put back
    assert out["rows"]["adapter masks"]["minus swap"]["gain"] == pytest.approx(0.2)
    assert 0 < out["mask quality"]["iou"] < 1 and out["mask quality"]["background kept"] > 0


def test_with_detailed_backgrounds_every_row_is_fitted_on_them_beside_the_control(monkeypatch):
    script = eval_script("adapter_masks")
    calls, kinds = [], []

    def evaluate(overrides, seeds, shots, per_class, cache=None, masks=False, key_extra=None, background_detail=0.0,
                 train_stream="train", background_detail_kind="thin"):
        calls.append((tuple(overrides), background_detail, train_stream))
        kinds.append(background_detail_kind)
        hits = [np.arange(10) < (8 if train_stream != "train" else 6) for _ in seeds]
        return {"oracle": {(0, 200): hits}}

    monkeypatch.setattr(script.tune, "evaluate", evaluate)
    derived = {11: [torch.ones(4, 4, dtype=torch.bool)]}
    quality = [{"iou": 1.0}]
    flat = script.masked_swap_rows(derived, quality, [11], 2, 2, None, None)
    assert script.CONTROL not in flat["rows"] and {d for _, d, _ in calls} == {0.0}
    calls.clear()
    out = script.masked_swap_rows(derived, quality, [11], 2, 2, None, None, background_detail=0.1)
    assert {d for _, d, _ in calls} == {0.1} and ((), 0.1, "shots without the shortcut") in calls
    assert out["rows"]["derived masks"]["minus " + script.CONTROL]["gain"] == pytest.approx(-0.2)
    kinds.clear()
    script.masked_swap_rows(derived, quality, [11], 2, 2, None, None, background_detail=0.1,
                            background_detail_kind="class")
    assert kinds == ["class"] * 5  # the derived masks' fit, the swap, exact masks, the recipe, the control
