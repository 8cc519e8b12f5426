"""Scoring: which class's adapter denoises an image best over the time-steps that matter.

- ``engine``: the live pass (class prompt embeddings, one UNet batch of errors, the staged pass, the
  dense pass for analyses);
- ``schedule``: the reference's pruning stages, the t they evaluate and their cost in UNet calls;
- ``replay``: dense errors read again under any window, weight or schedule (the weighted mean lives here);
- ``cache``: scored chunks on disk, so that an interrupted pass continues;
- ``auto``: ``score.weighting: auto``, the window chosen on validation images.
"""

from .cache import ScoreCache
from .engine import ScoreResult, batch_errors, batch_residuals, class_contexts, dense_errors, rank_logits, score_latents
from .replay import simulate_rounds, weighted_mean, window_weights
from .schedule import Schedule, prune

__all__ = [
    "Schedule", "ScoreCache", "ScoreResult", "batch_errors", "batch_residuals", "class_contexts", "dense_errors",
    "prune", "rank_logits", "score_latents", "simulate_rounds", "weighted_mean", "window_weights",
]
