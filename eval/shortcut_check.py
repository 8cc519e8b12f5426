"""The fit's coarse-shortcut check on the synthetic tasks' shots: where it fires, and where it cannot tell.

    python eval/shortcut_check.py --seeds 11-20 --out docs/notes/2026-12-05-coarse-shortcut-check.json

Per task and seed, the k-shot split every fit of that task learns from (at the synthetic recipe's resolution)
goes through ``diti_sd.coarse.coarse_shortcut`` with the fit's settings (``fit.coarse_sigma``, the seed as
``random_state``), and the warning rule of ``diti_sd.coarse.shortcut_warning``. Tasks: the texture task
(class = a fine texture; the background follows the class in the shots), its control shots without that
background, the colour task (class = the background colour), the shape task (class = the silhouette, of 3)
and the 24-class variant (five backgrounds follow the classes). No fit and no UNet call: seconds.
``--cost N,SIDE`` also times the check on N random images of SIDE pixels in 100 classes (e.g. 1600,512: a
16-shot FGVC-Aircraft split at SD 2's resolution), on this machine's threads. ``--shortcut-rates 0.9,0.75``
adds the texture task's variants whose shots follow the class's background in only that share. ``--masks``: the
check given each shot's exact object mask from the generator (it then reads the backgrounds alone), as a fit given
masks runs it; with ``--cost`` the timed images get a centred square object each.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.streams import CONTROL_SHOTS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.coarse import PERMUTATIONS, SHORTCUT_P, coarse_shortcut, shortcut_warning
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe

CASES = (("texture", "train"), ("texture", CONTROL_SHOTS), ("colour", "train"), ("shape", "train"),
         ("many", "train"))
N_CLASSES = {"shape": 3, "many": 24}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--cost", default=None, help="N,SIDE: time the check on N random images of SIDE pixels")
    parser.add_argument("--shortcut-rates", default="",
                        help="e.g. 0.9,0.75: also the texture task with the background following the class in "
                             "only that share of the shots")
    parser.add_argument("--masks", action="store_true", help="give the check the shots' object masks")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rates = [float(v) for v in args.shortcut_rates.split(",") if v and float(v) != 1.0]  # 1 is the texture task
    recipe = load_recipe("synthetic")
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "shots": args.shots,
           "permutations": PERMUTATIONS, "warn_at_p": SHORTCUT_P, "masks": args.masks, "cases": {}}
    for task, stream, rate in [(t, s, 1.0) for t, s in CASES] + [("texture", "train", r) for r in rates]:
        rows = []
        for seed in args.seeds:
            run = SyntheticSeed.for_recipe(recipe, seed, args.shots, task=task, n_classes=N_CLASSES.get(task),
                                           train_stream=stream, shortcut_rate=rate)
            pixels = (torch.stack(run.train.images) * 255).round().to(torch.uint8)
            objects = torch.stack(run.train_masks)[:, None] if args.masks else None
            report = coarse_shortcut(pixels, run.train.labels, recipe.fit.coarse_sigma, seed=seed, objects=objects)
            rows.append({**report, "warned": shortcut_warning(report, 0.0) is not None,
                         "resolution": int(pixels.shape[-1])})
        summary = {"accuracy": float(np.mean([r["accuracy"] for r in rows])),
                   "chance": float(np.mean([r["chance"] for r in rows])), "warned": sum(r["warned"] for r in rows)}
        name = stream if rate == 1.0 else f"{stream}, background follows in {rate:g}"
        out["cases"][f"{task} / {name}"] = {**summary, "per_seed": rows}
        print(f"{task:8s} {name:40s} leave-one-out {summary['accuracy']:.3f}  permuted {summary['chance']:.3f}  "
              f"warned {summary['warned']}/{len(rows)}")
    if args.cost:
        n, side = (int(v) for v in args.cost.split(","))
        g = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
        objects = None
        if args.masks:
            objects = torch.zeros(n, 1, side, side, dtype=torch.bool)
            objects[..., side // 4:3 * side // 4, side // 4:3 * side // 4] = True
        start = time.perf_counter()
        coarse_shortcut(pixels, np.arange(n) % 100, recipe.fit.coarse_sigma, objects=objects)
        out["cost"] = {"images": n, "side": side, "classes": min(n, 100),
                       "seconds": round(time.perf_counter() - start, 2), "torch_threads": torch.get_num_threads()}
        print(f"the check on {n} images of {side} pixels: {out['cost']['seconds']:.1f} s "
              f"({out['cost']['torch_threads']} torch threads)")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))


if __name__ == "__main__":
    main()
