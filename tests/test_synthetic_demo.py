import json

import numpy as np
import pytest
import torch

from diti_sd import DiTiFewShotClassifier
from diti_sd.benchmarks.synthetic.data import (
    SyntheticSpec,
    attribute_caption,
    background_of,
    make_split,
)
from diti_sd.benchmarks.synthetic.demo import DemoConfig, run_demo
from diti_sd.benchmarks.synthetic.report import render_markdown
from diti_sd.benchmarks.synthetic.scoring import window_accuracy
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.benchmarks.synthetic.summary import REFERENCE_CONFIGURATION, REFERENCE_STYLE, swap_name
from diti_sd.errors import ConfigError
from diti_sd.scoring import Schedule, class_contexts, dense_errors
from diti_sd.timesteps import timestep_noise

SPEC = SyntheticSpec(size=16)





def test_window_accuracy_agrees_with_predict():
    train = make_split(SPEC, "train", 2, seed=1)
    names = [SPEC.classnames[i] for i in train.labels]
    clf = DiTiFewShotClassifier(recipe="synthetic", steps=3, random_state=1, progress=False,
                                overrides={"score.rounds": [[6, 1]], "fit.prior_images": 5})
    clf.fit(train.images, names)
    test = make_split(SPEC, "decorrelated", 2, seed=9)
    window = (clf.recipe_.score.t_min, clf.recipe_.score.t_max)
    t = torch.tensor(Schedule([[6, 1]], *window).stages[0])
    noise = timestep_noise(t, clf.backbone_.latent_shape, seed=0)
    errors = clf.dense_errors(clf.encode(test.images), t, noise)  # the recipe's test-time scales, as predict
    labels = np.array([list(clf.classes_).index(SPEC.classnames[i]) for i in test.labels])
    expected = float((clf.predict(test.images) == np.array([SPEC.classnames[i] for i in test.labels])).mean())
    assert window_accuracy(errors, t.numpy(), np.ones(6), labels, window) == expected
    # not only the same argmax: the same errors, so the demo's rows are read at predict's text and UNet scales
    np.testing.assert_allclose(errors.mean(-1), clf.score_images(test.images).errors, rtol=1e-5, atol=0)


def test_demo_writes_its_report_and_a_killed_run_continues(tmp_path, monkeypatch):
    from diti_sd.benchmarks.synthetic import demo

    fits, fit = [], SyntheticSeed.fit

    def recording_fit(self, recipe, *args, **kwargs):
        fits.append((recipe.score.unet_scale, recipe.fit.brightness, recipe.fit.coarse_swap,
                     kwargs.get("train_window")))
        return fit(self, recipe, *args, **kwargs)

    monkeypatch.setattr(SyntheticSeed, "fit", recording_fit)
    cfg = DemoConfig(seeds=[1, 2], shots=2, test_per_class=2, pairs_per_window=4, steps=2, samples_per_class=1,
                     zero_shot_pairs=2)
    # killed in the second seed: the first seed's figures are kept, and the rerun fits only the second
    run_seed = demo._run_seed

    def killed_on_seed_2(cfg, recipe, wide, swap, seed, *args):
        if seed == 2:
            raise KeyboardInterrupt
        return run_seed(cfg, recipe, wide, swap, seed, *args)

    monkeypatch.setattr(demo, "_run_seed", killed_on_seed_2)
    with pytest.raises(KeyboardInterrupt):
        run_demo(cfg, tmp_path, progress=False)
    assert (tmp_path / "seeds" / "1.pt").is_file() and not (tmp_path / "results.json").exists()
    monkeypatch.setattr(demo, "_run_seed", run_seed)
    report = run_demo(cfg, tmp_path, progress=False)
    # per seed: the recipe's adapters, then the all-t rivals with their own settings (the recipe's jitter and
    # test-time scale 0.6, trained over all t), then the opt-in row's: the recipe, every shot swapped
    assert fits == [(0.6, 0.2, 0.0, None), (0.6, 0.2, 0.0, (0, 1000)), (0.6, 0.2, 1.0, None)] * 2
    # the first seed fitted afresh gives the report the continued run gave
    (tmp_path / "seeds" / "1.pt").unlink()
    again = run_demo(cfg, tmp_path, progress=False)
    assert len(fits) == 9 and json.dumps(again["results"], sort_keys=True) == json.dumps(report["results"],
                                                                                            sort_keys=True)
    for name in ("results.json", "README.md", "accuracy_by_band.png", "test_predictions.png", "adapter_samples.png",
                 "reliability.png", "coarse_shortcut.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    assert saved["code"]["commit"] and not saved["sealed"]
    assert len(saved["fingerprint"]) == 16 and int(saved["fingerprint"], 16) >= 0  # the method's, not a row name
    recommended = saved["results"][saved["recommended"]]
    # each accuracy is the mean of its seed's 10 per-image hits; the comparison is their paired difference
    for split in ("decorrelated", "correlated"):
        hits = recommended[split]["per_seed"]
        assert hits[0] * 10 == pytest.approx(round(hits[0] * 10))
        assert recommended[split]["std"] == pytest.approx(np.std(hits, ddof=1))
        for rival, by in saved["comparisons"].items():
            expected = recommended[split]["mean"] - saved["results"][rival][split]["mean"]
            assert by[split]["mean"] == pytest.approx(expected) and by[split]["images"] == 20
            assert by[split]["seeds"] == 2 and by[split]["low"] <= by[split]["mean"] <= by[split]["high"]
    # the training x scoring grid is the rows it names: two adapter sets, four scorings (the recipe's window
    # starts at 0: no small-t stratum)
    grid = saved["grid"]["accuracy"]["decorrelated"]
    assert set(grid["band"]) == set(grid["all"]) == {"window", "large t", "all t", "TiF weight"}
    assert grid["band"]["window"] == recommended["decorrelated"]["mean"]
    assert grid["all"]["all t"] == saved["results"][REFERENCE_STYLE]["decorrelated"]["mean"]
    assert grid["all"]["TiF weight"] == saved["results"][REFERENCE_CONFIGURATION]["decorrelated"]["mean"]
    # the images whose background is another class's, counted from the images themselves
    spec = SyntheticSpec(size=16)
    other = sum(background_of(image) != label for seed in cfg.seeds
                for image, label in zip(*_images_labels(make_split(spec, "decorrelated", 2, 1000 + seed))))
    misled = saved["background_disagrees"]
    assert all(r["images"] == other for r in misled.values()) and other > 0
    # nearest pixel prototypes read the background: they answer its class on most of those images
    assert misled["nearest prototype, pixels"]["to_background"] >= 0.8
    assert saved["zero_shot"] in saved["results"] and saved["zero_shot"] in saved["comparisons"]
    # the opt-in row is a row and a comparison, never a target, and the report says what it assumes
    swap = swap_name(saved["window"])
    assert swap in saved["results"] and swap in saved["comparisons"] and swap not in saved["targets"]
    # scored on every pair as the recipe's adapters are, and read against the same rivals the way the targets
    # are, its own large t in place of the recipe's; a section of the report, not targets
    assert set(grid["swap"]) == set(grid["band"]) and grid["swap"]["window"] == saved["results"][swap]["decorrelated"][
        "mean"]
    opt_in = saved["opt_in"]
    own_large_t = "opt-in: coarse swap, same adapters, large t (200, 1000)"
    assert opt_in["row"] == swap and list(opt_in["targets"]) == [REFERENCE_STYLE, own_large_t,
                                                                 "linear probe, VAE latents", saved["zero_shot"]]
    assert set(opt_in["comparisons"]) == set(opt_in["targets"])
    for rival, by in opt_in["comparisons"].items():
        expected = saved["results"][swap]["decorrelated"]["mean"] - saved["results"][rival]["decorrelated"]["mean"]
        assert by["decorrelated"]["mean"] == pytest.approx(expected)
    # scored at every band of t, large t included, as the recipe's adapters are
    by_band = saved["bands"]["accuracy"]["opt-in adapters (coarse swap)|decorrelated"]
    recipes = saved["bands"]["accuracy"]["recommended adapters|decorrelated"]
    assert [a is None for a in by_band] == [a is None for a in recipes] and any(a is not None for a in by_band[3:])
    # the shots' coarse-shortcut check, per seed: their background follows the class, so it finds it
    assert [r["accuracy"] for r in saved["coarse_shortcut"]] == [1.0, 1.0]
    assert len(saved["tif_d"]) == 2 and saved["tif_d"][0] > 0
    text = (tmp_path / "README.md").read_text()
    assert "## Targets" in text and "decorrelated accuracy at least 0.70" in text
    wide = "their own settings, `lora.rank=8`, `lora.text_rank=8`, `fit.prior_prompt=generic` (their search"
    assert "2 of the window's pairs, evenly spaced" in text and wide in text and "`fit.coarse_swap=1.0`" in text
    assert "Short run" in text and saved["code"]["commit"][:7] in text and "## Training band x scoring band" in text
    assert "## The opt-in row, read the way the targets are (it has none)" in text and f"minus {own_large_t}" in text
    assert "names their class on 1.00 of them" in text
    # the recipe's fit read the user-like validation images as a user's fit does: drawn as the shots are, none
    # breaks the accident, and the report says what that means
    assert all(r["validation"] == {"images": 5 * cfg.val_per_class, "breaking": []} for r in saved["coarse_shortcut"])
    assert "0 on 2 seeds break it" in text and "no rule on it can turn the coarse swap on" in text
    # a report the run could not fill says so: shots one a class, a target's rival not scored
    one_shot = [{**r, "accuracy": None, "chance": None, "p_value": 1.0} for r in saved["coarse_shortcut"]]
    large_t = "DiTi-SD, same adapters, large t (200, 1000)"
    thinner = {**saved, "coarse_shortcut": one_shot,
               "comparisons": {k: v for k, v in saved["comparisons"].items() if k != large_t}}
    rendered = render_markdown(thinner)
    assert "no class has two shots" in rendered and f"above {large_t}: not measured (not met)" in rendered
    # the targets: the reference-style row, large t, the probe on latents (0.10), the base alone (0.15); the
    # reference configuration is compared, not targeted
    target_lines = [line for line in text.splitlines() if line.startswith("- at least")]
    assert len(target_lines) == len(saved["targets"]) == 4
    assert "reference-style" in target_lines[0] and "large t (200, 1000)" in target_lines[1]
    assert "linear probe, VAE latents" in target_lines[2]
    assert target_lines[3].startswith("- at least 0.15 above the base")
    assert "reference configuration" not in "".join(target_lines)
    assert REFERENCE_CONFIGURATION in saved["comparisons"] and "not targets" in text
    # the claims use the wider of the bootstrap and the seed-level t interval
    c = saved["comparisons"][REFERENCE_STYLE]["decorrelated"]
    assert c["wide_low"] == min(c["low"], c["t_low"]) and f"{c['wide_low']:+.3f}" in text
    # memorisation: the shots, the shots with another class's background, more images drawn like the shots
    assert set(saved["memorisation"]) == {"the shots", "the shots, another class's background", "held-out shots"}
    assert f"{recommended['decorrelated']['mean']:.3f}" in text
    # every row's probabilities: NLL and ECE beside top-1
    for by in saved["results"].values():
        for split in ("decorrelated", "correlated"):
            assert by[split]["nll"] >= 0 and 0 <= by[split]["ece"] <= 1
    assert f"{recommended['decorrelated']['nll']:.3f} / {recommended['decorrelated']['ece']:.3f}" in text


def _images_labels(data):
    return data.images, data.labels


def test_the_all_t_rivals_settings_are_checked_before_any_fit(tmp_path):
    from diti_sd.constraints import RecipeError

    with pytest.raises(RecipeError, match="lr"):
        run_demo(DemoConfig(seeds=[1], wide_overrides=["fit.lr=-1"]), tmp_path, progress=False)


def test_zero_shot_prompts_are_the_bases_own_captions():
    from diti_sd.benchmarks.synthetic.scoring import caption_prompts

    for spec, n_backgrounds in ((SyntheticSpec(size=16), 5), (SyntheticSpec(size=16, task="many", n_classes=24), 5)):
        prompts = caption_prompts(spec)
        assert len(prompts) == spec.n_classes * n_backgrounds  # many: 24 textures on the first five backgrounds
        for image, label in zip(*_images_labels(make_split(spec, "decorrelated", 2, 3))):
            # texture-major: row = texture, column = background
            assert prompts[label * n_backgrounds + background_of(image)] == attribute_caption(image, label, spec)


def test_replayed_rounds_match_the_real_scoring_pass():
    from diti_sd.scoring import score_latents, simulate_rounds

    train = make_split(SPEC, "train", 2, seed=2)
    clf = DiTiFewShotClassifier(recipe="synthetic", steps=3, random_state=2, progress=False,
                                overrides={"fit.prior_images": 5})
    clf.fit(train.images, [SPEC.classnames[i] for i in train.labels])
    latents = clf.encode(make_split(SPEC, "decorrelated", 3, seed=4).images)
    contexts = class_contexts(clf.backbone_, clf.adapters_, clf.prompts_)
    rounds = [[2, 3], [5, 2], [8, 1]]
    cfg = clf.recipe_.score
    cfg.rounds = rounds
    real = score_latents(clf.backbone_, clf.adapters_, latents, contexts, cfg)
    # one set of errors over the stages' t and as many others of the window, in shuffled order: the
    # replay finds its t among them
    schedule = Schedule.of(cfg)
    needed = sorted(schedule.timesteps)
    g = torch.Generator().manual_seed(0)
    others = [v for v in (torch.randperm(cfg.t_max - cfg.t_min, generator=g) + cfg.t_min).tolist() if v not in needed]
    pool = torch.tensor(needed + others[: len(needed)])
    t = pool[torch.randperm(len(pool), generator=g)]
    noise = timestep_noise(t, clf.backbone_.latent_shape, cfg.seed)
    errors = dense_errors(clf.backbone_, clf.adapters_, latents, contexts, t, noise, unet_scale=cfg.unet_scale)
    predicted, calls = simulate_rounds(errors, t.numpy(), schedule)
    assert (predicted == real.predictions).all()
    # stages add 2, 4 and 2 new t (the size-5 grid overlaps the size-2 one at one point)
    assert [len(s) for s in schedule.stages] == [2, 4, 2]
    assert (calls == real.unet_calls).all() and calls[0] == 5 * 2 + 3 * 4 + 2 * 2


def test_demo_needs_room_above_the_recipe_window(tmp_path):

    recipe = tmp_path / "all-t.yaml"
    recipe.write_text("model: builtin:tiny-base\ndataset: {kind: synthetic}\nscore: {t_min: 0, t_max: 1000}\n")
    with pytest.raises(ConfigError, match="score.t_max below 1000"):
        run_demo(DemoConfig(recipe=str(recipe), seeds=[1]), tmp_path / "out", progress=False)


def test_the_opt_in_row_can_swap_outside_the_objects_masks(tmp_path, monkeypatch):
    given = []
    fit = SyntheticSeed.fit

    def recording_fit(self, recipe, *args, **kwargs):
        given.append((recipe.fit.coarse_swap, kwargs.get("masks", False)))
        return fit(self, recipe, *args, **kwargs)

    monkeypatch.setattr(SyntheticSeed, "fit", recording_fit)
    cfg = DemoConfig(seeds=[1], shots=2, test_per_class=2, pairs_per_window=4, steps=2, samples_per_class=1,
                     zero_shot_pairs=2, swap_masks=True)
    saved = run_demo(cfg, tmp_path, progress=False)
    assert sorted(given) == [(0.0, False), (0.0, False), (1.0, True)]  # only the opt-in set gets the masks
    row = swap_name(saved["window"], masks=True)
    assert saved["opt_in"]["row"] == row and row in saved["results"] and "background is not the class" in row
    assert "object mask" in (tmp_path / "README.md").read_text()
    with pytest.raises(ConfigError, match="no opt-in set"):
        run_demo(DemoConfig(seeds=[1], swap_overrides=[], swap_masks=True), tmp_path / "none", progress=False)
