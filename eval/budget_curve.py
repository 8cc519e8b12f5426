"""Accuracy against the scoring budget (UNet calls per test image) on the synthetic benchmark.

    python eval/budget_curve.py --out reports/budget                                    # 5 classes
    python eval/budget_curve.py --task many --n-classes 24 --seeds 11-13 --out reports/budget-24

Fits the recipe's adapters per seed, computes every (image, class, pair) error once over the recipe's scoring
window on a decorrelated stream of validation seeds (``--stream``; sealed test seeds are refused), with the
seed's own noise, then replays schedules on them: exhaustive scoring with 1..P pairs per class, the pruning
stages, and each of those behind a prefilter that keeps a linear probe's top k classes per image (the probe on
the VAE latents the scoring encodes anyway, its regularisation chosen on the seed's validation stream; the
report gives its top-k recall, which bounds what follows it), and the base alone (no adapters) as a zero-shot
Diffusion Classifier asked every (texture, background) caption on the demo's count of pairs (6), spread evenly over
this script's grid in the window (the demo takes the first of its own stratified pairs).
With 24 classes pruning and prefiltering have something to prune. The schedules are fixed here in advance, not
chosen on these results. Prints a table and writes accuracy_vs_budget.png and budget.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from diti_sd.baselines.probe import fit_probe
from diti_sd.benchmarks.synthetic.demo import ZERO_SHOT_PAIRS, sealed_message
from diti_sd.benchmarks.synthetic.scoring import caption_prompts, zero_shot_logits
from diti_sd.benchmarks.synthetic.streams import VALIDATION_STREAMS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import write_json
from diti_sd.plotting import pyplot, save_figure
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule, simulate_rounds
from diti_sd.seeding import VALIDATION_PAIRS, derive_seed
from diti_sd.timesteps import timestep_noise

PAIRS = 32
SCHEDULES = {
    **{f"exhaustive, {p} pairs": [[p, 1]] for p in (1, 2, 4, 8, 16, 32)},
    "rounds [[2,3],[6,2],[16,1]]": [[2, 3], [6, 2], [16, 1]],
    "rounds [[4,3],[8,2],[16,1]]": [[4, 3], [8, 2], [16, 1]],
    "rounds [[2,2],[16,1]]": [[2, 2], [16, 1]],
    "rounds [[4,2],[32,1]]": [[4, 2], [32, 1]],
    "rounds [[2,8],[8,3],[32,1]]": [[2, 8], [8, 3], [32, 1]],
}
PREFILTER_K = (2, 4, 8)
ZERO_SHOT = "the base alone, zero-shot (caption words)"


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    mask = np.zeros(logits.shape, bool)
    np.put_along_axis(mask, np.argsort(-logits, axis=1, kind="stable")[:, :k], True, axis=1)
    return mask


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="1-3")
    parser.add_argument("--task", choices=["texture", "many"], default="texture")
    parser.add_argument("--n-classes", type=int, default=None, help="classes (default: the task's 5; many: 24)")
    parser.add_argument("--test-per-class", type=int, default=8)
    parser.add_argument("--stream", default="second oracle val",
                        help="the validation stream scored (default: one whose background is independent of the "
                             "class); the sealed test seeds are refused")
    parser.add_argument("--model", default=None, help="the base model (default: the recipe's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="KEY=VALUE on top of the synthetic recipe (repeatable), e.g. fit.coarse_swap=1.0")
    parser.add_argument("--out", default="reports/budget")
    parser.add_argument("--steps", type=int, default=None, help="fit steps per class (default: the recipe's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (the fits and the scoring)")
    args = parser.parse_args(argv)
    if why := sealed_message(args.seeds):
        raise SystemExit(why)
    if args.stream not in VALIDATION_STREAMS:
        raise SystemExit(f"--stream {args.stream!r}: score a validation stream, one of {', '.join(VALIDATION_STREAMS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe("synthetic", [*([f"model={args.model}"] if args.model else []), *args.overrides])
    n_classes = args.n_classes or (24 if args.task == "many" else 5)
    window = (recipe.score.t_min, recipe.score.t_max)
    schedules = {name: Schedule(rounds, *window) for name, rounds in SCHEDULES.items()}
    # one exhaustive set of errors at every t some schedule evaluates; each schedule is replayed on it
    needed = torch.tensor(sorted({t for schedule in schedules.values() for t in schedule.timesteps}))
    acc: dict = {}
    calls: dict = {}
    recall: dict = {k: [] for k in PREFILTER_K}
    for seed in args.seeds:
        run = SyntheticSeed.for_recipe(recipe, seed, shots=8, task=args.task, n_classes=n_classes)
        clf = run.fit(recipe, device=args.device, steps=args.steps)
        data, val = run.stream(args.stream, args.test_per_class), run.stream("val", 4)
        labels = run.labels(data, clf)
        latents = clf.encode(data.images)
        noise = timestep_noise(needed, clf.backbone_.latent_shape, derive_seed(seed, VALIDATION_PAIRS))
        errors = clf.dense_errors(latents, needed, noise)
        probe = fit_probe(clf.encode(run.train.images).flatten(1), run.labels(run.train, clf),
                          clf.encode(val.images).flatten(1), run.labels(val, clf))
        probe_logits = probe.logits(latents.flatten(1))
        prefilters = {"": None, **{f"probe top {k}, ": top_k(probe_logits, k) for k in PREFILTER_K if k < n_classes}}
        for k in PREFILTER_K:
            if k < n_classes:
                recall[k].append(float(top_k(probe_logits, k)[np.arange(len(labels)), labels].mean()))
        acc.setdefault("linear probe alone (0 UNet calls)", []).append(float((probe_logits.argmax(1) == labels).mean()))
        calls["linear probe alone (0 UNet calls)"] = 0.0
        # the demo reads the base on an evenly spaced share of the window's pairs; here the t are the stages' sorted
        # union, whose count the share need not divide, so that many of them spread evenly
        zero_w = np.zeros(len(needed))
        zero_w[np.linspace(0, len(needed) - 1, ZERO_SHOT_PAIRS).round().astype(int)] = 1.0
        zero = zero_shot_logits(clf.backbone_, latents, needed, noise, zero_w, run.spec,
                                {c: i for i, c in enumerate(clf.classes_.tolist())})
        acc.setdefault(ZERO_SHOT, []).append(float((zero.argmax(1) == labels).mean()))
        calls[ZERO_SHOT] = float(ZERO_SHOT_PAIRS * len(caption_prompts(run.spec)))
        for tag, mask in prefilters.items():
            for name, schedule in schedules.items():
                predicted, spent = simulate_rounds(errors, needed.numpy(), schedule, candidates=mask)
                acc.setdefault(tag + name, []).append(float((predicted == labels).mean()))
                calls[tag + name] = float(spent.mean())
    exhaustive = np.mean(acc[f"exhaustive, {PAIRS} pairs"])
    rows = [{"schedule": n, "calls_per_image": calls[n], "accuracy": float(np.mean(a)),
             "std": float(np.std(a, ddof=1)) if len(a) > 1 else None,
             "relative_to_exhaustive": float(np.mean(a) / exhaustive) if exhaustive else float("nan")}
            for n, a in acc.items()]
    print(f"{n_classes} classes, {args.task}, stream {args.stream!r}, seeds {args.seeds}; probe top-k recall "
          + ", ".join(f"k={k} {np.mean(v):.3f}" for k, v in recall.items() if v))
    print(f"{'schedule':48s} {'calls/img':>9s} {'accuracy':>14s} {'vs exhaustive':>13s}")
    for r in sorted(rows, key=lambda r: r["calls_per_image"]):
        spread = "  n/a" if r["std"] is None else f"{r['std']:.3f}"
        print(f"{r['schedule']:48s} {r['calls_per_image']:9.0f} {r['accuracy']:8.3f} ± {spread} "
              f"{r['relative_to_exhaustive']:12.2f}")
    write_json(out / "budget.json", {"seeds": args.seeds, "task": args.task, "n_classes": n_classes,
                                     "overrides": args.overrides, "stream": args.stream, "rows": rows,
                                     "probe_recall": {k: float(np.mean(v)) for k, v in recall.items() if v}})
    plot(rows, n_classes, out / "accuracy_vs_budget.png")


def plot(rows: list[dict], n_classes: int, path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6.5, 4.2))
    for tag, marker in (("", "o"), *((f"probe top {k}, ", "s^v"[i]) for i, k in enumerate(PREFILTER_K))):
        mine = [r for r in rows if r["schedule"].startswith(tag) and (tag or not r["schedule"].startswith("probe"))]
        ex = sorted((r for r in mine if "exhaustive" in r["schedule"]), key=lambda r: r["calls_per_image"])
        if ex:
            ax.plot([r["calls_per_image"] for r in ex], [r["accuracy"] for r in ex], "-" + marker,
                    label=f"{tag.rstrip(', ') or 'all classes'}: exhaustive", alpha=0.8)
        rounds = [r for r in mine if "rounds" in r["schedule"]]
        ax.scatter([r["calls_per_image"] for r in rounds], [r["accuracy"] for r in rounds], marker=marker,
                   facecolors="none", edgecolors="k", s=30)
    alone = [r for r in rows if r["schedule"].startswith("linear probe alone")]
    if alone:
        ax.axhline(alone[0]["accuracy"], color="tab:red", ls="--", lw=0.8, label="linear probe alone")
    base = [r for r in rows if r["schedule"] == ZERO_SHOT]
    if base:
        ax.axhline(base[0]["accuracy"], color="tab:purple", ls="-.", lw=0.8, label="the base alone, zero-shot")
    ax.axhline(1 / n_classes, color="grey", ls=":", label="chance")
    ax.set_ylim(0, 1)
    ax.set_xscale("log")
    ax.set_xlabel("UNet calls per image (open markers: pruning stages)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
