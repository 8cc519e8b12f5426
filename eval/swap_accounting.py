"""Where the coarse swap's gain comes from, and where its cost does: the accident's harm against the swap's own.

    python eval/swap_accounting.py --seeds 11-20 --cache reports/tune-user \
        --out docs/notes/2026-12-05-swap-accounting-texture.json
    python eval/swap_accounting.py --seeds 11-20 --task many --classes 6 --val-per-class 6 --pairs 12,6 \
        --cache reports/tune-user --out docs/notes/2026-12-05-swap-accounting-6-classes.json

Four fits per seed, as ``eval/tune_synthetic.py`` makes them and in its cache: the recipe and the recipe with
``fit.coarse_swap=1.0``, each on the shots a user has (the accident in every shot) and on the control
``shots without the shortcut`` (background independent of the class; a control a user never has). On the
labelled oracle stream at the recipe's window, paired over the seeds:

- the accident's harm: the recipe on the control shots minus the recipe on the real ones;
- the swap's own cost: the recipe minus the swap, both on the control shots (where there is no accident to take);
- the harm the swap leaves: the swap on the control shots minus the swap on the real ones, and so what it takes
  back of the harm;

so that the swap's gain on the real shots is the harm, less its own cost, less the harm it leaves (printed too).
Beside them, what a user sees of each fit: its accuracy on the user-like validation stream
(the accident in every image, as in the shots). Only validation streams are read, never the sealed seeds; at
least 10 seeds unless ``--smoke``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from diti_sd.benchmarks.synthetic.streams import CONTROL_SHOTS
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import mean_se

_spec = importlib.util.spec_from_file_location("shortcut_strength",
                                               Path(__file__).with_name("shortcut_strength.py"))
strength = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(strength)
tune = strength.tune

CONTROL = CONTROL_SHOTS
FITS = {("recipe", "real"): "train", ("swap", "real"): "train", ("recipe", "control"): CONTROL,
        ("swap", "control"): CONTROL}  # each fit's shots
TERMS = {  # name: (minuend, subtrahend), each a key of FITS
    "harm": (("recipe", "control"), ("recipe", "real")),
    "own_cost": (("recipe", "control"), ("swap", "control")),
    "harm_left": (("swap", "control"), ("swap", "real")),
    "swap_gain": (("swap", "real"), ("recipe", "real")),
}


def name(key: tuple[str, str]) -> str:
    return f"{key[0]} on {'the shots' if key[1] == 'real' else 'the control shots'}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--task", default="texture", choices=("texture", "many"),
                        help="texture: five classes, one background each; many: --classes stripe textures")
    parser.add_argument("--classes", type=int, default=None, help="with --task many: how many classes")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--pairs", default="12,12", help="validation (t, noise) pairs below and above t = 200")
    parser.add_argument("--cache", type=Path, default=None, help="tune_synthetic's cache: shared fits, resumable")
    parser.add_argument("--out", default=None)
    parser.add_argument("--swap", default=";".join(strength.SWAP),
                        help="the swap's fit: overrides separated by \";\" (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    if args.task == "many" and not args.classes:
        raise SystemExit("--task many needs --classes N")
    n_classes = args.classes if args.task == "many" else None
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    pairs = tuple(int(v) for v in args.pairs.split(","))
    swap = [v.strip() for v in args.swap.split(";") if v.strip()]
    runs = {key: tune.evaluate(swap if key[0] == "swap" else [], args.seeds, args.shots, args.val_per_class,
                               pairs=pairs, cache=args.cache, train_stream=stream, n_classes=n_classes)
            for key, stream in FITS.items()}
    oracle = {key: strength.per_seed(run, "oracle", window) for key, run in runs.items()}
    user = {key: strength.per_seed(run, "correct", window) for key, run in runs.items()}
    gains = {term: oracle[a] - oracle[b] for term, (a, b) in TERMS.items()}
    gains["taken_back"] = gains["harm"] - gains["harm_left"]  # of the harm, what the swap takes back
    terms = {term: mean_se(list(v)) for term, v in gains.items()}
    out = {"what": __doc__.splitlines()[0], "swap": swap, "task": args.task, "classes": n_classes or 5,
           "seeds": args.seeds, "shots": args.shots, "val_per_class": args.val_per_class, "pairs": list(pairs),
           "window": list(window),
           "oracle": {name(k): float(v.mean()) for k, v in oracle.items()},
           "user_like_validation": {name(k): float(v.mean()) for k, v in user.items()},
           "terms": {k: {"gain": g, "se": se} for k, (g, se) in terms.items()},
           "per_seed": [{"seed": s, **{name(k): {"oracle": float(oracle[k][i]), "user_like": float(user[k][i])}
                                       for k in FITS}} for i, s in enumerate(args.seeds)]}
    print(f"{args.task}, {out['classes']} classes, seeds {args.seeds}; window [{window[0]},{window[1]})")
    print(f"  {'fit':34s} {'oracle':>7s} {'user-like':>10s}")
    for key in FITS:
        print(f"  {name(key):34s} {oracle[key].mean():7.3f} {user[key].mean():10.3f}")
    labels = {"harm": "the accident's harm (recipe: control - real)",
              "own_cost": "the swap's own cost (control: recipe - swap)",
              "harm_left": "the harm the swap leaves (swap: control - real)",
              "taken_back": "of the harm, what the swap takes back (harm - left)",
              "swap_gain": "the swap's gain on the shots (= harm - cost - left)"}
    for key, label in labels.items():
        print(f"  {label:52s} {terms[key][0]:+.3f} (SE {terms[key][1]:.3f})")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
