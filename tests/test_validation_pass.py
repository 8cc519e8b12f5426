"""One validation pass serves auto's window and the temperature, and costs a stated share of the fit."""

import warnings

import numpy as np
import pytest
import torch
from helpers import color_images

from diti_sd import DiTiFewShotClassifier
from diti_sd.recipes import load_recipe
from diti_sd.validation import MIN_IMAGES, MIN_PAIRS, balanced_subset, fit_work, pass_size


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_fgvcs_default_validation_pass_stays_under_a_fifth_of_the_fit(shots):
    # docs/method.md, "What validation costs": FGVC-Aircraft's recipe, 100 classes, CoOp's min(k, 4) per class
    recipe = load_recipe("fgvc-aircraft")
    work = fit_work(100 * recipe.steps_for(shots) * 2)  # an instance and a prior image per step and class
    size = pass_size(100 * min(shots, 4), 100, recipe.score.auto_pairs, 0.2 * work)
    assert size is not None and size.calls <= 0.2 * work
    assert size.images >= MIN_IMAGES and size.pairs >= MIN_PAIRS


def test_the_pass_shrinks_pairs_first_then_images_then_gives_up():
    assert pass_size(40, 10, 24, None).calls == 40 * 10 * 24
    assert pass_size(40, 10, 24, 40 * 10 * 12) == pass_size(40, 10, 12, None)  # fewer pairs, every image
    small = pass_size(40, 10, 24, 20 * 10 * 6 + 5)
    assert (small.images, small.pairs) == (20, 6)
    assert pass_size(40, 10, 24, 9 * 10 * 6) is None  # not even MIN_IMAGES images
    assert pass_size(4, 10, 24, 4 * 10 * 6) == pass_size(4, 10, 6, None)  # fewer images than the minimum: all
    picked = balanced_subset([0, 0, 0, 1, 1, 1, 2, 2, 2], 6, seed=3)
    assert sorted(np.bincount([[0, 0, 0, 1, 1, 1, 2, 2, 2][i] for i in picked])) == [2, 2, 2]
    assert picked == balanced_subset([0, 0, 0, 1, 1, 1, 2, 2, 2], 6, seed=3)


def test_auto_and_the_temperature_share_one_budgeted_pass(tiny_model_dir, monkeypatch):
    import diti_sd.scoring.validation_pass as vp

    X, y = color_images(9, seed=5)  # 3 classes x 3 shots
    X_val, y_val = color_images(30, seed=6)  # 10 validation images per class
    calls = []
    real = vp.batch_errors
    monkeypatch.setattr(vp, "batch_errors", lambda *a, **kw: calls.append(len(a[6])) or real(*a, **kw))
    # 25 steps of 3 classes x (an image and a prior image) x 3: 450 UNet-call equivalents of work, all of it the
    # budget, which holds 25 of the 30 images at 6 pairs
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", score_window="auto", progress=False,
                                steps=25, overrides={"score.auto_pairs": 12}, validation_budget=1.0)
    clf.fit(X, y, validation=(X_val, y_val))
    budget = clf.validation_budget_calls()
    assert budget == fit_work(clf.fit_summary_["unet_samples"])
    spent = sum(calls)
    # every UNet call of the pass was counted once, in the choice and in the fit summary, within the budget
    assert spent == clf.score_choice_["unet_calls"] == clf.fit_summary_["validation"]["unet_calls"] <= budget
    size = pass_size(30, 3, 12, budget)
    assert (clf.score_choice_["images"], clf.score_choice_["pairs_per_image"]) == (size.images, size.pairs) == (25, 6)
    # the temperature came from the same calls: a second pass would have doubled the count above
    assert clf.calibration_["unet_calls"] == spent
    assert clf.calibration_["source"].endswith("auto's pass, replayed under its choice")
    assert clf.calibration_["window"] == [clf.score_choice_["t_min"], clf.score_choice_["t_max"]]


def test_a_budget_too_small_for_ten_images_skips_the_temperature_and_says_so(tiny_model_dir):
    X, y = color_images(9, seed=5)
    X_val, y_val = color_images(30, seed=6)
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", progress=False, validation_budget=0.01)
    clf.fit(X, y)
    with pytest.warns(UserWarning, match="cannot score 10 images"):
        clf.fit_temperature(X_val, y_val, max_calls=clf.validation_budget_calls())
    assert clf.temperature_ == 1.0 and clf.calibration_ == {"source": "none"}
    with pytest.raises(ValueError, match="validation_budget must be a share"):
        DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", validation_budget=2).fit(X, y)
    # exact: scored as a test pass (the recipe's stages), for those who want the temperature of that pass
    exact = clf.fit_temperature(X_val[:6], y_val[:6], exact=True).calibration_
    assert exact["source"].endswith("scored as a test pass") and exact["images"] == 6
    assert torch.isfinite(torch.tensor(exact["nll"]))


def test_a_temperature_at_the_grids_floor_is_said_and_recorded(tiny_model_dir, monkeypatch):
    from diti_sd.errors import DitiWarning
    from diti_sd.scoring.engine import ScoreResult

    X, y = color_images(9, seed=5)
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", progress=False).fit(X, y)
    labels = list(clf.classes_) * 4
    truth = np.array([list(clf.classes_).index(c) for c in labels])

    def scored(logits):
        return lambda images, masks=None, what="predict": ScoreResult(-logits, logits, np.ones(len(logits), int))

    # every image right by a wide margin: the likelihood keeps rising as the temperature falls
    wide = np.eye(3)[truth] * 5.0
    monkeypatch.setattr(clf, "score_images", scored(wide))
    with pytest.warns(DitiWarning, match="lowest the search allows"):
        clf.fit_temperature([X[0]] * 12, labels, exact=True)
    assert clf.temperature_ == pytest.approx(0.01) and clf.calibration_["at_floor"] is True
    # one image wrong: a temperature inside the grid, no warning
    mixed = wide.copy()
    mixed[0] = np.roll(mixed[0], 1)
    monkeypatch.setattr(clf, "score_images", scored(mixed))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DitiWarning)
        clf.fit_temperature([X[0]] * 12, labels, exact=True)
    assert clf.temperature_ > 0.01 and clf.calibration_["at_floor"] is False
