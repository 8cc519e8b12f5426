"""The base alone, zero-shot, on a synthetic texture task and validation stream: the row every results table carries.

    python eval/zero_shot_synthetic.py --seeds 11-20 --stream "second oracle val" --per-class 20
    python eval/zero_shot_synthetic.py --task many --n-classes 24 --seeds 11-13 --per-class 8

No fit: the recipe's base model (``--model``; default the synthetic recipe's, the base that never saw the class
textures) scores every (texture, background) caption of its training form, on the first 6 of the recipe
window's pairs, a texture's score the best of its captions: the demo's row of the base alone
(``zero_shot_logits`` in ``diti_sd/benchmarks/synthetic/scoring.py``), with each seed's own validation noise.
Texture tasks only (``texture``, ``many``): on the others no caption names the class. Prints per-seed
accuracies, their mean, sd and standard error, and writes zero_shot.json. Sealed seeds are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from diti_sd.backbone import load_backbone
from diti_sd.benchmarks.synthetic.demo import ZERO_SHOT_PAIRS, DemoConfig, sealed_message
from diti_sd.benchmarks.synthetic.scoring import coarser_pairs, pair_seeds, scoring_weights, zero_shot_logits
from diti_sd.benchmarks.synthetic.streams import VALIDATION_STREAMS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import write_json
from diti_sd.preprocessing import uint8_pixels
from diti_sd.recipes import load_recipe
from diti_sd.stats import mean_sd, mean_se


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["texture", "many"], default="texture")
    parser.add_argument("--n-classes", type=int, default=None, help="classes (default: 5; many: 24)")
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--stream", default="second oracle val", choices=VALIDATION_STREAMS)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--model", default=None, help="the base model (default: the synthetic recipe's)")
    parser.add_argument("--out", default="reports/zero-shot")
    args = parser.parse_args(argv)
    if why := sealed_message(args.seeds):
        raise SystemExit(why)
    recipe = load_recipe("synthetic", [f"model={args.model}"] if args.model else [])
    n_classes = args.n_classes or (24 if args.task == "many" else 5)
    window = (recipe.score.t_min, recipe.score.t_max)
    backbone = load_backbone(recipe.model, device="cpu", resolution=recipe.resolution, progress=False)
    accuracy = []
    for seed in args.seeds:
        run = SyntheticSeed.for_recipe(recipe, seed, shots=1, task=args.task, n_classes=n_classes)
        data = run.stream(args.stream, args.per_class)
        t, noise, weights = scoring_weights(window, DemoConfig().pairs_per_window, latent_shape=backbone.latent_shape,
                                            seed=pair_seeds(seed)[1])
        latents = backbone.encode_batches(uint8_pixels(data.images, backbone.resolution)).cpu()
        w = coarser_pairs(weights["window"], ZERO_SHOT_PAIRS)
        logits = zero_shot_logits(backbone, latents, t, noise, w, run.spec,
                                  {name: i for i, name in enumerate(run.spec.classnames)})
        accuracy.append(float((logits.argmax(1) == np.asarray(data.labels)).mean()))
        print(f"seed {seed}: {accuracy[-1]:.3f}", flush=True)
    (mean, sd), se = mean_sd(accuracy), mean_se(accuracy)[1]
    print(f"the base alone, {args.task} ({n_classes} classes), {args.stream!r}, {args.per_class} per class: "
          f"{mean:.3f} ± {sd:.3f} (SE {se:.3f}; chance {1 / n_classes:.3f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "zero_shot.json",
               {"task": args.task, "n_classes": n_classes, "stream": args.stream, "per_class": args.per_class,
                "model": recipe.model, "window": list(window), "pairs": ZERO_SHOT_PAIRS, "seeds": args.seeds,
                "accuracy": accuracy, "mean": mean, "sd": sd})
    return accuracy


if __name__ == "__main__":
    main()
