"""fit.coarse_swap_auto: the swap kept only where the validation images that break the accident say so (ours)."""

import warnings

import pytest
import torch
from helpers import color_images

from diti_sd import DiTiFewShotClassifier
from diti_sd.benchmarks.synthetic.data import SyntheticSpec, make_split
from diti_sd.coarse import PREMISE_ACCURACY, coarse_shortcut, fired, names_outright, premise_applies
from diti_sd.errors import CoarseShortcutWarning
from diti_sd.recipes import RecipeError, load_recipe
from diti_sd.swap_choice import SwapChoiceMixin, swap_choice_record


def _data():
    X, y = color_images(12, seed=3)  # class c: a flat colour, on every shot
    Xv, yv = color_images(6, seed=4)
    yv = yv[1:] + yv[:1]  # every validation image labelled as the next class: its colour points elsewhere
    yv[0] = "c0"  # but this one
    return X, y, Xv, yv


def _fit(model_dir, overrides=None, validation=None, **fit):
    X, y, Xv, yv = _data()
    clf = DiTiFewShotClassifier(model=str(model_dir), recipe="tiny", steps=3, progress=False,
                                overrides=overrides or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarseShortcutWarning)
        return clf.fit(X, y, validation=validation, **fit)


def as_uint8(images):
    return (torch.stack(images) * 255).round().to(torch.uint8)


def _same(a, b) -> bool:
    sa, sb = a.adapters_.lora_state_dict(), b.adapters_.lora_state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def plain_and_swap(tiny_model_dir):
    return _fit(tiny_model_dir), _fit(tiny_model_dir, {"fit.coarse_swap": 1.0})


@pytest.mark.parametrize("first, second, kept", [(1.0, 0.5, "none"), (0.5, 0.5, "none"), (0.2, 0.8, "swap")])
def test_the_set_more_accurate_on_the_breaking_images_stays(tiny_model_dir, plain_and_swap, monkeypatch, first,
                                                             second, kept):
    scores = iter([(first, 10), (second, 12)])
    monkeypatch.setattr(SwapChoiceMixin, "_accuracy_and_calls", lambda self, images, labels, masks=None: next(scores))
    _, _, Xv, yv = _data()
    clf = _fit(tiny_model_dir, {"fit.coarse_swap_auto": True}, validation=(Xv, yv))
    plain, swap = plain_and_swap
    record = clf.fit_summary_["coarse_swap_choice"]
    assert record["chosen"] == kept and record["fits"] == 2 and record["breaking_images"] == 5
    assert record["accuracy"] == {"without": first, "with_swap": second} and record["unet_calls"] == 22
    assert record["second_fit_unet_samples"] == swap.fit_summary_["unet_samples"]
    # the kept adapters are those a fit with that setting gives, and its resolved recipe says which
    assert _same(clf, swap if kept == "swap" else plain)
    assert not _same(plain, swap)
    assert clf.recipe_.fit.coarse_swap == (1.0 if kept == "swap" else 0.0) and not clf.recipe_.fit.coarse_swap_auto
    assert clf.loss_curve_ == (swap if kept == "swap" else plain).loss_curve_
    # the contexts follow the kept text adapters
    torch.testing.assert_close(clf.class_contexts(), (swap if kept == "swap" else plain).class_contexts())


def test_the_recorded_accuracies_are_each_sets_on_the_breaking_images(tiny_model_dir, plain_and_swap, tmp_path):
    _, _, Xv, yv = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoarseShortcutWarning)  # the fit compares; nothing for the user to do
        clf = _fit(tiny_model_dir, {"fit.coarse_swap_auto": True}, validation=(Xv, yv), output_dir=tmp_path)
    record = clf.fit_summary_["coarse_swap_choice"]
    breaking = clf.fit_summary_["coarse_shortcut"]["validation"]["breaking"]
    Xb, yb = [Xv[i] for i in breaking], [yv[i] for i in breaking]
    plain, swap = plain_and_swap
    assert record["accuracy"] == {"without": plain.score(Xb, yb), "with_swap": swap.score(Xb, yb)}
    assert record["unet_calls"] == 2 * len(breaking) * plain.score_images(Xb).unet_calls[0]
    # both fits' checkpoints stay until the set is saved where it was fitted (a run killed before then resumes)
    assert (tmp_path / "coarse-swap" / "checkpoint").is_dir() and (tmp_path / "checkpoint").is_dir()
    clf.save_pretrained(tmp_path)
    assert not (tmp_path / "coarse-swap").exists() and not (tmp_path / "checkpoint").exists()
    loaded = DiTiFewShotClassifier.from_pretrained(tmp_path, progress=False)
    assert loaded.recipe_.fit.coarse_swap == clf.recipe_.fit.coarse_swap
    assert loaded.fit_summary_["coarse_swap_choice"] == record


def test_without_breaking_images_nothing_is_refitted_and_the_warning_stays(tiny_model_dir, plain_and_swap):
    X, y, _, _ = _data()
    Xv, yv = color_images(6, seed=4)  # drawn as the shots are: their colour is their class's
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=3, progress=False,
                                overrides={"fit.coarse_swap_auto": True})
    with pytest.warns(CoarseShortcutWarning, match="only you can"):
        clf.fit(X, y, validation=(Xv, yv))
    record = clf.fit_summary_["coarse_swap_choice"]
    assert record["chosen"] == "none" and record["fits"] == 1 and record["unet_calls"] == 0
    assert "cannot tell" in record["why"]
    assert _same(clf, plain_and_swap[0])
    assert "no validation images" in swap_choice_record(clf.fit_summary_["coarse_shortcut"] | {"validation": None})[
        "why"]


def test_the_recipe_refuses_auto_with_a_swap_already_set_or_without_prior_images():
    for overrides in (["fit.coarse_swap_auto=true", "fit.coarse_swap=0.5"],
                      ["fit.coarse_swap_auto=true", "fit.prior=false"]):
        with pytest.raises(RecipeError, match="coarse_swap_auto compares"):
            load_recipe("tiny", overrides)
    assert load_recipe("tiny", ["fit.coarse_swap_auto=true"]).fit.coarse_swap_auto


def test_a_handful_of_breaking_images_is_padded_to_one_a_process(monkeypatch):
    import numpy as np

    from diti_sd import swap_choice
    from diti_sd.scoring.engine import ScoreResult

    class Fitted(SwapChoiceMixin):
        classes_ = np.array(["a", "b"])
        recipe_ = load_recipe("tiny")
        score_choice_ = None
        seen = []

        def score_images(self, images, masks=None):
            self.seen.append(len(images))  # every process scores a share: at least one image each
            # score.cells: object pads the masks alike: the padding image's mask is its own
            assert masks is None or [m[0] for m in masks] == [i[0] for i in images]
            logits = np.tile([[1.0, 0.0]], (len(images), 1))
            return ScoreResult(np.zeros((len(images), 2)), logits, np.full(len(images), 7))

    monkeypatch.setattr(swap_choice, "world", lambda: (0, 4))
    fitted = Fitted()
    assert fitted._accuracy_and_calls(["x", "y"], ["a", "b"]) == (0.5, 14)  # the padding neither scored nor paid
    assert fitted.seen == [4]
    assert fitted._accuracy_and_calls(["x", "y"], ["a", "b"], ["xm", "ym"]) == (0.5, 14)


PREMISE = {"fit.coarse_swap_auto": True, "fit.coarse_swap_premise": True}


def test_the_premise_fits_once_with_the_swap_where_no_image_can_tell(tiny_model_dir, plain_and_swap, tmp_path):
    X, y, _, _ = _data()
    Xv, yv = color_images(6, seed=4)  # drawn as the shots are: none breaks the accident
    for validation in (None, (Xv, yv)):
        clf = _fit(tiny_model_dir, PREMISE, validation=validation, output_dir=tmp_path / str(validation is None))
        record = clf.fit_summary_["coarse_swap_choice"]
        assert record["chosen"] == "swap" and record["fits"] == 1 and "premise" in record["why"]
        # the adapters a fit with the swap set gives; the saved recipe refits them without deciding again
        assert _same(clf, plain_and_swap[1])
        fit = clf.recipe_.fit
        assert fit.coarse_swap == 1.0 and not fit.coarse_swap_auto and not fit.coarse_swap_premise
        assert not (tmp_path / str(validation is None) / "coarse-swap").exists()  # one fit: no comparison begun
        clf.save_pretrained(tmp_path / str(validation is None))
        assert not list((tmp_path / str(validation is None)).glob("*checkpoint*"))
    clf.save_pretrained(tmp_path / "set")
    loaded = DiTiFewShotClassifier.from_pretrained(tmp_path / "set", progress=False)
    assert loaded.recipe_.fit.coarse_swap == 1.0 and loaded.fit_summary_["coarse_swap_choice"] == record


def test_the_premise_leaves_the_comparison_where_images_break_it_and_shots_without_it_alone(
        tiny_model_dir, plain_and_swap, monkeypatch):
    scores = iter([(0.2, 10), (0.8, 12)])
    monkeypatch.setattr(SwapChoiceMixin, "_accuracy_and_calls", lambda self, images, labels, masks=None: next(scores))
    _, _, Xv, yv = _data()
    clf = _fit(tiny_model_dir, PREMISE, validation=(Xv, yv))
    record = clf.fit_summary_["coarse_swap_choice"]
    assert record["fits"] == 2 and record["chosen"] == "swap" and "premise" not in record["why"]
    assert not clf.recipe_.fit.coarse_swap_premise and _same(clf, plain_and_swap[1])
    # shots whose colour is drawn apart from their labels: the blur names nothing, so no swap
    X, y, _, _ = _data()
    g = torch.Generator().manual_seed(0)
    mixed = [X[int(i)] for i in torch.randperm(len(X), generator=g)]
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=3, progress=False, overrides=PREMISE)
    clf.fit(mixed, ["c0", "c1", "c2"] * 4)
    assert clf.fit_summary_["coarse_swap_choice"]["chosen"] == "none" and clf.recipe_.fit.coarse_swap == 0.0


def test_the_premise_leaves_a_blur_that_only_narrows_the_class_alone(tiny_model_dir):
    # 15 classes on five backgrounds (class c on colour c mod 5): the blur points to a group of three, so the
    # check fires while most shots' blur points to a sibling class; the premise takes only a blur that names it
    spec = SyntheticSpec(size=32, task="many", n_classes=15)
    shots = make_split(spec, "train", 4, seed=11)
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=1, progress=False, overrides=PREMISE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarseShortcutWarning)
        clf.fit(shots.images, shots.labels)
    report, record = clf.fit_summary_["coarse_shortcut"], clf.fit_summary_["coarse_swap_choice"]
    assert fired(report) and report["accuracy"] < PREMISE_ACCURACY and not premise_applies(report)
    assert record["chosen"] == "none" and record["fits"] == 1 and "narrows the class" in record["why"]
    assert clf.recipe_.fit.coarse_swap == 0.0
    # without the premise asked for, the record does not speak of it
    assert swap_choice_record(report)["why"] == record["why"].split("; the blur points")[0]
    assert "only " in record["why"] and "premise" not in swap_choice_record(report)["why"]
    # the same background on each class's shots alone names it: the premise applies
    named = coarse_shortcut(as_uint8(shots.images), [int(v) % 5 for v in shots.labels])
    assert names_outright(named) and premise_applies(named) and not premise_applies({**named, "accuracy": 0.5})


def test_the_recipe_refuses_the_premise_without_the_comparison():
    with pytest.raises(RecipeError, match="coarse_swap_premise decides where"):
        load_recipe("tiny", ["fit.coarse_swap_premise=true"])
    assert load_recipe("tiny", [f"{k}=true" for k in PREMISE]).fit.coarse_swap_premise
