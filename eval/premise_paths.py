"""What ``fit.coarse_swap_premise`` does on a synthetic variant, seed by seed, and what that pays or costs.

    python eval/premise_paths.py --seeds 11-20 --classes 10 --val-per-class 6 --pairs 12,6 \
        --cache reports/tune-user --out docs/notes/2026-12-05-premise-paths-10-classes.json

Per seed: the shortcut check on the shots (the share whose blur points to their own class, leave-one-out, and
whether it fired), how many user-like validation images break the accident, the path the premise takes
(``premise``: one fit with the swap; ``comparison``: ``fit.coarse_swap_auto`` decides on the breaking images;
``none``), and the labelled oracle stream's accuracy of the recipe's fit and of the fit with
``fit.coarse_swap=1.0``, as ``eval/tune_synthetic.py`` makes them (shared through its cache; the recipe's
scoring window). Printed: the swap minus the recipe over every seed, and the premise's replay (the swap where
the path is ``premise``, or where it is ``comparison`` and the swap is more accurate on the breaking images;
the recipe elsewhere) minus the recipe, both paired over the seeds. Only validation streams are read, never the
sealed seeds; at least 10 seeds unless ``--smoke``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.coarse import coarse_shortcut
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import mean_se

_spec = importlib.util.spec_from_file_location("shortcut_strength",
                                               Path(__file__).with_name("shortcut_strength.py"))
strength = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(strength)
tune = strength.tune
_spec = importlib.util.spec_from_file_location("breaking_images", Path(__file__).with_name("breaking_images.py"))
paths = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paths)  # its swap_path: the premise's path on one seed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--task", default="texture", choices=("texture", "many"),
                        help="texture: five classes, one background each; many: --classes stripe textures")
    parser.add_argument("--classes", type=int, default=None, help="with --task many: how many classes")
    parser.add_argument("--rate", type=float, default=1.0, help="share of the shots whose background follows")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--pairs", default="12,12", help="validation (t, noise) pairs below and above t = 200")
    parser.add_argument("--cache", type=Path, default=None, help="tune_synthetic's cache: shared fits, resumable")
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    n_classes = args.classes if args.task == "many" else None
    if args.task == "many" and not args.classes:
        raise SystemExit("--task many needs --classes N")
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    pairs = tuple(int(v) for v in args.pairs.split(","))
    fits = {name: tune.evaluate(overrides, args.seeds, args.shots, args.val_per_class, pairs=pairs,
                                cache=args.cache, shortcut_rate=args.rate, n_classes=n_classes)
            for name, overrides in (("recipe", []), ("swap", strength.SWAP))}
    oracle = {name: strength.per_seed(fit, "oracle", window) for name, fit in fits.items()}
    masks = strength.conflicts(recipe, args.seeds, args.shots, args.val_per_class, args.rate, args.task, n_classes)
    seeds, kept = [], []
    for i, seed in enumerate(args.seeds):
        run = SyntheticSeed.for_recipe(recipe, seed, args.shots, task=args.task, n_classes=n_classes,
                                       shortcut_rate=args.rate)
        report = coarse_shortcut(strength.as_uint8(run.train.images), run.train.labels, recipe.fit.coarse_sigma,
                                 seed=seed)
        breaking = int(masks[i].sum())
        path = paths.swap_path(report, breaking)
        if path == "comparison":
            on = {name: float(np.mean(fit["correct"][window][i][masks[i]])) for name, fit in fits.items()}
            swap = on["swap"] > on["recipe"]
        else:
            swap = path == "premise"
        kept.append(oracle["swap"][i] if swap else oracle["recipe"][i])
        seeds.append({"seed": seed, "points_to_own_class": report["accuracy"], "p_value": report["p_value"],
                      "breaking_images": breaking, "path": path, "swap_kept": bool(swap),
                      "oracle": {"recipe": float(oracle["recipe"][i]), "swap": float(oracle["swap"][i])}})
    swap_gain = mean_se(list(oracle["swap"] - oracle["recipe"]))
    premise_gain = mean_se(list(np.array(kept) - oracle["recipe"]))
    out = {"what": __doc__.splitlines()[0], "task": args.task, "classes": n_classes or 5, "rate": args.rate,
           "seeds": args.seeds, "shots": args.shots, "val_per_class": args.val_per_class, "pairs": list(pairs),
           "window": list(window), "per_seed": seeds,
           "oracle": {"recipe": float(oracle["recipe"].mean()), "swap": float(oracle["swap"].mean()),
                      "premise": float(np.mean(kept))},
           "swap_minus_recipe": {"gain": swap_gain[0], "se": swap_gain[1]},
           "premise_minus_recipe": {"gain": premise_gain[0], "se": premise_gain[1]}}
    shares = [s["points_to_own_class"] for s in seeds]
    taken = [s["path"] for s in seeds]
    print(f"{args.task}, {out['classes']} classes, accident in {args.rate:g} of the shots; seeds {args.seeds}")
    print(f"  blur points to own class (leave-one-out): {min(shares):.2f} to {max(shares):.2f}; paths: " +
          ", ".join(f"{p} on {taken.count(p)}" for p in ("premise", "comparison", "none") if p in taken))
    print(f"  oracle: recipe {out['oracle']['recipe']:.3f}, swap {out['oracle']['swap']:.3f} "
          f"({swap_gain[0]:+.3f}, SE {swap_gain[1]:.3f}), with the premise {out['oracle']['premise']:.3f} "
          f"({premise_gain[0]:+.3f}, SE {premise_gain[1]:.3f})")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
