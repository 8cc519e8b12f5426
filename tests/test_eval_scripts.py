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


def test_budget_curve_replays_schedules_on_one_set_of_errors(tmp_path, capsys):
    _script("budget_curve").main(["--seeds", "1", "--test-per-class", "2", "--steps", "2", "--out", str(tmp_path)])
    rows = {row["schedule"]: row for row in json.loads((tmp_path / "budget.json").read_text())["rows"]}
    assert rows["exhaustive, 1 pairs"]["calls_per_image"] < rows["exhaustive, 32 pairs"]["calls_per_image"]
    assert all(0 <= row["accuracy"] <= 1 for row in rows.values())
    assert (tmp_path / "accuracy_vs_budget.png").stat().st_size > 0


def test_tune_synthetic_compares_on_validation_under_the_sealed_protocol(tmp_path, capsys):
    tune = _script("tune_synthetic")
    # the protocol: ten seeds or more, never the demo's sealed seeds
    with pytest.raises(SystemExit, match="at least 10"):
        tune.main(["--seeds", "11-13"])
    with pytest.raises(SystemExit, match="sealed"):
        tune.main(["--seeds", "396-405"])
    tune.main(["--seeds", "11", "--smoke", "--val-per-class", "2", "--set", "fit.steps_by_shots={1: 2}",
               "--variant", "fit.steps=1;lora.rank=2", "--against", "fit.steps_by_shots={1: 1}",
               "--windows", "0-200,200-500", "--pairs", "2,3", "--split-at", "300", "--out", str(tmp_path / "t.json")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
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
        assert 0 <= candidate["train_accuracy"] <= 1
    # the evidence for the recipe's own scoring window [200, 500): the baseline's other scorings against it
    against, rows = result["baseline_windows_minus_recipe_window"], result["candidates"][0]["windows"]
    assert list(against) == ["[0,200)", "tif"]
    for w, r in against.items():
        assert r["gain"] == pytest.approx(rows[w]["baseline"] - rows["[200,500)"]["baseline"])
    # the baseline is fitted once and shared: both candidates compare with the same accuracies
    assert [c["windows"]["tif"]["baseline"] for c in result["candidates"]].count(
        result["candidates"][0]["windows"]["tif"]["baseline"]) == 2


def test_tune_synthetic_calls_a_gain_better_only_beyond_two_standard_errors():
    tune = _script("tune_synthetic")
    seeds = 10
    base = {"correct": {(0, 200): [np.zeros(20, bool)] * seeds}}
    steady = {"correct": {(0, 200): [np.r_[np.ones(2), np.zeros(18)].astype(bool)] * seeds}}
    # +0.10 on every seed: no spread, far beyond 2 SE
    assert tune.compare(steady, base)["[0,200)"]["verdict"].startswith("better")
    # the same mean gain, carried by two seeds only: within the noise
    lucky = {"correct": {(0, 200): [np.ones(20, bool) if s < 2 else np.zeros(20, bool) for s in range(seeds)]}}
    noisy = tune.compare(lucky, base)["[0,200)"]
    assert noisy["gain"] == pytest.approx(0.2) and noisy["verdict"] == "not shown better"


def test_auto_window_scores_autos_pick_and_every_fixed_candidate_and_resumes(tmp_path, capsys):
    argv = ["--task", "shape", "--seeds", "1", "--shots", "2", "--test-per-class", "2", "--set", "fit.steps=2",
            "--out", str(tmp_path)]
    _script("auto_window").main(argv)
    folder = tmp_path / "shape_fit.steps-2"
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["choices"]) == {"1"} and summary["shots"] == 2
    for seed in (1,):
        run = json.loads((folder / f"seed{seed}.json").read_text())
        # every candidate of auto's family scored on the same 6 test images; auto's row is its pick's
        assert set(run["correct"]) == set(run["choice"]["candidates"]) and len(run["correct"]["[0, 1000)"]) == 6
        assert run["choice"]["images"] == 2 * 3  # validation: min(k, 4) per class
    assert {"auto", "[0, 1000)", "tif weight"} <= set(summary["accuracy"])
    assert all(v["low"] <= v["mean"] <= v["high"] for v in summary["auto_minus"].values())
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("seed*.json")}
    _script("auto_window").main(argv)  # finished seeds are read back, not recomputed
    assert stamps == {p: p.stat().st_mtime_ns for p in folder.glob("seed*.json")}
    # rules of choice compared offline on the saved validation pass; the likelihood rule is auto's own pick
    _script("auto_window").main(argv + ["--compare-rules"])
    rules = json.loads((folder / "rules.json").read_text())
    assert set(rules) == {"accuracy", "likelihood", "likelihood, the default unless beaten by 2 SE",
                          "likelihood, no thirds", "likelihood, CoOp's min(k, 4) per class"}
    assert rules["likelihood"]["accuracy"] == summary["accuracy"]["auto"]["mean"]
    # at CoOp's size the CoOp-prefix rule is the likelihood rule itself
    assert rules["likelihood, CoOp's min(k, 4) per class"]["minus likelihood rule"]["mean"] == 0.0
    assert rules["accuracy"]["minus accuracy rule"]["mean"] == 0.0 and rules["likelihood"]["seeds"] == 1
    assert rules["likelihood"]["minus likelihood rule"]["mean"] == 0.0
    # runs of several tasks pool their seeds (here the same folder twice: twice the seeds, the same means)
    _script("auto_window").main(argv + ["--compare-rules", "--pool", "shape_fit.steps-2"])
    pooled = json.loads((folder / "rules.json").read_text())
    assert pooled["likelihood"]["seeds"] == 2 and pooled["likelihood"]["accuracy"] == rules["likelihood"]["accuracy"]


def test_a_larger_validation_stream_starts_with_coops_images(tmp_path):
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
    from diti_sd.recipes import load_recipe

    run = SyntheticSeed.for_recipe(load_recipe("synthetic"), 11, 8, task="texture", n_classes=5)
    coop, larger = run.stream("val", 4), run.stream("val", 10)
    assert larger.labels[:20] == coop.labels and all(torch.equal(a, b) for a, b in zip(coop.images, larger.images))
    _script("auto_window").main(["--task", "shape", "--seeds", "1", "--shots", "2", "--test-per-class", "1",
                                 "--set", "fit.steps=2", "--val-per-class", "3", "--out", str(tmp_path)])
    folder = tmp_path / "shape_fit.steps-2_val3"
    assert json.loads((folder / "seed1.json").read_text())["choice"]["images"] == 3 * 3
    assert int(np.load(folder / "seed1.npz")["coop_images"]) == 2 * 3


def test_the_no_thirds_rule_cannot_pick_a_third_that_the_likelihood_rule_picks():
    from diti_sd.recipes import load_recipe
    from diti_sd.scoring.auto import THIRDS

    script = _script("auto_window")
    t = ((np.arange(24) + 0.5) * 1000 / 24).astype(int)
    labels = np.arange(10) % 5
    rng = np.random.default_rng(0)
    errors = rng.normal(1.0, 0.01, (10, 5, 24))
    middle = (t >= 333) & (t < 667)
    # the middle third tells the classes apart; elsewhere the errors point the wrong way
    errors[np.arange(10), labels] -= np.where(middle, 0.05, -0.05)
    arrays = {"val_errors": errors, "val_t": np.broadcast_to(t, (10, 24)), "val_labels": labels,
              "tif_d": np.array(2.0)}
    score = load_recipe("synthetic", ["score.weighting=auto"]).score
    assert script.rule_choice(arrays, score, "likelihood") == "[333, 667)"
    picked = script.rule_choice(arrays, score, "likelihood, no thirds")
    assert picked not in {f"[{lo}, {hi})" for lo, hi in THIRDS} and picked != "[333, 667)"
