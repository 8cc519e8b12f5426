"""The maintained benchmarks under eval/ run in their smallest configuration and write what they report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import eval_script as _script

from diti_sd.errors import ConfigError


def test_encoder_granularity_reports_the_swap_transfer_per_stage(tmp_path, capsys):
    script = _script("encoder_granularity")
    args = ["--seeds", "0", "--steps", "3", "--train-images", "64", "--test-images", "48", "--pairs", "2",
            "--device", "cpu", "--out", str(tmp_path), "--no-progress", "--set", "probe.steps=5",
            "--set", "probe.transfer_steps=4"]
    assert script.main(args) == 0
    report = json.loads((tmp_path / "granularity.json").read_text())
    # --resume reads a finished seed back (its probe, or its encoder when killed in the probe) to the same summary
    (tmp_path / "seed0" / "probe" / "probe.json").unlink()
    assert script.main([*args, "--resume"]) == 0
    assert script.main([*args, "--resume"]) == 0
    assert json.loads((tmp_path / "granularity.json").read_text()) == report
    transfer = report["summary"]["transfer"]
    assert set(transfer) == {"t 0-600", "t 600-1000", "all of z"}
    for values in transfer.values():
        assert set(values) == {"fine_mark", "warm_background", "large_disc"}
        assert all(len(v) == 2 and np.isfinite(v).all() for v in values.values())
    printed = capsys.readouterr().out
    assert "| t 0-600 |" in printed and "fine_mark" in printed


def test_bench_speed_tiny_prints_every_part_and_the_ratios_of_one_run(tmp_path, capsys, monkeypatch):
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
    # bench_speed's printed table in place of its --json file: one line before diti-sd eval does any work
    (tmp_path / "speed.txt").write_text(printed)
    with pytest.raises(ConfigError, match="is not eval/bench_speed.py's --json output"):
        read_speed(str(tmp_path / "speed.txt"))
    from diti_sd.cli import main
    from diti_sd.evaluation import harness

    monkeypatch.setattr(harness, "Evaluation", lambda cfg: pytest.fail("the evaluation began"))
    assert main(["eval", "--dataset", "tiny", "--data-root", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--speed", str(tmp_path / "speed.txt")]) == 2
    assert "speed.txt is not eval/bench_speed.py's --json output" in capsys.readouterr().err


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
    # the base alone: every (texture, background) caption, 5 x 5, at each of its pairs
    assert rows[script.ZERO_SHOT]["calls_per_image"] == script.ZERO_SHOT_PAIRS * 25
    assert all(0 <= row["accuracy"] <= 1 and row["std"] >= 0 for row in rows.values())
    assert (tmp_path / "accuracy_vs_budget.png").stat().st_size > 0


def test_zero_shot_synthetic_reads_its_captions_only_on_the_base_that_learned_them(tmp_path):
    script = _script("zero_shot_synthetic")
    with pytest.raises(SystemExit, match="sealed"):  # before any model is loaded
        script.main(["--seeds", "501", "--out", str(tmp_path)])
    args = ["--seeds", "11", "--per-class", "2", "--out", str(tmp_path)]
    captioned = script.main([*args, "--model", "builtin:tiny-base"])  # trained on the textures' names
    unseen = script.main(args)  # the headline base: never read them
    assert captioned[0] >= 0.8 and unseen[0] <= 0.5
    saved = json.loads((tmp_path / "zero_shot.json").read_text())
    assert saved["accuracy"] == unseen and saved["pairs"] == script.ZERO_SHOT_PAIRS
    assert saved["stream"] == "second oracle val"


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


def test_auto_window_saves_every_pass_a_rule_needs_and_resumes(tmp_path, capsys):
    script = _script("auto_window")
    argv = ["--task", "texture", "--seeds", "1", "--shots", "2", "--val-per-class", "2", "--oracle-per-class", "1",
            "--pairs", "6", "--set", "fit.steps=2", "--out", str(tmp_path)]
    script.main(argv)
    folder = script.seed_folder(script.parse_args(argv))
    assert folder.name.startswith("texture_user_fit.steps-2_")
    # every value a seed's result depends on names its folder: another --pairs or --shots is another folder
    for other in (["--pairs", "8"], ["--shots", "3"], ["--test-per-class", "5"]):
        assert script.seed_folder(script.parse_args([*argv, *other])) != folder, other
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


def test_auto_window_gives_its_fits_the_shots_masks_and_keeps_them_apart(tmp_path, monkeypatch):
    script = _script("auto_window")
    given = []

    class Stop(Exception):
        pass

    def fit(self, recipe, *args, **kwargs):
        given.append(kwargs.get("masks"))
        raise Stop

    monkeypatch.setattr(script.SyntheticSeed, "fit", fit)
    for extra in ([], ["--masks"]):
        with pytest.raises(Stop):
            script.main(["--task", "colour", "--seeds", "1", "--shots", "2", "--out", str(tmp_path), *extra])
    assert given == [False, True]
    # kept apart: one folder without masks, one with (colour_user_<settings>_val, colour_user_masks_<settings>_val)
    assert sorted(p.name.split("_")[2] == "masks" for p in tmp_path.iterdir()) == [False, True]


def test_bench_attention_masks_tiny_times_each_reading_size_through_the_library(tmp_path, capsys, monkeypatch):
    script = _script("bench_attention_masks")
    read = []
    real = script.AttentionMasks.__call__

    def counted(self, backbone, X, progress=False):  # the library's reader, at the size each spec asks
        read.append((self.upscale, len(X)))
        return real(self, backbone, X, progress)

    monkeypatch.setattr(script.AttentionMasks, "__call__", counted)
    out = script.main(["--tiny", "--images", "2", "--upscale", "1", "2", "--size", "96x64",
                       "--json", str(tmp_path / "masks.json")])
    assert read == [(1, 1), (1, 2), (2, 1), (2, 2)]  # a warm-up image, then the timed ones
    assert [r["upscale"] for r in out["rows"]] == [1, 2] and out["rows"][0]["ratio_to_first"] == 1
    assert all(r["seconds_per_image"] > 0 and r["unet_calls_per_image"] == 5 for r in out["rows"])
    bare = out["bare_seconds_per_call"]
    assert all(r["bare_forwards_per_call"] == pytest.approx(r["seconds_per_image"] / 5 / bare) for r in out["rows"])
    assert json.loads((tmp_path / "masks.json").read_text())["rows"][1]["upscale"] == 2
    assert "bare forwards a call" in capsys.readouterr().out


def test_bench_attention_masks_refuses_a_bad_upscale_or_size_before_building_anything(monkeypatch):
    script = _script("bench_attention_masks")
    monkeypatch.setattr(script.bench_speed, "build", lambda *a: pytest.fail("built a model"))
    with pytest.raises(ConfigError, match="upscale must be an integer from 1 to 4"):
        script.main(["--upscale", "1", "5"])
    with pytest.raises(SystemExit):
        script.main(["--size", "768"])


def test_same_figures_names_each_value_two_demo_results_differ_in_and_not_the_runs_own(tmp_path, capsys):
    script = _script("same_figures")
    old = {"results": {"recommended": {"per_seed": [0.5, 0.25], "nll": 1.25}}, "seconds": 400, "code": "a"}
    files = {}
    for name, changes in (("same", {"seconds": 380, "code": "b"}),
                          ("moved", {"results": {"recommended": {"per_seed": [0.5, 0.3], "nll": 1.25}}, "x": 1})):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps({**old, **changes}))
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert script.main([str(tmp_path / "old.json"), str(files["same"])]) == 0
    assert "0 values differ" in capsys.readouterr().out
    assert script.main([str(tmp_path / "old.json"), str(files["moved"])]) == 1
    out = capsys.readouterr().out
    assert "/results/recommended/per_seed[1]: 0.25 -> 0.3" in out and "/x: only in new" in out
    assert "2 values differ" in out and "nll" not in out
