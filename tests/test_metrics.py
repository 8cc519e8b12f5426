import numpy as np
import pytest

from diti_sd.metrics import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    softmax,
)


def _sampled(temperature, n=4000, classes=5, seed=0):
    """Logits and labels drawn from softmax(logits / temperature): calibrated at that temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    p = softmax(logits, temperature)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits, labels


def test_temperature_is_recovered_and_makes_the_probabilities_calibrated():
    logits, labels = _sampled(2.0)
    temperature, _ = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.0, rel=0.15)
    test_logits, test_labels = _sampled(2.0, seed=1)
    report = calibration_report(logits, labels, test_logits, test_labels)
    assert report["nll"] < report["nll_at_1"]
    assert report["ece"] < 0.03  # calibrated at the chosen temperature
    overconfident = expected_calibration_error(reliability_bins(softmax(test_logits, 0.5), test_labels))
    assert overconfident > 0.15


def test_reliability_bins_count_every_image_once():
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]])
    bins = reliability_bins(probs, [0, 1, 1, 0], bins=10)
    assert sum(bins["count"]) == 4 and bins["count"][9] == 1 and bins["count"][5] == 2
    assert bins["count"][7] == 1 and bins["correct"][9] == 1 and bins["correct"][7] == 1 and bins["correct"][5] == 1
    # |1 - 0.95| + |1 - 0.7| + |1 - (0.55 + 0.5)| over 4 images
    assert expected_calibration_error(bins) == pytest.approx((0.05 + 0.3 + 0.05) / 4)
