"""The demo where some shots break the accident: the user's comparison on the breaking validation images, and
the row fit.coarse_swap_auto would keep."""

import json

import numpy as np
import pytest

from diti_sd.benchmarks.synthetic.data import background_of
from diti_sd.benchmarks.synthetic.demo import DemoConfig, run_demo
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.errors import ConfigError
from diti_sd.recipes import load_recipe


def test_the_variant_whose_shots_break_the_accident_reads_the_users_comparison(tmp_path):
    cfg = DemoConfig(seeds=[1], shots=8, test_per_class=1, pairs_per_window=2, steps=1, samples_per_class=1,
                     zero_shot_pairs=1, shortcut_rate=0.75)
    report = run_demo(cfg, tmp_path / "variant", progress=False)
    found = report["coarse_shortcut"][0]
    breaking = found["validation"]["breaking"]
    # the same validation stream, drawn at the same rate, its breaking images found as the fit found them
    run = SyntheticSeed.for_recipe(load_recipe("synthetic"), 1, 8, shortcut_rate=0.75)
    val = run.stream("val", cfg.val_per_class)
    assert len(breaking) > 0 and found["validation"]["images"] == len(val.labels)
    assert all(background_of(val.images[i]) != val.labels[i] for i in breaking)
    rows = report["breaking_validation"]
    assert set(rows) == {report["recommended"], report["opt_in"]["row"]}
    assert all(r["images"] == len(breaking) and 0 <= r["right"] <= len(breaking) for r in rows.values())
    # fit.coarse_swap_auto's row: the opt-in row's hits where strictly more breaking images were right with it
    hits = {row: r["per_seed"][0][0] for row, r in rows.items()}
    swapped = hits[report["opt_in"]["row"]] > hits[report["recommended"]]
    assert report["auto_swap"]["swap_on_seeds"] == ([1] if swapped else [])
    kept = report["opt_in"]["row"] if swapped else report["recommended"]
    assert json.dumps(report["results"][report["auto_swap"]["row"]]) == json.dumps(report["results"][kept])
    text = (tmp_path / "variant" / "README.md").read_text()
    assert "**A variant** (`--shortcut-rate 0.75`" in text and "Right on them, over all seeds" in text
    assert report["auto_swap"]["row"] in text and "What `fit.coarse_swap_auto` keeps" in text
    with pytest.raises(ConfigError, match="shortcut_rate must be in"):
        run_demo(DemoConfig(seeds=[1], shortcut_rate=2.0), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_the_auto_swap_row_takes_the_opt_in_seeds_its_breaking_images_prefer():
    from diti_sd.benchmarks.synthetic.summary import add_auto_swap_row, auto_swap_name, method_names

    window = (0, 200)
    names = method_names(window)
    recommended, swap = names[("band", "window")], names[("swap", "window")]
    seeds = 4
    correct = {recommended: {"decorrelated": [np.zeros(3, bool)] * seeds},
               swap: {"decorrelated": [np.ones(3, bool)] * seeds}}
    probs = {row: {"decorrelated": [{"row": row, "seed": i} for i in range(seeds)]} for row in correct}
    # per seed: the swap ahead, level, behind, and no breaking image at all
    breaking = {recommended: [np.array([0, 1]), np.array([1]), np.array([1, 1]), np.array([], int)],
                swap: [np.array([1, 1]), np.array([1]), np.array([0, 1]), np.array([], int)]}
    assert add_auto_swap_row(names, window, correct, probs, breaking) == [True, False, False, False]
    row = correct[auto_swap_name(window)]["decorrelated"]
    assert [bool(h.all()) for h in row] == [True, False, False, False]
    assert [p["row"] for p in probs[auto_swap_name(window)]["decorrelated"]] == [swap, recommended, recommended,
                                                                               recommended]
    # without an opt-in row there is nothing to choose between
    assert add_auto_swap_row(names, window, {recommended: correct[recommended]}, {}, breaking) is None
