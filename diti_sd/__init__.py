"""diti-sd: few-shot fine-grained classification with Stable Diffusion class adapters at small t."""

from .version import __version__

__all__ = ["DiTiFewShotClassifier", "__version__"]


def __getattr__(name):
    # imported on first use, so that the CLI checks its arguments and recipe before torch loads
    if name == "DiTiFewShotClassifier":
        from .classifier import DiTiFewShotClassifier

        return DiTiFewShotClassifier
    raise AttributeError(f"module 'diti_sd' has no attribute {name!r}")
