"""Choose the synthetic recipe's settings on the benchmark's VALIDATION split (never its test splits).

Each configuration fits class adapters on k-shot train splits (seeds as given) and reports accuracy
on a decorrelated validation split for several scoring windows and for TiF's data-derived per-t
weight ("tif"), all read off one set of UNet calls, and the train split's accuracy on the first window
(the gap between the two is memorisation).

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
from diti_sd.demo import stratified_pairs, window_accuracy
from diti_sd.recipes import load_recipe
from diti_sd.scoring import class_contexts, dense_errors
from diti_sd.timesteps import tif_weights

WINDOWS = [(0, 100), (0, 200), (0, 300), (0, 1000), (300, 1000)]


def evaluate(overrides: list[str], seeds: list[int], shots: int, val_per_class: int,
             prior_source: str = "domain", windows: list[tuple[int, int]] = WINDOWS,
             pairs: tuple[int, int] = (12, 12), split_at: int = 200) -> dict:
    """``pairs``: (t, noise) pairs in [0, split_at) and in [split_at, 1000); finer windows need more."""
    recipe = load_recipe("synthetic", overrides)
    accs = {w: [] for w in [*windows, "tif"]}
    train_accs = []
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
        t, noise, weights = stratified_pairs([0, split_at, 1000], pairs, clf.backbone_.latent_shape)
        t_np = t.numpy()
        contexts = class_contexts(clf.backbone_, clf.adapters_, clf.prompts_)
        errors = dense_errors(clf.backbone_, clf.adapters_, clf.encode(val.images), contexts, t, noise)
        labels = np.array([list(clf.classes_).index(spec.classnames[i]) for i in val.labels])
        for w in windows:
            accs[w].append(window_accuracy(errors, t_np, weights, labels, w))
        accs["tif"].append(window_accuracy(errors, t_np, weights * tif_weights(clf.tif_d_)[t_np], labels, (0, 1000)))
        train_errors = dense_errors(clf.backbone_, clf.adapters_, clf.encode(train.images), contexts, t, noise)
        train_labels = np.array([list(clf.classes_).index(spec.classnames[i]) for i in train.labels])
        train_accs.append(window_accuracy(train_errors, t_np, weights, train_labels, windows[0]))
    name = {w: "val tif" if w == "tif" else f"val[{w[0]},{w[1]})" for w in accs}
    return {"overrides": overrides, "prior": prior_source, "seconds": round(time.time() - start, 1),
            f"train[{windows[0][0]},{windows[0][1]})": round(float(np.mean(train_accs)), 3),
            **{name[w]: round(float(np.mean(v)), 3) for w, v in accs.items()}}


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
    parser.add_argument("--pairs", default="12,12",
                        help="(t, noise) pairs below and above --split-at (default 12,12, the demo's)")
    parser.add_argument("--split-at", type=int, default=200)
    args = parser.parse_args(argv)
    windows = WINDOWS if args.windows is None else [tuple(int(v) for v in w.split("-")) for w in args.windows.split(",")]
    print(json.dumps(evaluate(args.overrides, [int(s) for s in args.seeds.split(",")], args.shots,
                              args.val_per_class, args.prior, windows,
                              tuple(int(v) for v in args.pairs.split(",")), args.split_at)), flush=True)


if __name__ == "__main__":
    main()
