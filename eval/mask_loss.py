"""Three ways to use an object mask per shot: the swap outside it (its low-pass, or every pixel), and the loss over it.

    python eval/mask_loss.py --seeds 11-20 --cache reports/tune-user --out docs/notes/2026-12-06-mask-loss.json
    python eval/mask_loss.py --seeds 11-20 --background-detail 0.1 --cache reports/tune-user \
        --out docs/notes/2026-12-06-detailed-backgrounds.json
    python eval/mask_loss.py --seeds 11-20 --masks box --cache reports/tune-user \
        --out docs/notes/2026-12-06-box-masks.json
    python eval/mask_loss.py --seeds 11-20 --background-detail 0.1 --background-detail-kind class \
        --rows swap "whole background swapped outside the masks" --cache reports/tune-user \
        --out docs/notes/2026-12-06-class-detail-backgrounds.json

On the benchmark's shots (the background follows the class in every shot), with the generator's object masks (grown
or shrunk by ``--mask-rim`` pixels, as a less exact segmenter's; ``--masks box``: each object's filled bounding box,
as a data set's box annotation, the masks ``diti-sd fit --box-masks`` gives): the recipe without masks, the plain
coarse swap, the swap outside the masks (``fit.swap_background`` coarse, then whole), the loss over the masks alone,
and with each swap; their oracle accuracy at the recipe's window, paired over seeds against the recipe and against
the masked (coarse) swap. ``--background-detail A``: a variant whose backgrounds carry a fine pattern of their own
(one per colour, so it follows the class with the colour, as a photograph's background brings its detail), which the
coarse swap keeps; the recipe is also fitted on shots without the accident there (a control a user never has);
``--background-detail-kind class`` makes that pattern another class's texture, detail at the classes' own scale. Each
row also gives what a user sees, on validation drawn as the shots are: accuracy, and the tuning rule's true-class
log-likelihood paired against the masked swap (a gain counts beyond 2 SE).
Validation seeds only, at least 10 unless ``--smoke``. Fits are shared with ``tune_synthetic``'s cache.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

from diti_sd.benchmarks.synthetic.streams import CONTROL_SHOTS, MASK_KINDS
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import beyond_2se, paired_gain

_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)

SWAP = tune.SWAP
WHOLE = [*SWAP, "fit.swap_background=whole"]
LOSS = ["fit.mask_loss=true"]
# name: (overrides, whether the fit gets the masks)
VARIANTS = {
    "recipe": ([], False),
    "swap": (SWAP, False),
    "swap outside the masks": (SWAP, True),
    "loss over the masks": (LOSS, True),
    "loss over the masks and swap outside them": ([*SWAP, *LOSS], True),
    "whole background swapped outside the masks": (WHOLE, True),
    "loss over the masks and whole background swapped": ([*WHOLE, *LOSS], True),
}
CONTROL = tune.CONTROL  # with --background-detail: what the accident costs there


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--mask-rim", type=int, default=0, help="grow each mask by this many pixels (negative: shrink)")
    parser.add_argument("--masks", choices=MASK_KINDS, default="object",
                        help="what each shot's mask holds: its object, or the object's filled bounding box")
    tune.add_background_detail_args(parser)
    parser.add_argument("--rows", nargs="+", choices=tuple(VARIANTS), default=tuple(VARIANTS), metavar="ROW",
                        help="the rows to fit (default all; recipe and the masked swap are always in): "
                             + "; ".join(VARIANTS))
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=None, help="tune_synthetic's cache: shared fits, resumable")
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    detail = tune.background_detail(parser, args)
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "masks": args.masks, "mask_rim": args.mask_rim,
           **detail, "window": list(window), "stream": "oracle", "variants": {}}
    given = {"masks": True, **({"mask_rim": args.mask_rim} if args.mask_rim else {}),
             **({"mask_kind": args.masks} if args.masks != "object" else {})}
    rows = {"recipe", "swap outside the masks", *args.rows}
    runs = {name: (overrides, given if masks else {}) for name, (overrides, masks) in VARIANTS.items() if name in rows}
    if args.background_detail:
        runs[CONTROL] = ([], {"train_stream": CONTROL_SHOTS})
    per_seed, user = {}, {}
    for name, (overrides, extra) in runs.items():
        result = tune.evaluate(overrides, args.seeds, args.shots, args.val_per_class, cache=args.cache,
                               **detail, **extra)
        per_seed[name] = [float(hits.mean()) for hits in result["oracle"][window]]
        # what a user sees: validation drawn as the shots are, and the tuning rule's true-class log-likelihood there
        user[name] = {part: [float(x.mean()) for x in result[part][window]] for part in ("correct", "ll")}
    masked = "swap outside the masks"
    for name, accuracy in per_seed.items():
        row = out["variants"][name] = {"mean": sum(accuracy) / len(accuracy), "per_seed": accuracy}
        if name != "recipe":
            row["minus recipe"] = paired_gain(accuracy, per_seed["recipe"])
        if runs[name][1].get("masks") and name != masked:
            row["minus the masked swap"] = paired_gain(accuracy, per_seed[masked])
        row["user-like validation"] = {"accuracy": float(np.mean(user[name]["correct"])),
                                       "ll": float(np.mean(user[name]["ll"]))}
        if runs[name][1].get("masks") and name != masked:  # the rule: a gain in log-likelihood beyond 2 SE
            rule = paired_gain(user[name]["ll"], user[masked]["ll"])
            rule["ahead beyond 2 SE"] = beyond_2se(rule["gain"], rule["se"])
            rule["behind beyond 2 SE"] = beyond_2se(-rule["gain"], rule["se"])
            row["user-like validation"]["ll minus the masked swap"] = rule
        extra = "".join(f"  {k} {v['gain']:+.3f} (SE {v['se']:.3f}; {v['ahead']} ahead, {v['behind']} behind)"
                        for k, v in row.items() if k.startswith("minus"))
        rule = row["user-like validation"].get("ll minus the masked swap")
        extra += f"  [user-like ll vs the masked swap {rule['gain']:+.3f}, SE {rule['se']:.3f}]" if rule else ""
        print(f"{name:45s} {row['mean']:.3f}{extra}")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
