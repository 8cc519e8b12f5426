"""The maintained benchmarks under eval/ run in their smallest configuration and write what they report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encoder_granularity_reports_the_swap_transfer_per_stage(tmp_path, capsys):
    script = _script("encoder_granularity")
    assert script.main(["--seeds", "0", "--steps", "3", "--train-images", "64", "--test-images", "48",
                        "--pairs", "2", "--device", "cpu", "--out", str(tmp_path), "--no-progress",
                        "--set", "probe.steps=5", "--set", "probe.transfer_steps=4"]) == 0
    report = json.loads((tmp_path / "granularity.json").read_text())
    transfer = report["summary"]["transfer"]
    assert set(transfer) == {"t 0-600", "t 600-1000", "all of z"}
    for values in transfer.values():
        assert set(values) == {"fine_mark", "warm_background", "large_disc"}
        assert all(len(v) == 2 and np.isfinite(v).all() for v in values.values())
    printed = capsys.readouterr().out
    assert "| t 0-600 |" in printed and "fine_mark" in printed


def test_bench_speed_tiny_prints_every_part_and_the_ratios_of_one_run(tmp_path, capsys):
    from helpers import TINY_CLIP

    from diti_sd.evaluation.cost import cost_table, read_speed

    clip = tmp_path / "tiny-clip-test.json"
    clip.write_text(json.dumps(TINY_CLIP))
    _script("bench_speed").main(["--tiny", "--repeats", "1", "--classes", "8", "--encoder", f"openclip:{clip}",
                                 "--json", str(tmp_path / "speed.json")])
    rows = {r["part"].split(" (")[0].split(",")[0]: r
            for r in json.loads((tmp_path / "speed.json").read_text())["rows"]}
    assert {"VAE encode", "UNet forward", "scoring pass", "training step", "encoder forward"} <= set(rows)
    assert all(r["per_s"] > 0 for r in rows.values())
    printed = capsys.readouterr().out
    assert "stacked LoRAs" in printed and "ratio_to_bare" in printed and "projected_3333_images_min" in printed
    # diti-sd eval --speed: a method's GPU-seconds per test image from these rates
    speed = read_speed(str(tmp_path / "speed.json"))
    stacked = [r for r in json.loads((tmp_path / "speed.json").read_text())["rows"] if "stacked LoRAs" in r["part"]]
    assert speed["unet_s"] == pytest.approx(1 / stacked[0]["per_s"])
    runs = [{"method": "diti+probe", "cost": {"unet_calls_per_image": 40, "encoder_forwards_per_image": 1}}]
    cost = cost_table(runs, speed)["diti+probe"]
    assert cost["gpu_s_per_image"] == pytest.approx(40 * speed["unet_s"] + speed["encoder_s"])
    assert "gpu_s_per_image" not in cost_table(runs, {})["diti+probe"]


def test_budget_curve_replays_schedules_on_one_set_of_errors(tmp_path, capsys, monkeypatch):
    script = _script("budget_curve")
    for argv, why in ((["--seeds", "501"], "sealed"), (["--stream", "decorrelated"], "validation stream")):
        with pytest.raises(SystemExit, match=why):  # before any fit
            script.main([*argv, "--out", str(tmp_path)])
    drawn = []
    real = script.timestep_noise
    monkeypatch.setattr(script, "timestep_noise", lambda t, shape, seed: drawn.append(seed) or real(t, shape, seed))
    script.main(["--seeds", "1,2", "--test-per-class", "2", "--steps", "2", "--out", str(tmp_path)])
    assert len(drawn) == 2 and drawn[0] != drawn[1]  # each seed scores with its own noise
    rows = {row["schedule"]: row for row in json.loads((tmp_path / "budget.json").read_text())["rows"]}
    # exhaustive: every class at every pair; behind a top-k prefilter, k classes
    assert rows["exhaustive, 1 pairs"]["calls_per_image"] == 5
    assert rows["exhaustive, 32 pairs"]["calls_per_image"] == 160
    assert rows["probe top 2, exhaustive, 8 pairs"]["calls_per_image"] == 16
    assert all(0 <= row["accuracy"] <= 1 and row["std"] >= 0 for row in rows.values())
    assert (tmp_path / "accuracy_vs_budget.png").stat().st_size > 0


def test_gpu_precision_compares_each_precisions_predictions_with_the_first(monkeypatch):
    script = _script("gpu_precision")
    with pytest.raises(SystemExit, match="unknown precision fp8"):
        script.main(["--precisions", "fp32,fp8"])
    # on CPU only fp32 runs: two fits of one seed are the same fit and agree on every image; a third row
    # scored with its adapters switched off stands in for a precision that moves the predictions
    monkeypatch.setitem(script.PRECISIONS, "off", ["score.unet_scale=0.0", "score.text_scale=0.0"])
    rows = script.main(["--device", "cpu", "--precisions", "fp32,fp32,off", "--per-class", "4", "--steps", "4"])
    assert [r["finite"] for r in rows] == [True, True, True]
    assert rows[1]["agrees_with_first"] == 1.0 and rows[1]["oracle val"] == rows[0]["oracle val"]
    assert rows[2]["agrees_with_first"] < 1.0


def test_background_reading_counts_the_oracle_images_whose_background_is_another_class(tmp_path, monkeypatch):
    script = _script("background_reading")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501"])
    args = ["--seeds", "11", "--per-class", "3", "--steps", "2", "--cache", str(tmp_path)]
    row = script.main(args)["(the recipe)"]
    from diti_sd.benchmarks.synthetic.data import background_of
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
    from diti_sd.recipes import load_recipe

    oracle = SyntheticSeed.for_recipe(load_recipe("synthetic"), 11, shots=8).stream("oracle val", 3)
    assert row["conflict_images"] == sum(background_of(im) != label for im, label in zip(oracle.images, oracle.labels))
    assert 0 <= row["to_background"] + row["conflict_accuracy"] <= 1
    # a rerun reads each (variant, seed) result back instead of fitting again
    (cached,) = tmp_path.glob("*.json")
    cached.write_text(json.dumps({**json.loads(cached.read_text()), "val": 0.125}))
    assert script.main(args)["(the recipe)"] == {**row, "val": 0.125}
    # the cache is named by the resolved recipe: the same recipe spelled out reads it back, another refits
    fitted = []
    monkeypatch.setattr(script, "measure",
                        lambda overrides, *a: fitted.append(overrides) or json.loads(cached.read_text()))
    t_max = load_recipe("synthetic").fit.t_max
    script.main([*args, "--variant", f"fit.t_max={t_max}", "--variant", f"fit.t_max={t_max + 1}"])
    assert fitted == [[f"fit.t_max={t_max + 1}"]]


def test_tune_synthetic_compares_on_validation_under_the_sealed_protocol(tmp_path, capsys, monkeypatch):
    tune = _script("tune_synthetic")
    # the protocol: ten seeds or more, never the demo's sealed seeds
    with pytest.raises(SystemExit, match="at least 10"):
        tune.main(["--seeds", "11-13"])
    with pytest.raises(SystemExit, match="sealed"):
        tune.main(["--seeds", "396-405"])
    argv = ["--seeds", "11", "--smoke", "--val-per-class", "2", "--set", "fit.steps_by_shots={1: 2}",
            "--variant", "fit.steps=1;lora.rank=2", "--against", "fit.steps_by_shots={1: 1}",
            "--windows", "0-200,200-500", "--pairs", "2,3", "--split-at", "300", "--out", str(tmp_path / "t.json"),
            "--cache", str(tmp_path / "cache")]
    tune.main(argv)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # a rerun (after a kill, or another run sharing the baseline) reads every (setting, seed) from the cache
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3
    with monkeypatch.context() as m:
        m.setattr(tune.SyntheticSeed, "for_recipe", lambda *a, **k: pytest.fail("refitted a cached seed"))
        tune.main(argv)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert json.loads((tmp_path / "t.json").read_text()) == result
    assert result["baseline"] == ["fit.steps_by_shots={1: 1}"] and result["seeds"] == [11]
    assert [c["overrides"] for c in result["candidates"]] == [["fit.steps_by_shots={1: 2}"],
                                                               ["fit.steps=1", "lora.rank=2"]]
    for candidate in result["candidates"]:
        rows = candidate["windows"]
        assert list(rows) == ["[0,200)", "[200,500)", "tif"]
        for r in rows.values():
            assert 0 <= r["candidate"] <= 1 and r["gain"] == pytest.approx(r["candidate"] - r["baseline"])
            assert r["verdict"] == "smoke run: no verdict"
            # the rule's log-likelihood on the user-like stream and the oracle's accuracy, from the same fits
            assert r["ll"]["candidate"] <= 0 and 0 <= r["oracle"]["candidate"] <= 1
            assert r["ll"]["gain"] == pytest.approx(r["ll"]["candidate"] - r["ll"]["baseline"])
    # the evidence for the recipe's own scoring window [0, 200): the baseline's other scorings against it
    against, rows = result["baseline_windows_minus_recipe_window"], result["candidates"][0]["windows"]
    assert list(against) == ["[200,500)", "tif"]
    for w, r in against.items():
        assert r["gain"] == pytest.approx(rows[w]["baseline"] - rows["[0,200)"]["baseline"])
    # the baseline is fitted once and shared: both candidates compare with the same accuracies
    assert [c["windows"]["tif"]["baseline"] for c in result["candidates"]].count(
        result["candidates"][0]["windows"]["tif"]["baseline"]) == 2
    # the control that prices the shortcut fits on other shots, under its own cache keys
    streams = []
    real = tune.SyntheticSeed.for_recipe
    monkeypatch.setattr(tune.SyntheticSeed, "for_recipe",
                        lambda *a, **k: streams.append(k.get("train_stream")) or real(*a, **k))
    control = ["--seeds", "11", "--smoke", "--val-per-class", "2", "--against", "fit.steps_by_shots={1: 1}",
               "--windows", "0-200,200-500", "--pairs", "2,3", "--split-at", "300", "--cache", str(tmp_path / "cache"),
               "--train-stream", "shots without the shortcut"]
    tune.main(control)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert streams == ["shots without the shortcut"] and len(list((tmp_path / "cache").glob("*.json"))) == 4
    assert out["train_stream"] == "shots without the shortcut"
    ll = [r["candidates"][0]["windows"]["tif"]["ll"]["baseline"] for r in (out, result)]
    assert ll[0] != ll[1]  # the same setting, other shots
    # the variant whose shots break the accident now and then: its own cache keys and its own shots
    rates = []
    monkeypatch.setattr(tune.SyntheticSeed, "for_recipe",
                        lambda *a, **k: rates.append(k.get("shortcut_rate")) or real(*a, **k))
    partial = [*control[:-2], "--shortcut-rate", "0.5"]
    tune.main(partial)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rates == [0.5] and out["shortcut_rate"] == 0.5 and len(list((tmp_path / "cache").glob("*.json"))) == 5
    assert out["candidates"][0]["windows"]["tif"]["ll"]["baseline"] != ll[1]
    with pytest.raises(SystemExit, match="--shortcut-rate must be in"):
        tune.main([*partial[:-1], "1.5"])


def test_tune_synthetic_rivals_are_the_demos_all_t_adapters():
    tune = _script("tune_synthetic")
    from diti_sd.benchmarks.synthetic.demo import WIDE_OVERRIDES
    from diti_sd.recipes import load_recipe

    rivals = load_recipe("synthetic", tune.baseline_overrides("rivals"))
    demo = load_recipe(load_recipe("synthetic"), list(WIDE_OVERRIDES))
    assert rivals.fit.t_max == 1000 and rivals.score == demo.score and rivals.lora == demo.lora
    assert rivals.fit.prior_prompt == demo.fit.prior_prompt == "generic" != load_recipe("synthetic").fit.prior_prompt
    assert tune.baseline_overrides("fit.lr=1e-3;fit.dropout=0.1") == ["fit.lr=1e-3", "fit.dropout=0.1"]


def test_tune_synthetic_calls_a_gain_better_only_beyond_two_standard_errors():
    tune = _script("tune_synthetic")
    seeds, w = 10, (0, 200)

    def run(ll, correct=None):
        correct = correct or [np.ones(20, bool)] * seeds  # user-like accuracy saturates: it cannot choose
        return {"correct": {w: correct}, "ll": {w: ll}, "oracle": {w: [np.zeros(5, bool)] * seeds}}

    base = run([np.full(20, -1.0)] * seeds)
    # the rule reads the true-class log-likelihood: +0.10 on every seed, no spread, far beyond 2 SE
    steady = tune.compare(run([np.full(20, -0.9)] * seeds), base)["[0,200)"]
    assert steady["verdict"].startswith("better") and steady["gain"] == 0
    assert steady["ll"]["gain"] == pytest.approx(0.1)
    # the same mean gain, carried by two seeds only: within the noise
    lucky = tune.compare(run([np.full(20, -0.5 if s < 2 else -1.0) for s in range(seeds)]), base)["[0,200)"]
    assert lucky["ll"]["gain"] == pytest.approx(0.1) and lucky["verdict"] == "not shown better"
    # an accuracy gain alone is not the rule's evidence
    more = [np.r_[np.ones(2), np.zeros(18)].astype(bool)] * seeds
    assert tune.compare(run([np.full(20, -1.0)] * seeds, more),
                        run([np.full(20, -1.0)] * seeds, [np.zeros(20, bool)] * seeds))["[0,200)"]["verdict"] \
        == "not shown better"


def test_auto_window_saves_every_pass_a_rule_needs_and_resumes(tmp_path, capsys):
    script = _script("auto_window")
    argv = ["--task", "texture", "--seeds", "1", "--shots", "2", "--val-per-class", "2", "--oracle-per-class", "1",
            "--pairs", "6", "--set", "fit.steps=2", "--out", str(tmp_path)]
    script.main(argv)
    folder = tmp_path / "texture_user_fit.steps-2_val"
    arrays = np.load(folder / "seed1.npz")
    # the user's validation stream (its background follows the class), the same images perturbed, the oracle
    assert arrays["val_errors"].shape == arrays["perturbed_errors"].shape == (10, 5, 6)
    assert arrays["oracle_errors"].shape == (5, 5, 6) and not np.isnan(arrays["val_errors"]).any()
    assert not np.allclose(arrays["val_errors"], arrays["perturbed_errors"])
    run = json.loads((folder / "seed1.json").read_text())
    assert run["correct"] == {} and run["images"]["val"] == 10  # no test stream read on validation seeds
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("seed*")}
    script.main(argv)  # finished seeds are read back, not recomputed
    assert stamps == {p: p.stat().st_mtime_ns for p in folder.glob("seed*")}
    # the rules, offline: each pick scored on the oracle stream against TiF's weight and the best fixed
    result = script.main([*argv, "--rules"])
    assert set(result["picks"]) == set(script.RULES) and list(result["streams"]) == ["oracle"]
    score = script.recipe_for(script.parse_args(argv)).score
    from diti_sd.scoring.auto import choose

    assert result["picks"]["likelihood"] == [choose(arrays["val_errors"], arrays["val_t"], arrays["val_labels"],
                                                    score, float(arrays["tif_d"]))["name"]]
    # the family is a user's: no window tuned on this benchmark
    assert all(not name.startswith("recipe's") for name in result["streams"]["oracle"]["candidates"])
    # the test streams are read only on the study's sealed seeds, and those never on a validation run
    with pytest.raises(SystemExit, match="sealed seeds"):
        script.main([*argv, "--test"])
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "601", "--out", str(tmp_path)])


def test_the_perturbation_moves_the_background_and_keeps_the_texture():
    from diti_sd.benchmarks.synthetic.data import SyntheticSpec, background_of, make_split

    script = _script("auto_window")
    data = make_split(SyntheticSpec(size=16), "train", 2, seed=3)
    for image, moved in zip(data.images, script.perturbed(data.images)):
        assert background_of(moved) != background_of(image)
        grey = (image.max(0).values - image.min(0).values) < 1e-6  # the object: equal channels
        assert torch.equal(image[:, grey], moved[:, grey]) and grey.any()


def test_the_rules_that_keep_tifs_weight_or_its_band():
    from diti_sd.recipes import load_recipe

    script = _script("auto_window")
    score = load_recipe("synthetic", ["score.weighting=auto", "score.t_min=0", "score.t_max=1000"]).score
    t = np.broadcast_to(((np.arange(24) + 0.5) * 1000 / 24).astype(int), (20, 24))
    labels = np.arange(20) % 5
    rng = np.random.default_rng(0)
    errors = rng.normal(1.0, 0.01, (20, 5, 24))
    late = t >= 667
    # only the last third (a coarse shortcut's band) tells the validation classes apart
    errors[np.arange(20), labels] -= np.where(late, 0.05, 0.0)
    arrays = {"val_errors": errors, "val_t": t, "val_labels": labels, "tif_d": np.array(2.0)}
    assert script.rule_choice(arrays, score, "likelihood") == "[667, 1000)"
    lo, hi = script.tif_band(2.0)
    assert 0 < lo < hi <= 667  # TiF's band for a small distance ends before the last third
    inside = script.rule_choice(arrays, score, "likelihood, within TiF's band")
    assert inside != "[667, 1000)"
    # beaten beyond two standard errors: the last third replaces TiF's weight; a noisy edge does not
    assert script.rule_choice(arrays, score, "TiF's weight unless beaten by 2 SE") == "[667, 1000)"
    arrays["val_errors"] = rng.normal(1.0, 0.05, (20, 5, 24))
    assert script.rule_choice(arrays, score, "TiF's weight unless beaten by 2 SE") == "tif weight"


def test_recheck_window_replays_the_saved_passes_against_the_recipes_window(tmp_path):
    recheck = _script("recheck_window")
    rng = np.random.default_rng(0)
    t = np.arange(12) * 83  # pairs spread over [0, 1000)
    for seed in range(3):
        labels = np.arange(20) % 5
        errors = rng.normal(1.0, 0.01, (20, 5, 12))
        # the true class denoises better only at t < 200: small t reads it, [200, 500) is at chance
        errors[np.arange(20), labels] -= 0.2 * (t < 200)
        np.savez(tmp_path / f"seed{seed}.npz", tif_d=np.array(5.0), val_errors=errors, val_t=t, val_labels=labels,
                 oracle_errors=errors, oracle_t=t, oracle_labels=labels)
    result = recheck.main([str(tmp_path), "--json", str(tmp_path / "r.json")])
    acc, ll = result["rows"]["val accuracy"], result["rows"]["val log-likelihood"]
    assert result["seeds"] == 3 and acc["(0, 200)"]["mean"] == 1.0 and acc["(200, 500)"]["gain"] == 0
    assert acc["(0, 200)"]["gain"] > 0.5 and ll["(0, 200)"]["gain"] > 0 and ll["(0, 200)"]["beyond_2_se"]
    assert json.loads((tmp_path / "r.json").read_text())["against"] == "(200, 500)"
    tif = recheck.main([str(tmp_path), "--against", "tif"])["rows"]["val log-likelihood"]
    assert tif["tif"]["gain"] == 0 and tif["(0, 200)"]["gain"] == pytest.approx(
        ll["(0, 200)"]["gain"] - ll["tif"]["gain"])


@pytest.mark.slow  # three fits with 100 prior images sampled each: about 15 minutes on 2 CPU cores
def test_validation_cost_times_the_default_fit_beside_no_calibrate_and_auto(tmp_path, capsys):
    cost = _script("validation_cost")
    cost.main(["--classes", "3", "--shots", "1", "--steps", "1", "--json", str(tmp_path / "c.json")])
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert list(rows) == ["default flags", "--no-calibrate", "auto"]
    assert not (rows["--no-calibrate"]["validation"] or {}).get("unet_calls")  # no pass at all
    for name in ("default flags", "auto"):
        v = rows[name]["validation"]
        # every pass within the default budget: at most 20 % of the fit's own UNet work (or skipped)
        assert v["share_of_fit"] <= 0.2 + 1e-9, v
    assert "x1.00" in capsys.readouterr().out  # --no-calibrate is the unit


def test_coarse_discount_marks_down_the_evidence_large_t_already_carries(tmp_path):
    script = _script("coarse_discount")
    with pytest.raises(SystemExit, match="no seed"):
        script.main([str(tmp_path)])
    rng = np.random.default_rng(0)
    t = np.tile(np.r_[np.full(4, 50), np.full(4, 300)], (40, 1))
    for seed in (1, 2):
        arrays = {}
        for stream in ("oracle", "val"):
            labels = np.arange(40) % 4
            # the shortcut: the background follows the class on "val", is another class's on "oracle"
            background = labels if stream == "val" else (labels + 1) % 4
            classes = np.arange(4)[None, :]
            texture, coarse = (classes == labels[:, None]), (classes == background[:, None])
            small = 1.0 - 1.0 * texture - 1.5 * coarse  # small t reads both, the background more
            large = 1.0 - 1.5 * coarse  # large t reads only the coarse background
            errors = np.concatenate([np.repeat(small[..., None], 4, 2), np.repeat(large[..., None], 4, 2)], 2)
            arrays.update({f"{stream}_errors": errors + 0.01 * rng.standard_normal(errors.shape),
                           f"{stream}_t": t, f"{stream}_labels": labels})
        np.savez(tmp_path / f"seed{seed}.npz", **arrays)
    result = script.main([str(tmp_path), "--out", str(tmp_path / "d.json")])["betas"]
    assert result["0"]["oracle"]["mean"] == 0.0  # small t alone answers the background
    # half the large-t evidence off: the background's pull cancels and the texture decides, on both streams
    assert result["0.5"]["oracle"]["mean"] == 1.0 and result["0.5"]["oracle"]["gain"] == 1.0
    assert result["0"]["val"]["mean"] == result["0.5"]["val"]["mean"] == 1.0
    # all of it off: where class and background agree the two bands' evidence is one direction, and it cancels
    assert result["1"]["val"]["mean"] < 0.5 and result["1"]["val_ll"]["gain"] < 0
    assert json.loads((tmp_path / "d.json").read_text())["betas"]["0.5"]["oracle"]["mean"] == 1.0
    # the projection takes the large-t direction out of the small-t evidence: where the background is another
    # class's, what is left points at the texture
    assert result["proj"]["oracle"]["mean"] == 1.0
    # --split decides which pairs are small t: at 400 every pair is, the large band is empty, and that is refused
    with pytest.raises(SystemExit, match="no scored pair"):
        script.main([str(tmp_path), "--split", "400"])
    assert script.main([str(tmp_path), "--split", "200"])["betas"] == result


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
    # a residual uniform over the image has nothing left once its mean or its local mean is taken away
    flat = torch.ones(1, 1, 1, 4, 8, 8)
    uniform = script.readings(flat, torch.full((1, 1, 8, 8), 0.25))
    assert float(uniform["minus mean"]) == 0 and float(uniform["high-pass 3"]) < 1e-12
    assert float(uniform["object"]) == pytest.approx(0.25)


def test_shortcut_check_fires_on_shots_that_share_a_background_by_class(tmp_path, capsys):
    script = _script("shortcut_check")
    script.main(["--seeds", "11,12", "--out", str(tmp_path / "check.json")])
    cases = json.loads((tmp_path / "check.json").read_text())["cases"]
    assert cases["texture / train"]["warned"] == 2 and cases["texture / train"]["accuracy"] == 1.0
    assert cases["texture / shots without the shortcut"]["warned"] == 0
    assert len(cases["many / train"]["per_seed"]) == 2 and "warned 2/2" in capsys.readouterr().out


def test_premise_calibration_chooses_each_temperature_on_its_own_source(tmp_path, capsys):
    script = _script("premise_calibration")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501"])
    # the swapped validation images keep their fine detail and take a donor's coarse content
    from diti_sd.benchmarks.synthetic.data import SyntheticSpec, make_split
    from diti_sd.coarse import gaussian_blur

    images = make_split(SyntheticSpec(size=32), "train", 1, seed=3).images
    donors = make_split(SyntheticSpec(size=32), "generic", 1, seed=4).images
    out = script.swapped(images, donors, 0.125, seed=0)
    fine = [x - gaussian_blur(x[None], 4.0)[0] for x in images]
    assert all((o - gaussian_blur(o[None], 4.0)[0] - f).abs().mean() < 0.03 for o, f in zip(out, fine))  # clipped
    assert all((o - x).abs().mean() > 0.15 for o, x in zip(out, images))
    args = ["--seeds", "11", "--smoke", "--per-class", "2", "--set", "fit.steps=2", "--baseline",
            "--cache", str(tmp_path), "--out", str(tmp_path / "r.json")]
    script.main(args)
    result = json.loads((tmp_path / "r.json").read_text())
    for variant in ("coarse swap", "recipe"):
        row = result["variants"][variant]["per_seed"][0]
        assert set(row["accuracy"]) == {"as drawn", "coarse swapped", "oracle"}
        assert all(row[s]["temperature"] > 0 and row[s]["nll"] > 0 for s in script.SOURCES)
    assert result["variants"]["coarse swap"]["overrides"] == ["fit.coarse_swap=1.0", "fit.steps=2"]


def test_shortcut_strength_reads_the_rule_and_the_oracle_rows_per_rate(tmp_path, capsys, monkeypatch):
    script = _script("shortcut_strength")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501-510"])
    with pytest.raises(SystemExit, match="--rates must be shares"):
        script.main(["--seeds", "11", "--smoke", "--rates", "1.2"])
    seeds, calls = 10, []
    windows = [*script.tune.WINDOWS, "tif"]
    recipe = script.load_recipe("synthetic")

    def fake(overrides, seeds_, shots, per_class, cache=None, shortcut_rate=1.0):
        # seed s: the oracle's correct share rises with the seed. On the user-like images, found here as the
        # script finds them, that break the accident the swap is right and likelier; elsewhere the recipe is
        calls.append((tuple(overrides), shortcut_rate))
        swap, rivals = overrides == script.SWAP, "fit.t_max=1000" in overrides
        masks = script.conflicts(recipe, seeds_, shots, per_class, shortcut_rate)
        oracle = {w: [np.r_[np.ones(s + (5 if swap else 0 if rivals else 2)), np.zeros(20)][:20].astype(bool)
                      for s in range(seeds)] for w in windows}
        oracle[script.LARGE_T[1]] = [np.zeros(20, bool)] * seeds
        ll = [np.where(m, -0.5 + 0.02 * (s % 3), -1.5) if swap else np.full(len(m), -1.0) for s, m in enumerate(masks)]
        return {"correct": {w: [m.copy() if swap else ~m for m in masks] for w in windows},
                "ll": {w: ll for w in windows}, "oracle": oracle}

    monkeypatch.setattr(script.tune, "evaluate", fake)
    out = script.main(["--seeds", "11-20", "--rates", "0.75,1", "--val-per-class", "4", "--out",
                       str(tmp_path / "s.json")])
    assert {rate for _, rate in calls} == {0.75, 1.0} and len(calls) == 6
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(json.dumps(out))
    first = out["rates"][0]
    # on all the user-like images the accident dominates: the recipe is kept
    assert first["rate"] == 0.75 and first["rule_swap_vs_recipe"]["verdict"] == "recipe kept"
    assert first["rule_swap_vs_recipe"]["ll_gain"] < 0
    rows = first["oracle"]
    assert rows["recipe window"]["mean"] == pytest.approx(np.mean(np.arange(10) + 2) / 20)
    assert rows["coarse swap"]["recipe_minus"]["gain"] == pytest.approx(-3 / 20)
    assert rows["reference-style"]["recipe_minus"]["gain"] == pytest.approx(2 / 20)
    assert rows["same adapters [500, 1000)"]["mean"] == 0 and rows["same adapters [200, 500)"]["mean"] > 0
    # on the images that break it (read on the fits' rows in the stream's order) the swap is chosen, and
    # one seed at a time it is ahead wherever a seed has such images
    broken = first["conflicts"]
    having = sum(n > 0 for n in broken["per_seed"])
    assert having >= 2 and broken["images_per_seed"] == 20
    assert broken["accuracy"] == {"recipe": 0.0, "swap": 1.0}
    assert broken["rule_swap_vs_recipe"]["gain"] == pytest.approx(0.5 + 0.02 * np.mean(
        [s % 3 for s, n in enumerate(broken["per_seed"]) if n]))
    assert broken["rule_swap_vs_recipe"]["verdict"] == "swap chosen"
    assert broken["one_user_accuracy_comparisons"] == {"swap_better": having, "tie": 0, "recipe_better": 0}
    assert sum(broken["colour_task_per_seed"]) == 0
    assert out["rates"][1]["conflicts"]["rule_swap_vs_recipe"]["verdict"] == "no verdict: no such image"
    # the scoring each family's log-likelihood picks, pooled and seed by seed, beside the oracle's best
    windows = first["windows"]["rivals"]
    assert windows["pooled_pick_breaking"] in windows["oracle"] and windows["oracle_best"] in windows["oracle"]
    assert windows["per_seed_breaking_minus_all"]["seeds"] == having
    assert out["rates"][1]["windows"]["recipe"]["pooled_pick_breaking"] is None  # rate 1: no breaking image
    # such images on one seed only: no verdict either
    assert script.on_conflicts([np.zeros(3)] * 2, [np.zeros(3)] * 2, [np.array([1, 0, 0], bool),
                                                                        np.zeros(3, bool)])["gain"] is None
    assert "rate 0.75" in capsys.readouterr().out


def test_shortcut_check_reads_the_shots_that_break_the_accident(tmp_path):
    script = _script("shortcut_check")
    script.main(["--seeds", "11,12", "--shortcut-rates", "0.5", "--out", str(tmp_path / "check.json")])
    cases = json.loads((tmp_path / "check.json").read_text())["cases"]
    partial = cases["texture / train, background follows in 0.5"]
    assert partial["accuracy"] < cases["texture / train"]["accuracy"] == 1.0
