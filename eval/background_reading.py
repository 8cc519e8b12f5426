"""How much a recipe variant reads the background: measured on the labelled oracle stream, never chosen on.

    python eval/background_reading.py --seeds 11-20 --variant "" --variant "fit.t_max=1000;score.unet_scale=1.0"

Per seed and variant (overrides separated by ";" on top of the synthetic recipe; "" is the recipe): the
adapters fitted on the k-shot split, then ``predict`` on the seed's oracle validation stream (background
independent of the class) and on the user-like one (background follows the class). On the oracle images
whose background belongs to another class it prints the accuracy and the share predicted as the
background's class: what a classifier that reads only the background would answer. A measurement that
explains a choice already made on user-like validation (``eval/tune_synthetic.py``), not a rule.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

from diti_sd.benchmarks.synthetic.demo import sealed_message
from diti_sd.benchmarks.synthetic.scoring import background_classes, disagreement
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write, cached_json
from diti_sd.recipes import load_recipe

_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)


def measure(overrides: list[str], seed: int, per_class: int, steps: int | None) -> dict:
    recipe = load_recipe("synthetic", overrides)
    run = SyntheticSeed.for_recipe(recipe, seed, shots=8)
    clf = run.fit(recipe, steps=steps)
    out = {}
    for stream in ("val", "oracle val"):
        data = run.stream(stream, per_class)
        labels = run.labels(data, clf)
        predicted = clf.decision_function(data.images).argmax(1)
        out[stream] = float((predicted == labels).mean())
        if stream == "oracle val":
            label_of = {name: i for i, name in enumerate(clf.classes_.tolist())}
            out["conflicts"] = disagreement(predicted, labels, background_classes(data.images, run.spec, label_of))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--variant", action="append", default=None, help='overrides separated by ";" ("": the recipe)')
    parser.add_argument("--per-class", type=int, default=20, help="images per class of each stream")
    parser.add_argument("--steps", type=int, default=None, help="fit steps per class (default: the recipe's)")
    parser.add_argument("--cache", type=Path, default=None, help="keep each (variant, seed) result; a rerun resumes")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if why := sealed_message(args.seeds):
        raise SystemExit(why)
    variants = args.variant if args.variant is not None else [""]
    results = {}
    for variant in variants:
        overrides = [o for o in variant.split(";") if o]
        recipe = load_recipe("synthetic", overrides)  # a bad override fails before any fit
        per_seed = []
        for seed in args.seeds:
            # named by the resolved recipe, not by how the variant is spelled: "" read back after the recipe
            # changed would be another recipe's result (a key added at a default that fits nothing new is not)
            per_seed.append(cached_json(args.cache, [tune.recipe_key(recipe), seed, args.per_class, args.steps],
                                        lambda seed=seed, o=overrides: measure(o, seed, args.per_class, args.steps)))
        n = sum(r["conflicts"]["images"] for r in per_seed)
        results[variant or "(the recipe)"] = row = {
            "val": float(np.mean([r["val"] for r in per_seed])),
            "oracle val": float(np.mean([r["oracle val"] for r in per_seed])),
            "conflict_images": n,
            "conflict_accuracy": sum(r["conflicts"]["correct"] for r in per_seed) / max(n, 1),
            "to_background": sum(r["conflicts"]["to_background"] for r in per_seed) / max(n, 1),
            "to_background_per_seed": [r["conflicts"]["to_background"] / max(r["conflicts"]["images"], 1)
                                       for r in per_seed],
        }
        print(f"{variant or '(the recipe)'}: user-like val {row['val']:.3f}, oracle val {row['oracle val']:.3f}; "
              f"oracle images with another class's background ({n}): accuracy {row['conflict_accuracy']:.3f}, "
              f"predicted as the background's class {row['to_background']:.3f}", flush=True)
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps({"seeds": args.seeds, "results": results},
                                                                     indent=2)))
    return results


if __name__ == "__main__":
    main()
