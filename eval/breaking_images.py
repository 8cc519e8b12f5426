"""Which user-like validation images the fit names as breaking the shots' accident, against which truly do.

    python eval/breaking_images.py --seeds 11-20 --out docs/notes/2026-12-05-breaking-images.json

Per case and seed, the k-shot split and the user-like validation stream (`val`: the background follows the
class at the case's rate, as in the shots) go through ``diti_sd.coarse.coarse_conflicts`` at the fit's sigma,
once with the margin a fit uses (a typical shot's distance from its class's mean, ``coarse.shot_spread``) and
once without it (any image nearer another class's shot mean: the rule before the margin). The synthetic data
knows the truth: an image breaks the accident when its background is not its class's (class c's is colour c;
on the 24-class variant colour c mod 5, shared by about five classes). Counts: flagged and truly breaking
(``right``), flagged but drawn as the shots were (``wrong``), truly breaking but not flagged (``missed``).
The colour task has none by construction (its class is the colour). Beside them, per seed, the shortcut check
on the shots (``coarse.coarse_shortcut``, as a fit runs it) and the path ``fit.coarse_swap_auto`` with
``fit.coarse_swap_premise`` takes: ``comparison`` (some images break the accident: a second fit decides),
``premise`` (the blur names the class outright and nothing breaks it: one fit with the swap) or ``none`` (the
check is silent, or the blur only narrows the class). No fit and no UNet call: seconds.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.data import background_count, background_of
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.coarse import coarse_conflicts, coarse_shortcut, fired, premise_applies
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe

# (task, shortcut rate, classes, validation images per class)
CASES = (("texture", 1.0, None, 10), ("texture", 0.9, None, 10), ("texture", 0.75, None, 10),
         ("texture", 0.5, None, 10), ("colour", 1.0, None, 10), ("many", 1.0, 24, 4), ("many", 0.9, 24, 4))
RULES = {"with the margin (the fit's)": None, "without it (before)": 0.0}


def as_uint8(images: list) -> torch.Tensor:
    return (torch.stack(images) * 255).round().to(torch.uint8)


def truly_breaking(images: list, labels, task: str, n_backgrounds: int) -> np.ndarray:
    """Whether each image's background is not its class's (none on the colour task, whose class is the colour)."""
    if task == "colour":
        return np.zeros(len(labels), dtype=bool)
    return np.array([background_of(im) != int(label) % n_backgrounds for im, label in zip(images, labels)])


def swap_path(report: dict, breaking: int) -> str:
    """What ``fit.coarse_swap_auto`` with ``fit.coarse_swap_premise`` does on one seed's shots and validation."""
    if fired(report) and breaking:
        return "comparison"
    return "premise" if premise_applies(report) else "none"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    recipe = load_recipe("synthetic")
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "shots": args.shots, "cases": []}
    for task, rate, n_classes, per_class in CASES:
        counts = {rule: {"right": 0, "wrong": 0, "missed": 0} for rule in RULES}
        per_seed = {rule: [] for rule in RULES}
        images, checks = 0, []
        for seed in args.seeds:
            run = SyntheticSeed.for_recipe(recipe, seed, args.shots, task=task, n_classes=n_classes,
                                           shortcut_rate=rate)
            val = run.stream("val", per_class)
            truth = truly_breaking(val.images, val.labels, task, background_count(run.spec))
            images += len(truth)
            for rule, margin in RULES.items():
                flagged = coarse_conflicts(as_uint8(run.train.images), run.train.labels, as_uint8(val.images),
                                           val.labels, recipe.fit.coarse_sigma, margin=margin)
                counts[rule]["right"] += int((flagged & truth).sum())
                counts[rule]["wrong"] += int((flagged & ~truth).sum())
                counts[rule]["missed"] += int((~flagged & truth).sum())
                per_seed[rule].append(int(flagged.sum()))
            report = coarse_shortcut(as_uint8(run.train.images), run.train.labels, recipe.fit.coarse_sigma, seed=seed)
            checks.append({"accuracy": report["accuracy"], "p_value": report["p_value"],
                           "path": swap_path(report, per_seed[next(iter(RULES))][-1])})
        case = {"task": task, "shortcut_rate": rate, "classes": n_classes or 5, "images": images,
                "truly_breaking": counts[next(iter(RULES))]["right"] + counts[next(iter(RULES))]["missed"],
                "rules": {rule: {**counts[rule], "flagged_per_seed": per_seed[rule]} for rule in RULES},
                "shortcut_check_per_seed": checks}
        out["cases"].append(case)
        print(f"{task} ({case['classes']} classes), rate {rate:g}: {case['truly_breaking']} of {images} images "
              "truly break the accident")
        for rule, c in counts.items():
            print(f"  {rule:28s} flagged {c['right'] + c['wrong']:4d}: right {c['right']:4d}, wrong {c['wrong']:4d}, "
                  f"missed {c['missed']:4d}")
        paths = [c["path"] for c in checks]
        accuracy = [c["accuracy"] for c in checks]
        taken = ", ".join(f"{p} on {paths.count(p)}" for p in ("premise", "comparison", "none") if p in paths)
        print(f"  the shots' blur points to their class for {min(accuracy):.2f} to {max(accuracy):.2f} of them "
              f"(leave-one-out); with fit.coarse_swap_premise: {taken}")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
