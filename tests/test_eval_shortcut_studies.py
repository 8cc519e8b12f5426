"""The studies under eval/ that price the coarse shortcut run in their smallest configuration and write what
they report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import eval_script as _script


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


def test_shortcut_check_fires_on_shots_that_share_a_background_by_class(tmp_path, capsys):
    script = _script("shortcut_check")
    script.main(["--seeds", "11,12", "--out", str(tmp_path / "check.json")])
    cases = json.loads((tmp_path / "check.json").read_text())["cases"]
    assert cases["texture / train"]["warned"] == 2 and cases["texture / train"]["accuracy"] == 1.0
    assert cases["texture / shots without the shortcut"]["warned"] == 0
    assert len(cases["many / train"]["per_seed"]) == 2 and "warned 2/2" in capsys.readouterr().out
    # given the shots' masks, the check reads their backgrounds: the texture task's accident still shows, and the
    # 24 classes' figures move (their objects' coarse content no longer read)
    script.main(["--seeds", "11,12", "--masks", "--out", str(tmp_path / "masked.json")])
    masked = json.loads((tmp_path / "masked.json").read_text())["cases"]
    rows = masked["texture / train"]["per_seed"]
    assert all(r["background_only"] for r in rows) and masked["texture / train"]["warned"] == 2
    assert masked["many / train"]["accuracy"] != cases["many / train"]["accuracy"]


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
    all_windows = [*script.tune.WINDOWS, "tif"]
    recipe = script.load_recipe("synthetic")

    def fake(overrides, seeds_, shots, per_class, pairs=(12, 12), cache=None, shortcut_rate=1.0, n_classes=None):
        # seed s: the oracle's correct share rises with the seed. On the user-like images, found here as the
        # script finds them, that break the accident the swap is right and likelier; elsewhere the recipe is
        calls.append((tuple(overrides), shortcut_rate))
        swap, rivals = overrides == script.SWAP, "fit.t_max=1000" in overrides
        masks = script.conflicts(recipe, seeds_, shots, per_class, shortcut_rate, "many" if n_classes else "texture",
                                 n_classes)
        oracle = {w: [np.r_[np.ones(s + (5 if swap else 0 if rivals else 2)), np.zeros(20)][:20].astype(bool)
                      for s in range(seeds)] for w in all_windows}
        oracle[script.LARGE_T[1]] = [np.zeros(20, bool)] * seeds
        ll = [np.where(m, -0.5 + 0.02 * (s % 3), -1.5) if swap else np.full(len(m), -1.0) for s, m in enumerate(masks)]
        return {"correct": {w: [m.copy() if swap else ~m for m in masks] for w in all_windows},
                "ll": {w: ll for w in all_windows}, "oracle": oracle}

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
    # fit.coarse_swap_auto's rule one seed at a time: the swap's oracle row where a seed has breaking images
    fired = broken["fired_per_seed"]
    assert len(fired) == len(broken["per_seed"]) and all(fired)  # at 0.75 the shots' blur still names the class
    rule = script.one_user_rule(first, fired)
    kept = [swap if n else recipe for swap, recipe, n in zip(rows["coarse swap"]["per_seed"],
                                                              rows["recipe window"]["per_seed"], broken["per_seed"])]
    assert rule["swap_kept_on"] == having and rule["per_seed"] == kept
    assert rule["minus_recipe"]["gain"] == pytest.approx(np.mean(kept) - rows["recipe window"]["mean"])
    assert script.one_user_rule(out["rates"][1], fired)["swap_kept_on"] == 0
    # a stricter rule, replayed: the swap kept only where it is right on that many more breaking images
    most = max(broken["per_seed"])
    assert script.one_user_rule(first, fired, lead=most)["swap_kept_on"] == broken["per_seed"].count(most)
    assert script.one_user_rule(first, fired, lead=most + 1)["swap_kept_on"] == 0
    # where the check does not fire, no comparison runs: the recipe's fit stays whatever the breaking images say
    unfired = script.one_user_rule(first, [False] * len(fired))
    assert unfired["swap_kept_on"] == 0 and unfired["per_seed"] == rows["recipe window"]["per_seed"]
    replayed = script.main(["--replay", str(tmp_path / "s.json")])  # from the committed file, no fit
    assert replayed == json.loads(json.dumps(out)) and len(calls) == 6
    printed = capsys.readouterr().out
    assert f"the check fired on {len(fired)}, the swap kept on {having} of" in printed
    # a study written before the record kept the check: the replay runs it on the shots, and says the same
    for r in replayed["rates"]:
        del r["conflicts"]["fired_per_seed"]
    (tmp_path / "old.json").write_text(json.dumps(replayed))
    script.main(["--replay", str(tmp_path / "old.json")])
    assert capsys.readouterr().out == printed and len(calls) == 6
    # the many-class variant: its fits, its images and its check (no colour task to count)
    many = script.main(["--seeds", "11-20", "--rates", "0.9", "--val-per-class", "1", "--classes", "20"])
    assert many["classes"] == 20 and len(calls) == 9 and many["rates"][0]["conflicts"]["images_per_seed"] == 20
    assert many["rates"][0]["conflicts"]["colour_task_per_seed"] == []


def test_shortcut_check_reads_the_shots_that_break_the_accident(tmp_path):
    script = _script("shortcut_check")
    script.main(["--seeds", "11,12", "--shortcut-rates", "0.5", "--out", str(tmp_path / "check.json")])
    cases = json.loads((tmp_path / "check.json").read_text())["cases"]
    partial = cases["texture / train, background follows in 0.5"]
    assert partial["accuracy"] < cases["texture / train"]["accuracy"] == 1.0


def test_breaking_images_counts_the_flagged_images_against_their_backgrounds(tmp_path, capsys):
    script = _script("breaking_images")
    script.main(["--seeds", "11", "--out", str(tmp_path / "b.json")])
    cases = {(c["task"], c["shortcut_rate"]): c for c in json.loads((tmp_path / "b.json").read_text())["cases"]}
    for case in cases.values():
        for counts in case["rules"].values():
            assert counts["right"] + counts["missed"] == case["truly_breaking"]
            assert counts["right"] + counts["wrong"] == sum(counts["flagged_per_seed"])
    with_margin, before = "with the margin (the fit's)", "without it (before)"
    # where the background follows every class, nothing breaks it; on 24 classes sharing five backgrounds
    # only the margin keeps the siblings' images from counting
    assert cases["texture", 1.0]["truly_breaking"] == 0 and cases["many", 1.0]["truly_breaking"] == 0
    assert cases["many", 1.0]["rules"][with_margin]["wrong"] < cases["many", 1.0]["rules"][before]["wrong"]
    assert cases["texture", 0.9]["rules"][with_margin]["right"] > 0
    assert "truly break the accident" in capsys.readouterr().out
    # the path fit.coarse_swap_premise takes: the premise where the blur names the class and nothing breaks it,
    # nothing where the blur only narrows it to the classes sharing a background, the comparison where images break
    paths = {key: [c["path"] for c in case["shortcut_check_per_seed"]] for key, case in cases.items()}
    assert paths["texture", 1.0] == ["premise"] and paths["many", 1.0] == ["none"]
    assert paths["texture", 0.9] == ["comparison"] and paths["colour", 1.0] == ["premise"]


def test_premise_paths_replays_the_premise_seed_by_seed(tmp_path, capsys, monkeypatch):
    script = _script("premise_paths")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501-510"])
    with pytest.raises(SystemExit, match="--classes"):
        script.main(["--seeds", "11", "--smoke", "--task", "many"])
    windows = [*script.tune.WINDOWS, "tif"]

    def fake(overrides, seeds, shots, per_class, pairs=(12, 12), cache=None, shortcut_rate=1.0, n_classes=None):
        # the swap's fit right on the first 15 oracle images of every seed, the recipe's on the first 10 (the
        # breaking images of a comparison: the recipe right on all, the swap on none)
        swap = overrides == script.strength.SWAP
        n = 20 * (n_classes or 5)
        oracle = [np.arange(n) < (15 if swap else 10) for _ in seeds]
        return {"oracle": {w: oracle for w in windows},
                "correct": {w: [np.full(per_class * (n_classes or 5), not swap) for _ in seeds] for w in windows}}

    monkeypatch.setattr(script.tune, "evaluate", fake)
    # the headline: the blur names the class on every seed and nothing breaks it, so the premise swaps everywhere
    out = script.main(["--seeds", "11,12", "--smoke", "--val-per-class", "2", "--out", str(tmp_path / "t.json")])
    assert [s["path"] for s in out["per_seed"]] == ["premise"] * 2
    assert out["premise_minus_recipe"]["gain"] == pytest.approx(5 / 100) == out["swap_minus_recipe"]["gain"]
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads(json.dumps(out))
    # 24 classes on five backgrounds: the blur only narrows the class, the premise leaves it alone
    many = script.main(["--seeds", "11,12", "--smoke", "--task", "many", "--classes", "24", "--val-per-class", "1"])
    assert [s["path"] for s in many["per_seed"]] == ["none"] * 2 and many["premise_minus_recipe"]["gain"] == 0
    assert all(s["points_to_own_class"] < 0.5 for s in many["per_seed"])
    # a tenth of the shots break the accident: the comparison, and here the recipe wins on the breaking images
    some = script.main(["--seeds", "11,12", "--smoke", "--rate", "0.9", "--val-per-class", "10"])
    assert {s["path"] for s in some["per_seed"]} == {"comparison"} and some["premise_minus_recipe"]["gain"] == 0
    assert "paths: comparison on 2" in capsys.readouterr().out


def test_swap_accounting_splits_the_swap_gain_into_harm_cost_and_what_it_leaves(tmp_path, capsys, monkeypatch):
    script = _script("swap_accounting")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501-510"])
    with pytest.raises(SystemExit, match="--classes"):
        script.main(["--seeds", "11", "--smoke", "--task", "many"])
    windows = [*script.tune.WINDOWS, "tif"]
    right = {("recipe", "train"): 40, ("swap", "train"): 70, ("recipe", script.CONTROL): 90,
             ("swap", script.CONTROL): 75}  # oracle images right of 100: harm 50, own cost 15, harm left 5
    seen = []

    def fake(overrides, seeds, shots, per_class, pairs=(12, 12), cache=None, train_stream="train", n_classes=None):
        seen.append((tuple(overrides), train_stream, n_classes, tuple(pairs), per_class))
        key = ("swap" if overrides else "recipe", train_stream)
        oracle = [np.arange(100) < right[key] + i for i, _ in enumerate(seeds)]  # seed 2: one more right on each
        user = [np.arange(per_class * 5) < per_class * (5 if key[1] == "train" else 2) for _ in seeds]
        wrong = [np.zeros(100, bool) for _ in seeds]  # every window but the recipe's [0, 200)
        return {"oracle": {w: oracle if w == (0, 200) else wrong for w in windows},
                "correct": {w: user if w == (0, 200) else wrong for w in windows}}

    monkeypatch.setattr(script.tune, "evaluate", fake)
    out = script.main(["--seeds", "11,12", "--smoke", "--val-per-class", "2", "--out", str(tmp_path / "a.json")])
    assert len(set(seen)) == 4 and {s[1] for s in seen} == {"train", script.CONTROL}
    terms = {k: v["gain"] for k, v in out["terms"].items()}
    assert terms == pytest.approx({"harm": 0.50, "own_cost": 0.15, "harm_left": 0.05, "taken_back": 0.45,
                                   "swap_gain": 0.30})
    assert out["terms"]["harm"]["se"] == pytest.approx(0.0)  # the seeds' shift is paired away
    assert out["oracle"]["recipe on the shots"] == pytest.approx(0.405)
    assert out["user_like_validation"]["swap on the shots"] == 1.0
    assert out["user_like_validation"]["recipe on the control shots"] == pytest.approx(0.4)
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(json.dumps(out))
    assert "the swap's gain on the shots (= harm - cost - left)  +0.300" in capsys.readouterr().out
    script.main(["--seeds", "11,12", "--smoke", "--task", "many", "--classes", "6", "--pairs", "12,6",
                 "--val-per-class", "3"])
    assert seen[-1][2:] == (6, (12, 6), 3)
    # another swap (here a narrower blur) for the swap's two fits only
    script.main(["--seeds", "11,12", "--smoke", "--swap", "fit.coarse_swap=1.0; fit.coarse_sigma=0.0625"])
    assert {s[:2] for s in seen[-4:]} == {((), "train"), ((), script.CONTROL),
                                          (("fit.coarse_swap=1.0", "fit.coarse_sigma=0.0625"), "train"),
                                          (("fit.coarse_swap=1.0", "fit.coarse_sigma=0.0625"), script.CONTROL)}


def test_latent_texture_isolates_the_class_texture_and_reads_it(tiny_backbone):
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
    from diti_sd.recipes import load_recipe

    script = _script("latent_texture")
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501-510"])
    recipe = load_recipe("synthetic")
    run = SyntheticSeed.for_recipe(recipe, 11, 2)
    images, bare, labels = script.texture_pair(run, "train", 2)
    assert list(labels) == [int(i) for i in run.train.labels]
    difference = images.int() - bare.int()
    # only the texture differs: the same object, background and place, so nothing outside the object
    corner = difference[:, :, :2, :2]
    assert corner.abs().max() == 0 and (difference.abs().flatten(1).max(1).values > 0).all()
    # swapped with one donor each, the twins still differ only where the texture is; with the donors drawn apart
    # for the two, the whole coarse content would differ
    donors = script.strength.as_uint8(run.prior(recipe))
    pick = torch.arange(len(images)) % len(donors)
    a, b = script.swapped_pair(images, bare, donors, pick, recipe.fit.coarse_sigma)
    assert (a.int() - b.int())[:, :, :2, :2].abs().max() <= 1 and not torch.equal(a, images)
    c, d = script.swapped_pair(images, bare, donors, pick, recipe.fit.coarse_sigma)
    _, other = script.swapped_pair(images, bare, donors, (pick + 1) % len(donors), recipe.fit.coarse_sigma)
    assert torch.equal(a, c) and torch.equal(b, d) and (a.int() - other.int()).abs().max() > 20
    # the nearest class mean: right where the classes' signals are apart, wrong where the labels are turned round
    signal = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.1]])
    y = np.array([0, 0, 1, 1])
    assert script.nearest_mean(signal, y, signal, y) == 1.0 and script.nearest_mean(signal, y, signal, 1 - y) == 0.0
    out = script.measure(tiny_backbone, recipe, run, val_per_class=1)
    assert out["separable in pixels"] > 0.5  # five textures, chance 0.2, read before any autoencoder
    for how in ("as is", "swapped"):
        assert -1 <= out[how]["reconstruction"] <= 1 and 0 <= out[how]["separable"] <= 1


def test_coarse_cutoff_reads_each_variant_at_the_window_end(tiny_backbone, monkeypatch, tmp_path):
    script = _script("coarse_cutoff")  # the reading itself: diti_sd/coarse_cutoff.py, tests/test_coarse_cutoff.py
    with pytest.raises(SystemExit, match="sealed"):
        script.main(["--seeds", "501-510"])
    # the script end to end on a tiny autoencoder: the window's last step, the latent factor and the side read
    # from the shots it encodes
    monkeypatch.setattr(script, "load_backbone", lambda *a, **k: tiny_backbone)
    out = script.main(["--seeds", "11", "--smoke", "--classes", "5,6", "--out", str(tmp_path / "c.json")])
    t_max = out["t_max"]
    assert out["alpha_bar"] == pytest.approx(float(tiny_backbone.scheduler.alphas_cumprod[t_max - 1]))
    for variant in out["variants"].values():
        row = variant["per_seed"][0]
        assert row["sigma_fraction"] == pytest.approx(row["sigma_pixels"] / 16) and row["sigma_pixels"] > 0
    assert json.loads((tmp_path / "c.json").read_text()) == json.loads(json.dumps(out))
