"""The frozen-encoder rivals on one encoder: zero-shot, Tip-Adapter, Tip-Adapter-F and a linear probe.

Each method returns its logits on the test split, on the split's calibration draw (the temperature is
chosen there) and on the validation images its choices were made on, in the data set's class order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import baselines as bl
from ..data.images import ImageSequence
from ..errors import ConfigError
from .methods import NEEDS_TEXT


class FrozenMethods:
    """The rivals on the encoder named by ``spec`` (loaded on first use: a rerun whose runs are all done
    loads nothing). ``folder`` keeps its features; ``baselines``: the recipe's section."""

    def __init__(self, spec: str, folder: Path, baselines, classnames: list[str], metric: str, aug_passes: int,
                 device=None, progress: bool = True):
        self.spec, self.folder, self.b, self.classnames = spec, Path(folder), baselines, classnames
        self.metric, self.aug_passes, self.device, self.progress = metric, aug_passes, device, progress
        self.label = bl.spec_label(spec)
        self._encoder = None
        self._cache = None
        self._text: dict = {}

    @property
    def encoder(self) -> bl.FrozenEncoder:
        if self._encoder is None:
            self._encoder = bl.load_encoder(self.spec, self.device)
        return self._encoder

    def supports(self, method: str) -> bool:
        return method not in NEEDS_TEXT or bl.parse_spec(self.spec)[0] == "openclip"

    def features(self, data, tag: str, augment_pass=None, normalize: bool = True) -> torch.Tensor:
        if self._cache is None:
            self._cache = bl.FeatureCache(self.folder, self.encoder)
        return self._cache.get(ImageSequence(data), data.ids, tag, augment_pass, self.progress,
                               variant=f"crop_bottom={data.crop_bottom}|prepare={data.prepare}", normalize=normalize)

    def text_weights(self, kind: str = "zeroshot") -> torch.Tensor:
        """The zero-shot classifier: the recipe's zero-shot templates, or Tip-Adapter's (``kind="tip"``)."""
        if kind not in self._text:
            templates = self.b.tip_templates if kind == "tip" else self.b.zeroshot_templates
            self._text[kind] = self.encoder.text_classifier(self.classnames, templates)
        return self._text[kind]

    def zero_shot(self, features: torch.Tensor, kind: str = "zeroshot") -> torch.Tensor:
        e = self.encoder
        return bl.zero_shot_logits(features, self.text_weights(kind), e.logit_scale, e.logit_bias)

    def run(self, method: str, tr, va, cal, test) -> dict:
        """``{"test", "cal", "val"}`` logits (numpy) and ``info`` (what was chosen, on what)."""
        if not self.supports(method):
            raise ConfigError(f"{method} needs a text tower, and {self.label} has none; run it on an OpenCLIP "
                              "encoder, or use probe")
        if method == "openclip-zeroshot":
            out = {s: self.zero_shot(self.features(d, "test" if s == "test" else "val")).numpy()
                   for s, d in (("test", test), ("cal", cal), ("val", va))}
            out["info"] = {"sigmoid_logits": self.encoder.sigmoid}
            return out
        if method == "probe":
            return self._probe(tr, va, cal, test)
        return self._tip(method, tr, va, cal, test)

    def _probe(self, tr, va, cal, test) -> dict:
        probe = bl.fit_probe(self.features(tr, "train"), np.array(tr.labels), self.features(va, "val"),
                             np.array(va.labels), self.metric)
        out = {s: probe.logits(self.features(d, "test" if s == "test" else "val"))
               for s, d in (("test", test), ("cal", cal), ("val", va))}
        out["info"] = {"C": probe.C, "val_score": probe.val_score, "val_nll": round(probe.val_nll, 6),
                       "candidates": probe.scores}
        return out

    def _tip(self, method, tr, va, cal, test) -> dict:
        """Tip-Adapter(-F) fitted on the k-shot train split, its choices made on validation."""
        b = self.b
        # the reference averages the passes' raw features, then normalises the mean
        aug = [self.features(tr, "train", p, normalize=False) for p in range(self.aug_passes)]
        keys, values = bl.cache_model(aug, np.array(tr.labels), len(self.classnames))
        val_f, test_f, cal_f = self.features(va, "val"), self.features(test, "test"), self.features(cal, "val")
        val_clip = self.zero_shot(val_f, "tip")
        info = {}
        if method == "tip-adapter-f":
            # a fresh augmented view every epoch, none of them the cache's, as the reference's loader draws them
            epochs = [torch.nn.functional.normalize(self.features(tr, "train", self.aug_passes + e, normalize=False),
                                                    dim=-1) for e in range(b.tipf_epochs)]
            keys, epoch, val_score = bl.train_tip_adapter_f(
                epochs, np.array(tr.labels), keys, values, lambda f: self.zero_shot(f, "tip"), val_f,
                np.array(va.labels), val_clip, alpha=b.init_alpha, beta=b.init_beta, epochs=b.tipf_epochs,
                lr=b.tipf_lr, clip_weight=b.clip_weight, metric=self.metric, keep=b.tipf_epoch)
            info = {"epoch": epoch, "epoch_rule": b.tipf_epoch, "epoch_val_score": val_score}
        alpha, beta, val_score = bl.search_alpha_beta(val_f, np.array(va.labels), keys, values, val_clip,
                                                      b.search_scale, b.search_step, b.clip_weight, self.metric)

        def logits(f):
            return bl.tip_logits(f, keys, values, self.zero_shot(f, "tip"), alpha, beta, b.clip_weight).numpy()

        return {"test": logits(test_f), "cal": logits(cal_f), "val": logits(val_f),
                "info": {"alpha": alpha, "beta": beta, "val_score": val_score, **info}}
