"""The evaluation harness behind ``diti-sd eval``: every method on the same k-shot splits.

Per (shots, seed) one CoOp split is drawn and saved; each method's result is written to
``report/runs/`` as soon as it exists, so a rerun skips what is done. Baselines share one OpenCLIP
backbone whose features are cached on disk. Every choice a method makes (Tip-Adapter's alpha/beta,
Tip-Adapter-F's epoch, the ensemble weight) is made on the validation split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import baselines as bl
from .classifier import DiTiFewShotClassifier
from .data import load_configured_split, load_split, make_kshot_split
from .data.images import ImageSequence
from .distributed import barrier, is_main
from .errors import ConfigError, MissingFileError
from .eval_report import write_eval_report
from .files import atomic_write
from .hub import write_model_card
from .methods import METHODS, PREFILTERS, VAL_PROTOCOLS
from .metrics import calibration_report, metric_score, standardise
from .recipes import load_recipe
from .scoring.auto import extra_call_share


@dataclass
class EvalConfig:
    dataset: str
    data_root: str
    report: str
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    methods: list[str] = field(default_factory=lambda: ["diti", "openclip-zeroshot", "tip-adapter", "tip-adapter-f"])
    adapters_dir: str | None = None
    model: str | None = None
    overrides: list[str] = field(default_factory=list)
    clip_model: str = "ViT-H-14"
    clip_pretrained: str | None = "laion2b_s32b_b79k"
    aug_passes: int | None = None  # None: the recipe's baselines.augment_passes
    # which validation images every choice is made on: "coop" min(k, 4) per class from the k-shot split,
    # or "full": the whole official validation split, as Tip-Adapter's protocol and the published
    # Tip-Adapter numbers; None: the recipe's baselines.val_protocol (DiTi-SD itself uses none)
    val_protocol: str | None = None
    # TiF's split files (train_<k>_<seed>.data, its lora/splits/<data set>/): every method trains on them
    split_dir: str | None = None
    prefilter: str | None = None  # openclip-zeroshot | tip-adapter: DiTi-SD scores only its top score.prefilter_k
    device: str | None = None
    compile: bool = False  # score DiTi-SD with a torch.compile'd UNet
    progress: bool = True


def _read_run(path: Path) -> dict | None:
    """A finished run's file, or None when there is none or it is damaged (the run is then redone)."""
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
        if isinstance(run, dict) and {"predictions", "score", "method"} <= set(run):
            return run
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    warnings.warn(f"run file {path} is damaged; running it again", stacklevel=2)
    return None


class Evaluation:
    def __init__(self, cfg: EvalConfig):
        if cfg.prefilter not in (None, *PREFILTERS):
            raise ConfigError(f"unknown prefilter {cfg.prefilter!r}; choose from {', '.join(PREFILTERS)}")
        unknown = sorted(set(cfg.methods) - set(METHODS))
        if unknown:
            raise ConfigError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if cfg.val_protocol not in (None, *VAL_PROTOCOLS):
            raise ConfigError(f"unknown validation protocol {cfg.val_protocol!r}; choose from "
                              f"{', '.join(VAL_PROTOCOLS)}")
        self.recipe = load_recipe(cfg.dataset, cfg.overrides)
        # the report's config says which protocol ran, whether it came from the command line or the recipe
        cfg = replace(cfg, val_protocol=cfg.val_protocol or self.recipe.baselines.val_protocol)
        self.cfg = cfg
        self.report = Path(cfg.report)
        self.split_files = self._split_files()
        if cfg.model:
            self.recipe.model = cfg.model
        ds = self.recipe.dataset
        self.train = load_configured_split(ds, cfg.data_root, ds.train_split)
        self.val = load_configured_split(ds, cfg.data_root, ds.val_split)
        self.test = load_configured_split(ds, cfg.data_root, ds.test_split)
        if self.test is None:
            raise MissingFileError(f"no {ds.test_split!r} split under {cfg.data_root}")
        if cfg.val_protocol == "full" and self.val is None:
            raise ConfigError("validation protocol full (--val-protocol, or the recipe's baselines.val_protocol) "
                              f"needs the data set's validation split ({ds.val_split!r}), and {cfg.data_root} has "
                              "none; use --val-protocol coop")
        self.baselines = self.recipe.baselines
        self.metric = ds.metric
        metric_score([0], [0], self.metric)  # an unknown metric fails here, before any work
        self.aug_passes = cfg.aug_passes or self.baselines.augment_passes
        self._clip = None
        self._cache = None
        self._text: dict = {}
        self._diti_logits: dict = {}
        self._sd_zeroshot: tuple | None = None

    def _split_files(self) -> dict | None:
        """TiF's split file for every (shots, seed), all checked before any work."""
        if not self.cfg.split_dir:
            return None
        folder = Path(self.cfg.split_dir)
        files = {(k, s): folder / f"train_{k}_{s}.data" for k in self.cfg.shots for s in self.cfg.seeds}
        missing = sorted(p.name for p in files.values() if not p.is_file())
        if missing:
            raise MissingFileError(f"--split-dir {folder} lacks {', '.join(missing[:4])}"
                                   f"{' ...' if len(missing) > 4 else ''}; TiF's files are in its repository's "
                                   "lora/splits/<data set>/, or drop --split-dir to draw CoOp splits")
        return files

    def split(self, shots: int, seed: int):
        """The k-shot split of (shots, seed): TiF's file from --split-dir, or a CoOp draw."""
        if self.split_files is None:
            return make_kshot_split(self.train, self.val, shots, seed, dataset=self.recipe.name)
        path = self.split_files[(shots, seed)]
        split = load_split(path, self.train, self.val, dataset=self.recipe.name)
        if split.shots != shots:
            raise ConfigError(f"{path.name} holds {split.shots} images per class, not {shots}")
        return split

    # ----------------------------------------------------------------- shared pieces
    def clip(self) -> bl.ClipBackbone:
        """The OpenCLIP backbone every baseline shares, loaded on first use."""
        if self._clip is None:
            self._clip = bl.load_openclip(self.cfg.clip_model, self.cfg.clip_pretrained, self.cfg.device)
        return self._clip

    def features(self, data, tag: str, augment_pass=None, normalize: bool = True):
        if self._cache is None:
            self._cache = bl.FeatureCache(self.report / "features", self.clip())
        return self._cache.get(ImageSequence(data), data.ids, tag, augment_pass, self.cfg.progress,
                               variant=f"crop_bottom={data.crop_bottom}|prepare={data.prepare}", normalize=normalize)

    def text_weights(self, kind: str = "zeroshot"):
        """The zero-shot classifier: the recipe's zero-shot templates, or Tip-Adapter's (``kind="tip"``)."""
        if kind not in self._text:
            templates = self.baselines.tip_templates if kind == "tip" else self.baselines.zeroshot_templates
            self._text[kind] = bl.text_classifier(self.clip(), self.test.classnames, templates)
        return self._text[kind]

    def run_key(self, method: str) -> str:
        """A hash of everything that changes a method's result; a finished run is reused only under it."""
        recipe = self.recipe.to_dict()
        parts = {"protocol": self.cfg.val_protocol, "dataset": recipe["dataset"],
                 "splits": None if self.split_files is None else str(Path(self.cfg.split_dir).resolve())}
        if method == "sd-zeroshot":
            parts.update(model=recipe["model"], resolution=recipe["resolution"], gpu_dtype=recipe["gpu_dtype"],
                         score=recipe["score"], template=self.baselines.tip_templates[0])
            return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]
        if method != "diti":
            parts.update(clip=[self.cfg.clip_model, self.cfg.clip_pretrained], baselines=recipe["baselines"],
                         aug_passes=self.aug_passes)
        if method.startswith("diti"):
            parts.update({k: v for k, v in recipe.items() if k not in ("baselines", "name", "description")},
                         prefilter=self.cfg.prefilter, adapters_dir=self.cfg.adapters_dir)
            if self.cfg.prefilter:
                parts.update(clip=[self.cfg.clip_model, self.cfg.clip_pretrained], baselines=recipe["baselines"])
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]

    # ----------------------------------------------------------------- methods
    def label(self, method: str) -> str:
        """The method's name in the report; DiTi-SD with a prefilter is a different method."""
        k = self.recipe.score.prefilter_k
        if method.startswith("diti") and self.cfg.prefilter and k:
            return f"{method}@{self.cfg.prefilter}-top{k}"
        return method

    def run_method(self, method: str, shots: int, seed: int, tr, va, cal) -> dict:
        """One method on one split; ``cal`` (the split's CoOp validation draw) chooses the temperature
        every method's probabilities are reported at."""
        start = time.time()
        n_test = len(self.test)
        if method == "openclip-zeroshot":
            text = self.text_weights()
            logits = bl.zero_shot_logits(self.features(self.test, "test"), text).numpy()
            cal_logits = bl.zero_shot_logits(self.features(cal, "val"), text).numpy()
            out = {"cost": {"clip_forwards_per_image": 1}}
        elif method in ("tip-adapter", "tip-adapter-f"):
            logits, cal_logits, out = self._tip(method, tr, va, cal)
        elif method in ("diti", "diti-auto"):
            logits, cal_logits, out = self._diti(shots, seed, tr, va, cal=cal, auto=method == "diti-auto")
        elif method == "sd-zeroshot":
            logits, cal_logits, out = self._sd_zero_shot(cal)
        else:  # diti+tip-adapter
            logits, cal_logits, out = self._ensemble(shots, seed, tr, va, cal)
        out["calibration"] = {"source": f"the split's validation draw, {len(cal)} images (min(k, 4) per class)",
                              **calibration_report(cal_logits, cal.labels, logits, self.test.labels)}
        pred = logits.argmax(1)
        labels = np.array(self.test.labels)
        out.update(method=self.label(method), shots=shots, seed=seed, accuracy=float((pred == labels).mean()),
                   macro_f1=metric_score(pred, labels, "macro-f1"), metric=self.metric,
                   score=metric_score(pred, labels, self.metric),
                   predictions=pred.tolist(), wall_s=round(time.time() - start, 2), n_test=n_test, n_val=len(va),
                   device=str(self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")))
        return out

    def _tip_fit(self, method, tr, va, cal=None) -> dict:
        """Tip-Adapter(-F) fitted on the k-shot train split, tuned on validation; logits on val and test
        (and on ``cal`` when given)."""
        b = self.baselines
        # the reference averages the passes' raw features, then normalises the mean
        aug = [self.features(tr, "train", p, normalize=False) for p in range(self.aug_passes)]
        keys, values = bl.cache_model(aug, np.array(tr.labels), len(tr.classnames))
        text = self.text_weights("tip")
        val_f, test_f = self.features(va, "val"), self.features(self.test, "test")
        val_clip, test_clip = bl.zero_shot_logits(val_f, text), bl.zero_shot_logits(test_f, text)
        info = {}
        if method == "tip-adapter-f":
            # a fresh augmentation per epoch, as the reference re-augments its train loader every epoch
            epochs = [torch.nn.functional.normalize(self.features(tr, "train", p, normalize=False), dim=-1)
                      for p in range(max(self.aug_passes, b.tipf_epochs))]
            keys, epoch, val_acc = bl.train_tip_adapter_f(epochs, np.array(tr.labels), keys, values, text, val_f,
                                                          np.array(va.labels), alpha=b.init_alpha,
                                                          beta=b.init_beta, epochs=b.tipf_epochs, lr=b.tipf_lr,
                                                          clip_weight=b.clip_weight, metric=self.metric)
            info = {"epoch": epoch, "epoch_val_accuracy": val_acc}
        alpha, beta, val_acc = bl.search_alpha_beta(val_f, np.array(va.labels), keys, values, val_clip,
                                                    b.search_scale, b.search_step, b.clip_weight, self.metric)
        out = {"val": bl.tip_logits(val_f, keys, values, val_clip, alpha, beta, b.clip_weight).numpy(),
               "test": bl.tip_logits(test_f, keys, values, test_clip, alpha, beta, b.clip_weight).numpy(),
               "info": {"alpha": alpha, "beta": beta, "val_accuracy": val_acc, **info}}
        if cal is not None:
            cal_f = self.features(cal, "val")  # features are cached by image ids: shared with va
            out["cal"] = bl.tip_logits(cal_f, keys, values, bl.zero_shot_logits(cal_f, text), alpha, beta,
                                       b.clip_weight).numpy()
        return out

    def _tip(self, method, tr, va, cal):
        fitted = self._tip_fit(method, tr, va, cal)
        return fitted["test"], fitted["cal"], {**fitted["info"], "cost": {"clip_forwards_per_image": 1}}

    def _prefilter(self, tr, va, cal) -> dict | None:
        """Top-k candidate masks (val, cal and test) from a cheap CLIP method, when one is configured."""
        k = self.recipe.score.prefilter_k
        if not self.cfg.prefilter or not k:
            return None
        if self.cfg.prefilter == "openclip-zeroshot":
            text = self.text_weights()
            logits = {s: bl.zero_shot_logits(self.features(d, "test" if s == "test" else "val"), text).numpy()
                      for s, d in (("val", va), ("cal", cal), ("test", self.test))}
        else:
            logits = self._tip_fit(self.cfg.prefilter, tr, va, cal)
        masks = {}
        for split in ("val", "cal", "test"):
            top = np.argsort(-logits[split], axis=1, kind="stable")[:, :k]
            mask = np.zeros(logits[split].shape, bool)
            np.put_along_axis(mask, top, True, axis=1)
            masks[split] = mask
        return masks

    def adapter_folder(self, shots, seed) -> Path:
        # adapters fitted on TiF's split files are not those of the CoOp draw with the same seed
        tag = "-tifsplit" if self.split_files is not None else ""
        folder = Path(self.cfg.adapters_dir or self.report / "adapters")
        return folder / f"{self.recipe.name}-{shots}shot-seed{seed}{tag}"

    def _classifier(self, shots, seed, tr, cal, cal_candidates):
        """The split's adapters (fitted once, then read from their folder), scored as this run's recipe
        says; with ``score.weighting: auto`` the window is chosen on ``cal``, the split's validation draw."""
        folder = self.adapter_folder(shots, seed)
        auto = self.recipe.score.weighting == "auto"
        if (folder / "manifest.json").is_file():
            clf = DiTiFewShotClassifier.from_pretrained(folder, device=self.cfg.device, compile=self.cfg.compile,
                                                        progress=self.cfg.progress)
            choice = clf.score_choice_
            clf.recipe_ = dataclasses.replace(clf.recipe_, score=dataclasses.replace(self.recipe.score))
            if auto and not choice:
                self._choose(clf, cal, cal_candidates)
            return clf
        clf = DiTiFewShotClassifier(recipe=self.recipe, random_state=seed, device=self.cfg.device,
                                    compile=self.cfg.compile, progress=self.cfg.progress)
        validation = (ImageSequence(cal), cal.label_names()) if auto else None
        clf.fit(ImageSequence(tr), tr.label_names(), validation=validation, validation_candidates=cal_candidates,
                output_dir=folder, resume=True)
        clf.save_pretrained(folder)
        return clf

    def _choose(self, clf, cal, cal_candidates):
        clf.choose_scoring(ImageSequence(cal), cal.label_names(), candidates=cal_candidates,
                           source=f"the split's validation draw, {len(cal)} images (min(k, 4) per class)")

    def _diti(self, shots, seed, tr, va, with_val=False, cal=None, auto=False):
        key = (shots, seed, auto)
        if key not in self._diti_logits or (with_val and "val" not in self._diti_logits[key]):
            masks = self._prefilter(tr, va, cal)
            # logits in the data set's class order (the masks' too); a fit orders classes_ by sorted name
            fitted = sorted(set(tr.label_names()))
            order = [fitted.index(name) for name in self.test.classnames]
            back = np.argsort(order)
            clf = self._classifier(shots, seed, tr, cal, None if masks is None else masks["cal"][:, back])
            if clf.classes_.tolist() != fitted:
                raise ConfigError(f"the adapters in {self.adapter_folder(shots, seed)} hold other classes than this "
                                  "split; remove the folder or pass another --adapters-dir")
            if auto and clf.recipe_.score.weighting != "auto":  # diti-auto beside a recipe with its own weighting
                self._choose(clf, cal, None if masks is None else masks["cal"][:, back])
            entry = {"choice": clf.score_choice_ if clf.recipe_.score.weighting == "auto" else None}
            for split, data in (("test", self.test), ("cal", cal), ("val", va)):
                if (split == "val" and not with_val) or split in self._diti_logits.get(key, {}):
                    continue
                cand = None if masks is None else masks[split][:, back]
                # chunks land in report/scores/ as they finish: an interrupted pass continues there
                result = clf.score_images(ImageSequence(data), candidates=cand, cache_dir=self.report / "scores")
                entry[split] = result.logits[:, order]
                if split == "test":
                    entry["calls"] = float(result.unet_calls.mean())
            self._diti_logits[key] = {**self._diti_logits.get(key, {}), **entry}
        entry = self._diti_logits[key]
        cost = {"unet_calls_per_image": entry["calls"]}
        if self.cfg.prefilter and self.recipe.score.prefilter_k:
            cost.update(prefilter=f"{self.cfg.prefilter} top-{self.recipe.score.prefilter_k}",
                        clip_forwards_per_image=1)
        info = {"cost": cost}
        choice = entry["choice"]
        if choice:  # what auto chose, on what, and its validation pass as a share of this test pass
            cost.update(auto_unet_calls=choice["unet_calls"],
                        auto_share_of_test_pass=round(extra_call_share(choice, entry["calls"], len(self.test)), 4))
            info["score_choice"] = choice
        return entry["test"], entry["cal"], info

    def _sd_zero_shot(self, cal):
        """Stable Diffusion zero-shot (Diffusion Classifier, TiF's `--method diffusionclf`): the base model
        with the data set's template per class, no adapters; the recipe's stages, weighted uniformly as
        Diffusion Classifier weighs them. The test set is scored once for every (shots, seed); each
        split's validation draw (for the temperature) as it comes."""
        scores = self.report / "scores"
        if self._sd_zeroshot is None:
            template = self.baselines.tip_templates[0]
            clf = DiTiFewShotClassifier.zero_shot(
                self.test.classnames, template, recipe=self.recipe, device=self.cfg.device,
                overrides={"score.weighting": "uniform", "score.text_dropout": 0.0}, progress=self.cfg.progress)
            result = clf.score_images(ImageSequence(self.test), cache_dir=scores)
            self._sd_zeroshot = (clf, result.logits, float(result.unet_calls.mean()), template)
        clf, logits, calls, template = self._sd_zeroshot
        cal_logits = clf.score_images(ImageSequence(cal), cache_dir=scores).logits
        return logits, cal_logits, {"prompt": template, "cost": {"unet_calls_per_image": calls}}

    def _ensemble(self, shots, seed, tr, va, cal):
        _, _, diti_info = self._diti(shots, seed, tr, va, with_val=True, cal=cal)
        diti = self._diti_logits[(shots, seed, False)]
        tip = self._tip_fit("tip-adapter", tr, va, cal)
        val_labels = np.array(va.labels)
        best = (0.0, -1.0)
        for w in np.linspace(0, 5, 51):
            acc = metric_score((standardise(diti["val"]) + w * standardise(tip["val"])).argmax(1), val_labels,
                                  self.metric)
            if acc > best[1]:
                best = (float(w), acc)
        logits = standardise(diti["test"]) + best[0] * standardise(tip["test"])
        cal_logits = standardise(diti["cal"]) + best[0] * standardise(tip["cal"])
        return logits, cal_logits, {"tip_weight": best[0], "val_accuracy": best[1],
                        "cost": {**diti_info["cost"], "clip_forwards_per_image": 1}}

    # ----------------------------------------------------------------- the loop
    def run(self) -> dict:
        runs_dir = self.report / "runs"
        runs_dir.mkdir(parents=True, exist_ok=True)
        runs = []
        for shots in self.cfg.shots:
            for seed in self.cfg.seeds:
                split = self.split(shots, seed)
                if is_main():  # several processes: each scores its share of images, the first one writes
                    split.save(self.report / "splits" / f"{shots}shot-seed{seed}.json")
                tr = split.select(self.train, "train")
                cal = split.select(self.val if self.val is not None else self.train, "val")
                va = self.val if self.cfg.val_protocol == "full" else cal
                for method in self.cfg.methods:
                    path = runs_dir / f"{self.label(method)}-{shots}shot-seed{seed}-{self.run_key(method)}.json"
                    done = _read_run(path)
                    if done is not None:
                        runs.append(done)
                        continue
                    result = self.run_method(method, shots, seed, tr, va, cal)
                    if is_main():
                        atomic_write(path, lambda tmp, result=result: tmp.write_text(json.dumps(result)))
                        if method == "diti":  # the adapter set's model card shows what it scored
                            write_model_card(self.adapter_folder(shots, seed), evaluation={
                                "dataset": self.recipe.name, "n_test": result["n_test"], "metric": self.metric,
                                "score": result["score"], **result["cost"]})
                    runs.append(result)
                    if self.cfg.progress and is_main():
                        print(f"{method} {shots}-shot seed {seed}: {self.metric} {result['score']:.4f}", flush=True)
        report = self.write_report(runs) if is_main() else {}
        barrier()
        return report

    def write_report(self, runs: list[dict]) -> dict:
        return write_eval_report(self.report, runs, config=asdict(self.cfg), recipe=self.recipe, test=self.test,
                                 validation=self._protocol_text())

    def _protocol_text(self) -> str:
        if self.cfg.val_protocol == "full":
            return f"the full official validation split ({len(self.val)} images), Tip-Adapter's protocol"
        return "CoOp's protocol, min(k, 4) images per class from the k-shot split's validation draw"
