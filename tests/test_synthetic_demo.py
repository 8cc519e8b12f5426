import json

import numpy as np
import pytest
import torch

from diti_sd import DiTiFewShotClassifier
from diti_sd.backbone import load_backbone
from diti_sd.benchmarks.synthetic.data import (
    COLOUR_NAMES,
    TEXTURES,
    SyntheticSpec,
    attribute_caption,
    background_class_dependence,
    background_of,
    make_split,
    texture,
)
from diti_sd.benchmarks.synthetic.demo import DemoConfig, run_demo
from diti_sd.benchmarks.synthetic.report import render_markdown
from diti_sd.benchmarks.synthetic.scoring import window_accuracy
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.benchmarks.synthetic.summary import REFERENCE_CONFIGURATION, REFERENCE_STYLE, swap_name
from diti_sd.errors import ConfigError
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule, class_contexts, dense_errors
from diti_sd.timesteps import timestep_noise

SPEC = SyntheticSpec(size=16)


def test_every_experiment_draws_a_seeds_streams_from_the_same_generator_seeds():
    # the offsets are what keeps the sealed test streams (1000 + s) apart from the tuning ones (5000 + s)
    run = SyntheticSeed(seed=7, shots=2, spec=SPEC)
    for name, split, offset in [("train", "train", 0), ("decorrelated", "decorrelated", 1000),
                                ("correlated", "correlated", 1000), ("val", "train", 5000),
                                ("oracle val", "val", 5000), ("second val", "train", 6000),
                                ("second oracle val", "val", 6000), ("generic", "generic", 7000),
                                ("held-out shots", "train", 8000), ("shots without the shortcut", "val", 9000)]:
        expected = make_split(SPEC, split, 2, offset + 7)
        got = run.stream(name, 2)
        assert got.labels == expected.labels and all(torch.equal(a, b) for a, b in zip(got.images, expected.images))
    assert run.train.labels == run.stream("train", 2).labels and len(run.train.images) == 2 * SPEC.n_classes
    recipe = load_recipe("synthetic", ["fit.prior_images=20"])
    assert len(run.prior(recipe)) == 20  # 20 // 5 classes, 4 generic images per class
    with pytest.raises(ConfigError, match="unknown stream 'test'"):
        run.stream("test", 2)


@pytest.mark.parametrize("split, low, high", [("train", 0.99, 1.0), ("correlated", 0.99, 1.0),
                                              ("decorrelated", 0.0, 0.25), ("val", 0.0, 0.25)])
def test_background_follows_the_class_only_where_it_should(split, low, high):
    data = make_split(SPEC, split, 40, seed=3)
    assert low <= background_class_dependence(data, SPEC) <= high
    assert sorted(set(data.labels)) == list(range(SPEC.n_classes))


def test_validation_is_drawn_as_a_users_is_and_the_shots_can_change_backgrounds():
    run = SyntheticSeed(seed=3, shots=8, spec=SPEC)
    # a user's validation images come from where the shots came from: the shortcut follows the class
    assert background_class_dependence(run.stream("val", 10), SPEC) > 0.99
    # independent up to sampling noise: with 200 images Cramér's V of independent draws sits near 0.14
    assert background_class_dependence(run.stream("oracle val", 40), SPEC) < 0.25
    # the shots with the next class's background: the same objects and textures, another class's colour
    shots, moved = run.train, run.stream("train, other backgrounds", 8)
    assert shots.labels == moved.labels
    for a, b, label in zip(shots.images, moved.images, shots.labels):
        assert background_of(a) == label and background_of(b) == (label + 1) % SPEC.n_classes
        inside = (a - a[:, :1, :1]).abs().sum(0) > 0.05  # the object: off the background colour
        assert torch.equal(a[:, inside], b[:, inside])
    # the control that prices the shortcut: k shots per class whose background is independent of the class,
    # drawn apart from every validation and test stream
    control = SyntheticSeed(seed=3, shots=8, spec=SPEC, train_stream="shots without the shortcut")
    assert control.train.labels == shots.labels and background_class_dependence(control.train, SPEC) < 0.5
    assert not any(torch.equal(x, y) for x, y in zip(control.train.images, run.stream("oracle val", 8).images))
    with pytest.raises(ConfigError, match="train_stream must be one of"):
        SyntheticSeed(seed=3, shots=8, spec=SPEC, train_stream="decorrelated")


def test_the_texture_is_the_class_and_splits_are_reproducible():
    data = make_split(SPEC, "decorrelated", 6, seed=1)
    again = make_split(SPEC, "decorrelated", 6, seed=1)
    other = make_split(SPEC, "decorrelated", 6, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(data.images, again.images))
    assert not all(torch.equal(a, b) for a, b in zip(data.images, other.images))
    for image, label in zip(data.images, data.labels):
        grey = (image[0] == image[1]) & (image[1] == image[2])  # object pixels; backgrounds are saturated
        centred = (image[0] - SPEC.object_level)[grey].numpy()
        scores = [np.corrcoef(centred, texture(kind, 16)[grey.numpy()])[0, 1] for kind in TEXTURES[: SPEC.n_classes]]
        assert int(np.argmax(scores)) == label and max(scores) > 0.95


@pytest.mark.parametrize("task, split, shortcut_follows", [
    ("texture", "train", True), ("texture", "decorrelated", False),
    ("colour", "train", True), ("colour", "decorrelated", False), ("colour", "val", False),
    ("shape", "train", True), ("shape", "correlated", True), ("shape", "decorrelated", False), ("shape", "val", False),
])
def test_each_task_makes_its_class_attribute_and_its_shortcut(monkeypatch, task, split, shortcut_follows):
    """texture: class = texture, shortcut = background; colour: class = background, shortcut = texture,
    shape is noise; shape: class = shape, shortcut = texture, background is noise."""
    import diti_sd.benchmarks.synthetic.data as synthetic

    drawn = []
    original = synthetic.render

    def recording(spec, label, background, shape, extent, center, texture_kind=None):
        drawn.append((label, background, shape, texture_kind))
        return original(spec, label, background, shape, extent, center, texture_kind)

    monkeypatch.setattr(synthetic, "render", recording)
    spec = SyntheticSpec(size=16, task=task, n_classes=3)
    data = make_split(spec, split, 30, seed=4)
    names = {"texture": TEXTURES, "colour": COLOUR_NAMES, "shape": synthetic.SHAPES}[task]
    assert [d[0] for d in drawn] == data.labels and data.classnames == list(names[:3])
    if task == "texture":
        cls, shortcut, noise = [d[3] for d in drawn], [d[1] for d in drawn], [d[2] for d in drawn]
        assert cls == [TEXTURES[y] for y in data.labels]
    elif task == "colour":
        cls, shortcut, noise = [d[1] for d in drawn], [TEXTURES.index(d[3]) for d in drawn], [d[2] for d in drawn]
        assert cls == data.labels
    else:
        cls, shortcut, noise = [d[2] for d in drawn], [TEXTURES.index(d[3]) for d in drawn], [d[1] for d in drawn]
        assert cls == data.labels
    assert (shortcut == data.labels) == shortcut_follows
    if not shortcut_follows:  # every class meets every value of the shortcut
        assert len(set(zip(data.labels, shortcut))) == 9
    assert len(set(zip(data.labels, noise))) == 9
    with pytest.raises(ConfigError, match="n_classes must be in 2..3 for the shape task"):
        SyntheticSpec(task="shape", n_classes=5)


def test_attribute_captions_name_the_texture_and_the_background():
    spec = SyntheticSpec(size=16)
    train = make_split(spec, "train", 2, 0)  # background c for class c
    assert [attribute_caption(x, y, spec) for x, y in zip(train.images, train.labels)][:5] == [
        f"a photo of a {TEXTURES[c]} pattern on a {COLOUR_NAMES[c]} background" for c in range(5)]
    generic = make_split(spec, "generic", 20, 0)
    colours = {attribute_caption(x, y, spec).split(" on a ")[1] for x, y in zip(generic.images, generic.labels)}
    assert len(colours) == spec.n_classes  # independent of the texture: every background appears


def test_base_training_conditions_each_sample_on_its_own_caption():
    """Captions that are all the same prompt train exactly what that prompt alone trains (same draws);
    captions naming the texture train something else."""
    from diti_sd.benchmarks.synthetic.base_model import train_unet
    from diti_sd.testing.tiny import build_tiny_backbone

    spec = SyntheticSpec(size=16)
    data = make_split(spec, "generic", 4, 0)
    pixels = torch.stack(data.images) * 2 - 1

    def weights(**kwargs):
        backbone = build_tiny_backbone(seed=0, resolution=16, latent_factor=2)
        train_unet(backbone, pixels, "a photo", steps=3, batch_size=4, progress=False, **kwargs)
        return torch.cat([p.flatten() for p in backbone.unet.parameters()])

    same = ["a photo"] * len(data)
    named = [attribute_caption(x, y, spec) for x, y in zip(data.images, data.labels)]
    assert torch.equal(weights(), weights(captions=same))
    assert not torch.allclose(weights(), weights(captions=named))


def test_shipped_tiny_base_loads_through_the_normal_loader():
    from pathlib import Path

    import diti_sd

    folder = Path(diti_sd.__file__).parent / "assets" / "tiny-base"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 10 * 2**20
    backbone = load_backbone("builtin:tiny-base", device="cpu")
    assert backbone.resolution == 16 and backbone.latent_shape == (4, 8, 8)
    assert (folder / "base_recipe.yaml").is_file()
    latents = backbone.encode_images(torch.stack(make_split(SPEC, "val", 1, 0).images) * 2 - 1)
    assert latents.shape == (5, 4, 8, 8) and 0.5 < float(latents.std()) < 2.0  # scaling factor fitted


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
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed

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
    # per seed: the recipe's adapters, then the all-t rivals with their own settings (the recipe's jitter,
    # their own test-time scale 1 where the recipe's is 0.6), then the opt-in row's: the recipe, every shot swapped
    assert fits == [(0.6, 0.2, 0.0, None), (1.0, 0.2, 0.0, (0, 1000)), (0.6, 0.2, 1.0, None)] * 2
    # the first seed fitted afresh gives the report the continued run gave
    (tmp_path / "seeds" / "1.pt").unlink()
    again = run_demo(cfg, tmp_path, progress=False)
    assert len(fits) == 9 and json.dumps(again["results"], sort_keys=True) == json.dumps(report["results"],
                                                                                            sort_keys=True)
    for name in ("results.json", "README.md", "accuracy_by_band.png", "test_predictions.png", "adapter_samples.png",
                 "reliability.png"):
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
    wide = ("their own settings, `score.unet_scale=1.0`, `lora.rank=8`, `lora.text_rank=8`, "
            "`fit.prior_prompt=generic` (their search")
    assert "the window's first 2 pairs" in text and wide in text and "`fit.coarse_swap=1.0`" in text
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
    from diti_sd.benchmarks.synthetic.data import attribute_caption
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
    from diti_sd.errors import ConfigError

    recipe = tmp_path / "all-t.yaml"
    recipe.write_text("model: builtin:tiny-base\ndataset: {kind: synthetic}\nscore: {t_min: 0, t_max: 1000}\n")
    with pytest.raises(ConfigError, match="score.t_max below 1000"):
        run_demo(DemoConfig(recipe=str(recipe), seeds=[1]), tmp_path / "out", progress=False)


def test_a_base_domain_with_other_textures_never_shows_a_class_texture():
    spec = SyntheticSpec(size=16, generic_textures=["dots", "coarse-vertical"])
    generic = make_split(spec, "generic", 6, seed=0)
    assert set(generic.labels) == {0, 1}
    captions = {attribute_caption(x, y, spec).split(" pattern")[0] for x, y in zip(generic.images, generic.labels)}
    assert captions == {"a photo of a dots", "a photo of a coarse-vertical"}
    # the object's pixels follow the caption's texture, never one of the class textures
    patterns = {k: texture(k, 16) for k in TEXTURES}
    for image, label in zip(generic.images, generic.labels):
        grey = image[0].numpy()
        inside = np.isclose(grey, image[1].numpy()) & np.isclose(image[1].numpy(), image[2].numpy())  # grey object
        best = max(patterns, key=lambda k: abs(np.corrcoef(grey[inside], patterns[k][inside])[0, 1]))
        assert best == spec.generic_textures[label]
    # the benchmark's own generic split (the prior images) is untouched by the field
    assert make_split(SyntheticSpec(size=16), "generic", 2, seed=0).labels == make_split(
        SyntheticSpec(size=16, generic_textures=[]), "generic", 2, seed=0).labels
    with pytest.raises(ConfigError, match="generic_textures must name textures"):
        SyntheticSpec(generic_textures=["zigzag"])


def test_the_many_class_variant_has_24_distinct_fine_textures_and_five_shortcut_colours():
    from diti_sd.benchmarks.synthetic.data import MANY_TEXTURES, texture

    patterns = [texture(kind, 16) for kind in MANY_TEXTURES]
    assert len(MANY_TEXTURES) == 24 and all(abs(p.mean()) < 0.07 for p in patterns)
    assert len({p.tobytes() for p in patterns}) == 24
    spec = SyntheticSpec(size=16, task="many", n_classes=24)
    train = make_split(spec, "train", 1, seed=2)
    assert [background_of(image) for image in train.images] == [label % 5 for label in train.labels]
    assert {background_of(image) for image in make_split(spec, "decorrelated", 4, seed=2).images} <= set(range(5))



def test_a_partial_shortcut_breaks_the_accident_on_the_rest_and_leaves_rate_one_as_it_was():
    full, partial = SyntheticSpec(size=16), SyntheticSpec(size=16, shortcut_rate=0.5)
    n = 40  # per class

    def follows(spec, split):
        data = make_split(spec, split, n, seed=3)
        return np.mean([background_of(x) == y for x, y in zip(data.images, data.labels)])

    assert follows(full, "train") == 1.0 and follows(full, "correlated") == 1.0
    # half follow; of the other half a fifth draw their own class's background by chance: about 0.6
    for split in ("train", "correlated"):
        assert 0.5 <= follows(partial, split) <= 0.7
    assert follows(SyntheticSpec(size=16, shortcut_rate=0.0), "train") < 0.35
    # rate 1 draws nothing extra: every stream of the benchmark stays as it was before the field existed
    # (pixel sums taken at e41b959), and the splits drawn independently of the class ignore the rate
    before = {"train": (3862.1000467687845, 28902.500361084938), "correlated": (3840.9000489264727, 28737.600359618664),
              "val": (3861.100051984191, 29081.0004042387), "decorrelated": (4169.1000317931175, 31307.300258487463)}
    for split, sums in before.items():
        x = torch.stack(make_split(full, split, 2, seed=5).images).double()
        assert (float(x.sum()), float((x * torch.arange(16).double()).sum())) == pytest.approx(sums, rel=1e-12)
    for split in ("decorrelated", "val"):
        assert all(torch.equal(x, y) for x, y in zip(make_split(full, split, 2, seed=5).images,
                                                     make_split(partial, split, 2, seed=5).images))
    with pytest.raises(ConfigError, match="shortcut_rate must be in"):
        SyntheticSpec(shortcut_rate=1.5)


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
