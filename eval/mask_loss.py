"""The masked loss (``fit.mask_loss``) beside the masked swap: two ways to use an object mask per shot.

    python eval/mask_loss.py --seeds 11-20 --cache reports/tune-user --out docs/notes/2026-12-06-mask-loss.json

On the benchmark's shots (the background follows the class in every shot), with the generator's object masks
(grown or shrunk by ``--mask-rim`` pixels, as a less exact segmenter's): the recipe without masks, the plain coarse
swap, the swap outside the masks, the loss over the masks alone, and both; their oracle accuracy at the recipe's
window, paired over seeds against the recipe and against the masked swap. Validation seeds only, at least 10
unless ``--smoke``. Fits are shared with ``tune_synthetic``'s cache (the same keys as ``swap_texture_kept``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import paired_gain

_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)

SWAP = ["fit.coarse_swap=1.0", "fit.coarse_sigma=0.125"]
# name: (overrides, whether the fit gets the masks)
VARIANTS = {
    "recipe": ([], False),
    "swap": (SWAP, False),
    "swap outside the masks": (SWAP, True),
    "loss over the masks": (["fit.mask_loss=true"], True),
    "loss over the masks and swap outside them": ([*SWAP, "fit.mask_loss=true"], True),
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--mask-rim", type=int, default=0, help="grow each mask by this many pixels (negative: shrink)")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=None, help="tune_synthetic's cache: shared fits, resumable")
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "mask_rim": args.mask_rim, "window": list(window),
           "stream": "oracle", "variants": {}}
    per_seed = {}
    for name, (overrides, masks) in VARIANTS.items():
        extra = {"masks": True, **({"mask_rim": args.mask_rim} if args.mask_rim else {})} if masks else {}
        result = tune.evaluate(overrides, args.seeds, args.shots, args.val_per_class, cache=args.cache, **extra)
        per_seed[name] = [float(hits.mean()) for hits in result["oracle"][window]]
    for name, accuracy in per_seed.items():
        row = out["variants"][name] = {"mean": sum(accuracy) / len(accuracy), "per_seed": accuracy}
        if name != "recipe":
            row["minus recipe"] = paired_gain(accuracy, per_seed["recipe"])
        if VARIANTS[name][1] and name != "swap outside the masks":
            row["minus the masked swap"] = paired_gain(accuracy, per_seed["swap outside the masks"])
        extra = "".join(f"  {k} {v['gain']:+.3f} (SE {v['se']:.3f}; {v['ahead']} ahead, {v['behind']} behind)"
                        for k, v in row.items() if k.startswith("minus"))
        print(f"{name:45s} {row['mean']:.3f}{extra}")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
