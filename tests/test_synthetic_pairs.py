"""The demo's (t, noise) pairs: strata, weights, and the draws each seed's validation and test read."""

import dataclasses

import numpy as np
import pytest
import torch

from diti_sd.benchmarks.synthetic.demo import DemoConfig, run_demo
from diti_sd.benchmarks.synthetic.scoring import coarser_pairs, pair_seeds, scoring_weights, stratified_pairs
from diti_sd.errors import ConfigError
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule, score_latents
from diti_sd.seeding import TEST_PAIRS, derive_seed
from diti_sd.timesteps import even_grid, tif_weights, timestep_noise


def test_every_scoring_reads_the_same_number_of_pairs():
    t, noise, w = scoring_weights((200, 500), 12, tif_d=2.0, latent_shape=(4, 8, 8))
    assert len(t) == noise.shape[0] == 36
    assert {k: int((v > 0).sum()) for k, v in w.items() if k != "TiF weight"} == {
        "small t": 12, "window": 12, "large t": 12, "all t": 12}
    # TiF's weight is a weight over all t's pairs (zero at the smallest t, so a pair may drop out)
    assert np.allclose(w["TiF weight"], w["all t"] * tif_weights(2.0)[t.numpy()])
    t = t.numpy()
    # each stratum's pairs are the reference's even grid over it, in increasing t
    assert t.tolist() == even_grid(12, 0, 200) + even_grid(12, 200, 500) + even_grid(12, 500, 1000)
    assert t[:12].tolist() == [8 + 16 * i for i in range(12)]
    assert ((t[w["small t"] > 0] < 200).all() and ((t[w["window"] > 0] >= 200) & (t[w["window"] > 0] < 500)).all()
            and (t[w["large t"] > 0] >= 500).all())
    # all t takes four pairs from each stratum (every third, as a reference stage of 4 takes them from a grid of
    # 12), weighted by the stratum's width: uniform in t
    picked = t[w["all t"] > 0]
    assert picked[:4].tolist() == [24, 72, 120, 168]
    assert [int(((picked >= a) & (picked < b)).sum()) for a, b in ((0, 200), (200, 500), (500, 1000))] == [4, 4, 4]
    assert w["all t"][w["all t"] > 0] == pytest.approx([200 / 12] * 4 + [300 / 12] * 4 + [500 / 12] * 4)
    assert (w["TiF weight"][w["all t"] == 0] == 0).all()
    # a window starting at 0 has no small-t stratum; the count must split evenly over the strata left
    assert "small t" not in scoring_weights((0, 500), 4)[2]
    with pytest.raises(ConfigError, match="multiple of 3"):
        scoring_weights((200, 500), 10)
    with pytest.raises(ConfigError, match=r"a grid of 18 time-steps does not fit in \[0, 10\)"):
        scoring_weights((10, 500), 18)


def test_the_zero_shot_row_reads_every_other_pair_of_the_window(tmp_path):
    t, _, w = scoring_weights((200, 500), 12)
    half = coarser_pairs(w["window"], 6)
    assert int((half > 0).sum()) == 6 and (half[half > 0] == w["window"][half > 0]).all()
    # every other pair of the window's grid, from the second: spread over the whole window, not its first half
    assert t.numpy()[half > 0].tolist() == even_grid(12, 200, 500)[1::2]
    assert (coarser_pairs(w["window"], None) == w["window"]).all()
    # the sealed run reads the short run's half; a count that is not an even share of the window fails before any fit
    assert DemoConfig(full=True).zero_shot_pairs == DemoConfig().zero_shot_pairs == DemoConfig().pairs_per_window // 2
    for bad in (13, 6):
        with pytest.raises(ConfigError, match=f"zero_shot_pairs = {bad}: it must divide pairs_per_window = 16"):
            run_demo(DemoConfig(seeds=[1], zero_shot_pairs=bad), tmp_path, progress=False)


def test_the_demos_window_pairs_are_predicts_t_and_noise():
    # predict scores the recipe's stages with the noise of score.seed at each t: at the demo's pair count the
    # window's pairs are those t, with that noise under score.seed = the pairs' seed
    recipe = load_recipe("synthetic")
    seed = pair_seeds(3)[0]
    t, noise, w = scoring_weights((recipe.score.t_min, recipe.score.t_max), DemoConfig().pairs_per_window,
                                  latent_shape=(4, 8, 8), seed=seed)
    keep = torch.from_numpy(w["window"] > 0)
    assert t[keep].tolist() == Schedule.of(recipe.score).timesteps
    assert torch.equal(noise[keep], timestep_noise(t[keep], (4, 8, 8), seed))


def test_stratified_pairs_weigh_each_stratum_by_its_width():
    t, noise, weights = stratified_pairs([0, 0, 200, 500, 1000], [3, 2, 4, 5], (4, 8, 8))
    assert len(t) == len(weights) == noise.shape[0] == 11  # the empty stratum [0, 0) draws nothing
    assert ((t[:2] < 200).all() and ((t[2:6] >= 200) & (t[2:6] < 500)).all() and (t[6:] >= 500).all())
    # a window's weighted mean is uniform in t: each stratum weighs its width, however many pairs it has
    assert weights[:2].sum() == pytest.approx(200) and weights[2:6].sum() == pytest.approx(300)
    assert weights[6:].sum() == pytest.approx(500)


@pytest.mark.parametrize("window", [(0, 200), (200, 500)])
def test_a_seeds_validation_pairs_share_no_noise_with_its_test_pairs(window):
    for seed in (501, 510, 11):
        test_seed, val_seed = pair_seeds(seed)
        assert test_seed == derive_seed(seed, TEST_PAIRS)  # the base the sealed reads' test pairs came from
        _, test_noise, _ = scoring_weights(window, 12, seed=test_seed)
        _, val_noise, _ = scoring_weights(window, 12, seed=val_seed)
        _, next_noise, _ = scoring_weights(window, 12, seed=pair_seeds(seed + 1)[0])
        for other in (val_noise, next_noise):
            shared = [(i, j) for i in range(len(test_noise)) for j in range(len(other))
                      if torch.equal(test_noise[i], other[j])]
            assert not shared, f"seed {seed}: test pair and another draw's pair share noise at {shared[:3]}"


def test_the_demos_recommended_row_is_predicts_reading_image_for_image(tmp_path, monkeypatch):
    # through run_demo itself: the recommended row's scores on the decorrelated test are the errors the recipe's
    # fitted adapters get through predict's stages, with score.seed the seed's test pair seed
    from diti_sd.benchmarks.synthetic import demo
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed

    fitted, fit = [], SyntheticSeed.fit
    read, logits = [], demo._SeedScorer.logits

    def recording_fit(self, recipe, *args, **kwargs):
        fitted.append((self, fit(self, recipe, *args, **kwargs)))
        return fitted[-1][1]

    def recording_logits(self, data, noise=None):
        read.append((data, noise, logits(self, data, noise)))
        return read[-1][2]

    monkeypatch.setattr(SyntheticSeed, "fit", recording_fit)
    monkeypatch.setattr(demo._SeedScorer, "logits", recording_logits)
    cfg = DemoConfig(seeds=[1], shots=2, test_per_class=2, steps=2, samples_per_class=1, zero_shot_pairs=2,
                     swap_overrides=[])
    report = run_demo(cfg, tmp_path, progress=False)
    run, clf = fitted[0]  # the recipe's adapters come first
    data = run.stream("decorrelated", cfg.test_per_class)
    demo_scores = [out for d, noise, out in read if noise is None and torch.equal(d.images[0], data.images[0])]
    assert len(demo_scores) == 1
    cfg_score = dataclasses.replace(clf.scoring_config(), seed=pair_seeds(1)[0])
    scored = score_latents(clf.backbone_, clf.adapters_, clf.encode(data.images), clf.class_contexts(), cfg_score)
    np.testing.assert_allclose(demo_scores[0][0][report["recommended"]], -scored.errors, rtol=1e-5, atol=1e-7)
    assert demo.DemoConfig().pairs_per_window == len(Schedule.of(clf.recipe_.score).timesteps)
