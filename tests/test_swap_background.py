"""fit.swap_background: "whole", the masked swap replacing every background pixel with the donor's (ours)."""

import warnings

import pytest
import torch
from helpers import color_images, record_fit, square_shots

from diti_sd import DiTiFewShotClassifier
from diti_sd.data.masks import MaskError
from diti_sd.errors import CoarseShortcutWarning
from diti_sd.preprocessing import to_uint8
from diti_sd.recipes import FitConfig, LoraConfig, RecipeError, load_recipe
from diti_sd.swap_choice import SwapChoiceMixin
from diti_sd.training.coarse_swap import coarse_swap
from diti_sd.training.loop import FitData
from diti_sd.training.signature import fit_signature


def _detailed_shot(size=32):
    """A red ground with thin stripes of its own (a background's detail) and a grey centre square (the object)."""
    image = torch.tensor((200.0, 60.0, 50.0)).view(3, 1, 1).repeat(1, size, size)
    image += torch.where(torch.arange(size) % 6 == 0, 40.0, 0.0).view(1, 1, size)
    keep = torch.zeros(1, size, size, dtype=torch.bool)
    keep[:, 8:24, 8:24] = True
    image = torch.where(keep, torch.full_like(image, 128.0), image)
    return image.round().clamp(0, 255).to(torch.uint8), keep


def test_the_whole_swap_keeps_the_object_and_takes_every_other_pixel_from_the_donor():
    shot, keep = _detailed_shot()
    g = torch.Generator().manual_seed(0)
    donor = (torch.rand(3, 16, 16, generator=g) * 255).to(torch.uint8)  # resized to the shot's size
    out = coarse_swap(shot, donor, 0.125, keep, background="whole")
    resized = to_uint8(torch.nn.functional.interpolate(donor[None].float() / 127.5 - 1, size=(32, 32),
                                                       mode="bilinear", align_corners=False)[0])
    assert torch.equal(out[:, keep[0]], shot[:, keep[0]])
    assert (out[:, ~keep[0]].int() - resized[:, ~keep[0]].int()).abs().max() <= 1
    # the coarse swap keeps the background's stripes (the whole swap, the donor's pixels, has none of them)
    coarse = coarse_swap(shot, donor, 0.125, keep)
    assert (coarse[:, :6, 0].float() - coarse[:, :6, 1].float()).mean() > 30
    with pytest.raises(ValueError, match="needs keep"):
        coarse_swap(shot, donor, 0.125, background="whole")
    with pytest.raises(ValueError, match="'coarse' or 'whole'"):
        coarse_swap(shot, donor, 0.125, keep, background="all")


def test_training_with_the_whole_swap_composes_the_object_on_a_prior_image():
    keep = torch.zeros(1, 64, 64, dtype=torch.bool)
    keep[..., 10:40, 20:50] = True
    shot, prior, encoded, _, _ = record_fit({"coarse_swap": 1.0, "swap_background": "whole"}, steps=6, width=64,
                                            mask=keep)
    image = to_uint8(shot)
    donors = [to_uint8(p) for p in prior]
    for batch in encoded:
        out = to_uint8(batch[0])
        assert torch.equal(out[:, keep[0]], image[:, keep[0]])
        assert any(torch.equal(out[:, ~keep[0]], d[:, ~keep[0]]) for d in donors)  # same size: no resize


def test_the_whole_swap_needs_masks_and_the_swap_and_says_so_before_any_work(tmp_path):
    image = torch.zeros(3, 48, 80)
    clf = DiTiFewShotClassifier(model=str(tmp_path / "no-model"), recipe="tiny",
                                overrides={"fit.coarse_swap": 1.0, "fit.swap_background": "whole"})
    with pytest.raises(MaskError, match="fit.swap_background 'whole'.*got no masks"):
        clf.fit([image, image], ["a", "b"])  # the mask's error, not the missing model's
    with pytest.raises(RecipeError, match="swap_background = 'whole'.*the swap is off"):
        load_recipe("tiny", ["fit.swap_background=whole"])
    with pytest.raises(RecipeError, match="swap_background"):
        load_recipe("tiny", ["fit.coarse_swap=1", "fit.swap_background=all"])
    load_recipe("tiny", ["fit.coarse_swap_auto=true", "fit.swap_background=whole"])  # the second fit swaps


def test_the_whole_swap_is_in_the_resume_signature_and_coarse_leaves_it_as_it_was():
    pixels = [[torch.zeros(3, 8, 8, dtype=torch.uint8)]]
    prior = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    keep = torch.zeros(1, 8, 8, dtype=torch.bool)
    data = FitData(pixels, ["a hta"], "a photo", prior, [[keep]])

    def signature(cfg):
        return fit_signature(cfg, 10, 1, [0], data, type("A", (), {"config": LoraConfig(rank=2)}), None)

    coarse, whole = FitConfig(coarse_swap=1.0), FitConfig(coarse_swap=1.0, swap_background="whole")
    assert signature(coarse) != signature(whole)
    # the default hashes as the fit did before the option existed (the value at the commit before it), so those
    # checkpoints still resume; with the swap off the option changes nothing trained, and nothing hashed
    assert signature(coarse) == "6ff7083d67ff23e6"
    assert signature(FitConfig(coarse_swap_auto=True, swap_background="whole")) == signature(FitConfig())


def test_fit_records_the_whole_swap_in_its_summary(tiny_model_dir):
    X, masks, y = square_shots(4)
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False,
                                overrides={"fit.coarse_swap": 1.0, "fit.swap_background": "whole"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarseShortcutWarning)
        clf.fit(X, y, masks=masks)
    assert clf.fit_summary_["masks"]["swap_background"] == "whole" and clf.recipe_.fit.swap_background == "whole"


def _masked_colours(n=12):
    """The swap-choice tests' flat-colour shots, each with a centre square as its object mask."""
    X, y = color_images(n, seed=3)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[20:44, 20:44] = True
    return X, y, [mask] * n


@pytest.mark.parametrize("first, second, kept", [(1.0, 0.5, "none"), (0.2, 0.8, "swap")])
def test_the_comparison_keeps_either_set_with_the_whole_swap(tiny_model_dir, monkeypatch, first, second, kept):
    scores = iter([(first, 10), (second, 12)])
    monkeypatch.setattr(SwapChoiceMixin, "_accuracy_and_calls", lambda self, images, labels, masks=None: next(scores))
    X, y, masks = _masked_colours()
    Xv, yv = color_images(6, seed=4)
    yv = yv[1:] + yv[:1]  # every validation image labelled as the next class: its colour breaks the accident
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False,
                                overrides={"fit.coarse_swap_auto": True, "fit.swap_background": "whole"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarseShortcutWarning)
        clf.fit(X, y, validation=(Xv, yv), masks=masks, validation_masks=masks[:6])  # read on their backgrounds
    assert clf.fit_summary_["coarse_swap_choice"]["chosen"] == kept
    # the saved recipe refits as kept: the swap with the whole background, or no swap (then nothing to replace)
    fit = clf.recipe_.fit
    assert (fit.coarse_swap, fit.swap_background) == ((1.0, "whole") if kept == "swap" else (0.0, "coarse"))


def test_masks_that_keep_nothing_are_refused_under_the_whole_swap(tmp_path):
    X, y, masks = _masked_colours(2)
    clf = DiTiFewShotClassifier(model=str(tmp_path / "no-model"), recipe="tiny",
                                overrides={"fit.coarse_swap": 1.0, "fit.swap_background": "whole"})
    with pytest.raises(MaskError, match="1 of 2 masks keep nothing"):
        clf.fit(X, ["a", "b"], masks=[masks[0], torch.zeros_like(masks[0])])
