"""A linear probe on frozen features: what a practitioner with a few labelled images fits first.

Multinomial logistic regression (scikit-learn, lbfgs) on L2-normalised features, trained on the k-shot
train images only; its inverse regularisation C is chosen on the split's validation images, as every
other method's choices are: the grid value with the best validation metric, ties broken by the lower
validation log-loss, then by the stronger regularisation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..metrics import metric_score, nll

C_GRID = tuple(float(c) for c in np.logspace(-2, 4, 13))  # 0.01 ... 10,000, half a decade apart


@dataclass
class Probe:
    model: object  # the fitted sklearn LogisticRegression
    C: float
    val_score: float
    val_nll: float
    scores: dict  # C -> (validation metric, validation NLL)

    def logits(self, features: torch.Tensor) -> np.ndarray:
        """(n, C) decision values, columns in class order 0..C-1 (the classes the train split holds)."""
        return self.model.predict_log_proba(_normalised(features))


def _normalised(features) -> np.ndarray:
    return torch.nn.functional.normalize(torch.as_tensor(features).float(), dim=-1).numpy()


def fit_probe(train_features, train_labels, val_features, val_labels, metric: str = "accuracy",
              grid: tuple[float, ...] = C_GRID, max_iter: int = 1000) -> Probe:
    """Fit one probe per C on the train features, score each on the validation features, keep the best."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y = _normalised(train_features), np.asarray(train_labels)
    xv, yv = _normalised(val_features), np.asarray(val_labels)
    fitted, scores = {}, {}
    for c in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=max_iter).fit(x, y)
        logits = model.predict_log_proba(xv)
        fitted[c] = model
        scores[c] = (metric_score(logits.argmax(1), yv, metric), nll(logits, yv))
    best = max(grid, key=lambda c: (scores[c][0], -scores[c][1], -c))
    return Probe(fitted[best], best, scores[best][0], scores[best][1], {str(c): scores[c] for c in grid})
