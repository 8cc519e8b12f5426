"""The demo: the seed's claim on the synthetic fine-grained benchmark, on the shipped tiny base model.

Per seed: sample a k-shot train split (background colour follows the class), fit class adapters with
the recommended recipe (its training window, prior preservation) and with the training window widened
to all of [0, 1000), then score decorrelated and correlated test splits on one shared set of (t, noise)
pairs (``demo_scoring``), so that each adapter set under each scoring window or weight is read off the
same UNet calls, with the same number of pairs in every window. Also read: the base model alone as a
zero-shot classifier (what it knows before any adapter), nearest-prototype baselines, linear probes on pixels
and on VAE latents (their regularisation chosen on validation), and, on the
decorrelated split, how each row does on the images whose background belongs to another class.
Every comparison is a paired difference on the same images, with a hierarchical bootstrap interval
(seeds, then images within seeds).

``--full`` reads the sealed test streams (seeds 401-405): no tuning reads them, and the README's table is
such a run, with the commit it ran at (docs/benchmarks.md, "Sealed test protocol").
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...baselines.probe import fit_probe
from ...errors import ConfigError
from ...metrics import calibration_report, standardise
from ...plotting import plot_reliability
from ...recipes import load_recipe
from ...scoring.engine import class_contexts, dense_errors
from ...scoring.replay import weighted_mean
from ...stats import hierarchical_difference, mean_sd
from .data import SyntheticSpec
from .report import BANDS, plot_bands, plot_examples, render_markdown, save_samples
from .scoring import (
    SCORINGS,
    background_classes,
    disagreement,
    first_pairs,
    prototype_logits,
    scoring_weights,
    window_accuracy,
    window_of,
    zero_shot_logits,
)
from .streams import SyntheticSeed

TEST_SPLITS = ("decorrelated", "correlated")
REFERENCE_CONFIGURATION = "reference configuration: trained over (0, 1000), TiF weight"
REFERENCE_STYLE = "reference-style: trained and scored over (0, 1000)"
PROTOTYPES = ("nearest prototype, pixels", "nearest prototype, VAE latents")
PROBES = ("linear probe, pixels", "linear probe, VAE latents")
# the sealed test streams of `--full`: never read by tuning (eval/tune_synthetic.py refuses them)
SEALED_SEEDS = (401, 402, 403, 404, 405)
# The adapters trained over all t (the reference-style rivals) get their own settings, chosen on
# validation as the recipe's were (eval/tune_synthetic.py --seeds 11-20 --against fit.t_max=1000): lr 1e-3
# beat the recipe's 3e-3 at all t by +0.048 (2.0 SE); text lr 1e-3 (+0.030 at all t, 1.2 SE) and 240 steps did not.
WIDE_OVERRIDES = ("fit.lr=1e-3",)
# 200 test images per split and seed; the zero-shot row on every pair of the window
FULL = {"seeds": list(SEALED_SEEDS), "test_per_class": 40, "zero_shot_pairs": None}


@dataclass
class DemoConfig:
    model: str = "builtin:tiny-base"
    recipe: str = "synthetic"  # its scoring window is the recommended one; large t is the rest above it
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    shots: int = 8
    test_per_class: int = 8
    pairs_per_window: int = 12  # (t, noise) pairs in each scoring window, all t and TiF's weight included
    # the all-t adapters' own settings (chosen for the synthetic recipe; [] keeps the recipe's)
    wide_overrides: list[str] = field(default_factory=lambda: list(WIDE_OVERRIDES))
    # the window's first pairs the zero-shot row reads (None: all). It scores 25 caption prompts per image,
    # 5x an adapter set's calls per pair, so the short run reads half to stay within its few minutes
    zero_shot_pairs: int | None = 6
    steps: int | None = None  # fit steps per class (None: the recipe's)
    samples_per_class: int = 4
    val_per_class: int = 4  # the validation stream each method's probability temperature is chosen on
    device: str = "cpu"
    full: bool = False  # the README's run: the sealed seeds and FULL test images

    def __post_init__(self):
        if self.full:
            self.seeds, self.test_per_class = list(FULL["seeds"]), FULL["test_per_class"]
            self.zero_shot_pairs = FULL["zero_shot_pairs"]


def method_names(window: tuple[int, int]) -> dict[tuple[str, str], str]:
    """Each (adapter set, scoring) row's name: "band" adapters are the recipe's, "all" ones were trained
    over all of [0, 1000)."""
    w = tuple(window)
    band = {"window": f"DiTi-SD, window {w} (recommended)",
            "large t": f"DiTi-SD, same adapters, large t {(w[1], 1000)}",
            "small t": f"DiTi-SD, same adapters, small t {(0, w[0])}",
            "all t": "DiTi-SD, same adapters, all t (0, 1000)",
            "TiF weight": "DiTi-SD, same adapters, TiF weight"}
    wide = {"all t": REFERENCE_STYLE, "TiF weight": REFERENCE_CONFIGURATION,
            "window": f"trained over (0, 1000), scored over the window {w}",
            "large t": f"trained over (0, 1000), scored over large t {(w[1], 1000)}",
            "small t": f"trained over (0, 1000), scored over small t {(0, w[0])}"}
    return {**{("band", s): n for s, n in band.items()}, **{("all", s): n for s, n in wide.items()}}


def zero_shot_name(window) -> str:
    return f"the base alone, zero-shot (its caption words), window {tuple(window)}"


def code_version() -> dict:
    """The commit the run is made at (and whether the tree had changes), where the package is a checkout."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        from ...version import __version__

        return {"commit": None, "version": __version__}


@dataclass
class _SeedScorer:
    """One seed's two adapter sets (the recipe's band, all t) and the pairs they are scored on."""

    sets: dict  # "band" | "all" -> (classifier, contexts)
    t: torch.Tensor
    noise: torch.Tensor
    weights: dict  # scoring -> per-pair weight
    names: dict
    zero_shot: str
    train_pix: torch.Tensor
    train_lat: torch.Tensor
    train_y: np.ndarray
    label_of: dict
    spec: SyntheticSpec
    progress: bool
    probes: dict = field(default_factory=dict)

    def fit_probes(self, val) -> None:
        """What a user would fit on the same images: a logistic-regression probe on pixels and on the VAE's
        latents, its regularisation chosen on ``val`` (the stream the temperatures are chosen on)."""
        val_y = np.array([self.label_of[self.spec.classnames[i]] for i in val.labels])
        val_x = (torch.stack(val.images), self.sets["band"][0].encode(val.images))
        for name, train_x, x in zip(PROBES, (self.train_pix, self.train_lat), val_x):
            self.probes[name] = fit_probe(train_x.flatten(1), self.train_y, x.flatten(1), val_y)

    def logits(self, data):
        """Every row's logits on ``data`` (one dense pass per adapter set), the labels, and each set's errors."""
        clf = self.sets["band"][0]
        latents = clf.encode(data.images)
        errors = {key: dense_errors(c.backbone_, c.adapters_, latents, ctx, self.t, self.noise, progress=self.progress)
                  for key, (c, ctx) in self.sets.items()}
        logits = {self.names[(key, s)]: -weighted_mean(err, self.weights[s])
                  for key, err in errors.items() for s in SCORINGS if s in self.weights and (key, s) in self.names}
        logits[self.zero_shot] = zero_shot_logits(clf.backbone_, latents, self.t, self.noise, self.weights["zero-shot"],
                                                  self.spec, self.label_of)
        logits[PROTOTYPES[0]] = prototype_logits(self.train_pix, self.train_y, torch.stack(data.images))
        logits[PROTOTYPES[1]] = prototype_logits(self.train_lat, self.train_y, latents)
        for name, x in zip(PROBES, (torch.stack(data.images), latents)):
            if name in self.probes:
                logits[name] = self.probes[name].logits(x.flatten(1))
        return logits, np.array([self.label_of[self.spec.classnames[i]] for i in data.labels]), errors


def _band_means(per_seed: list[list[float]]) -> list[float | None]:
    """Mean over seeds per band; None where no seed had a pair in the band."""
    arr = np.array(per_seed, dtype=float)
    seen = ~np.isnan(arr)
    means = np.nansum(arr, 0) / np.maximum(seen.sum(0), 1)
    return [float(m) if n else None for m, n in zip(means, seen.sum(0))]


def run_demo(cfg: DemoConfig, out: str | Path = "reports/demo", progress: bool = True) -> dict:
    start = time.time()
    code = code_version()  # read before the work: the tree may change while a long run goes on
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(cfg.recipe, {"model": cfg.model})
    wide_recipe = load_recipe(recipe, cfg.wide_overrides)  # a bad override fails before any fit
    window = (recipe.score.t_min, recipe.score.t_max)
    if window[1] >= 1000:
        raise ConfigError(f"the demo compares the recipe's scoring window with large t above it; recipe "
                          f"{cfg.recipe!r} scores up to t = {window[1]}: set score.t_max below 1000")
    scoring_weights(window, cfg.pairs_per_window)  # a bad pair count fails before any fit
    if cfg.zero_shot_pairs is not None and not 1 <= cfg.zero_shot_pairs <= cfg.pairs_per_window:
        raise ConfigError(f"zero_shot_pairs = {cfg.zero_shot_pairs}: it must lie in [1, pairs_per_window = "
                          f"{cfg.pairs_per_window}], or be None for all of the window's pairs")
    names = method_names(window)
    recommended = names[("band", "window")]
    correct: dict[str, dict[str, list[np.ndarray]]] = {}  # method -> split -> per seed, per image
    probs: dict[str, dict[str, list[dict]]] = {}  # method -> split -> per seed, its calibration report
    conflicts: dict[str, list[dict]] = {}  # method -> per seed, on decorrelated images with another class's background
    bands: dict[str, list[list[float]]] = {}
    train_acc, d_values, examples = [], [], None
    for seed in tqdm(cfg.seeds, desc="seeds", disable=not progress):
        run = SyntheticSeed.for_recipe(recipe, seed, cfg.shots)
        spec, train = run.spec, run.train
        tests = {name: run.stream(name, cfg.test_per_class) for name in TEST_SPLITS}
        labels = run.names(train)
        clf = run.fit(recipe, device=cfg.device, steps=cfg.steps)
        wide = run.fit(wide_recipe, device=cfg.device, steps=cfg.steps, train_window=(0, 1000))
        # TiF's per-t weight from this seed's train latents (the same for both fits)
        d_values.append(clf.tif_d_)
        t, noise, weights = scoring_weights(window, cfg.pairs_per_window, clf.tif_d_, clf.backbone_.latent_shape)
        weights["zero-shot"] = first_pairs(weights["window"], cfg.zero_shot_pairs)
        t_np = t.numpy()
        # the band plot reads every pair, each weighted by its stratum's width
        width = sum(weights.get(s, 0.0) for s in ("small t", "window", "large t"))
        label_of = {name: i for i, name in enumerate(clf.classes_.tolist())}
        train_lat = clf.encode(train.images)
        train_y = np.array([label_of[n] for n in labels])
        sets = {key: (c, class_contexts(c.backbone_, c.adapters_, c.prompts_))
                for key, c in (("band", clf), ("all", wide))}
        err_train = dense_errors(clf.backbone_, clf.adapters_, train_lat, sets["band"][1], t, noise)
        train_acc.append(float((weighted_mean(err_train, weights["window"]).argmin(1) == train_y).mean()))

        scorer = _SeedScorer(sets, t, noise, weights, names, zero_shot_name(window), torch.stack(train.images),
                             train_lat, train_y, label_of, spec, progress)
        # each method's softmax temperature is chosen on a validation stream (CoOp's size, 4 per class)
        val = run.stream("val", cfg.val_per_class)
        scorer.fit_probes(val)
        val_logits, val_y, _ = scorer.logits(val)
        for split, data in tests.items():
            logits, y, errors = scorer.logits(data)
            background = background_classes(data.images, spec, label_of) if split == "decorrelated" else None
            for method, scores in logits.items():
                predicted = scores.argmax(1)
                correct.setdefault(method, {}).setdefault(split, []).append(predicted == y)
                probs.setdefault(method, {}).setdefault(split, []).append(
                    calibration_report(standardise(val_logits[method]), val_y, standardise(scores), y))
                if background is not None:
                    conflicts.setdefault(method, []).append(disagreement(predicted, y, background))
            for key, tag in (("band", "recommended adapters"), ("all", "adapters trained over all t")):
                bands.setdefault(f"{tag}|{split}", []).append(
                    [window_accuracy(errors[key], t_np, width, y, band) for band in BANDS])
            if examples is None and split == "decorrelated":
                predicted = logits[recommended].argmax(1)
                examples = (data, clf.classes_[predicted], [clf.classes_[i] for i in y], window)
        if seed == cfg.seeds[0]:
            samples, sample_labels = clf.sample(n_per_class=cfg.samples_per_class, steps=20, guidance=1.0, seed=seed)
            save_samples(samples, sample_labels, cfg.samples_per_class, out / "adapter_samples.png")
    report = _summarise(cfg, recipe, window, names, correct, probs, conflicts)
    report["code"] = code
    report.update({
        "train_accuracy": {"mean": float(np.mean(train_acc)), "per_seed": train_acc}, "tif_d": d_values,
        "bands": {"edges": [list(b) for b in BANDS], "accuracy": {k: _band_means(v) for k, v in bands.items()}},
        "seconds": round(time.time() - start, 1),
        "peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "torch_threads": torch.get_num_threads(),
    })
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "README.md").write_text(render_markdown(report))
    plot_bands(report, out / "accuracy_by_band.png")
    pooled = {method: ({k: np.sum([r["bins"][k] for r in by["decorrelated"]], 0) for k in ("count", "confidence",
                                                                                      "correct")},
                       float(np.mean([r["ece"] for r in by["decorrelated"]]))) for method, by in probs.items()}
    plot_reliability(pooled, "decorrelated test images, all seeds: reliability", out / "reliability.png")
    if examples is not None:
        plot_examples(*examples, out / "test_predictions.png")
    return report


def _summarise(cfg, recipe, window, names, correct, probs, conflicts) -> dict:
    """The report's numbers: per row and split, accuracy (mean and sd over seeds, ddof = 1), NLL and ECE;
    the paired comparisons; the training x scoring grid; the rows on images the background misleads."""
    recommended = names[("band", "window")]
    summary = {}
    for method, by in correct.items():
        summary[method] = {}
        for split, v in by.items():
            mean, sd = mean_sd([h.mean() for h in v])
            summary[method][split] = {"mean": mean, "std": sd, "per_seed": [float(h.mean()) for h in v],
                                      **{k: float(np.mean([r[k] for r in probs[method][split]]))
                                         for k in ("nll", "ece")}}
    rivals = (REFERENCE_STYLE, names[("band", "large t")], *PROTOTYPES)
    others = [m for m in correct if m != recommended]
    comparisons = {rival: {split: hierarchical_difference(correct[recommended][split], correct[rival][split])
                           for split in TEST_SPLITS} for rival in others}
    grid_contrasts = {}
    for key, label in (("band", "adapters trained over the recipe's band"), ("all", "adapters trained over all t")):
        for other in ("all t", "large t", "TiF weight"):
            a, b = names.get((key, "window")), names.get((key, other))
            if a in correct and b in correct:
                grid_contrasts[f"{label}: the window minus {other}"] = hierarchical_difference(
                    correct[a]["decorrelated"], correct[b]["decorrelated"])
    for s in SCORINGS:
        a, b = names.get(("band", s)), names.get(("all", s))
        if a in correct and b in correct:
            grid_contrasts[f"scored by {s}: trained over the band minus trained over all t"] = hierarchical_difference(
                correct[a]["decorrelated"], correct[b]["decorrelated"])
    misled = {}
    for method, per_seed in conflicts.items():
        n = sum(r["images"] for r in per_seed)
        misled[method] = {"images": n, "accuracy": sum(r["correct"] for r in per_seed) / max(n, 1),
                          "to_background": sum(r["to_background"] for r in per_seed) / max(n, 1)}
    grid = {split: {key: {s: summary[names[(key, s)]][split]["mean"]
                          for s in SCORINGS if names.get((key, s)) in summary}
                    for key in ("band", "all")} for split in TEST_SPLITS}
    return {
        "config": asdict(cfg), "sealed": list(cfg.seeds) == list(SEALED_SEEDS),
        "recipe": recipe.to_dict(), "results": summary, "comparisons": comparisons, "recommended": recommended,
        "window": list(window), "targets_against": list(rivals), "zero_shot": zero_shot_name(window),
        "grid": {"scorings": {s: window_of(s, window) for s in SCORINGS}, "accuracy": grid,
                 "contrasts": grid_contrasts, "pairs_per_window": cfg.pairs_per_window},
        "background_disagrees": misled, "n_classes": len(SyntheticSpec().classnames),
        "chance": 1 / len(SyntheticSpec().classnames),
    }
