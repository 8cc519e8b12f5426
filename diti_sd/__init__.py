"""diti-sd: few-shot fine-grained classification with Stable Diffusion class adapters at small t."""

__version__ = "0.2.0"

from .classifier import DiTiFewShotClassifier  # noqa: E402

__all__ = ["DiTiFewShotClassifier", "__version__"]
