"""``eval/tune_synthetic.py``: the comparison of recipe values on validation under the sealed protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import eval_script as _script


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
    # each seed's blur as its fit resolved it (a number also where fit.coarse_sigma is auto)
    assert [c["coarse_sigma"] for c in result["candidates"]] == [[0.125], [0.125]]
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
    # the variant whose prior images draw from some backgrounds only: its own cache keys, its own prior images
    held = []
    monkeypatch.setattr(tune.SyntheticSeed, "for_recipe",
                        lambda *a, **k: held.append(k.get("generic_backgrounds")) or real(*a, **k))
    tune.main([*control[:-2], "--prior-backgrounds", "0"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert held == [[0]] and out["prior_backgrounds"] == [0] and len(list((tmp_path / "cache").glob("*.json"))) == 6
    assert out["candidates"][0]["windows"]["tif"]["ll"]["baseline"] != ll[1]
    # the many-class variant: its own cache keys, its shots of that many classes
    many = []
    monkeypatch.setattr(tune.SyntheticSeed, "for_recipe",
                        lambda *a, **k: many.append((k.get("task"), k.get("n_classes"))) or real(*a, **k))
    tune.main([*control[:-2], "--classes", "6", "--val-per-class", "1"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert many == [("many", 6)] and out["classes"] == 6 and len(list((tmp_path / "cache").glob("*.json"))) == 7
    with pytest.raises(SystemExit, match="at least 6 classes"):
        tune.main([*control[:-2], "--classes", "3"])


def test_tune_synthetic_rivals_are_the_demos_all_t_adapters():
    tune = _script("tune_synthetic")
    from diti_sd.benchmarks.synthetic.demo import WIDE_OVERRIDES
    from diti_sd.recipes import load_recipe

    rivals = load_recipe("synthetic", tune.baseline_overrides("rivals"))
    demo = load_recipe(load_recipe("synthetic"), list(WIDE_OVERRIDES))
    assert rivals.fit.t_max == 1000 and rivals.score == demo.score and rivals.lora == demo.lora
    assert rivals.fit.prior_prompt == demo.fit.prior_prompt == "generic" != load_recipe("synthetic").fit.prior_prompt
    assert tune.baseline_overrides("fit.lr=1e-3;fit.dropout=0.1") == ["fit.lr=1e-3", "fit.dropout=0.1"]


def test_tune_synthetic_reads_the_recipes_window_at_the_t_predict_scores_by_default():
    tune = _script("tune_synthetic")
    from diti_sd.benchmarks.synthetic.scoring import stratified_pairs
    from diti_sd.recipes import load_recipe
    from diti_sd.scoring import Schedule

    recipe = load_recipe("synthetic")
    assert (recipe.score.t_min, recipe.score.t_max) == (0, 200)  # the script's default split is the window's end
    t, _, _ = stratified_pairs([0, 200, 1000], tune.default_pairs(recipe), (4, 8, 8))
    assert t[t < 200].tolist() == Schedule.of(recipe.score).stages[0]
    # a recipe with another first stage moves the default with it
    assert tune.default_pairs(load_recipe("synthetic", ["score.rounds=[[8, 1]]"])) == (8, 8)


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
