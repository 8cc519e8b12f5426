"""Where "coarse" ends by the method's premise: the frequency above which the window's noise drowns the shots.

    python eval/coarse_cutoff.py --seeds 11-20 --out docs/notes/2026-12-05-coarse-cutoff.json

Per variant and seed, the reading ``fit.coarse_sigma: auto`` makes in a fit (``diti_sd/coarse_cutoff.py``: the
shots' latent power against the noise at the scoring window's last time-step, and the Gaussian that passes half
the amplitude where the noise drowns it), as a fraction of the side and in pixels. Each step is a convention, so
the reading places the blur, it does not measure it. Only the shots are read (the train split of validation
seeds); no UNet call; at least 10 seeds unless ``--smoke``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

from diti_sd.backbone import load_backbone
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.coarse_cutoff import premise_cutoff, window_end
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import mean_sd
from diti_sd.timesteps import signal_to_noise

_spec = importlib.util.spec_from_file_location("shortcut_strength",
                                               Path(__file__).with_name("shortcut_strength.py"))
strength = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(strength)
tune = strength.tune


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--classes", default="5,6,10,24",
                        help="the variants: 5 is the texture task, more the stripe variant with that many classes")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    recipe = load_recipe("synthetic")
    backbone = load_backbone(recipe.model, device="cpu", progress=False)
    alpha_bar = float(backbone.alphas_cumprod("cpu")[window_end(recipe.score)])
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "shots": args.shots, "t_max": recipe.score.t_max,
           "alpha_bar": alpha_bar, "recipe_sigma_fraction": recipe.fit.coarse_sigma, "variants": {}}
    print(f"window's last time-step {window_end(recipe.score)}: signal-to-noise {signal_to_noise(alpha_bar):.2f}; "
          f"fit.coarse_sigma {recipe.fit.coarse_sigma:g} of the side")
    for n in (int(v) for v in args.classes.split(",")):
        task, n_classes = ("texture", None) if n == 5 else ("many", n)
        rows = []
        for seed in args.seeds:
            run = SyntheticSeed.for_recipe(recipe, seed, args.shots, task=task, n_classes=n_classes)
            pixels = strength.as_uint8(run.train.images)
            latents = backbone.encode_batches(pixels)
            rows.append({"seed": seed, **premise_cutoff(latents, alpha_bar, pixels.shape[-1] // latents.shape[-1],
                                                min(pixels.shape[-2:]))})
        name = "texture task, 5 classes" if n == 5 else f"stripes, {n} classes"
        m, sd = mean_sd([r["sigma_fraction"] for r in rows])
        px = float(np.mean([r["sigma_pixels"] for r in rows]))
        out["variants"][name] = {"sigma_fraction": {"mean": m, "sd": sd}, "per_seed": rows}
        print(f"  {name}: sigma {m:.3f} of the side (sd {sd:.3f} over seeds; {px:.2f} px), 1/{1 / m:.1f}")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
