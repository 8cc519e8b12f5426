import numpy as np
import pytest

from diti_sd.stats import beyond_2se, hierarchical_difference, mean_sd, mean_se


def test_the_hierarchical_interval_holds_the_seeds_spread():
    rng = np.random.default_rng(0)
    # five seeds whose true gains differ (+0.3 ... -0.1): images alone would give a narrow interval
    gains = [0.3, 0.2, 0.1, 0.0, -0.1]
    a = [(rng.random(200) < 0.5 + g / 2).astype(int) for g in gains]
    b = [(rng.random(200) < 0.5 - g / 2).astype(int) for g in gains]
    out = hierarchical_difference(a, b, n_boot=2000)
    assert out["low"] < out["mean"] < out["high"] and out["seeds"] == 5 and out["images"] == 1000
    width = out["high"] - out["low"]
    within = np.concatenate([x - y for x, y in zip(a, b)])
    assert width > 1.5 * 2 * 1.96 * within.std() / np.sqrt(len(within))  # wider than the images-only interval
    assert out["seed_sd"] == pytest.approx(np.std([(x - y).mean() for x, y in zip(a, b)], ddof=1))
    same = hierarchical_difference(a, a, n_boot=200)
    assert same["mean"] == same["low"] == same["high"] == 0.0
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    with pytest.raises(ValueError):
        hierarchical_difference([np.array([])], [np.array([])])


def test_claims_use_the_wider_of_the_bootstrap_and_the_seed_level_t_interval():
    from scipy.stats import t

    from diti_sd.stats import seed_t_interval

    rng = np.random.default_rng(1)
    # five seeds, the gain varying a lot from seed to seed: the bootstrap over 5 seeds is too narrow
    gains = [0.4, 0.0, 0.3, -0.1, 0.2]
    a = [(rng.random(300) < 0.5 + g / 2).astype(int) for g in gains]
    b = [(rng.random(300) < 0.5 - g / 2).astype(int) for g in gains]
    out = hierarchical_difference(a, b, n_boot=2000)
    per_seed = np.array([(x - y).mean() for x, y in zip(a, b)])
    half = t.ppf(0.975, 4) * per_seed.std(ddof=1) / np.sqrt(5)
    assert (out["t_low"], out["t_high"]) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
    assert out["t_high"] - out["t_low"] > out["high"] - out["low"]
    assert out["wide_low"] == min(out["low"], out["t_low"]) and out["wide_high"] == max(out["high"], out["t_high"])
    assert np.isnan(seed_t_interval([0.2])[0])


def test_a_gain_counts_only_beyond_two_standard_errors():
    assert beyond_2se(*mean_se([0.05, 0.06, 0.04, 0.05]))  # steady: far beyond
    assert not beyond_2se(*mean_se([0.20, -0.15, 0.10, -0.05]))  # as often behind as ahead
    assert not beyond_2se(0.02, 0.01)  # exactly 2 SE is not beyond
    assert not beyond_2se(*mean_se([0.3]))  # one seed: no SE, no claim
    assert not beyond_2se(*mean_se([-0.05, -0.06, -0.04]))  # behind: a loss, not a gain
