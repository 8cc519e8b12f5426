"""score.weighting auto: the scoring window chosen on validation images."""

import json
import warnings

import numpy as np
import pytest
import torch
from helpers import color_images

from diti_sd import DiTiFewShotClassifier
from diti_sd.adapter_set import AdapterSetError
from diti_sd.errors import ConfigError
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule, score_latents
from diti_sd.scoring.auto import candidate_family, choose, resolve
from diti_sd.scoring.validation_pass import validation_errors, validation_pairs
from diti_sd.timesteps import t_weights


def grid(n_pairs: int) -> np.ndarray:
    """``n_pairs`` time-steps at the middles of equal cells of [0, 1000)."""
    return ((np.arange(n_pairs) + 0.5) * 1000 / n_pairs).astype(int)


def planted_errors(band, n=60, n_classes=4, n_pairs=48, seed=0):
    """Errors on auto's grid where only t in ``band`` tells the true class (its error is lower there);
    elsewhere a spurious class looks best, as a coarse attribute that survives the noise would."""
    rng = np.random.default_rng(seed)
    t = grid(n_pairs)
    labels = rng.integers(0, n_classes, n)
    spurious = (labels + 1 + rng.integers(0, n_classes - 1, n)) % n_classes
    errors = 1.0 + 0.3 * rng.standard_normal((n, n_classes, n_pairs))
    inside = (t >= band[0]) & (t < band[1])
    errors[np.arange(n), labels] -= np.where(inside, 0.5, 0.0)
    errors[np.arange(n), spurious] -= np.where(inside, 0.0, 1.5)  # louder, so a window mixing both misleads
    return errors, t, labels


@pytest.mark.parametrize("recipe, band, expected", [
    ("image-folder", (0, 333), "[0, 333)"),
    ("image-folder", (333, 667), "[333, 667)"),
    ("image-folder", (667, 1000), "[667, 1000)"),
    ("image-folder", (500, 1000), "[500, 1000)"),  # the third inside it ties at 1.0: the half comes first
    # TiF's band for d = 10 lies inside it: both right on every image, but the planted half, with more of
    # the band's pairs, makes the true class more probable (the rule is the log-likelihood)
    ("image-folder", (0, 500), "[0, 500)"),
    ("synthetic", (0, 200), "recipe's [0, 200)"),  # the recipe's own window, when it is not in the family
])
def test_auto_picks_the_planted_band(recipe, band, expected):
    score = load_recipe(recipe, {"score.weighting": "auto"}).score
    errors, t, labels = planted_errors(band)
    choice = choose(errors, t, labels, score, tif_d=10.0)
    assert choice["name"] == expected, choice["candidates"]
    assert choice["candidates"][expected] == max(choice["candidates"].values())
    assert choice["rule"] == "log-likelihood"
    assert choice["log_likelihood"][expected] == max(choice["log_likelihood"].values())
    if expected != "tif weight":
        assert (choice["t_min"], choice["t_max"]) == band and choice["weighting"] == "uniform"
    assert choice["unet_calls"] == errors.size and choice["images"] == len(labels)


def test_ties_go_to_tifs_weight_and_the_family_is_fixed():
    score = load_recipe("image-folder").score
    names = [c["name"] for c in candidate_family(score)]
    # TiF's recipes score [0, 1000): their own window is "all t", not a second candidate
    assert names == ["tif weight", "[0, 1000)", "[0, 500)", "[500, 1000)", "[0, 333)", "[333, 667)", "[667, 1000)"]
    errors = np.ones((5, 3, 24))
    errors[:, 0] = 0.5  # every candidate gets every image right
    choice = choose(errors, grid(24), np.zeros(5, int), score, tif_d=10.0)
    assert choice["name"] == "tif weight" and choice["weighting"] == "tif"
    assert set(choice["candidates"].values()) == {1.0}
    # without train latents (zero-shot) TiF's weight is not a candidate
    assert "tif weight" not in [c["name"] for c in candidate_family(score, tif=False)]


def test_the_log_likelihood_rule_prefers_the_window_that_separates_the_classes_more():
    from diti_sd.scoring.auto import log_likelihood

    labels = np.array([0, 1, 2, 0])
    # both windows rank every true class first; one by a wide margin, one barely
    wide = np.array([[0.1, 1.0, 1.0], [1.0, 0.1, 1.0], [1.0, 1.0, 0.1], [0.1, 1.0, 1.0]])
    narrow = np.array([[0.9, 1.0, 1.0], [1.0, 0.9, 1.0], [1.0, 1.0, 0.98], [0.99, 1.0, 1.0]])
    assert log_likelihood(wide, labels) == pytest.approx(log_likelihood(wide * 7 + 3, labels))  # scale-free
    assert log_likelihood(narrow, labels) < log_likelihood(wide, labels)
    # a class a prefilter did not score: its images are left out, the others compared over what was scored
    partial = wide.copy()
    partial[3, 0] = np.inf
    partial[1, 2] = np.inf
    assert log_likelihood(partial, labels) == pytest.approx(log_likelihood(partial[:3], labels[:3]))
    assert log_likelihood(np.full((2, 3), np.inf), np.array([0, 1])) == float("-inf")
    # balanced: each class weighs the same, however many images it has
    skew = wide.copy()
    skew[0] = [1.0, 0.1, 1.0]  # class 0's first image wrong
    expected = np.mean([log_likelihood(skew[[0, 3]], labels[[0, 3]]), log_likelihood(skew[1:2], labels[1:2]),
                        log_likelihood(skew[2:3], labels[2:3])])
    assert log_likelihood(skew, labels, balanced=True) == pytest.approx(expected)


def test_a_prefilters_classes_are_the_only_ones_scored_and_counted():
    errors, t, labels = planted_errors((0, 333), n_classes=4)
    errors[:, 3] = np.nan  # a prefilter kept class 3 out for every image
    keep = labels != 3
    choice = choose(errors[keep], t, labels[keep], load_recipe("synthetic").score, tif_d=10.0)
    assert choice["name"] == "[0, 333)" and choice["unet_calls"] == int(keep.sum()) * 3 * len(t)


def test_the_chosen_window_runs_the_recipes_stages_capped_to_its_width():
    score = load_recipe("image-folder", {"score.weighting": "auto"}).score
    third = {"t_min": 333, "t_max": 667, "weighting": "uniform"}
    cfg = resolve(score, third)
    assert cfg.rounds == [[20, 20], [50, 10], [100, 5], [334, 1]] and (cfg.t_min, cfg.t_max) == (333, 667)
    assert sorted(Schedule.of(cfg).timesteps) == list(range(333, 667))  # every t of the window once
    assert Schedule.of(cfg).budget(100) < Schedule.of(score).budget(100)
    assert Schedule([[10, 10], [40, 3], [100, 1]]).within(0, 333).rounds == ((10, 10), (40, 3), (100, 1))
    assert Schedule([[50, 5], [80, 2], [100, 1]]).within(0, 60).rounds == ((50, 5), (60, 1))
    with pytest.raises(ConfigError, match="no window has been chosen"):
        resolve(score, None)
    with pytest.raises(ConfigError, match="resolve it"):
        t_weights(torch.tensor([1]), "auto")


def auto_clf(model, **kw):
    clf = DiTiFewShotClassifier(model=str(model), recipe="tiny", score_window="auto", validation_budget=None,
                                overrides={"score.auto_pairs": 6}, progress=False, **kw)
    assert clf.resolved_recipe().score.weighting == "auto"  # the estimator's spelling of score.weighting: auto
    return clf


def test_auto_chooses_on_validation_images_and_travels_with_the_set(tiny_model_dir, tmp_path):
    X, y = color_images(6, seed=3)
    X_val, y_val = color_images(6, seed=4)
    clf = auto_clf(tiny_model_dir).fit(X, y, validation=(X_val, y_val))
    choice = clf.score_choice_
    assert choice["source"] == "validation images (6)" and choice["unet_calls"] == 6 * 3 * 6
    assert choice["name"] in choice["candidates"] and len(choice["candidates"]) == 8
    assert choice["log_likelihood"][choice["name"]] == max(choice["log_likelihood"].values())
    # each validation image has its own pairs: a t inside each of the 6 cells of [0, 1000), its own noise
    latents = clf.encode(X_val)
    errors, t = validation_errors(clf.backbone_, clf.adapters_, latents, clf.class_contexts(), clf.recipe_.score)
    assert t.shape == (6, 6) and ((t // (1000 / 6)).astype(int) == np.arange(6)).all()
    assert len({tuple(row) for row in t.tolist()}) == 6
    t2, noise2 = validation_pairs(2, 6, latents.shape[1:], clf.recipe_.score.seed)
    assert (t2.numpy() == t[2]).all() and not torch.equal(noise2, validation_pairs(3, 6, latents.shape[1:])[1])
    x_t = clf.backbone_.add_noise(latents[2:3], noise2[4:5], t2[4:5])
    with clf.adapters_.use(unet_index=torch.tensor([1])):
        eps = clf.backbone_.output_to_epsilon(clf.backbone_.predict(x_t, t2[4:5], clf.class_contexts()[1:2]), x_t,
                                              t2[4:5])
    assert float((eps - noise2[4:5]).pow(2).mean()) == pytest.approx(errors[2, 1, 4], rel=1e-4)
    # the test pass is the recipe's stages inside the chosen window, weighted as chosen
    cfg = clf.scoring_config()
    assert (cfg.t_min, cfg.t_max, cfg.weighting) == (choice["t_min"], choice["t_max"], choice["weighting"])
    direct = score_latents(clf.backbone_, clf.adapters_, clf.encode(X_val), clf.class_contexts(), cfg,
                           tif_d=clf.tif_d_)
    assert np.allclose(clf.decision_function(X_val), direct.logits)
    path = clf.save_pretrained(tmp_path / "set")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["score_choice"] == choice and manifest["score_window"] == [cfg.t_min, cfg.t_max]
    assert f"chosen as **{choice['name']}**" in (path / "README.md").read_text()
    loaded = DiTiFewShotClassifier.from_pretrained(path, progress=False)
    assert loaded.score_choice_ == choice and np.allclose(loaded.decision_function(X_val), direct.logits)
    # a set whose recipe says auto but whose manifest lost the choice is refused, not scored some other way
    manifest["score_choice"] = None
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterSetError, match="holds no chosen window"):
        DiTiFewShotClassifier.from_pretrained(path, progress=False)


def test_without_validation_auto_holds_one_shot_out_then_refits_on_all(tiny_model_dir, tmp_path):
    X, y = color_images(9, seed=5)  # 3 shots per class
    clf = auto_clf(tiny_model_dir, auto_refit=True).fit(X, y, output_dir=tmp_path / "out")
    assert clf.score_choice_["source"].startswith("one held-out image per class (3)")
    assert clf.fit_summary_["validation"]["source"] == "probe fit" and clf.fit_summary_["validation"]["fits"] == 2
    assert clf.score_choice_["images"] == 3 and clf.n_train_ == 9
    assert (tmp_path / "out" / "auto-probe" / "checkpoint").is_dir()  # until the set is saved there
    clf.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out" / "auto-probe").exists() and not (tmp_path / "out" / "checkpoint").exists()
    # the final adapters are those of a plain fit on every image: the probe fit leaves nothing behind
    plain = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", progress=False).fit(
        X, y, output_dir=tmp_path / "plain")  # prior images go through the same PNG files
    mine, theirs = clf.adapters_.lora_state_dict(), plain.adapters_.lora_state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    # with a calibration share, the held-out images serve both choices and nothing is refitted
    cal = auto_clf(tiny_model_dir).fit(X, y, calibration=0.34)
    assert cal.score_choice_["source"] == "held-out share 0.34 of the shots" and cal.n_train_ == 6
    assert cal.fit_summary_["validation"]["fits"] == 1
    # without auto_refit nothing is fitted twice: TiF's weight, and the warning names the ways to choose
    with pytest.warns(UserWarning, match="auto_refit=True"):
        once = auto_clf(tiny_model_dir).fit(X, y)
    assert once.score_choice_["name"] == "tif weight" and once.fit_summary_["validation"]["fits"] == 1


def test_one_shot_per_class_falls_back_to_tifs_weight_and_says_so(tiny_model_dir):
    X, y = color_images(3, seed=6)
    with pytest.warns(UserWarning, match="no class has an image to spare"):
        clf = auto_clf(tiny_model_dir, auto_refit=True).fit(X, y)
    assert clf.score_choice_["name"] == "tif weight" and clf.score_choice_["source"].startswith("none:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.choose_scoring(X, y)  # later, on images the user supplies
    assert clf.score_choice_["source"] == "validation images"
    with pytest.raises(ConfigError, match="not among the fitted classes"):
        clf.choose_scoring(X[:1], ["elsewhere"])
    with pytest.raises(ConfigError, match="not among the train classes"):
        auto_clf(tiny_model_dir).fit(X, y, validation=(X[:1], ["elsewhere"]))


@pytest.mark.parametrize("prefilter_k, share", [(None, 0.1928), (20, 0.0830), (10, 0.0485)])
def test_autos_validation_pass_stays_under_a_fifth_of_fgvcs_fast_test_pass(prefilter_k, share):
    # docs/method.md's arithmetic: 16 shots -> 400 validation images (CoOp), 3,333 test images, 100 classes
    score = load_recipe("fgvc-aircraft-fast", {"score.weighting": "auto"}).score
    k = prefilter_k or 100
    validation = 400 * k * score.auto_pairs
    test = 3333 * Schedule.of(score).budget(k)
    assert validation / test == pytest.approx(share, abs=1e-4) and validation / test < 0.2


@pytest.mark.parametrize("recipe", ["image-folder", "hf", "fgvc-aircraft"])
def test_a_users_own_data_scores_with_tifs_weight_unless_auto_is_asked_for(recipe):
    # auto, chosen on validation images that carry the shots' shortcut, was not shown to reach the best fixed
    # window (docs/method.md): TiF's data-derived weight is the default, auto an option
    assert load_recipe(recipe).score.weighting == "tif"
    assert load_recipe(recipe, {"score.weighting": "auto"}).score.weighting == "auto"
