"""The demo: the seed's claim on the synthetic fine-grained benchmark, on the shipped tiny base model.

Per seed: sample a k-shot train split (background colour follows the class), fit class adapters with
the recommended recipe (its training window, prior preservation) and with the reference-style window
(all of [0, 1000)), then score decorrelated and correlated test splits on one shared set of (t, noise)
pairs, drawn below, inside and above the recipe's scoring window, so that every scoring window and
per-t weight is read off the same UNet calls.
Baselines: nearest class prototype on pixels and on VAE latents. Every comparison is reported as a
paired difference on the same images and seeds, with a bootstrap 95 % interval.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .calibration import calibration_report
from .classifier import DiTiFewShotClassifier
from .data.synthetic import SyntheticSpec, make_split
from .demo_report import BANDS, plot_bands, plot_examples, render_markdown, save_samples
from .errors import ConfigError
from .plotting import plot_reliability
from .recipes import load_recipe
from .scoring import class_contexts, dense_errors
from .timesteps import scoring_pairs, tif_weights

TEST_SPLITS = ("decorrelated", "correlated")
REFERENCE_CONFIGURATION = "reference configuration: trained over (0, 1000), TiF weight"
REFERENCE_STYLE = "reference-style: trained and scored over (0, 1000)"
PROTOTYPES = ("nearest prototype, pixels", "nearest prototype, VAE latents")
FULL = {"seeds": [1, 2, 3, 4, 5], "test_per_class": 40}  # `--full`: 200 test images per split and seed


@dataclass
class DemoConfig:
    model: str = "builtin:tiny-base"
    recipe: str = "synthetic"  # its scoring window is the recommended one; large t is the rest above it
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    shots: int = 8
    test_per_class: int = 8
    pairs: list[int] = field(default_factory=lambda: [8, 12, 8])  # (t, noise) pairs below, in, above the window
    steps: int | None = None  # fit steps per class (None: the recipe's)
    samples_per_class: int = 4
    val_per_class: int = 4  # the validation stream each method's probability temperature is chosen on
    device: str = "cpu"
    full: bool = False  # the README's run: FULL seeds and test images (longer; says so in its report)

    def __post_init__(self):
        if self.full:
            self.seeds, self.test_per_class = list(FULL["seeds"]), FULL["test_per_class"]


def method_names(window: tuple[int, int]) -> tuple[str, str, tuple[str, ...]]:
    """The recommended configuration's name, the large-t one's, and the rivals the targets name (the
    claim says each is worse). The reference configuration is compared too, as information: the claim
    says nothing of TiF's weight against a window."""
    recommended = f"DiTi-SD, window {tuple(window)} (recommended)"
    large = f"DiTi-SD, same adapters, large t {(window[1], 1000)}"
    return recommended, large, (REFERENCE_STYLE, large, *PROTOTYPES)


def stratified_pairs(edges, counts, latent_shape, seed: int = 0):
    """``counts[i]`` pairs in each stratum [edges[i], edges[i + 1]) (empty strata skipped); each pair
    carries the weight that makes a window's mean uniform in t across strata."""
    ts, noises, weights = [], [], []
    for i, (lo, hi, n) in enumerate(zip(edges[:-1], edges[1:], counts)):
        if hi > lo and n > 0:
            t, noise = scoring_pairs(n, lo, hi, latent_shape, seed + i)
            ts.append(t)
            noises.append(noise)
            weights.append(torch.full((n,), (hi - lo) / n))
    return torch.cat(ts), torch.cat(noises), torch.cat(weights).numpy()


def window_logits(errors: np.ndarray, t: np.ndarray, weights: np.ndarray,
                  window: tuple[int, int]) -> np.ndarray | None:
    """Per image and class, minus the weighted mean error over the pairs in ``window`` (None: no pairs)."""
    keep = (t >= window[0]) & (t < window[1]) & (weights > 0)
    if not keep.any():
        return None
    return -(errors[:, :, keep] * weights[keep]).sum(2) / weights[keep].sum()


def window_predictions(errors: np.ndarray, t: np.ndarray, weights: np.ndarray,
                       window: tuple[int, int]) -> np.ndarray | None:
    """Per image, the class with the lowest weighted mean error over the pairs in ``window``."""
    logits = window_logits(errors, t, weights, window)
    return None if logits is None else logits.argmax(1)


def window_correct(errors: np.ndarray, t: np.ndarray, weights: np.ndarray, labels: np.ndarray,
                   window: tuple[int, int]) -> np.ndarray | None:
    """Per image, whether its weighted mean error over the pairs in ``window`` is lowest for its class."""
    predicted = window_predictions(errors, t, weights, window)
    return None if predicted is None else predicted == labels


def window_accuracy(errors: np.ndarray, t: np.ndarray, weights: np.ndarray, labels: np.ndarray,
                    window: tuple[int, int]) -> float:
    """Accuracy when each image is scored by its weighted mean error over the pairs in ``window``."""
    correct = window_correct(errors, t, weights, labels, window)
    return float("nan") if correct is None else float(correct.mean())


def _prototype_logits(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor) -> np.ndarray:
    """Minus the distance to each class's mean train image (classes 0..C-1, all present in train_y)."""
    protos = torch.stack([train_x[torch.from_numpy(train_y == c)].mean(0) for c in np.unique(train_y)]).flatten(1)
    return -torch.cdist(test_x.flatten(1).float(), protos.float()).numpy()


@dataclass
class _SeedScorer:
    """One seed's two adapter sets (recommended, reference-style) and the pairs they are scored on."""

    clf: DiTiFewShotClassifier
    ref: DiTiFewShotClassifier
    contexts: torch.Tensor
    ref_contexts: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    weights: np.ndarray
    tif: np.ndarray
    window: tuple[int, int]
    recommended: str
    large: str
    train_pix: torch.Tensor
    train_lat: torch.Tensor
    train_y: np.ndarray
    label_of: dict
    spec: SyntheticSpec
    progress: bool

    def logits(self, data):
        """Every method's logits on ``data`` (one dense pass per adapter set), the labels, and both sets'
        errors."""
        t_np, w, window = self.t.numpy(), self.weights, self.window
        latents = self.clf.encode(data.images)
        err_a = dense_errors(self.clf.backbone_, self.clf.adapters_, latents, self.contexts, self.t, self.noise,
                             progress=self.progress)
        err_b = dense_errors(self.ref.backbone_, self.ref.adapters_, latents, self.ref_contexts, self.t, self.noise,
                             progress=self.progress)
        logits = {
            self.recommended: window_logits(err_a, t_np, w, window),
            self.large: window_logits(err_a, t_np, w, (window[1], 1000)),
            "DiTi-SD, same adapters, all t (0, 1000)": window_logits(err_a, t_np, w, (0, 1000)),
            "DiTi-SD, same adapters, TiF weight": window_logits(err_a, t_np, self.tif, (0, 1000)),
            REFERENCE_STYLE: window_logits(err_b, t_np, w, (0, 1000)),
            REFERENCE_CONFIGURATION: window_logits(err_b, t_np, self.tif, (0, 1000)),
            PROTOTYPES[0]: _prototype_logits(self.train_pix, self.train_y, torch.stack(data.images)),
            PROTOTYPES[1]: _prototype_logits(self.train_lat, self.train_y, latents),
        }
        return logits, np.array([self.label_of[self.spec.classnames[i]] for i in data.labels]), err_a, err_b


def _zscore(logits: np.ndarray) -> np.ndarray:
    """Per image, as predict_proba standardises: one temperature then fits every image."""
    return (logits - logits.mean(1, keepdims=True)) / (logits.std(1, keepdims=True) + 1e-12)


def _band_means(per_seed: list[list[float]]) -> list[float | None]:
    """Mean over seeds per band; None where no seed had a pair in the band."""
    arr = np.array(per_seed, dtype=float)
    seen = ~np.isnan(arr)
    means = np.nansum(arr, 0) / np.maximum(seen.sum(0), 1)
    return [float(m) if n else None for m, n in zip(means, seen.sum(0))]


def paired_difference(a: list[np.ndarray], b: list[np.ndarray], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over every (seed, image), per-image correctness of two methods on the same images,
    with a 95 % bootstrap interval that resamples images within each seed."""
    diffs = [x.astype(float) - y.astype(float) for x, y in zip(a, b)]
    rng = np.random.default_rng(seed)
    total = sum(len(d) for d in diffs)
    boot = np.zeros(n_boot)
    for d in diffs:
        boot += d[rng.integers(0, len(d), size=(n_boot, len(d)))].sum(1)
    boot /= total
    mean = float(np.concatenate(diffs).mean())
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"mean": mean, "low": float(low), "high": float(high), "n": total}


def run_demo(cfg: DemoConfig, out: str | Path = "reports/demo", progress: bool = True) -> dict:
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(cfg.recipe, {"model": cfg.model})
    window = (recipe.score.t_min, recipe.score.t_max)
    if window[1] >= 1000:
        raise ConfigError(f"the demo compares the recipe's scoring window with large t above it; recipe "
                          f"{cfg.recipe!r} scores up to t = {window[1]}: set score.t_max below 1000")
    recommended, large, rivals = method_names(window)
    correct: dict[str, dict[str, list[np.ndarray]]] = {}  # method -> split -> per seed, per image
    probs: dict[str, dict[str, list[dict]]] = {}  # method -> split -> per seed, its calibration report
    bands: dict[str, list[list[float]]] = {}
    train_acc, d_values, examples = [], [], None
    for seed in tqdm(cfg.seeds, desc="seeds", disable=not progress):
        clf = DiTiFewShotClassifier(recipe=recipe, steps=cfg.steps, random_state=seed, device=cfg.device,
                                    progress=progress)
        spec = SyntheticSpec(size=clf._load_backbone(recipe).resolution)
        train = make_split(spec, "train", cfg.shots, seed)
        tests = {name: make_split(spec, name, cfg.test_per_class, 1000 + seed) for name in TEST_SPLITS}
        names = [spec.classnames[i] for i in train.labels]
        # generic images of the domain for prior preservation (the role "a photo of an aircraft" plays for
        # SD); the tiny base's own samples are too crude for it (see eval/tune_synthetic.py)
        prior = make_split(spec, "generic", max(1, recipe.fit.prior_images // spec.n_classes), 7000 + seed).images
        clf.fit(train.images, names, prior_images=prior)
        backbone = clf.backbone_
        t, noise, weights = stratified_pairs([0, *window, 1000], cfg.pairs, backbone.latent_shape)
        t_np = t.numpy()
        ref = DiTiFewShotClassifier(recipe=recipe, steps=cfg.steps, train_window=(0, 1000), random_state=seed,
                                    device=cfg.device, progress=progress).fit(train.images, names, prior_images=prior)
        # TiF's per-t weight from this seed's train latents (the same for both fits)
        d_values.append(clf.tif_d_)
        tif = weights * tif_weights(clf.tif_d_)[t_np]
        label_of = {name: i for i, name in enumerate(clf.classes_.tolist())}
        train_lat = clf.encode(train.images)
        train_pix = torch.stack(train.images)
        train_y = np.array([label_of[n] for n in names])
        contexts = class_contexts(backbone, clf.adapters_, clf.prompts_)
        ref_contexts = class_contexts(ref.backbone_, ref.adapters_, ref.prompts_)
        err_train = dense_errors(backbone, clf.adapters_, train_lat, contexts, t, noise, progress=progress)
        train_acc.append(window_accuracy(err_train, t_np, weights, train_y, window))

        scorer = _SeedScorer(clf, ref, contexts, ref_contexts, t, noise, weights, tif, window, recommended, large,
                             train_pix, train_lat, train_y, label_of, spec, progress)

        # each method's softmax temperature is chosen on a validation stream (CoOp's size, 4 per class)
        val_logits, val_y, _, _ = scorer.logits(make_split(spec, "val", cfg.val_per_class, 5000 + seed))
        for split, data in tests.items():
            logits, y, err_a, err_b = scorer.logits(data)
            for method, scores in logits.items():
                correct.setdefault(method, {}).setdefault(split, []).append(scores.argmax(1) == y)
                probs.setdefault(method, {}).setdefault(split, []).append(
                    calibration_report(_zscore(val_logits[method]), val_y, _zscore(scores), y))
            for tag, err in (("recommended adapters", err_a), ("reference-style adapters", err_b)):
                bands.setdefault(f"{tag}|{split}", []).append(
                    [window_accuracy(err, t_np, weights, y, band) for band in BANDS])
            if examples is None and split == "decorrelated":
                predicted = window_predictions(err_a, t_np, weights, window)
                examples = (data, clf.classes_[predicted], [clf.classes_[i] for i in y], window)
        if seed == cfg.seeds[0]:
            samples, sample_labels = clf.sample(n_per_class=cfg.samples_per_class, steps=20, guidance=1.0, seed=seed)
            save_samples(samples, sample_labels, cfg.samples_per_class, out / "adapter_samples.png")
    summary = {
        method: {split: {"mean": float(np.mean([h.mean() for h in v])), "std": float(np.std([h.mean() for h in v])),
                         "per_seed": [float(h.mean()) for h in v],
                         **{k: float(np.mean([r[k] for r in probs[method][split]])) for k in ("nll", "ece")}}
                 for split, v in by.items()}
        for method, by in correct.items()
    }
    comparisons = {rival: {split: paired_difference(correct[recommended][split], correct[rival][split])
                           for split in TEST_SPLITS} for rival in (*rivals, REFERENCE_CONFIGURATION)}
    report = {
        "config": asdict(cfg), "recipe": recipe.to_dict(), "results": summary, "comparisons": comparisons,
        "recommended": recommended, "window": list(window), "targets_against": list(rivals), "train_accuracy": {"mean": float(np.mean(train_acc)), "per_seed": train_acc},
        "tif_d": d_values, "bands": {"edges": [list(b) for b in BANDS],
                                     "accuracy": {k: _band_means(v) for k, v in bands.items()}},
        "chance": 1 / len(SyntheticSpec().classnames),
        "seconds": round(time.time() - start, 1),
        "peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "torch_threads": torch.get_num_threads(),
    }
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
