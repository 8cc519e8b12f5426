"""eval/residual_location.py: the small-t residual read by region, on the benchmark's variants and with masks read
off the base."""

from __future__ import annotations

import pytest
import torch
from helpers import eval_script as _script


def test_residual_location_splits_the_error_by_region_and_frequency(tiny_model_dir):
    from helpers import color_images

    from diti_sd import DiTiFewShotClassifier

    script = _script("residual_location")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501"])
    X, y = color_images(6, seed=1, size=64)
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False).fit(X, y)
    latents = clf.encode(X[:3])
    t = torch.tensor([10, 150])
    noise = torch.randn(2, *latents.shape[1:], generator=torch.Generator().manual_seed(0))
    residual = script.residuals(clf, latents, t, noise)
    share = script.object_share(torch.stack(X[:3]), latents.shape[-1])
    read = script.readings(residual, share)
    # the whole-latent reading is the product's own error; the two regions add up to it
    torch.testing.assert_close(read["all"], torch.from_numpy(clf.dense_errors(latents, t, noise).mean(2)).float(),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(read["object"] + read["background"], read["all"])
    # the object reading is score.cells: object's error times the image's object share: it ranks the classes alike
    cells = clf.dense_errors(latents, t, noise, cells=share).mean(2)
    torch.testing.assert_close(read["object"] / share.mean((1, 2, 3))[:, None], torch.from_numpy(cells).float(),
                               rtol=1e-4, atol=1e-6)
    for flag in ("--fit-masks-unshrunk", "--test-masks-unshrunk"):  # only masks read off the base have a reading
        with pytest.raises(SystemExit):
            script.main(["--seeds", "11", flag])
    # a residual uniform over the image has nothing left once its mean or its local mean is taken away
    flat = torch.ones(1, 1, 1, 4, 8, 8)
    uniform = script.readings(flat, torch.full((1, 1, 8, 8), 0.25))
    assert float(uniform["minus mean"]) == 0 and float(uniform["high-pass 3"]) < 1e-12
    assert float(uniform["object"]) == pytest.approx(0.25)


def test_residual_location_reads_the_object_off_exact_masks_on_detailed_backgrounds(tmp_path, monkeypatch):
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
    from diti_sd.recipes import load_recipe

    script = _script("residual_location")
    run = SyntheticSeed.for_recipe(load_recipe("synthetic"), 11, 2, background_detail=0.1,
                                   background_detail_kind="class")
    masks = run.stream_masks("oracle val", 2)
    images = torch.stack(run.stream("oracle val", 2).images)
    share = script.mask_share(masks, 8)
    flat = SyntheticSeed.for_recipe(load_recipe("synthetic"), 11, 2)  # there the colour tells the object exactly
    flat_images = torch.stack(flat.stream("oracle val", 2).images)
    exact = script.mask_share(flat.stream_masks("oracle val", 2), 8)
    torch.testing.assert_close(script.object_share(flat_images, 8), exact)
    assert share.shape == (10, 1, 8, 8) and 0.1 < float(share.mean()) < 0.5
    # the colour-from-the-corner reading takes much of the textured background for object; the exact masks do not
    assert float(script.object_share(images, 8).mean()) > float(share.mean()) + 0.2
    assert all(torch.equal(a, b) for a, b in zip(run.stream_masks("train", 2), run.train_masks))
    calls = []

    def one_seed(seed, per_class, pairs, t_max, detail=None, train_stream="train", overrides=None, masks=None,
                 test_masks="exact", upscale=2, cache=None, fit_shrink=True, test_shrink=True):
        calls.append((seed, detail, train_stream, overrides, masks, test_masks, fit_shrink, test_shrink))
        row = {"accuracy": 0.5, "ll": -1.0}
        return {s: {r: dict(row) for r in script.READINGS} for s in script.STREAMS}

    monkeypatch.setattr(script, "one_seed", one_seed)
    args = ["--seeds", "11,12", "--background-detail", "0.1", "--background-detail-kind", "class", "--cache",
            str(tmp_path)]
    out = script.main(args)
    assert calls == [(s, {"background_detail": 0.1, "background_detail_kind": "class"}, "train", [], None, "exact",
                      True, True) for s in (11, 12)]
    assert script.main(args)["summary"] == out["summary"] and len(calls) == 2  # read back from the cache
    script.main([*args, "--train-stream", "shots without the shortcut"])
    assert len(calls) == 4 and calls[-1][2] == "shots without the shortcut"  # the control is kept apart
    script.main([*args, "--set", "fit.coarse_swap=1.0", "--masks"])
    assert len(calls) == 6 and calls[-1][3:5] == (["fit.coarse_swap=1.0"], "exact")  # a fit setting is kept apart
    script.main([*args, "--set", "fit.coarse_sigma=0.125"])  # the recipe's own value: the same fit, read back
    assert len(calls) == 6
    # masks read off the base, at fit or at test, and the fit's kept as read: each kept apart from the exact ones
    script.main([*args, "--set", "fit.coarse_swap=1.0", "--masks", "attention", "--test-masks", "attention"])
    script.main([*args, "--set", "fit.coarse_swap=1.0", "--masks", "attention", "--test-masks", "attention",
                 "--fit-masks-unshrunk"])
    script.main([*args, "--set", "fit.coarse_swap=1.0", "--masks", "attention", "--test-masks", "attention",
                 "--fit-masks-unshrunk", "--test-masks-unshrunk"])
    assert len(calls) == 12 and calls[-5][4:] == ("attention", "attention", True, True)
    assert calls[-3][6:] == (False, True) and calls[-1][6:] == (False, False)
    with pytest.raises(SystemExit):
        script.main(["--seeds", "11", "--background-detail-kind", "class"])


def test_object_cells_predict_pairs_the_products_two_readings_per_seed(tmp_path, monkeypatch):
    import numpy as np

    from diti_sd.scoring.engine import ScoreResult

    script = _script("object_cells_predict")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501"])
    errors = np.array([[0.1, 0.3], [0.2, 0.1], [0.5, 0.4]])
    row = script.reading(ScoreResult(errors, -errors, np.array([8, 8, 4])), np.array([0, 0, 1]))
    assert row["accuracy"] == pytest.approx(2 / 3) and row["unet_calls"] == 20 and row["ll"] < 0
    calls = []

    def one_seed(seed, per_class, detail, overrides, upscale, cache):
        calls.append((seed, detail, overrides, upscale))
        return {s: {"all": {"accuracy": 0.4, "ll": -1.5, "unet_calls": 80},
                    "object": {"accuracy": 0.4 + seed / 100, "ll": -1.0, "unet_calls": 80}} for s in script.STREAMS}

    monkeypatch.setattr(script, "one_seed", one_seed)
    args = ["--seeds", "11,13", "--background-detail", "0.1", "--background-detail-kind", "class", "--cache",
            str(tmp_path)]
    out = script.main(args)
    detail = {"background_detail": 0.1, "background_detail_kind": "class"}
    assert calls == [(s, detail, script.WHOLE_SWAP, 2) for s in (11, 13)]
    gain = out["summary"]["oracle val"]["object"]["accuracy"]
    assert gain["gain"] == pytest.approx(0.12) and gain["se"] == pytest.approx(0.01)  # paired per seed
    assert script.main(args)["summary"] == out["summary"] and len(calls) == 2  # read back from the cache
    script.main([*args, "--mask-upscale", "1"])
    assert len(calls) == 4 and calls[-1][3] == 1  # another reading of the masks is fitted and scored apart
    script.main([*args, "--noise-per-seed"])  # each seed's own scoring noise: a recipe of its own, cached apart
    assert [c[2] for c in calls[4:]] == [[*script.WHOLE_SWAP, f"score.seed={s}"] for s in (11, 13)]


def test_object_cells_predict_scores_the_object_through_the_product_and_the_whole_image_apart(tmp_path,
                                                                                              monkeypatch):
    import numpy as np

    from diti_sd.attention_masks import AttentionMasks
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
    from diti_sd.scoring.engine import ScoreResult

    script = _script("object_cells_predict")
    read, scored, fitted = [], [], []
    monkeypatch.setattr(script, "load_backbone", lambda *a, **k: "the base")

    def read_attention(spec, backbone, images, cache, name):
        read.append((spec.shrink, spec.upscale, backbone, name))
        return [torch.ones(16, 16, dtype=torch.bool) for _ in images]

    class Fitted:  # stands for the fitted classifier: what is scored, and how, is recorded
        def __init__(self, recipe, names):
            self.recipe_, self.classes_ = recipe, np.array(names)

        def score_images(self, images, masks=None, cache_dir=None):
            scored.append((self.recipe_.score.cells, masks, cache_dir))
            errors = np.random.default_rng(len(scored)).random((len(images), len(self.classes_)))
            return ScoreResult(errors, -errors, np.full(len(images), 16))

    def fit(run, recipe, masks=False):
        fitted.append((recipe, masks, run.train_masks))
        return Fitted(recipe, sorted(set(run.spec.classnames)))

    monkeypatch.setattr(script.residual, "read_attention", read_attention)
    monkeypatch.setattr(SyntheticSeed, "fit", fit)
    out = script.one_seed(11, 2, {}, script.WHOLE_SWAP, 2, tmp_path)
    # the shots' masks read as residual_location's best row read them, kept as read, under its cache's name
    assert read == [(False, 2, "the base", "seed11-train-unshrunk-44136fa3")]
    recipe, masks, train_masks = fitted[0]
    assert masks and recipe.score.cells == "object" and recipe.fit.swap_background == "whole"
    assert len(train_masks) == 40 and all(m.all() for m in train_masks)
    # per stream: the object's cells with masks read off the base (shrunk), then the same adapters on every cell
    assert [(cells, type(masks).__name__) for cells, masks, _ in scored] == [
        ("object", "AttentionMasks"), ("all", "NoneType")] * 2
    spec = scored[0][1]
    assert isinstance(spec, AttentionMasks) and spec.shrink and spec.upscale == 2 and spec.seed == 11
    assert scored[0][2] == tmp_path / "predict" / "seed11-val2-x2-44136fa3"
    for stream in script.STREAMS:
        assert out[stream]["object"]["unet_calls"] == out[stream]["all"]["unet_calls"] == 16 * 10
        assert out[stream]["object"]["mask_unet_calls"] == spec.unet_calls(10) > 0
        assert out[stream]["all"]["mask_unet_calls"] == 0
        assert out[stream]["object"]["accuracy"] != out[stream]["all"]["accuracy"] or (
            out[stream]["object"]["ll"] != out[stream]["all"]["ll"])
