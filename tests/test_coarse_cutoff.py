"""fit.coarse_sigma: auto: where the scoring window's noise drowns the shots' latent power, per fit (ours)."""

import math
import warnings

import numpy as np
import pytest
import torch
import yaml
from helpers import color_images

from diti_sd import DiTiFewShotClassifier
from diti_sd.coarse_cutoff import crossing, edge_warning, premise_cutoff, radial_power, resolve_coarse_sigma
from diti_sd.errors import CoarseShortcutWarning, DitiWarning
from diti_sd.recipes import RecipeError, load_recipe


def test_the_cutoff_is_where_the_noise_drowns_the_latents():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(64, 4, 16, 16, generator=g)
    freqs, power = radial_power(white)
    assert np.allclose(power, 1, atol=0.1)  # the scale the schedule's signal-to-noise is read against
    # each bin at its frequencies' mean radius: the first holds the four at 1/16 and the four at sqrt(2)/16
    assert freqs[0] == pytest.approx((1 + math.sqrt(2)) / 32)
    # nothing drowned: the cut-off is the last bin; a falling profile crosses where it reaches 1 (on its log)
    assert crossing(freqs, np.full(len(freqs), 2.0)) == freqs[-1]
    assert crossing(freqs, np.full(len(freqs), 0.5)) == freqs[0]  # drowned from the first bin on
    assert 0.1 < crossing(np.array([0.1, 0.2]), np.array([4.0, 0.0])) < 0.2  # a bin of no power: no log(0)
    assert crossing(np.array([0.1, 0.2, 0.3]), np.array([4.0, 2.0, 0.5])) == pytest.approx(0.25)
    # a smooth field is drowned from a lower frequency on than white noise of like power: a wider blur, whose
    # Gaussian passes half the amplitude where the field crosses
    smooth = torch.nn.functional.avg_pool2d(white, 3, 1, 1) * 3
    wide, narrow = premise_cutoff(smooth, 0.75, 2, 32), premise_cutoff(white * 0.9, 0.75, 2, 32)
    assert 0 < wide["crossing_cycles_per_cell"] < freqs[-1] and wide["sigma_pixels"] > narrow["sigma_pixels"]
    sigma_cells = wide["sigma_pixels"] / 2
    assert math.exp(-2 * math.pi ** 2 * (sigma_cells * wide["crossing_cycles_per_cell"]) ** 2) == pytest.approx(0.5)
    # more noise (a later window end) drowns more: the blur widens
    assert premise_cutoff(smooth, 0.5, 2, 32)["sigma_pixels"] > wide["sigma_pixels"]


def test_auto_needs_a_window_fixed_before_the_fit():
    assert load_recipe("synthetic", ["fit.coarse_sigma=auto"]).fit.coarse_sigma == "auto"
    assert load_recipe("synthetic", ["fit.coarse_sigma=0.0625"]).fit.coarse_sigma == 0.0625
    with pytest.raises(RecipeError, match=r"coarse_sigma = 'auto'.*score.t_max = 1000.*set score.t_max below"):
        load_recipe("image-folder", ["fit.coarse_sigma=auto"])  # TiF's weight over every time-step
    with pytest.raises(RecipeError, match="score.weighting = auto"):
        load_recipe("synthetic", ["fit.coarse_sigma=auto", "score.weighting=auto"])
    for bad in ("automatic", 0, -0.1):
        with pytest.raises(RecipeError, match="coarse_sigma"):
            load_recipe("synthetic", [f"fit.coarse_sigma={bad}"])


def test_auto_resolves_from_the_shots_at_the_window_end(tiny_backbone):
    # latents whose power falls with frequency, as photographs' do (the tiny test autoencoder's are near zero,
    # below the noise at every frequency, where the blur is the widest the latents measure)
    g = torch.Generator().manual_seed(1)
    latents = torch.nn.functional.avg_pool2d(torch.randn(8, 4, 16, 16, generator=g), 3, 1, 1) * 3
    shape = (8, 3, 128, 128)
    recipe = load_recipe("tiny", ["fit.coarse_sigma=auto"])
    resolved, reading = resolve_coarse_sigma(recipe, tiny_backbone, latents, shape)
    alpha_bar = float(tiny_backbone.alphas_cumprod("cpu")[recipe.score.t_max - 1])  # the window's last step
    expected = premise_cutoff(latents, alpha_bar, 8, 128)
    assert resolved.fit.coarse_sigma == round(expected["sigma_fraction"], 4) == reading["sigma_fraction"] > 0
    assert reading["t"] == recipe.score.t_max - 1 and reading["edge"] is None
    freqs, _ = radial_power(latents)
    assert freqs[0] < expected["crossing_cycles_per_cell"] < freqs[-1]  # inside, not at an end
    assert resolved.fit.coarse_swap == recipe.fit.coarse_swap and resolved.score == recipe.score
    # a later window end reads more noise: a wider blur; a number stays as it is
    later, _ = resolve_coarse_sigma(load_recipe("tiny", ["fit.coarse_sigma=auto", "score.t_max=600"]),
                                    tiny_backbone, latents, shape)
    assert later.fit.coarse_sigma > resolved.fit.coarse_sigma
    # near t = 1000 the noise drowns every frequency: the widest blur the latents measure, and the reading says so
    _, drowned = resolve_coarse_sigma(load_recipe("tiny", ["fit.coarse_sigma=auto", "score.t_max=990"]),
                                      tiny_backbone, latents, shape)
    assert drowned["edge"] == "drowned everywhere" and "below the noise at every frequency" in edge_warning(drowned)
    fixed = load_recipe("tiny")
    assert resolve_coarse_sigma(fixed, tiny_backbone, latents, shape) == (fixed, None)


def _fit(model_dir, overrides, **fit):
    X, y = color_images(12, seed=3)
    clf = DiTiFewShotClassifier(model=str(model_dir), recipe="tiny", steps=3, progress=False,
                                overrides={"fit.coarse_swap": 1.0, **overrides})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarseShortcutWarning)
        return clf.fit(X, y, **fit)


def test_a_fit_swaps_and_checks_at_the_resolved_blur_and_records_it(tiny_model_dir, tmp_path):
    # the tiny test autoencoder's latents are below the noise everywhere: the fit says the number is not the shots'
    with pytest.warns(DitiWarning, match="set by the latents' size"):
        auto = _fit(tiny_model_dir, {"fit.coarse_sigma": "auto"})
    sigma = auto.recipe_.fit.coarse_sigma
    assert isinstance(sigma, float) and sigma != load_recipe("tiny").fit.coarse_sigma
    assert auto.fit_summary_["coarse_shortcut"]["sigma_fraction"] == sigma
    assert auto.fit_summary_["coarse_sigma_auto"]["sigma_fraction"] == sigma
    # the same adapters as a fit told that number: the swap drew its blur from the resolved value
    fixed = _fit(tiny_model_dir, {"fit.coarse_sigma": sigma})
    assert "coarse_sigma_auto" not in fixed.fit_summary_
    a, b = auto.adapters_.lora_state_dict(), fixed.adapters_.lora_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = _fit(tiny_model_dir, {"fit.coarse_sigma": 0.125}).adapters_.lora_state_dict()
    assert not all(torch.equal(a[k], other[k]) for k in a)
    # the saved recipe holds the number, so the set reloads and refits to the same blur
    auto.save_pretrained(tmp_path / "set")
    saved = yaml.safe_load((tmp_path / "set" / "recipe.yaml").read_text())
    assert saved["fit"]["coarse_sigma"] == sigma
    assert DiTiFewShotClassifier.from_pretrained(tmp_path / "set").recipe_.fit.coarse_sigma == sigma


def test_the_set_kept_without_the_swap_records_the_resolved_blur(tiny_model_dir, monkeypatch):
    from diti_sd.swap_choice import SwapChoiceMixin

    scores = iter([(1.0, 10), (0.5, 12)])  # the first set more accurate on the breaking images: it stays
    monkeypatch.setattr(SwapChoiceMixin, "_accuracy_and_calls", lambda self, images, labels, masks=None: next(scores))
    Xv, yv = color_images(6, seed=4)
    yv = yv[1:] + yv[:1]  # labelled as the next class: their colour points elsewhere, so they break the accident
    with pytest.warns(DitiWarning, match="set by the latents' size"):
        clf = _fit(tiny_model_dir, {"fit.coarse_swap": 0.0, "fit.coarse_swap_auto": True,
                                    "fit.coarse_sigma": "auto"}, validation=(Xv, yv))
    record = clf.fit_summary_["coarse_swap_choice"]
    assert record["chosen"] == "none" and record["fits"] == 2 and record["breaking_images"] > 0
    sigma = clf.fit_summary_["coarse_shortcut"]["sigma_fraction"]
    assert isinstance(sigma, float) and clf.recipe_.fit.coarse_sigma == sigma and clf.recipe_.fit.coarse_swap == 0
