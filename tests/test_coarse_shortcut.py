"""diti_sd.coarse: whether the shots' blur alone names their class, and the warning a fit gives (ours)."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import color_images

from diti_sd import DiTiFewShotClassifier
from diti_sd.benchmarks.synthetic.data import SyntheticSpec, make_split
from diti_sd.coarse import (
    SHORTCUT_P,
    coarse_conflicts,
    coarse_features,
    coarse_shortcut,
    gaussian_blur,
    leave_one_out_accuracy,
    shortcut_warning,
    shot_spread,
    validation_breaks,
)
from diti_sd.errors import CoarseShortcutWarning


def as_uint8(images):
    return (torch.stack(images) * 255).round().to(torch.uint8)


def test_leave_one_out_takes_the_image_out_of_its_own_class_mean():
    # two images per class, both class means at 1.5: with itself left out, each image's own class's mean is
    # its class-mate, farther than the other class's mean
    x = torch.tensor([[0.0], [3.0], [1.0], [2.0]])
    labels = np.array([0, 0, 1, 1])
    assert leave_one_out_accuracy(x, labels) == 0.0
    assert leave_one_out_accuracy(torch.tensor([[0.0], [0.2], [1.0], [1.2]]), labels) == 1.0
    # an image alone in its class has no mean to be compared with: left out, its class still a rival
    assert leave_one_out_accuracy(torch.tensor([[0.0], [0.1], [5.0]]), np.array([0, 0, 1])) == 1.0
    assert leave_one_out_accuracy(torch.tensor([[0.0], [0.1], [0.05]]), np.array([0, 0, 1])) == 0.0
    # string labels, unsorted
    assert leave_one_out_accuracy(torch.tensor([[0.0], [5.0], [0.2], [5.2]]), np.array(["b", "a", "b", "a"])) == 1.0


def test_a_background_every_shot_shares_is_found_and_a_fine_texture_is_not():
    spec = SyntheticSpec(size=32)
    shots = make_split(spec, "train", 8, seed=11)  # the background follows the class
    clean = make_split(spec, "val", 8, seed=9011)  # the background drawn apart from the class
    found = coarse_shortcut(as_uint8(shots.images), shots.labels)
    assert found["accuracy"] == 1.0 and found["p_value"] <= SHORTCUT_P and found["chance"] < 0.35
    # the class's texture is finer than the blur: without the shared background no warning
    assert coarse_shortcut(as_uint8(clean.images), clean.labels)["p_value"] > SHORTCUT_P
    # the same images with the labels permuted: chance
    assert coarse_shortcut(as_uint8(shots.images), np.random.default_rng(0).permutation(shots.labels))[
        "p_value"] > 0.05


def test_features_are_the_blur_on_a_grid_of_about_one_cell_per_sigma_in_batches():
    pixels = as_uint8(make_split(SyntheticSpec(size=32), "train", 3, seed=1).images)
    features = coarse_features(pixels, 0.125)
    assert features.shape == (len(pixels), 3 * 8 * 8)  # sigma 4 pixels on a 32-pixel side
    assert torch.allclose(coarse_features(pixels, 0.125, batch_size=2), features)
    # at a larger side the blur runs on blocks of a quarter sigma (reflected to whole blocks): close to the
    # blur at full size, on sharp-edged images whose sides are no multiple of the block, on a grid per side
    sharp = torch.nn.functional.interpolate(torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
                                            size=(200, 136), mode="nearest")
    pixels_big = (sharp * 255).round().to(torch.uint8)
    exact = torch.nn.functional.adaptive_avg_pool2d(gaussian_blur(pixels_big.float() / 255, 17.0), (12, 8))
    assert (coarse_features(pixels_big, 0.125) - exact.flatten(1)).abs().max() < 0.05
    # a small sigma does not grow the features past 32 cells a side
    assert coarse_features(pixels_big, 0.001).shape == (3, 3 * 32 * 32)
    flat = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    assert torch.allclose(coarse_features(flat, 0.25), torch.full((2, 3 * 4 * 4), 200 / 255))


def test_the_warning_names_the_figures_and_the_option_and_is_silent_when_the_swap_is_on():
    report = {"accuracy": 1.0, "chance": 0.21, "p_value": 0.005, "sigma_fraction": 0.125, "images": 40}
    message = shortcut_warning(report, swap=0.0)
    assert "100% of 40 shots" in message and "21% with the labels permuted" in message and "p = 0.005" in message
    assert "--set fit.coarse_swap=1" in message and "\n" not in message
    assert shortcut_warning(report, swap=1.0) is None
    assert shortcut_warning({**report, "p_value": 0.2}, swap=0.0) is None


def test_one_image_a_class_has_nothing_to_leave_out_and_does_not_warn():
    pixels = as_uint8(make_split(SyntheticSpec(size=32), "train", 1, seed=1).images)
    report = coarse_shortcut(pixels, [0, 1, 2, 3, 4])
    assert report["accuracy"] is None and report["chance"] is None and report["p_value"] == 1.0
    assert shortcut_warning(report, swap=0.0) is None


def test_a_fit_on_shots_that_share_their_colour_by_class_warns_and_records_it(tiny_model_dir):
    X, y = color_images(12, seed=3)  # class c: a flat colour, all of it coarse
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", progress=False)
    with pytest.warns(CoarseShortcutWarning, match="blur alone points to their class") as caught:
        clf.fit(X, y)
    assert clf.fit_summary_["coarse_shortcut"]["accuracy"] == 1.0
    # the warning names the user's line that called fit, not the package's
    assert {Path(w.filename).name for w in caught if w.category is CoarseShortcutWarning} == {Path(__file__).name}
    # shots whose colour is drawn apart from their labels: recorded, no warning
    g = torch.Generator().manual_seed(0)
    X_mixed = [X[int(i)] for i in torch.randperm(len(X), generator=g)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoarseShortcutWarning)
        clf.fit(X_mixed, ["a", "b", "c"] * 4)
    assert clf.fit_summary_["coarse_shortcut"]["p_value"] > 0.01


def test_the_images_that_break_the_accident_are_those_whose_blur_points_to_another_class():
    spec = SyntheticSpec(size=32)
    shots = make_split(spec, "train", 8, seed=11)  # class c on colour c
    shifted = make_split(spec, "train", 2, seed=5, shift=1)  # class c on colour c + 1: every one breaks it
    drawn = make_split(spec, "train", 2, seed=5)  # drawn as the shots are: none does
    pixels = as_uint8(shots.images)
    assert coarse_conflicts(pixels, shots.labels, as_uint8(shifted.images), shifted.labels).all()
    assert not coarse_conflicts(pixels, shots.labels, as_uint8(drawn.images), drawn.labels).any()
    # labels of any kind, whose sorted order is not the classes' index order
    names = np.array(["e", "d", "c", "b", "a"])
    assert not coarse_conflicts(pixels, names[shots.labels], as_uint8(drawn.images), names[drawn.labels]).any()
    assert coarse_conflicts(pixels, names[shots.labels], as_uint8(shifted.images), names[shifted.labels]).all()
    # a label the shots lack breaks it by definition; validation images may come in batches, decoded one at a time
    assert coarse_conflicts(pixels, shots.labels, as_uint8(drawn.images[:2]), [0, 7]).tolist() == [False, True]
    batches = (as_uint8(drawn.images[i:i + 3]) for i in range(0, len(drawn.images), 3))
    assert not coarse_conflicts(pixels, shots.labels, batches, drawn.labels).any()
    # the record a fit keeps: which of the validation images, by index
    report = coarse_shortcut(pixels, shots.labels)
    mixed = [*drawn.images[:3], shifted.images[0]]
    assert validation_breaks(report, pixels, shots.labels, as_uint8(mixed), [*drawn.labels[:3], shifted.labels[0]]) \
        == {"images": 4, "breaking": [3]}


def test_classes_that_share_their_coarse_content_do_not_break_it():
    # ten classes on five backgrounds (class c on colour c mod 5): an image drawn as its class's shots lies about
    # as near its sibling class's mean as its own, which is no break; one on another pair's colour is
    spec = SyntheticSpec(size=32, task="many", n_classes=10)
    shots = make_split(spec, "train", 8, seed=11)
    drawn = make_split(spec, "train", 3, seed=5)
    shifted = make_split(spec, "train", 2, seed=5, shift=1)  # colour (c + 1) mod 5
    pixels = as_uint8(shots.images)
    assert not coarse_conflicts(pixels, shots.labels, as_uint8(drawn.images), drawn.labels).any()
    assert coarse_conflicts(pixels, shots.labels, as_uint8(shifted.images), shifted.labels).all()
    # without the margin, being nearer the sibling's mean was enough
    assert coarse_conflicts(pixels, shots.labels, as_uint8(drawn.images), drawn.labels, margin=0.0).mean() > 0.2
    # the record a fit keeps uses the margin too
    report = coarse_shortcut(pixels, shots.labels)
    mixed = as_uint8([*drawn.images[:5], shifted.images[0]])
    assert validation_breaks(report, pixels, shots.labels, mixed, [*drawn.labels[:5], shifted.labels[0]]) \
        == {"images": 6, "breaking": [5]}
    # one class has no other to point to; a label the shots lack breaks it whatever the margin
    one = [0] * len(shots.labels)
    assert coarse_conflicts(pixels, one, as_uint8(shifted.images[:2]), [0, 3]).tolist() == [False, True]


def test_the_margin_is_a_typical_shots_distance_from_its_class_mean():
    features = torch.tensor([[0.0], [2.0], [10.0], [14.0], [100.0]])
    # each shot's distance to its class's mean without it: 2 and 2 (class a), 4 and 4 (class b); c has one shot
    assert shot_spread(features, ["a", "a", "b", "b", "c"]) == pytest.approx(3.0)
    assert shot_spread(features[:2], ["a", "b"]) == 0.0


def test_the_warning_says_whether_the_validation_images_can_tell():
    report = {"accuracy": 1.0, "chance": 0.21, "p_value": 0.005, "sigma_fraction": 0.125, "images": 40}
    some = shortcut_warning({**report, "validation": {"images": 20, "breaking": [3, 7]}}, swap=0.0)
    assert "2 of your 20 validation images break it" in some and "compare fits with and without" in some
    assert "fit.coarse_swap_auto" in some and "fit.coarse_swap_premise" not in some
    none = shortcut_warning({**report, "validation": {"images": 20, "breaking": []}}, swap=0.0)
    assert "none of your 20 validation images breaks it" in none and "only you can" in none
    assert "fit.coarse_swap_premise" in none
    assert "\n" not in some + none


def test_a_fit_given_validation_images_records_which_break_the_accident(tiny_model_dir):
    X, y = color_images(12, seed=3)  # class c: a flat colour
    Xv, yv = color_images(6, seed=4)
    yv = yv[1:] + yv[:1]  # every validation image labelled as the next class: its colour points elsewhere
    yv[0] = "c0"  # but this one: its colour is c0's
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", progress=False)
    with pytest.warns(CoarseShortcutWarning, match="5 of your 6 validation images break it"):
        clf.fit(X, y, validation=(Xv, yv))
    assert clf.fit_summary_["coarse_shortcut"]["validation"] == {"images": 6, "breaking": [1, 2, 3, 4, 5]}


def test_reading_the_validation_images_leaves_the_fit_as_it_was(tiny_model_dir):
    X, y = color_images(12, seed=3)
    Xv, yv = color_images(6, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarseShortcutWarning)
        plain = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False).fit(X, y)
        given = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False).fit(
            X, y, validation=(Xv, yv))
    assert "validation" in given.fit_summary_["coarse_shortcut"] and "validation" not in plain.fit_summary_[
        "coarse_shortcut"]
    a, b = plain.adapters_.state_dict(), given.adapters_.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert plain.temperature_ == given.temperature_


def test_the_picture_shows_the_classes_with_breaking_images_first_then_the_others(tmp_path):
    from PIL import Image

    from diti_sd.plotting import first_of_each, plot_coarse_shortcut, shortcut_rows

    assert shortcut_rows(["b", "a", "c", "d"], ["d", "c", "d"], max_classes=3) == ["c", "d", "a"]
    assert first_of_each(["b", "a", "c", "a", "b", "a", "a"], ["a", "b"], per_class=2) == [0, 1, 3, 4]
    images, colours = color_images(24, seed=3)
    names = [f"k{i % 12:02d}" for i in range(24)]  # 12 classes of 2 shots each
    pixels = as_uint8(images)
    report = coarse_shortcut(pixels, colours)
    rows = plot_coarse_shortcut(pixels, names, report, tmp_path / "none.png", max_classes=4)
    assert rows == [("k00", 2, 0), ("k01", 2, 0), ("k02", 2, 0), ("k03", 2, 0)]
    # two validation images of k11 and one of k05 break the accident: their rows come first, with them beside
    rows = plot_coarse_shortcut(pixels, names, report, tmp_path / "some.png", pixels[:3], ["k11", "k05", "k11"],
                                max_classes=4)
    assert rows == [("k05", 2, 1), ("k11", 2, 2), ("k00", 2, 0), ("k01", 2, 0)]
    (w0, h0), (w1, h1) = (Image.open(tmp_path / f"{n}.png").size for n in ("none", "some"))
    assert w1 > w0 and h1 == h0  # two more columns, as many rows
    one = coarse_shortcut(pixels[:3], colours[:3])  # one shot a class: drawn, with nothing to report
    assert plot_coarse_shortcut(pixels[:3], colours[:3], one, tmp_path / "one.png") == [
        ("c0", 1, 0), ("c1", 1, 0), ("c2", 1, 0)]
    assert one["accuracy"] is None and (tmp_path / "one.png").is_file()
