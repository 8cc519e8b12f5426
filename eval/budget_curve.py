"""Accuracy against the scoring budget (UNet calls per test image) on the synthetic benchmark.

    python eval/budget_curve.py --out reports/budget

Fits the demo's recommended adapters per seed, computes every (image, class, pair) error once over
the recipe's scoring window, then replays schedules on them: exhaustive scoring with 1..P pairs per
class, and pruning rounds. The schedules are fixed here in advance, not chosen on these results.
Prints a table and writes accuracy_vs_budget.png and budget.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.plotting import pyplot, save_figure
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule, dense_errors, simulate_rounds
from diti_sd.timesteps import timestep_noise

PAIRS = 32
SCHEDULES = {
    **{f"exhaustive, {p} pairs": [[p, 1]] for p in (1, 2, 4, 8, 16, 32)},
    "rounds [[2,3],[6,2],[16,1]]": [[2, 3], [6, 2], [16, 1]],
    "rounds [[4,3],[8,2],[16,1]]": [[4, 3], [8, 2], [16, 1]],
    "rounds [[2,2],[16,1]]": [[2, 2], [16, 1]],
    "rounds [[4,2],[32,1]]": [[4, 2], [32, 1]],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="1-3")
    parser.add_argument("--test-per-class", type=int, default=8)
    parser.add_argument("--out", default="reports/budget")
    parser.add_argument("--steps", type=int, default=None, help="fit steps per class (default: the recipe's)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe("synthetic")
    acc = {name: [] for name in SCHEDULES}
    calls = {}
    for seed in args.seeds:
        run = SyntheticSeed.for_recipe(recipe, seed, shots=8)
        clf = run.fit(recipe, steps=args.steps)
        test = run.stream("decorrelated", args.test_per_class)
        labels = run.labels(test, clf)
        window = (recipe.score.t_min, recipe.score.t_max)
        # one exhaustive set of errors at every t some schedule evaluates; each schedule is replayed on it
        schedules = {name: Schedule(rounds, *window) for name, rounds in SCHEDULES.items()}
        needed = sorted({t for schedule in schedules.values() for t in schedule.timesteps})
        t = torch.tensor(needed)
        noise = timestep_noise(t, clf.backbone_.latent_shape, recipe.score.seed)
        errors = dense_errors(clf.backbone_, clf.adapters_, clf.encode(test.images),
                              clf.class_contexts(), t, noise)
        for name, schedule in schedules.items():
            predicted, spent = simulate_rounds(errors, t.numpy(), schedule)
            acc[name].append(float((predicted == labels).mean()))
            calls[name] = float(spent.mean())
    exhaustive = np.mean(acc[f"exhaustive, {PAIRS} pairs"])
    rows = [{"schedule": n, "calls_per_image": calls[n], "accuracy": float(np.mean(a)), "std": float(np.std(a)),
             "relative_to_exhaustive": float(np.mean(a) / exhaustive) if exhaustive else float("nan")}
            for n, a in acc.items()]
    print(f"{'schedule':32s} {'calls/img':>9s} {'accuracy':>14s} {'vs exhaustive':>13s}")
    for r in rows:
        print(f"{r['schedule']:32s} {r['calls_per_image']:9.0f} {r['accuracy']:8.3f} ± {r['std']:.3f} "
              f"{r['relative_to_exhaustive']:12.2f}")
    (out / "budget.json").write_text(json.dumps({"seeds": args.seeds, "rows": rows}, indent=2))

    fig, ax = pyplot().subplots(figsize=(6, 4))
    ex = [r for r in rows if r["schedule"].startswith("exhaustive")]
    ax.plot([r["calls_per_image"] for r in ex], [r["accuracy"] for r in ex], "-o", label="exhaustive (all classes)")
    for r in rows:
        if r["schedule"].startswith("rounds"):
            ax.plot(r["calls_per_image"], r["accuracy"], "s", label=r["schedule"])
    ax.axhline(1 / 5, color="grey", ls=":", label="chance")
    ax.set_ylim(0, 1)
    ax.set_xscale("log")
    ax.set_xlabel("UNet calls per test image")
    ax.set_ylabel("decorrelated test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "accuracy_vs_budget.png")


if __name__ == "__main__":
    main()
