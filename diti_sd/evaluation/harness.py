"""``Evaluation``: every method on the same k-shot splits, one run file per (method, shots, seed).

Per (shots, seed) one CoOp split is drawn (or TiF's file read) and saved; each method's result is written
to ``report/runs/`` as soon as it exists, keyed by everything that changes it, so a rerun skips what is
done. Every choice a method makes (Tip-Adapter's alpha and beta, Tip-Adapter-F's epoch, the probe's
regularisation, an ensemble's weight) is made on the validation images, never on test; every method's
softmax temperature on the split's calibration draw.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ..data import load_configured_split, load_split, make_kshot_split
from ..data.images import ImageSequence
from ..distributed import barrier, is_main
from ..errors import ConfigError, DitiWarning, MissingFileError
from ..files import atomic_write
from ..hub import write_model_card
from ..metrics import calibration_report, metric_score, standardise
from ..recipes import load_recipe
from ..scoring.auto import extra_call_share
from .config import EvalConfig
from .diffusion import DiffusionMethods, in_class_order
from .frozen import FrozenMethods
from .methods import ENSEMBLES, FROZEN, METHODS, PREFILTERS, VAL_PROTOCOLS
from .report import write_eval_report

RECALL_AT = (1, 2, 5, 10, 20, 50)


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
    warnings.warn(f"run file {path} is damaged; running it again", DitiWarning, stacklevel=2)
    return None


def _hash(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


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
        from ..baselines import check_spec

        for spec in cfg.encoder_specs:
            check_spec(spec)  # a malformed or misspelt encoder fails here, before any data is read
        self.recipe = load_recipe(cfg.dataset, cfg.overrides)
        if self.recipe.score.cells != "all":
            raise ConfigError("diti-sd eval scores whole images: it reads no test masks, so score.cells: object is "
                              "for fit and predict (diti-sd predict --masks DIR); leave it out here")
        if cfg.model:
            self.recipe.model = cfg.model
        # the report's config says which protocol ran, whether it came from the command line or the recipe
        cfg = replace(cfg, val_protocol=cfg.val_protocol or self.recipe.baselines.val_protocol)
        self.cfg = cfg
        self.report = Path(cfg.report)
        self.split_files = self._split_files()
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
        self.metric = ds.metric
        metric_score([0], [0], self.metric)  # an unknown metric fails here, before any work
        aug = cfg.aug_passes or self.recipe.baselines.augment_passes
        self.encoders = [FrozenMethods(spec, self.report / "features", self.recipe.baselines, self.test.classnames,
                                       self.metric, aug, cfg.device, cfg.progress) for spec in cfg.encoder_specs]
        splits = "coop" if self.split_files is None else str(Path(cfg.split_dir).resolve())
        self.diffusion = DiffusionMethods(self.recipe, Path(cfg.adapters_dir or self.report / "adapters"), splits,
                                          cfg.device, cfg.compile, cfg.progress, pixels=self.train.prepare)
        self._frozen: dict = {}
        self._diti: dict = {}
        # every (shots, seed) draw made here, so that a k the data cannot give, or a split file that is not what its
        # name says, stops the run before any work
        self._splits: dict = {}
        self._splits = {(k, s): self.split(k, s) for k in cfg.shots for s in cfg.seeds}
        self._check_record()  # before any work: what the folders hold is read back as it is

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
        if (shots, seed) in self._splits:
            return self._splits[(shots, seed)]
        if self.split_files is None:
            return make_kshot_split(self.train, self.val, shots, seed, dataset=self.recipe.name)
        path = self.split_files[(shots, seed)]
        split = load_split(path, self.train, self.val, dataset=self.recipe.name)
        if split.shots != shots:
            raise ConfigError(f"{path.name} holds {split.shots} images per class, not {shots}")
        return split

    # ----------------------------------------------------------------- names and keys
    def jobs(self) -> list[tuple[str, int]]:
        """(method, encoder index) pairs to run: a frozen-encoder method on every encoder that supports it."""
        out = []
        for method in self.cfg.methods:
            if method in FROZEN:
                out += [(method, i) for i, e in enumerate(self.encoders) if e.supports(method)]
            else:
                out.append((method, 0))
        return out

    def label(self, method: str, encoder: int = 0) -> str:
        """The method's name in the report: with its encoder; DiTi-SD with a prefilter is another method."""
        if method in FROZEN:
            return f"{method} [{self.encoders[encoder].label}]"
        k = self.recipe.score.prefilter_k
        name = method
        if method.startswith("diti") and self.cfg.prefilter and k:
            name = f"{method}@{self.cfg.prefilter}-top{k}"
        if method in ENSEMBLES:
            name += f" [{self.encoders[0].label}]"
        return name

    def _check_record(self) -> None:
        """The runs, feature caches and adapter sets kept under ``--out`` (and ``--adapters-dir``) are named by
        settings, data set and model names, not contents: each folder's ``data.json`` records, per data set
        section, the images and labels they were made from, and the base weights under each model path, and a run
        on others is refused before any work."""
        from ..backbone import resolve_model_path
        from ..files import weights_digest, write_json

        dataset = _hash(self.recipe.to_dict()["dataset"])  # another level or split reads other labels: apart
        data = _hash({name: [split.ids, split.labels] for name, split in (("train", self.train), ("val", self.val),
                                                                          ("test", self.test)) if split is not None})
        local = Path(resolve_model_path(self.recipe.model))
        model = str(local.resolve()) if local.is_dir() else self.recipe.model
        weights = weights_digest(local, ("unet", "vae", "text_encoder"))
        fits = any(m.startswith("diti") for m in self.cfg.methods)  # only these keep adapter sets
        for folder in dict.fromkeys([self.report, *([self.diffusion.adapters_dir] if fits else [])]):
            path = folder / "data.json"
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):  # the first run here, or one from before the record was kept
                saved = {}
            sets = dict(saved.get("datasets") or {}) if isinstance(saved, dict) else {}
            models = dict(saved.get("models") or {}) if isinstance(saved, dict) else {}
            if sets.get(dataset, data) != data:
                raise ConfigError(f"{folder} holds work made on other images or labels than those under "
                                  f"{self.cfg.data_root}; pass another --out / --adapters-dir (it would be read back "
                                  "as it is)")
            if None not in (models.get(model), weights) and models[model] != weights:
                raise ConfigError(f"{folder} holds work made with other weights in {model} (trained again since?); "
                                  "pass another --out / --adapters-dir (it would be read back as it is)")
            if is_main():
                write_json(path, {"datasets": {**sets, dataset: data}, "models": {**models, model: weights}})

    def run_key(self, method: str, encoder: int = 0) -> str:
        """A hash of everything that changes a method's result; a finished run is reused only under it."""
        recipe = self.recipe.to_dict()
        parts = {"protocol": self.cfg.val_protocol, "dataset": recipe["dataset"], "splits": self.diffusion.splits}
        if self.diffusion.pixels:  # the images' preparation changes every method's pixels
            parts["pixels"] = self.diffusion.pixels
        if method == "sd-zeroshot":
            parts.update(model=recipe["model"], resolution=recipe["resolution"], gpu_dtype=recipe["gpu_dtype"],
                         score=recipe["score"], template=self.recipe.baselines.tip_templates[0])
            return _hash(parts)
        uses_encoder = method in FROZEN or method in ENSEMBLES or (method.startswith("diti") and self.cfg.prefilter)
        if uses_encoder:
            parts.update(encoder=self.cfg.encoder_specs[encoder], baselines=recipe["baselines"],
                         aug_passes=self.encoders[encoder].aug_passes, prefilter=self.cfg.prefilter)
        if method.startswith("diti"):
            # the adapters are named by their fit settings (diffusion.fit_key), which the recipe holds
            parts.update({k: v for k, v in recipe.items() if k not in ("baselines", "name", "description")},
                         prefilter=self.cfg.prefilter)
        return _hash(parts)

    # ----------------------------------------------------------------- methods
    def frozen(self, method: str, encoder: int, key, tr, va, cal) -> dict:
        """A frozen-encoder method's logits on one split, computed once (prefilters and ensembles reuse them)."""
        if (method, encoder, key) not in self._frozen:
            self._frozen[(method, encoder, key)] = self.encoders[encoder].run(method, tr, va, cal, self.test)
        return self._frozen[(method, encoder, key)]

    def run_method(self, method: str, encoder: int, shots: int, seed: int, tr, va, cal) -> dict:
        """One method on one split; ``cal`` (the split's CoOp validation draw) chooses the temperature
        every method's probabilities are reported at."""
        start = time.time()
        if method in FROZEN:
            out = self.frozen(method, encoder, (shots, seed), tr, va, cal)
            logits, cal_logits = out["test"], out["cal"]
            info = {**out["info"], "encoder": self.cfg.encoder_specs[encoder],
                    "cost": {"unet_calls_per_image": 0, "encoder_forwards_per_image": 1}}
        elif method in ("diti", "diti-auto"):
            entry = self._diti_logits(shots, seed, tr, va, cal, auto=method == "diti-auto")
            logits, cal_logits, info = entry["test"], entry["cal"], entry["info"]
        elif method == "sd-zeroshot":
            out = self.diffusion.zero_shot(self.test, cal, self.recipe.baselines.tip_templates[0],
                                           self.report / "scores")
            logits, cal_logits = out["test"], out["cal"]
            info = {"prompt": self.recipe.baselines.tip_templates[0],
                    "cost": {"unet_calls_per_image": out["calls"], "encoder_forwards_per_image": 0}}
        else:
            logits, cal_logits, info = self._ensemble(method.split("+", 1)[1], shots, seed, tr, va, cal)
        pred = logits.argmax(1)
        labels = np.array(self.test.labels)
        return {**info, "method": self.label(method, encoder), "shots": shots, "seed": seed,
                "calibration": {"source": f"the split's validation draw, {len(cal)} images (min(k, 4) per class)",
                                **calibration_report(cal_logits, cal.labels, logits, self.test.labels)},
                "accuracy": float((pred == labels).mean()), "macro_f1": metric_score(pred, labels, "macro-f1"),
                "metric": self.metric, "score": metric_score(pred, labels, self.metric), "predictions": pred.tolist(),
                "wall_s": round(time.time() - start, 2), "n_test": len(self.test), "n_val": len(va),
                "device": str(self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))}

    def _prefilter(self, shots, seed, tr, va, cal) -> tuple[dict, dict] | tuple[None, None]:
        """Top-k candidate masks (val, cal and test) from the prefilter method on the first encoder, and its
        top-k recall on the test split at each k up to the classes (recall bounds DiTi-SD's accuracy)."""
        k = self.recipe.score.prefilter_k
        if not self.cfg.prefilter or not k:
            return None, None
        logits = self.frozen(self.cfg.prefilter, 0, (shots, seed), tr, va, cal)
        masks = {}
        for split in ("val", "cal", "test"):
            top = np.argsort(-logits[split], axis=1, kind="stable")[:, :k]
            mask = np.zeros(logits[split].shape, bool)
            np.put_along_axis(mask, top, True, axis=1)
            masks[split] = mask
        order = np.argsort(-logits["test"], axis=1, kind="stable")
        labels = np.array(self.test.labels)
        ranks = (order == labels[:, None]).argmax(1)
        ks = sorted({*(r for r in RECALL_AT if r < logits["test"].shape[1]), k})
        recall = {str(r): float((ranks < r).mean()) for r in ks}
        return masks, {"method": self.label(self.cfg.prefilter), "k": k, "recall": recall}

    def _diti_logits(self, shots, seed, tr, va, cal, auto: bool = False, with_val: bool = False) -> dict:
        key = (shots, seed, auto)
        cached = self._diti.get(key)
        if cached is None or (with_val and "val" not in cached):
            masks, recall = self._prefilter(shots, seed, tr, va, cal)
            fitted = sorted(set(tr.label_names()))
            back = np.argsort([fitted.index(name) for name in self.test.classnames])
            clf = self.diffusion.classifier(shots, seed, tr, cal, None if masks is None else masks["cal"][:, back])
            if clf.classes_.tolist() != fitted:
                raise ConfigError(f"the adapters in {self.diffusion.folder(shots, seed)} hold other classes than "
                                  "this split; remove the folder or pass another --adapters-dir")
            if auto and clf.recipe_.score.weighting != "auto":  # diti-auto beside a recipe with its own weighting
                self.diffusion.choose(clf, cal, None if masks is None else masks["cal"][:, back])
            entry = dict(cached or {})
            for split, data in (("test", self.test), ("cal", cal), ("val", va)):
                if (split == "val" and not with_val) or split in entry:
                    continue
                cand = None if masks is None else masks[split][:, back]
                # chunks land in report/scores/ as they finish: an interrupted pass continues there
                result = clf.score_images(ImageSequence(data), candidates=cand, cache_dir=self.report / "scores")
                entry[split] = in_class_order(result.logits, fitted, self.test.classnames)
                if split == "test":
                    entry["calls"] = float(result.unet_calls.mean())
            cost = {"unet_calls_per_image": entry["calls"], "encoder_forwards_per_image": 1 if masks else 0}
            info = {"cost": cost, "adapters": self.diffusion.folder(shots, seed).name}
            if recall:
                info["prefilter"] = recall
            choice = clf.score_choice_ if clf.recipe_.score.weighting == "auto" else None
            if choice:  # what auto chose, on what, and its validation pass as a share of this test pass
                cost.update(auto_unet_calls=choice["unet_calls"],
                            auto_share_of_test_pass=round(extra_call_share(choice, entry["calls"], len(self.test)), 4))
                info["score_choice"] = choice
            entry["info"] = info
            self._diti[key] = entry
        return self._diti[key]

    def _ensemble(self, partner: str, shots, seed, tr, va, cal):
        """Standardised DiTi-SD logits plus ``w`` x the partner's (first encoder), ``w`` chosen on validation."""
        diti = self._diti_logits(shots, seed, tr, va, cal, with_val=True)
        other = self.frozen(partner, 0, (shots, seed), tr, va, cal)
        val_labels = np.array(va.labels)
        best = (0.0, -1.0)
        for w in np.linspace(0, 5, 51):
            score = metric_score((standardise(diti["val"]) + w * standardise(other["val"])).argmax(1), val_labels,
                                 self.metric)
            if score > best[1]:
                best = (float(w), score)

        def mix(split):
            return standardise(diti[split]) + best[0] * standardise(other[split])

        cost = {**diti["info"]["cost"], "encoder_forwards_per_image": 1}
        return mix("test"), mix("cal"), {"weight": best[0], "val_score": best[1], "partner": partner, "cost": cost}

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
                for method, encoder in self.jobs():
                    name = re.sub(r"[^A-Za-z0-9@+._-]+", "_", self.label(method, encoder)).strip("_")
                    path = runs_dir / f"{name}-{shots}shot-seed{seed}-{self.run_key(method, encoder)}.json"
                    done = _read_run(path)
                    if done is not None:
                        runs.append(done)
                        continue
                    result = self.run_method(method, encoder, shots, seed, tr, va, cal)
                    if is_main():
                        if method == "diti":  # the adapter set's model card shows what it scored
                            write_model_card(self.diffusion.folder(shots, seed), evaluation={
                                "dataset": self.recipe.name, "n_test": result["n_test"], "metric": self.metric,
                                "score": result["score"], **result["cost"]})
                        # last: a rerun reads the run back from it and writes nothing more for it
                        atomic_write(path, lambda tmp, result=result: tmp.write_text(json.dumps(result)))
                    runs.append(result)
                    if self.cfg.progress and is_main():
                        print(f"{result['method']} {shots}-shot seed {seed}: {self.metric} {result['score']:.4f}",
                              flush=True)
        report = self.write_report(runs) if is_main() else {}
        barrier()
        return report

    def write_report(self, runs: list[dict]) -> dict:
        return write_eval_report(self.report, runs, config=asdict(self.cfg), recipe=self.recipe, test=self.test,
                                 validation=self._protocol_text(), speed=self.cfg.speed)

    def _protocol_text(self) -> str:
        if self.cfg.val_protocol == "full":
            return f"the full official validation split ({len(self.val)} images), Tip-Adapter's protocol"
        return "CoOp's protocol, min(k, 4) images per class from the k-shot split's validation draw"
