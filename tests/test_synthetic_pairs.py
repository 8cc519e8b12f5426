"""The demo's (t, noise) pairs: strata, weights, and the draws each seed's validation and test read."""

import numpy as np
import pytest
import torch

from diti_sd.benchmarks.synthetic.demo import DemoConfig, run_demo
from diti_sd.benchmarks.synthetic.scoring import first_pairs, pair_seeds, scoring_weights, stratified_pairs
from diti_sd.errors import ConfigError
from diti_sd.seeding import TEST_PAIRS, derive_seed
from diti_sd.timesteps import tif_weights


def test_every_scoring_reads_the_same_number_of_pairs():
    t, noise, w = scoring_weights((200, 500), 12, tif_d=2.0, latent_shape=(4, 8, 8))
    assert len(t) == noise.shape[0] == 36
    assert {k: int((v > 0).sum()) for k, v in w.items() if k != "TiF weight"} == {
        "small t": 12, "window": 12, "large t": 12, "all t": 12}
    # TiF's weight is a weight over all t's pairs (zero at the smallest t, so a pair may drop out)
    assert np.allclose(w["TiF weight"], w["all t"] * tif_weights(2.0)[t.numpy()])
    t = t.numpy()
    assert ((t[w["small t"] > 0] < 200).all() and ((t[w["window"] > 0] >= 200) & (t[w["window"] > 0] < 500)).all()
            and (t[w["large t"] > 0] >= 500).all())
    # all t takes four pairs from each stratum, weighted by the stratum's width: uniform in t
    picked = t[w["all t"] > 0]
    assert [int(((picked >= a) & (picked < b)).sum()) for a, b in ((0, 200), (200, 500), (500, 1000))] == [4, 4, 4]
    assert w["all t"][w["all t"] > 0] == pytest.approx([200 / 12] * 4 + [300 / 12] * 4 + [500 / 12] * 4)
    assert (w["TiF weight"][w["all t"] == 0] == 0).all()
    # a window starting at 0 has no small-t stratum; the count must split evenly over the strata left
    assert "small t" not in scoring_weights((0, 500), 4)[2]
    with pytest.raises(ConfigError, match="multiple of 3"):
        scoring_weights((200, 500), 10)


def test_the_short_runs_zero_shot_reads_an_even_prefix_of_the_window(tmp_path):
    t, _, w = scoring_weights((200, 500), 12)
    half = first_pairs(w["window"], 6)
    assert int((half > 0).sum()) == 6 and (half[half > 0] == w["window"][half > 0]).all()
    # radical-inverse order: the six pairs kept spread over the whole window, not its first half
    kept = np.sort(t.numpy()[half > 0])
    assert kept[0] < 250 and kept[-1] > 400
    assert (first_pairs(w["window"], None) == w["window"]).all()
    # the sealed run reads the short run's six; a count the window cannot give fails before any fit
    assert DemoConfig(full=True).zero_shot_pairs == DemoConfig().zero_shot_pairs == 6
    with pytest.raises(ConfigError, match="zero_shot_pairs = 13"):
        run_demo(DemoConfig(seeds=[1], zero_shot_pairs=13), tmp_path, progress=False)


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
