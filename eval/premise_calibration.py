"""With ``fit.coarse_swap`` on, where ``predict_proba``'s temperature should be chosen: a measurement.

    python eval/premise_calibration.py --seeds 11-20 --out reports/premise-calibration.json

A user who turns the coarse swap on states that the coarse content the shots share is an accident. Their
validation images, drawn where the shots came from, carry the same accident, so a temperature chosen on
them calibrates the adapters to images where the accident is right. The alternative applies the premise to
validation as the fit applied it to the shots: each validation image with its coarse content swapped for a
prior image's (``fit.coarse_sigma``; donors drawn with the seed). Per seed: the synthetic recipe with
``fit.coarse_swap=1.0`` (``--set`` adds overrides) fitted on the k-shot split, scored over its window on
the seed's validation pairs; the temperature chosen on each source; NLL and ECE read on the labelled oracle
stream (the background independent of the class), never chosen on. The recipe without the swap is read
the same way beside it (``--baseline``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.demo import sealed_message
from diti_sd.benchmarks.synthetic.scoring import PAIRS_RULE, stratified_pairs
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write, cached_json
from diti_sd.metrics import calibration_report, standardise
from diti_sd.recipes import load_recipe
from diti_sd.scoring import weighted_mean, window_weights
from diti_sd.seeding import VALIDATION_PAIRS, derive_seed, numpy_rng
from diti_sd.stats import mean_se
from diti_sd.training.coarse_swap import coarse_swap

_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)

SOURCES = ("as drawn", "coarse swapped")


def swapped(images, donors, sigma_fraction: float, seed: int) -> list[torch.Tensor]:
    """Each image with its coarse content from a donor drawn with ``seed``, as floats in [0, 1]."""
    rng = numpy_rng(seed, 1)
    donors = [as_uint8(d) for d in donors]
    return [coarse_swap(as_uint8(x), donors[int(rng.integers(len(donors)))], sigma_fraction).float() / 255
            for x in images]


def as_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round().clamp(0, 255).to(torch.uint8)


def one_seed(overrides: list[str], seed: int, shots: int, per_class: int) -> dict:
    recipe = load_recipe("synthetic", overrides)
    run = SyntheticSeed.for_recipe(recipe, seed, shots)
    clf = run.fit(recipe)
    window = (recipe.score.t_min, recipe.score.t_max)
    t, noise, weights = stratified_pairs([window[0], window[1]], (12,), clf.backbone_.latent_shape,
                                         derive_seed(seed, VALIDATION_PAIRS))
    w = window_weights(t.numpy(), weights, window)
    val, oracle = run.stream("val", per_class), run.stream("oracle val", per_class)
    images = {"as drawn": val.images,
              "coarse swapped": swapped(val.images, run.prior(recipe), clf.recipe_.fit.coarse_sigma, seed),
              "oracle": oracle.images}
    logits = {k: -weighted_mean(clf.dense_errors(clf.encode(v), t, noise), w) for k, v in images.items()}
    labels = {k: run.labels(oracle if k == "oracle" else val, clf) for k in images}
    out = {"accuracy": {k: float((v.argmax(1) == labels[k]).mean()) for k, v in logits.items()}}
    for source in SOURCES:
        r = calibration_report(standardise(logits[source]), labels[source], standardise(logits["oracle"]),
                               labels["oracle"])
        out[source] = {k: r[k] for k in ("temperature", "nll", "ece")}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--baseline", action="store_true", help="also the recipe without the swap")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if why := sealed_message(args.seeds):
        raise SystemExit(why)
    if len(args.seeds) < 10 and not args.smoke:
        raise SystemExit("the protocol asks for at least 10 seeds (e.g. 11-20); --smoke checks the script")
    variants = {"coarse swap": ["fit.coarse_swap=1.0", *args.overrides]}
    if args.baseline:
        variants["recipe"] = list(args.overrides)
    result = {"seeds": args.seeds, "variants": {}}
    for name, overrides in variants.items():
        # named by the resolved recipe, not by how the overrides are spelled (the recipe changes under them)
        key = tune.recipe_key(load_recipe("synthetic", overrides))
        rows = [cached_json(args.cache, ["premise-calibration", key, seed, args.shots, args.per_class, PAIRS_RULE],
                            lambda seed=seed, o=overrides: one_seed(o, seed, args.shots, args.per_class))
                for seed in args.seeds]
        summary = {"accuracy": {k: float(np.mean([r["accuracy"][k] for r in rows])) for k in rows[0]["accuracy"]}}
        for source in SOURCES:
            summary[source] = {k: float(np.mean([r[source][k] for r in rows])) for k in ("temperature", "nll", "ece")}
        for k in ("nll", "ece"):
            gain, se = mean_se([r["coarse swapped"][k] - r["as drawn"][k] for r in rows])
            summary[f"{k}: coarse swapped minus as drawn"] = {"mean": gain, "se": se}
        result["variants"][name] = {"overrides": overrides, "summary": summary, "per_seed": rows}
        print(name, json.dumps(summary, indent=1))
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))


if __name__ == "__main__":
    main()
