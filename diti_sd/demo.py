"""The demo: the seed's claim on the synthetic fine-grained benchmark, on the shipped tiny base model.

Per seed: sample a k-shot train split (background colour follows the class), fit class adapters with
the recommended recipe (small training window, prior preservation) and with the reference-style
window (all of [0, 1000)), then score decorrelated and correlated test splits on one shared set of
(t, noise) pairs, so that every scoring window is read off the same UNet calls. Baselines: nearest
class prototype on pixels and on VAE latents.
"""

from __future__ import annotations

import json
import resource
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .classifier import DiTiFewShotClassifier
from .data.synthetic import SyntheticSpec, make_split
from .recipes import load_recipe
from .scoring import class_contexts, dense_errors
from .timesteps import scoring_pairs

TEST_SPLITS = ("decorrelated", "correlated")


@dataclass
class DemoConfig:
    model: str = "builtin:tiny-base"
    recipe: str = "synthetic"
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    shots: int = 8
    test_per_class: int = 8
    small_window: list[int] = field(default_factory=lambda: [0, 200])  # the recipe's scoring window
    large_window: list[int] = field(default_factory=lambda: [300, 1000])
    pairs_small: int = 12  # (t, noise) pairs in [0, 200) ...
    pairs_rest: int = 12  # ... and in [200, 1000)
    steps: int | None = None  # fit steps per class (None: the recipe's)
    samples_per_class: int = 4


def _pairs(cfg: DemoConfig, latent_shape, seed: int = 0):
    """Two strata of pairs; each pair carries the weight that makes a window's mean uniform in t."""
    lo, mid = cfg.small_window
    t1, n1 = scoring_pairs(cfg.pairs_small, lo, mid, latent_shape, seed)
    t2, n2 = scoring_pairs(cfg.pairs_rest, mid, 1000, latent_shape, seed + 1)
    weights = torch.cat([torch.full((cfg.pairs_small,), (mid - lo) / cfg.pairs_small),
                         torch.full((cfg.pairs_rest,), (1000 - mid) / cfg.pairs_rest)])
    return torch.cat([t1, t2]), torch.cat([n1, n2]), weights.numpy()


def window_accuracy(errors: np.ndarray, t: np.ndarray, weights: np.ndarray, labels: np.ndarray,
                    window: tuple[int, int]) -> float:
    """Accuracy when each image is scored by its weighted mean error over the pairs in ``window``."""
    keep = (t >= window[0]) & (t < window[1])
    if not keep.any():
        return float("nan")
    mean = (errors[:, :, keep] * weights[keep]).sum(2) / weights[keep].sum()
    return float((mean.argmin(1) == labels).mean())


def _prototype_accuracy(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray) -> float:
    classes = np.unique(train_y)
    protos = torch.stack([train_x[torch.from_numpy(train_y == c)].mean(0) for c in classes]).flatten(1)
    dist = torch.cdist(test_x.flatten(1).float(), protos.float())
    return float((classes[dist.argmin(1).numpy()] == test_y).mean())


def run_demo(cfg: DemoConfig, out: str | Path = "reports/demo", progress: bool = True) -> dict:
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(cfg.recipe, {"model": cfg.model})
    rows: dict[str, dict[str, list[float]]] = {}
    sweep: dict[str, dict[str, list]] = {}
    examples = None
    for seed in tqdm(cfg.seeds, desc="seeds", disable=not progress):
        clf = DiTiFewShotClassifier(recipe=recipe, steps=cfg.steps, random_state=seed, device="cpu",
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
        t, noise, weights = _pairs(cfg, backbone.latent_shape)
        t_np = t.numpy()
        ref = DiTiFewShotClassifier(recipe=recipe, steps=cfg.steps, train_window=(0, 1000), random_state=seed,
                                    device="cpu", progress=progress).fit(train.images, names, prior_images=prior)
        label_of = {name: i for i, name in enumerate(clf.classes_.tolist())}
        train_lat = clf.encode(train.images)
        train_pix = torch.stack(train.images)
        train_y = np.array([label_of[n] for n in names])
        for split, data in tests.items():
            y = np.array([label_of[spec.classnames[i]] for i in data.labels])
            latents = clf.encode(data.images)
            err_a = dense_errors(backbone, clf.adapters_, latents, class_contexts(backbone, clf.adapters_, clf.prompts_),
                                 t, noise, progress=progress)
            err_b = dense_errors(ref.backbone_, ref.adapters_, latents,
                                 class_contexts(ref.backbone_, ref.adapters_, ref.prompts_), t, noise, progress=progress)
            results = {
                f"DiTi-SD, small-t window {tuple(cfg.small_window)} (recommended)":
                    window_accuracy(err_a, t_np, weights, y, cfg.small_window),
                f"DiTi-SD, same adapters, large t {tuple(cfg.large_window)}":
                    window_accuracy(err_a, t_np, weights, y, cfg.large_window),
                "DiTi-SD, same adapters, all t (0, 1000)": window_accuracy(err_a, t_np, weights, y, (0, 1000)),
                "reference-style: trained and scored over (0, 1000)": window_accuracy(err_b, t_np, weights, y, (0, 1000)),
                "nearest prototype, pixels": _prototype_accuracy(train_pix, train_y, torch.stack(data.images), y),
                "nearest prototype, VAE latents": _prototype_accuracy(train_lat, train_y, latents, y),
            }
            for method, acc in results.items():
                rows.setdefault(method, {}).setdefault(split, []).append(acc)
            uppers = [25, 50, 100, 200, 300, 500, 700, 1000]
            lowers = [0, 100, 200, 300, 500, 700, 900]
            for tag, err in (("recommended adapters", err_a), ("reference-style adapters", err_b)):
                entry = sweep.setdefault(f"{tag}|{split}", {"upper": uppers, "lower": lowers, "below": [], "above": []})
                entry["below"].append([window_accuracy(err, t_np, weights, y, (0, u)) for u in uppers])
                entry["above"].append([window_accuracy(err, t_np, weights, y, (lo, 1000)) for lo in lowers])
            if examples is None and split == "decorrelated":
                mean = (err_a[:, :, t_np < cfg.small_window[1]]).mean(2)
                examples = (data, clf.classes_[mean.argmin(1)], [clf.classes_[i] for i in y])
        if seed == cfg.seeds[0]:
            samples, sample_labels = clf.sample(n_per_class=cfg.samples_per_class, steps=20, guidance=1.0, seed=seed)
            _save_samples(samples, sample_labels, cfg.samples_per_class, out / "adapter_samples.png")
    summary = {
        method: {split: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v} for split, v in by.items()}
        for method, by in rows.items()
    }
    report = {
        "config": asdict(cfg), "recipe": recipe.to_dict(), "results": summary,
        "chance": 1 / len(SyntheticSpec().classnames),
        "seconds": round(time.time() - start, 1),
        "peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "README.md").write_text(render_markdown(report))
    _plot_windows(sweep, out / "accuracy_vs_window.png")
    if examples is not None:
        _plot_examples(*examples, out / "test_predictions.png")
    return report


def render_markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        "# diti-sd demo: synthetic fine-grained benchmark",
        "",
        f"{len(cfg['seeds'])} seeds ({', '.join(map(str, cfg['seeds']))}), {cfg['shots']} shots per class, "
        f"{cfg['test_per_class']} test images per class and split; chance {report['chance']:.2f}. "
        f"Base model `{cfg['model']}`, recipe `{cfg['recipe']}`.",
        "",
        "In the train split the background colour follows the class; on **decorrelated** it is independent "
        "of the class, on **correlated** it follows the train correlation. The class is a faint fine texture.",
        "",
        "| method | decorrelated | correlated |",
        "|---|---|---|",
    ]
    for method, by in report["results"].items():
        cells = [f"{by[s]['mean']:.3f} ± {by[s]['std']:.3f}" for s in TEST_SPLITS]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    lines += ["", f"Wall time {report['seconds']:.0f} s, peak memory {report['peak_memory_gib']:.2f} GiB, "
              f"{report['torch_threads']} torch threads.", "",
              "![accuracy against the scoring window](accuracy_vs_window.png)", "",
              "![test predictions](test_predictions.png)", "", "![samples from class adapters](adapter_samples.png)", ""]
    return "\n".join(lines)


def _plot_windows(sweep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)  # windows without pairs
    for key, entry in sweep.items():
        tag, split = key.split("|")
        style = "-" if split == "decorrelated" else ":"
        color = "tab:blue" if tag.startswith("recommended") else "tab:orange"
        axes[0].plot(entry["upper"], np.nanmean(entry["below"], 0), style, marker="o", color=color, label=f"{tag}, {split}")
        axes[1].plot(entry["lower"], np.nanmean(entry["above"], 0), style, marker="o", color=color, label=f"{tag}, {split}")
    axes[0].set_xlabel("scoring window [0, t_max): t_max")
    axes[1].set_xlabel("scoring window [t_min, 1000): t_min")
    axes[0].set_ylabel("test accuracy (mean over seeds)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Test accuracy by scoring window (solid: decorrelated background, dotted: correlated)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_examples(data, predicted, truth, path: Path, n: int = 20) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(data))
    cols = 5
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(cols * 2, ((n + cols - 1) // cols) * 2.2))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(data.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        ok = predicted[i] == truth[i]
        ax.set_title(f"{predicted[i]}\n(true {truth[i]})", fontsize=7, color="green" if ok else "red")
    fig.suptitle("decorrelated test images: prediction (small-t window), true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save_samples(images: torch.Tensor, labels, per_class: int, path: Path) -> None:
    from torchvision.utils import make_grid, save_image

    grid = make_grid(images, nrow=per_class, padding=1, pad_value=1.0)
    save_image(torch.nn.functional.interpolate(grid[None], scale_factor=4, mode="nearest")[0], path)
