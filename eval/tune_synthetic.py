"""Choose the synthetic recipe's settings on the benchmark's VALIDATION split (never its test splits).

Each configuration fits class adapters on k-shot train splits (seeds as given) and reports accuracy
on a decorrelated validation split for several scoring windows, read off one set of UNet calls.

    python eval/tune_synthetic.py --seeds 11,12 --set fit.prior_prompt=class --set fit.t_max=1000 ...

Seeds here differ from the demo's (1, 2, 3) so the choice is not fitted to the demo's draws either.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from diti_sd import DiTiFewShotClassifier
from diti_sd.data.synthetic import SyntheticSpec, make_split
from diti_sd.demo import DemoConfig, stratified_pairs, window_accuracy
from diti_sd.recipes import load_recipe
from diti_sd.scoring import class_contexts, dense_errors

WINDOWS = [(0, 100), (0, 200), (0, 300), (0, 1000), (300, 1000)]


def evaluate(overrides: list[str], seeds: list[int], shots: int, val_per_class: int,
             prior_source: str = "domain", windows: list[tuple[int, int]] = WINDOWS) -> dict:
    recipe = load_recipe("synthetic", overrides)
    accs = {w: [] for w in windows}
    start = time.time()
    for seed in seeds:
        clf = DiTiFewShotClassifier(recipe=recipe, random_state=seed, device="cpu", progress=False)
        spec = SyntheticSpec(size=clf._load_backbone(recipe).resolution)
        train = make_split(spec, "train", shots, seed)
        val = make_split(spec, "val", val_per_class, 5000 + seed)
        prior = None
        if prior_source == "domain":
            prior = make_split(spec, "generic", max(1, recipe.fit.prior_images // spec.n_classes), 7000 + seed).images
        clf.fit(train.images, [spec.classnames[i] for i in train.labels], prior_images=prior)
        t, noise, weights = stratified_pairs(DemoConfig(), clf.backbone_.latent_shape)
        errors = dense_errors(clf.backbone_, clf.adapters_, clf.encode(val.images),
                              class_contexts(clf.backbone_, clf.adapters_, clf.prompts_), t, noise)
        labels = np.array([list(clf.classes_).index(spec.classnames[i]) for i in val.labels])
        for w in windows:
            accs[w].append(window_accuracy(errors, t.numpy(), weights, labels, w))
    return {"overrides": overrides, "prior": prior_source, "seconds": round(time.time() - start, 1),
            **{f"val[{w[0]},{w[1]})": round(float(np.mean(v)), 3) for w, v in accs.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="11,12")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--prior", choices=["domain", "base-samples"], default="domain",
                        help="prior-preservation images: generic images of the domain, or the base model's samples")
    parser.add_argument("--windows", default=None,
                        help="scoring windows to report, e.g. 0-200,150-500 (default: "
                             + ",".join(f"{a}-{b}" for a, b in WINDOWS) + ")")
    args = parser.parse_args(argv)
    windows = WINDOWS if args.windows is None else [tuple(int(v) for v in w.split("-")) for w in args.windows.split(",")]
    print(json.dumps(evaluate(args.overrides, [int(s) for s in args.seeds.split(",")], args.shots,
                              args.val_per_class, args.prior, windows)), flush=True)


if __name__ == "__main__":
    main()
