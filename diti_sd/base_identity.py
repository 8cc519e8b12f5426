"""Which base model an adapter set was fitted on: an exact fingerprint of the weights as loaded, and a probe of them
that knows the same weights loaded in another precision (fitted in fp16 on a GPU, read in fp32 on a CPU), whose
fingerprint differs."""

from __future__ import annotations

import hashlib

import torch

PROBE_TENSORS = 256  # evenly over the base's tensors, in name order
PROBE_VALUES = 4  # strided within each
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _weights(backbone):
    """(name, tensor) of the base's own weights, in name order: the class adapters this package injects are left
    out, and a wrapped layer is named as the plain one it wraps."""
    for part, module in (("unet", backbone.unet), ("vae", backbone.vae), ("text_encoder", backbone.text_encoder)):
        for key, tensor in sorted(module.state_dict().items()):
            if "lora_" not in key:
                yield f"{part}.{key.replace('.base.', '.')}", tensor


def fingerprint(backbone) -> str:
    """A short hash of the weights as loaded: shapes plus a strided sample of every tensor. Cheap enough for every
    load of a full-size model; it changes when any component is swapped for another checkpoint, and with the
    precision it is loaded in."""
    h = hashlib.sha256()
    for name, tensor in _weights(backbone):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy().round(5)
        h.update(f"{name}{tuple(tensor.shape)}".encode())
        h.update(sample.tobytes())
    h.update(backbone.prediction_type.encode())
    h.update(backbone.scheduler.alphas_cumprod.float().numpy().round(6).tobytes())
    return h.hexdigest()[:16]


def weights_probe(backbone) -> dict:
    """What :func:`same_weights` compares: the precision, a hash of every tensor's name and shape (and the noise
    schedule), and ``PROBE_TENSORS`` x ``PROBE_VALUES`` values as loaded."""
    weights = list(_weights(backbone))
    shapes = hashlib.sha256()
    for name, tensor in weights:
        shapes.update(f"{name}{tuple(tensor.shape)}".encode())
    shapes.update(backbone.prediction_type.encode())
    shapes.update(backbone.scheduler.alphas_cumprod.float().numpy().round(6).tobytes())
    values = []
    picked = sorted({round(i * (len(weights) - 1) / max(1, PROBE_TENSORS - 1)) for i in range(PROBE_TENSORS)})
    for _, tensor in (weights[i] for i in picked):  # from the first tensor to the last, evenly
        flat = tensor.detach().reshape(-1)
        values += flat[:: max(1, flat.numel() // PROBE_VALUES)][:PROBE_VALUES].float().cpu().tolist()
    return {"dtype": str(backbone.dtype).removeprefix("torch."), "shapes": shapes.hexdigest()[:16], "values": values}


def same_weights(probe: dict, saved: dict | None) -> bool:
    """``probe`` and ``saved`` (one made when the set was fitted) are one base read in two precisions: the same
    tensors and shapes, and each value, cast to the coarser precision, the same (fp16 against bf16: within one bf16
    step, the fp16 side having been rounded twice). Never for one precision: there the fingerprint decides."""
    if not saved or saved.get("dtype") == probe["dtype"] or saved.get("shapes") != probe["shapes"]:
        return False
    if {probe["dtype"], saved["dtype"]} - set(PRECISIONS) or len(probe["values"]) != len(saved.get("values", [])):
        return False
    coarse = torch.bfloat16 if "bfloat16" in (probe["dtype"], saved["dtype"]) else torch.float16
    a = torch.tensor(probe["values"], dtype=torch.float32).to(coarse)
    b = torch.tensor(saved["values"], dtype=torch.float32).to(coarse)
    if "float32" in (probe["dtype"], saved["dtype"]):  # one side is the other as stored: the cast gives it back
        return bool(torch.equal(a, b))
    a, b = a.float(), b.float()
    # below fp16's normal numbers its steps are absolute (2^-24), wider than bf16's there
    return bool(((a - b).abs() <= 2.0 ** -7 * torch.maximum(a.abs(), b.abs()) + 2.0 ** -24).all())
