"""What a few-shot user would pick instead of DiTi-SD, at its strongest: frozen image encoders (any
OpenCLIP tower, CLIP to SigLIP, and DINOv2) with zero-shot text classifiers, Tip-Adapter(-F) and a linear
probe, all on features computed once and cached.

- ``encoders``: the towers behind one interface, named by a spec (``openclip:MODEL[:TAG]``, ``dinov2:ID``);
- ``features``: their image features, cached on disk;
- ``tip_adapter``: zero-shot logits, Tip-Adapter and Tip-Adapter-F as the reference ran them;
- ``probe``: multinomial logistic regression, its regularisation chosen on validation.
"""

from .encoders import FrozenEncoder, check_spec, load_encoder, parse_spec, spec_label
from .features import FeatureCache, image_features
from .probe import Probe, fit_probe
from .tip_adapter import cache_model, search_alpha_beta, tip_logits, train_tip_adapter_f, zero_shot_logits

__all__ = ["FeatureCache", "FrozenEncoder", "Probe", "cache_model", "check_spec", "fit_probe", "image_features",
           "load_encoder",
           "parse_spec", "search_alpha_beta", "spec_label", "tip_logits", "train_tip_adapter_f", "zero_shot_logits"]
