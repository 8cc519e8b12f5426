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
