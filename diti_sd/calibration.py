"""How far predicted probabilities can be trusted: temperature scaling chosen on held-out logits,
negative log-likelihood, expected calibration error and the reliability diagram's bins."""

from __future__ import annotations

import numpy as np

TEMPERATURES = np.logspace(-2, 2, 81)
BINS = 15  # equal-width confidence bins, as Guo et al. (2017) report ECE


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=float) / temperature
    z = z - np.max(z, axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def nll(logits: np.ndarray, labels, temperature: float = 1.0) -> float:
    labels = np.asarray(labels)
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels) -> tuple[float, float]:
    """The temperature on the grid 0.01-100 that minimises the NLL of ``labels``; (temperature, NLL)."""
    best = min((nll(logits, labels, t), float(t)) for t in TEMPERATURES)
    return best[1], best[0]


def reliability_bins(probs: np.ndarray, labels, bins: int = BINS) -> dict:
    """Per equal-width bin of the top probability: images, summed confidence, correct predictions."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    correct = predicted == np.asarray(labels)
    return {"count": np.bincount(which, minlength=bins).tolist(),
            "confidence": np.bincount(which, weights=confidence, minlength=bins).round(6).tolist(),
            "correct": np.bincount(which, weights=correct, minlength=bins).astype(int).tolist()}


def expected_calibration_error(bins: dict) -> float:
    """Sum over bins of |accuracy - confidence| weighted by the bin's share of images."""
    count = np.asarray(bins["count"], dtype=float)
    gap = np.abs(np.asarray(bins["correct"]) - np.asarray(bins["confidence"]))
    return float(gap.sum() / max(count.sum(), 1.0))


def calibration_report(val_logits: np.ndarray, val_labels, test_logits: np.ndarray, test_labels) -> dict:
    """Temperature chosen on validation logits; NLL (at it and at 1) and ECE with it on test."""
    temperature, _ = fit_temperature(val_logits, val_labels)
    bins = reliability_bins(softmax(test_logits, temperature), test_labels)
    return {"temperature": round(temperature, 6), "nll": round(nll(test_logits, test_labels, temperature), 6),
            "nll_at_1": round(nll(test_logits, test_labels), 6),
            "ece": round(expected_calibration_error(bins), 6), "bins": bins}
