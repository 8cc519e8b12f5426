"""An adapter set is read on the base it was fitted on and on no other: known by the exact fingerprint of the weights
as loaded, or, in another precision than the fit's (fitted in fp16 on a GPU, read in fp32 on a CPU), by a probe of
the same weights within the coarser precision's rounding."""

import json

import pytest
import torch
from helpers import color_images

from diti_sd import DiTiFewShotClassifier
from diti_sd.adapter_set import AdapterSetError
from diti_sd.backbone import load_backbone
from diti_sd.base_identity import same_weights, weights_probe
from diti_sd.testing.tiny import build_tiny_backbone


def test_a_set_fitted_in_one_precision_loads_in_another_and_on_no_other_base(tiny_model_dir, tmp_path):
    X, y = color_images(4, seed=6)
    path = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", progress=False).fit(X, y).save_pretrained(
        tmp_path / "set")
    fitted = DiTiFewShotClassifier.from_pretrained(path, progress=False)
    for dtype in ("fp16", "bf16"):  # another precision: another fingerprint, the same weights
        again = DiTiFewShotClassifier.from_pretrained(path, dtype=dtype, progress=False)
        assert again.backbone_.dtype != torch.float32 and again.base_fingerprint_ != fitted.base_fingerprint_
    # another base of the same architecture, in any precision, is refused
    other = build_tiny_backbone(seed=7).save_pretrained(tmp_path / "other-base")
    for dtype in ("fp32", "bf16"):
        with pytest.raises(AdapterSetError, match="fitted on base model"):
            DiTiFewShotClassifier.from_pretrained(path, model=other, dtype=dtype, progress=False)
    # a set saved before the probe was kept is known in its own precision alone, and the message says so
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["base_probe"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    DiTiFewShotClassifier.from_pretrained(path, progress=False)
    with pytest.raises(AdapterSetError, match="the precision it was fitted in"):
        DiTiFewShotClassifier.from_pretrained(path, dtype="bf16", progress=False)


def test_the_probe_tells_one_base_in_two_precisions_from_two_bases(tiny_model_dir):
    probes = {dtype: weights_probe(load_backbone(str(tiny_model_dir), device="cpu", dtype=dtype, progress=False))
              for dtype in (torch.float32, torch.float16, torch.bfloat16)}
    assert probes[torch.float32]["shapes"] == probes[torch.float16]["shapes"] == probes[torch.bfloat16]["shapes"]
    assert same_weights(probes[torch.float16], probes[torch.float32])
    assert same_weights(probes[torch.bfloat16], probes[torch.float16])
    assert not same_weights(probes[torch.float32], probes[torch.float32])  # one precision: the fingerprint decides
    # a drift of ten times fp16's rounding on one value, read in fp16: another base
    moved = dict(probes[torch.float32], values=list(probes[torch.float32]["values"]))
    i = max(range(len(moved["values"])), key=lambda j: abs(moved["values"][j]))
    moved["values"][i] *= 1 + 10 * 2.0 ** -11
    assert not same_weights(probes[torch.float16], moved)
    assert not same_weights(probes[torch.float16], None)
    # a weight below fp16's normal numbers, read in fp16 and in bf16: fp16's absolute step, not bf16's, bounds them
    tiny = dict(probes[torch.float16], values=[float(torch.tensor(1e-6).half())] * len(moved["values"]))
    assert same_weights(dict(tiny, dtype="bfloat16", values=[float(torch.tensor(1e-6).bfloat16())] *
                             len(moved["values"])), tiny)
