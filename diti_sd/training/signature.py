"""What a checkpoint must match to be resumed into a fit: the signature of its settings and shapes, and its shots' and
prior images' pixels, hashed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from ..recipes import FitConfig


def fit_signature(cfg: FitConfig, steps: int, seed: int, classes: list[int], data, adapters,
                  rescale_after: int | None) -> str:
    """What a checkpoint of the fit of ``data`` (a ``FitData``) must match to be resumed: the fit's settings,
    steps, seed, classes, prompts, shots, adapter configuration and prior images' shape, hashed (the shots' pixels
    are checked beside it, :func:`pixels_digest`, so that a checkpoint written before they were keeps its
    signature)."""
    fit = asdict(cfg)
    if not cfg.coarse_swap:  # an option that does nothing leaves the signature it had before it existed
        del fit["coarse_swap"], fit["coarse_sigma"]
    if not cfg.coarse_swap or cfg.swap_background == "coarse":  # likewise
        del fit["swap_background"]
    if not (cfg.mask_loss and data.instance_masks is not None):  # without masks the option does nothing
        del fit["mask_loss"]
    # whether a second fit follows, and where the premise applies: nothing this loop trains depends on them (a
    # premise that applies trains with coarse_swap 1, which the signature holds)
    del fit["coarse_swap_auto"], fit["coarse_swap_premise"]
    blob = json.dumps(
        {
            "fit": fit, "steps": steps, "seed": seed, "classes": classes, "prompts": data.prompts,
            "rescale_after": rescale_after,
            "shots": [len(p) for p in data.instance_pixels], "lora": asdict(adapters.config),
            "prior": None if data.prior_pixels is None else list(data.prior_pixels.shape),
            # masks change only what the swap keeps and the masked loss reads: without those a fit's signature is
            # the one it had without them
            **({"masks": _tensors_hash(data.instance_masks)} if data.reads_masks(cfg) else {}),
        },
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pixels_digest(data) -> str:
    """The shots' pixels, hashed: other images of the same sizes and labels (another fold, another draw) are
    another fit, which a checkpoint of this one must not be resumed into."""
    return _tensors_hash(data.instance_pixels)


def prior_digest(data) -> str | None:
    """The prior-preservation images' pixels, hashed (None: no prior): a resume after the base, the generic prompt
    or ``fit.prior_folder`` changed trains on other images, which the signature's shape alone does not see."""
    return None if data.prior_pixels is None else _tensors_hash([data.prior_pixels])


def _tensors_hash(per_class: list) -> str:
    """One digest of every class's tensors (shots' pixels or masks), their shapes included."""
    digest = hashlib.sha256()
    for tensors in per_class:
        for tensor in tensors:
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
