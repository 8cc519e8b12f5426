"""Training class adapters: the loop (``loop``), the optimiser that steps each class on its own counter
(``optim``), mixed precision (``precision``), checkpoints (``checkpoint``, the convention every training
loop of the package uses) and the prior-preservation images (``prior``)."""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .loop import FitData, fit_adapters, train_scales
from .precision import MixedPrecision
from .prior import prior_pixels

__all__ = ["Checkpoint", "CheckpointError", "FitData", "MixedPrecision", "fit_adapters", "load_checkpoint",
           "prior_pixels", "save_checkpoint", "train_scales"]
