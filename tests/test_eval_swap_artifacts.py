"""eval/swap_artifacts.py: the base's error on the coarse swap's composites and the texture they keep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import eval_script as _script


def test_texture_kept_counts_what_survives_the_high_pass_and_the_clip():
    script = _script("swap_artifacts")
    g = torch.Generator().manual_seed(0)
    bare = (torch.rand(4, 3, 16, 16, generator=g) * 100 + 50).round()
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2 - 1).float() * 10
    shots = bare + checker
    # a swap that changes nothing keeps all of it; the finest texture passes a narrow blur's high-pass almost whole
    same = script.texture_kept(shots, shots, bare, bare, 0.0625)
    assert same["after_clipping"] == pytest.approx(1.0) and same["high_pass"] > 0.9
    # a texture of period 8 px: a blur of 1 px passes much of it, so the swap's high-pass keeps less of it than
    # with a blur of 4 px, which passes almost none (the narrower the blur, the more of the shot is swapped)
    wave = 20 * torch.sin(torch.arange(16) * 2 * torch.pi / 8)[None, None, None].expand(4, 3, 16, 16)
    wide, narrow = (script.texture_kept(bare + wave, bare + wave, bare, bare, s)["high_pass"] for s in (0.25, 0.0625))
    assert narrow < 0.6 < wide
    # clipping at 0 takes what lies below it
    clipped = script.texture_kept(shots, (shots - 200).clamp(0, 255), bare, (bare - 200).clamp(0, 255), 0.0625)
    assert clipped["after_clipping"] < 0.1


def test_swap_artifacts_reads_the_base_on_shots_composites_and_donors(tiny_backbone, monkeypatch, tmp_path):
    script = _script("swap_artifacts")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501-510"])
    monkeypatch.setattr(script, "load_backbone", lambda *a, **k: tiny_backbone)
    out = script.main(["--seeds", "11", "--smoke", "--classes", "5", "--sigmas", "0.125,0.0625",
                       "--out", str(tmp_path / "a.json")])
    (variant,) = out["variants"].values()
    row = variant["per_seed"][0]
    assert row["as is"] > 0 and row["donors"] > 0 and set(row["swapped"]) == {"0.125", "0.0625"}
    for s in row["swapped"].values():
        assert s["error"] > 0 and 0 < s["after_clipping"] <= s["high_pass"] + 0.05 <= 1.05
    # the same draws for every image set of a seed: the shots read again give the same error
    recipe = script.load_recipe("synthetic")
    run = script.SyntheticSeed.for_recipe(recipe, 11, 8, train_stream=script.STREAM)
    shots, _, _ = script.texture.texture_pair(run, script.STREAM, 8)
    window = (recipe.score.t_min, recipe.score.t_max)
    assert script.denoising_error(tiny_backbone, shots, window, 11) == pytest.approx(row["as is"])
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(json.dumps(out))


def test_the_texture_kept_swap_swaps_the_twin_and_adds_the_texture_back():
    script = _script("swap_texture_kept")
    g = torch.Generator().manual_seed(0)
    bare = (torch.rand(2, 3, 16, 16, generator=g) * 100 + 80).round().to(torch.uint8)
    # a texture of period 8 px, much of which a 1-px blur passes, so the plain swap takes much of it away
    checker = (10 * torch.sin(torch.arange(16) * 2 * torch.pi / 8)).round().to(torch.int16)[None, None].expand(
        3, 16, 16)
    shots = (bare.to(torch.int16) + checker).to(torch.uint8)
    donor = (torch.rand(3, 16, 16, generator=g) * 255).to(torch.uint8)
    swap = script.texture_kept_swap({x.numpy().tobytes(): b for x, b in zip(shots, bare)})
    out = swap(shots[0], donor, 0.0625)
    plain = script.coarse_swap(shots[0], donor, 0.0625)
    twin = script.coarse_swap(bare[0], donor, 0.0625)
    # the whole texture rides on the swapped twin (up to clipping), where the plain swap keeps only its high-pass
    kept = out.float() - twin.float()
    inside = (twin > 20) & (twin < 235)
    assert torch.allclose(kept[inside], checker.float().expand_as(kept)[inside], atol=1)
    taken = plain.float() - twin.float()  # what the plain swap leaves of the texture
    assert (taken[inside] - kept[inside]).abs().mean() > 2
    with pytest.raises(RuntimeError, match="lookup failed"):
        swap(donor, donor, 0.0625)
    # the patch is the fit's swap only inside the study's context
    original = script.loop.coarse_swap
    with script.patched({}):
        assert script.loop.coarse_swap is not original
    assert script.loop.coarse_swap is original


def test_the_object_kept_swap_swaps_the_background_only():
    script = _script("swap_texture_kept")
    bare = torch.empty(3, 16, 16, dtype=torch.uint8)
    bare[:] = torch.tensor([200, 40, 30], dtype=torch.uint8)[:, None, None]  # a red background
    bare[:, 4:10, 5:12] = 128  # a grey object
    stripes = (torch.arange(16) % 4 < 2).to(torch.int16)[:, None].expand(16, 16) * 20 - 10
    shot = bare.clone()
    shot[:, 4:10, 5:12] = (128 + stripes[4:10, 5:12]).to(torch.uint8)
    mask = script.object_mask(bare)
    assert mask.shape == (1, 16, 16) and int(mask.sum()) == 6 * 7
    donor = torch.zeros(3, 16, 16, dtype=torch.uint8)
    donor[2] = 220  # a blue image
    out = script.texture_kept_swap({shot.numpy().tobytes(): bare}, keep="object")(shot, donor, 0.125)
    plain = script.coarse_swap(shot, donor, 0.125)
    assert torch.equal(out[:, 4:10, 5:12], shot[:, 4:10, 5:12])  # the object exactly as it was
    assert torch.equal(out[:, ~mask[0]], plain[:, ~mask[0]])  # the rest as the plain swap makes it
    assert not torch.equal(plain[:, 4:10, 5:12], shot[:, 4:10, 5:12])  # which changes the object too
    # a rectangular object is its own box, so keeping the box keeps the same pixels
    boxed = script.texture_kept_swap({shot.numpy().tobytes(): bare}, keep="box")(shot, donor, 0.125)
    assert torch.equal(boxed, out)


def _grey_disc_on_red() -> tuple[torch.Tensor, torch.Tensor]:
    """A 12 x 12 texture-free twin: a grey disc of radius 3 at (5, 6) on a red background, and the disc."""
    bare = torch.zeros(3, 12, 12, dtype=torch.uint8)
    bare[0] = 200
    disc = ((torch.arange(12)[:, None] - 5) ** 2 + (torch.arange(12)[None] - 6) ** 2) <= 9
    bare[:, disc] = 128
    return bare, disc


def test_the_box_mask_is_the_objects_bounding_box():
    script = _script("swap_texture_kept")
    bare, disc = _grey_disc_on_red()
    box = script.object_box(bare)[0]
    assert box[2:9, 3:10].all() and int(box.sum()) == 7 * 7  # rows 2-8, columns 3-9
    assert int(script.object_mask(bare).sum()) < int(box.sum())  # the box holds background corners too


def test_the_box_kept_swap_keeps_the_boxs_background_corners():
    script = _script("swap_texture_kept")
    bare, disc = _grey_disc_on_red()
    donor = torch.zeros(3, 12, 12, dtype=torch.uint8)
    donor[2] = 220
    lookup = {bare.numpy().tobytes(): bare}
    boxed = script.texture_kept_swap(lookup, keep="box")(bare, donor, 0.125)
    kept = script.texture_kept_swap(lookup, keep="object")(bare, donor, 0.125)
    corner = (2, 3)  # inside the box, outside the disc: the shot's red background stays with the box only
    assert not disc[corner] and boxed[0][corner] == 200 and kept[0][corner] != 200


def test_swap_texture_kept_reads_each_fit_on_the_stream_and_keys_it_asks_for(tmp_path, monkeypatch):
    script = _script("swap_texture_kept")
    recipe = script.load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    calls = []

    def fake(overrides, seeds, shots, per_class, pairs=(12, 12), cache=None, train_stream="train", n_classes=None,
             key_extra=None, masks=False, mask_rim=0):
        patched = script.loop.coarse_swap is not script.coarse_swap
        calls.append((tuple(overrides), train_stream, key_extra, patched, masks) + ((mask_rim,) if mask_rim else ()))
        if patched:  # the patched swap knows the shots of the stream asked for (a control-shot lookup would fail)
            run = script.SyntheticSeed.for_recipe(recipe, seeds[-1], shots, train_stream=train_stream)
            shot = script.texture.texture_pair(run, train_stream, shots)[0][-1]
            assert script.loop.coarse_swap(shot, shot, 0.125).shape == shot.shape
        right = 12 if patched or masks else 8 if overrides else 10  # object kept > recipe > plain swap, out of 20
        return {"oracle": {window: [np.arange(20) < right + (s % 2) for s in range(len(seeds))]}}

    monkeypatch.setattr(script.tune, "evaluate", fake)
    out = script.main(["--seeds", "11,12", "--smoke", "--keep", "object", "--train-stream", "train",
                       "--sigmas", "0.125", "--out", str(tmp_path / "k.json")])
    # the recipe once, then per blur the plain swap and the patched one under the mode's own cache keys
    swap = ("fit.coarse_swap=1.0", "fit.coarse_sigma=0.125")
    assert calls == [((), "train", None, False, False), (swap, "train", None, False, False),
                     (swap, "train", script.KEPT["object"], True, False)]
    assert script.loop.coarse_swap is script.coarse_swap  # unpatched after the study
    row = out["blurs"]["0.125"]
    assert out["recipe"]["mean"] == pytest.approx(10.5 / 20) and row["object kept"] == pytest.approx(12.5 / 20)
    assert row["kept minus swap"]["gain"] == pytest.approx(4 / 20) and row["kept minus swap"]["ahead"] == 2
    assert row["swap minus recipe"]["gain"] == pytest.approx(-2 / 20) and row["swap minus recipe"]["behind"] == 2
    assert out["train_stream"] == "train" and json.loads((tmp_path / "k.json").read_text()) == out
    # --keep masks: the product's own path, masks given to the fit and nothing patched
    calls.clear()
    out = script.main(["--seeds", "11,12", "--smoke", "--keep", "masks", "--sigmas", "0.125"])
    assert calls[-1] == (swap, script.CONTROL, None, False, True) and out["blurs"]["0.125"]["masks kept"] == 12.5 / 20
    # --mask-rim: the same path, each mask grown first (its own cache key, in tune_synthetic)
    out = script.main(["--seeds", "11,12", "--smoke", "--keep", "masks", "--mask-rim", "-1", "--sigmas", "0.125"])
    assert calls[-1] == (swap, script.CONTROL, None, False, True, -1) and out["mask_rim"] == -1
    with pytest.raises(SystemExit):
        script.main(["--seeds", "11,12", "--smoke", "--keep", "box", "--mask-rim", "1"])


def test_mask_loss_reads_each_variant_with_its_masks_and_pairs_it(tmp_path, monkeypatch):
    script = _script("mask_loss")
    recipe = script.load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    calls, kinds, detail_kinds = [], [], []
    right = {(): 10, tuple(script.SWAP): 14, ("fit.mask_loss=true",): 17, tuple(script.WHOLE): 12}

    def fake(overrides, seeds, shots, per_class, cache=None, masks=False, mask_rim=0, background_detail=0.0,
             train_stream="train", mask_kind="object", background_detail_kind="thin"):
        calls.append((tuple(overrides), masks, mask_rim, background_detail, train_stream))
        kinds.append(mask_kind)
        detail_kinds.append(background_detail_kind)
        n = right.get(tuple(overrides), 18) + (2 if masks and "fit.mask_loss=true" not in overrides else 0)
        hits = [np.arange(20) < n + (s % 2) for s in range(len(seeds))]
        return {"oracle": {window: hits}, "correct": {window: hits},
                "ll": {window: [np.full(20, 0.1 * n - 0.05 * s) for s in range(len(seeds))]}}

    monkeypatch.setattr(script.tune, "evaluate", fake)
    out = script.main(["--seeds", "11,12", "--smoke", "--mask-rim", "-1", "--out", str(tmp_path / "m.json")])
    # the recipe and the plain swap without masks; every masked variant with the rim asked for
    assert [c[1:3] for c in calls] == [(False, 0), (False, 0), *[(True, -1)] * 5]
    assert {c[3:] for c in calls} == {(0.0, "train")}
    assert calls[5][0] == (*script.SWAP, "fit.swap_background=whole")
    rows = out["variants"]
    assert rows["swap outside the masks"]["mean"] == pytest.approx(16.5 / 20)
    assert rows["loss over the masks"]["minus the masked swap"]["gain"] == pytest.approx(1 / 20)
    assert rows["loss over the masks"]["minus recipe"]["ahead"] == 2
    assert "minus the masked swap" not in rows["swap"] and "minus recipe" not in rows["recipe"]
    assert json.loads((tmp_path / "m.json").read_text()) == out
    assert script.CONTROL not in rows
    # the rule on user-like validation, paired against the masked swap (16 right there): the loss alone (17) ahead,
    # the whole-background swap (14) behind
    rules = {k: rows[k]["user-like validation"].get("ll minus the masked swap") for k in rows}
    loss = rules["loss over the masks"]
    assert loss["gain"] == pytest.approx(0.1) and loss["ahead beyond 2 SE"] and not loss["behind beyond 2 SE"]
    whole = rules["whole background swapped outside the masks"]
    assert whole["gain"] == pytest.approx(-0.2) and whole["behind beyond 2 SE"] and not whole["ahead beyond 2 SE"]
    assert rules["swap outside the masks"] is None and rules["swap"] is None
    assert rows["recipe"]["user-like validation"]["accuracy"] == pytest.approx(10.5 / 20)
    # detailed backgrounds: every fit on that variant, and the recipe once more on shots without the accident
    calls.clear()
    rows = script.main(["--seeds", "11,12", "--smoke", "--background-detail", "0.1"])["variants"]
    assert {c[3] for c in calls} == {0.1} and calls[-1] == ((), False, 0, 0.1, "shots without the shortcut")
    assert "minus recipe" in rows[script.CONTROL] and "minus the masked swap" not in rows[script.CONTROL]
    assert set(detail_kinds) == {"thin"}
    # another class's texture on the backgrounds: every fit on that variant, the control included
    calls.clear(), detail_kinds.clear()
    out = script.main(["--seeds", "11,12", "--smoke", "--background-detail", "0.1", "--background-detail-kind", "class",
                       "--rows", "swap"])
    assert detail_kinds == ["class"] * 4 and out["background_detail_kind"] == "class"
    assert [c[0] for c in calls] == [(), tuple(script.SWAP), tuple(script.SWAP), ()]  # recipe, swap, masked, control
    with pytest.raises(SystemExit):  # a kind without an amplitude draws nothing
        script.main(["--seeds", "11,12", "--smoke", "--background-detail-kind", "class"])
    # boxes for the masks, on a subset of the rows: the recipe and the masked swap always among them
    calls.clear()
    kinds.clear()
    whole = "whole background swapped outside the masks"
    out = script.main(["--seeds", "11,12", "--smoke", "--masks", "box", "--rows", whole])
    assert list(out["variants"]) == ["recipe", "swap outside the masks", whole] and out["masks"] == "box"
    assert [(c[1], k) for c, k in zip(calls, kinds)] == [(False, "object"), (True, "box"), (True, "box")]
