"""Scoring the object's cells end to end: ``predict`` with masks read off the base, against the whole image.

    python eval/object_cells_predict.py --seeds 11-20 --background-detail 0.1 --background-detail-kind class \
        --cache reports/residual --out docs/notes/2026-12-07-object-cells-predict-class-detail.json

``eval/residual_location.py`` measured the object reading as a diagnostic: its own residuals at the seed's
validation pairs, weighted by the masks outside the product. This runs the product instead. Per seed the
adapters are fitted as that study's best row without annotations (``fit.swap_background: whole``, the shots'
masks read off the base at ``--mask-upscale`` and kept as read) with ``score.cells: object`` in the recipe, so
``fit`` takes its object-cell checks; each image of the user-like validation stream and of the oracle stream is
then scored by ``DiTiFewShotClassifier.score_images`` as ``predict`` scores it (the recipe's own pairs and
stages), once with ``masks=AttentionMasks(...)`` read off the base as that study read the test images' (the
word "pattern" under every caption of the base's vocabulary, at ``--mask-upscale``, shrunk: the library's
default), and once on the whole image (the same adapters, ``score.cells: all``). Accuracy and the true class's
log-likelihood are printed per stream, paired per seed, with the UNet calls of scoring and of reading the
masks. ``--noise-per-seed``: each seed scores with its own noise (``score.seed``) rather than the recipe's one
draw. ``--cache``: one result per seed (and the masks and scored chunks beside it), so a killed run resumes and
halves run in parallel. A diagnostic on validation streams, never a rule and never a sealed read.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from diti_sd.backbone import load_backbone
from diti_sd.benchmarks.synthetic.demo import sealed_message
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write, cached_json
from diti_sd.recipes import load_recipe
from diti_sd.scoring.auto import per_image_log_likelihood

_spec = importlib.util.spec_from_file_location("residual_location", Path(__file__).with_name("residual_location.py"))
residual = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(residual)
tune = residual.tune  # the benchmark variants' arguments and the recipe's cache key, as that study reads them

STREAMS = ("val", "oracle val")
READINGS = ("all", "object")
# the attention-masks study's best row without annotations (docs/notes/2026-12-07-object-cells-attention-masks.md)
WHOLE_SWAP = ["fit.coarse_swap=1.0", "fit.coarse_sigma=0.125", "fit.swap_background=whole"]


def reading(result, labels: np.ndarray, mask_calls: int = 0) -> dict:
    """Accuracy and mean true-class log-likelihood of one scored stream, and its UNet calls (scoring's, and
    ``mask_calls`` spent reading its masks)."""
    return {"accuracy": float((result.logits.argmax(1) == labels).mean()),
            "ll": float(np.nanmean(per_image_log_likelihood(result.errors, labels))),
            "unet_calls": int(result.unet_calls.sum()), "mask_unet_calls": int(mask_calls)}


def mask_specs(model: str, seed: int, upscale: int) -> tuple:
    """How the shots' masks (kept as read) and the scored images' (shrunk) are read off the base."""
    return (residual.attention_spec(model, seed, upscale, False), residual.attention_spec(model, seed, upscale))


def one_seed(seed: int, per_class: int, detail: dict, overrides: list[str], upscale: int, cache: Path | None) -> dict:
    recipe = load_recipe("synthetic", [*overrides, "score.cells=object"])
    run = SyntheticSeed.for_recipe(recipe, seed, 8, **detail)
    tag = hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()[:8]
    backbone = load_backbone(recipe.model, device="cpu", dtype=torch.float32, progress=False)
    shots, scored = mask_specs(recipe.model, seed, upscale)
    # the shots' masks as residual_location's best row read them (its cache's names, so they are read once)
    run.train_masks = residual.read_attention(shots, backbone, run.train.images, cache,
                                              f"seed{seed}-train-unshrunk-{tag}")
    clf = run.fit(recipe, masks=True)
    whole = dataclasses.replace(clf.recipe_, score=dataclasses.replace(clf.recipe_.score, cells="all"))
    fitted = clf.recipe_
    out = {}
    for name in STREAMS:
        data = run.stream(name, per_class)
        labels = run.labels(data, clf)
        folder = None if cache is None else (Path(cache) / "predict" /
                                             f"seed{seed}-{name.replace(' ', '-')}{per_class}-x{upscale}-{tag}")
        clf.recipe_ = fitted
        obj = clf.score_images(data.images, masks=scored, cache_dir=folder)
        clf.recipe_ = whole  # the same adapters, scored on every cell
        out[name] = {"object": reading(obj, labels, scored.unet_calls(len(data.images))),
                     "all": reading(clf.score_images(data.images), labels)}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--per-class", type=int, default=10)
    tune.add_background_detail_args(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=None,
                        help="fit with these recipe values (KEY=VALUE, repeatable) in place of the whole-background "
                             "swap; score.cells is set to object")
    parser.add_argument("--mask-upscale", type=int, default=2, help="AttentionMasks.upscale of the masks read")
    parser.add_argument("--noise-per-seed", action="store_true",
                        help="score.seed = the seed: each seed's scoring noise its own draw (predict's is the "
                             "recipe's, one draw for every seed), so that the spread over seeds includes it")
    parser.add_argument("--cache", type=Path, default=None, help="one result per seed, resumable")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if why := sealed_message(args.seeds):
        raise SystemExit(why)
    detail = tune.background_detail(parser, args)
    overrides = WHOLE_SWAP if args.overrides is None else args.overrides
    per_seed = {}
    for seed in args.seeds:
        mine = [*overrides, f"score.seed={seed}"] if args.noise_per_seed else overrides
        resolved = load_recipe("synthetic", [*mine, "score.cells=object"])
        parts = ["object_cells_predict", tune.recipe_key(resolved), seed, args.per_class, detail,
                 *(spec.record(1) for spec in mask_specs(resolved.model, seed, args.mask_upscale))]
        per_seed[seed] = cached_json(args.cache, parts, lambda seed=seed, mine=mine: one_seed(
            seed, args.per_class, detail, mine, args.mask_upscale, args.cache))
    summary = residual.paired_summary(per_seed, args.seeds, STREAMS, READINGS)
    for stream in STREAMS:
        for name in READINGS:
            row = summary[stream][name]
            for part in ("unet_calls", "mask_unet_calls"):
                row[part] = float(np.mean([per_seed[s][stream][name].get(part, 0) for s in args.seeds]))
            print(f"{stream:11s} {name:7s} accuracy {row['accuracy']['mean']:.3f} ({row['accuracy']['gain']:+.3f} "
                  f"SE {row['accuracy']['se']:.3f})  log-lik {row['ll']['mean']:.3f} ({row['ll']['gain']:+.3f} "
                  f"SE {row['ll']['se']:.3f})  UNet calls {row['unet_calls']:.0f} + masks {row['mask_unet_calls']:.0f}")
    result = {"seeds": args.seeds, **detail, "overrides": overrides, "mask_upscale": args.mask_upscale,
              "noise_per_seed": args.noise_per_seed,
              "per_seed": per_seed, "summary": summary}
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    return result


if __name__ == "__main__":
    main()
