"""Metrics every method is judged by: accuracy and macro F1, per-image standardised logits, softmax and
log-likelihood, the temperature that calibrates them, expected calibration error and its reliability bins.

Scoring, the automatic window, the evaluation harness and the synthetic benchmark all import them from
here, so a number means the same thing in every report.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

METRICS = ("accuracy", "macro-f1")
TEMPERATURES = np.logspace(-2, 2, 81)
BINS = 15  # equal-width confidence bins, as Guo et al. (2017) report ECE


def metric_score(pred, labels, metric: str = "accuracy") -> float:
    """Top-1 accuracy, or scikit-learn's macro F1 (averaged over the classes that occur in ``labels``
    or ``pred``), as TiF reports ISIC 2019. Accuracy stays a plain mean: the validation searches call
    this thousands of times, where scikit-learn's input checks would cost more than the search."""
    if metric == "accuracy":
        return float((np.asarray(pred) == np.asarray(labels)).mean())
    if metric != "macro-f1":
        raise ConfigError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    from sklearn.metrics import f1_score

    return float(f1_score(labels, pred, average="macro", zero_division=0.0))


def standardise(logits: np.ndarray) -> np.ndarray:
    """Each row's z-scores over its finite entries (non-finite ones become -inf): logits of different
    images, or of different methods, then share one scale, and one temperature fits them all."""
    logits = np.asarray(logits, dtype=float)
    finite = np.isfinite(logits)
    out = np.full(logits.shape, -np.inf)
    for i, row in enumerate(logits):
        seen = row[finite[i]]
        if len(seen):
            out[i, finite[i]] = (seen - seen.mean()) / (seen.std() + 1e-12)
    return out


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=float) / temperature
    z = z - np.max(z, axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities; -inf entries stay -inf (a class that was not scored)."""
    z = np.asarray(logits, dtype=float)
    top = z.max(1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(1, keepdims=True))


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
