"""The demo's (t, noise) pairs: strata, weights, and the draws each seed's validation and test read."""

import dataclasses

import numpy as np
import pytest
import torch

from diti_sd import DiTiFewShotClassifier
from diti_sd.benchmarks.synthetic.data import SyntheticSpec, make_split
from diti_sd.benchmarks.synthetic.demo import DemoConfig, run_demo
from diti_sd.benchmarks.synthetic.scoring import coarser_pairs, pair_seeds, scoring_weights, stratified_pairs
from diti_sd.errors import ConfigError
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule, score_latents
from diti_sd.scoring.replay import weighted_mean
from diti_sd.seeding import TEST_PAIRS, derive_seed
from diti_sd.timesteps import even_grid, tif_weights


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


def test_the_demos_window_reads_what_predict_scores():
    # the recommended row is the window's mean error over the demo's pairs; predict scores the recipe's stages with
    # the noise of score.seed: at the demo's pair count, and score.seed the seed's, the two are the same numbers
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    seed = pair_seeds(3)[0]
    t, noise, w = scoring_weights(window, DemoConfig().pairs_per_window, latent_shape=(4, 8, 8), seed=seed)
    keep = w["window"] > 0
    assert t[keep].tolist() == Schedule.of(recipe.score).timesteps
    spec = SyntheticSpec(size=16)
    train = make_split(spec, "train", 2, seed=2)
    clf = DiTiFewShotClassifier(recipe="synthetic", steps=2, random_state=2, progress=False,
                                overrides={"fit.prior_images": 4})
    clf.fit(train.images, [spec.classnames[i] for i in train.labels])
    latents = clf.encode(make_split(spec, "decorrelated", 2, seed=4).images)
    _, noise, _ = scoring_weights(window, DemoConfig().pairs_per_window, latent_shape=latents.shape[1:], seed=seed)
    demo = weighted_mean(clf.dense_errors(latents, t[torch.from_numpy(keep)], noise[torch.from_numpy(keep)]),
                         w["window"][keep])
    cfg = dataclasses.replace(clf.scoring_config(), seed=seed)
    scored = score_latents(clf.backbone_, clf.adapters_, latents, clf.class_contexts(), cfg)
    assert np.allclose(scored.errors, demo, rtol=1e-5, atol=1e-7)


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
