"""Object masks from the model itself: where a first fit's adapters denoise a shot better than the base at small t.

    python eval/adapter_masks.py --seeds 11-20 --cache reports/tune-user --out docs/notes/2026-12-06-adapter-masks.json

The masked swap needs a mask per shot; a user without masks or boxes has the shots alone. By the method's premise
the class lives in fine detail, which noise destroys first, so at small t an adapter should denoise its shots
better than the base where the class's detail is (the object), and no better on a background that is flat at that
scale. Per validation seed: the recipe fitted on the benchmark's shots (no swap); per shot, each latent cell's
epsilon error under the base (the generic prompt, no adapter) minus under its class's adapter (its prompt, the
scoring's scales), averaged over ``--pairs`` (t, noise) pairs in the recipe's window, upsampled to pixels; the mask
is where that gain is above Otsu's threshold (fixed before any fit, no parameter). Reported: the masks against the
generator's exact ones (IoU, the share of background they keep, the share of object they lose), and the masked
swap fitted with them through the product (``fit(masks=...)``), oracle accuracy paired against the plain swap and
the swap with exact masks. Validation seeds only, at least 10 unless ``--smoke``; synthetic only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diti_sd.attention_masks import otsu
from diti_sd.benchmarks.synthetic.scoring import stratified_pairs
from diti_sd.benchmarks.synthetic.streams import CONTROL_SHOTS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write
from diti_sd.preprocessing import uint8_pixels
from diti_sd.recipes import load_recipe
from diti_sd.scoring.engine import batch_residuals, class_contexts
from diti_sd.seeding import derive_seed
from diti_sd.stats import paired_gain

_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)

SWAP = tune.SWAP
CONTROL = tune.CONTROL
MASK_PAIRS = 101  # the derive_seed key of the pairs the maps are read at: apart from the library's keys (1-5)


@torch.no_grad()
def gain_maps(clf, images, labels: list[str], pairs: int, seed: int) -> torch.Tensor:
    """(n, H, W) per shot: the base's epsilon error minus its class adapter's, per latent cell (channels averaged),
    averaged over ``pairs`` pairs in the recipe's window, bilinearly upsampled to the images' pixels."""
    backbone, adapters, recipe = clf.backbone_, clf.adapters_, clf.recipe_
    pixels = uint8_pixels(images, backbone.resolution)
    latents = backbone.encode_batches(pixels)
    t, noise, _ = stratified_pairs([recipe.score.t_min, recipe.score.t_max], (pairs,), backbone.latent_shape,
                                   derive_seed(seed, MASK_PAIRS))
    contexts = class_contexts(backbone, adapters, list(clf.prompts_), recipe.score.text_scale)
    with adapters.use(text_scale=0.0):
        generic = backbone.encode_prompts([recipe.prompt.generic])
    index = {c: i for i, c in enumerate(clf.classes_.tolist())}
    n = len(latents)
    total = torch.zeros(n, *latents.shape[-2:])
    for p in range(len(t)):
        ii, pp = torch.arange(n), torch.full((n,), p)
        cc = torch.as_tensor([index[v] for v in labels])
        adapted = batch_residuals(backbone, adapters, latents, contexts, t, noise, ii, cc, pp,
                                  recipe.score.unet_scale).pow(2).mean(1)
        base = batch_residuals(backbone, adapters, latents, generic, t, noise, ii, torch.zeros(n, dtype=torch.long),
                               pp, 0.0).pow(2).mean(1)  # class 0's adapter routed at scale 0: the base
        total += (base - adapted).cpu()
    return F.interpolate((total / len(t))[:, None], size=pixels.shape[-2:], mode="bilinear",
                         align_corners=False)[:, 0]


def masks_of(maps: torch.Tensor) -> list[torch.Tensor]:
    """Each map above its own Otsu threshold."""
    return [m > otsu(m.flatten().numpy()) for m in maps]


def quality(masks: list[torch.Tensor], exact: list[torch.Tensor]) -> dict:
    """Derived masks against the exact ones, averaged over shots: IoU, the share of the background they keep
    (what leaks the accident) and the share of the object they lose (what the swap then takes from it)."""
    def mean(f):
        return float(np.mean([f(m, e) for m, e in zip(masks, exact)]))

    return {"iou": mean(lambda m, e: float((m & e).sum() / max(float((m | e).sum()), 1))),
            "background kept": mean(lambda m, e: float((m & ~e).sum() / max(float((~e).sum()), 1))),
            "object lost": mean(lambda m, e: float((~m & e).sum() / max(float(e.sum()), 1)))}


def masked_swap_rows(derived: dict, qualities: list[dict], seeds: list[int], shots: int, val_per_class: int,
                     cache, key_extra, name: str = "derived masks", swap: list[str] = SWAP,
                     background_detail: float = 0.0, background_detail_kind: str = "thin") -> dict:
    """The masked swap (overrides ``swap``) fitted with ``derived`` masks (per seed, one per shot) through the
    product, read on the oracle stream beside the plain swap, exact masks under the same ``swap`` and the recipe
    (paired per seed); prints and returns the rows with the masks' mean ``qualities``. ``key_extra`` names how the
    masks were made (the fits' cache key; a callable: per seed). ``background_detail``: the benchmark's variant whose
    backgrounds carry a fine pattern of their own, with the recipe fitted on shots without the accident as a control
    (what the accident costs there); ``background_detail_kind``: what that pattern is."""
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    detail = {"background_detail": background_detail, "background_detail_kind": background_detail_kind}
    exact_masks = SyntheticSeed.train_masks
    SyntheticSeed.train_masks = property(lambda self: derived[self.seed])  # the fits below get the derived masks
    try:
        mine = tune.evaluate(swap, seeds, shots, val_per_class, cache=cache, masks=True, key_extra=key_extra,
                             **detail)
    finally:
        SyntheticSeed.train_masks = exact_masks
    rows = {name: mine,
            "swap": tune.evaluate(SWAP, seeds, shots, val_per_class, cache=cache, **detail),
            "exact masks": tune.evaluate(swap, seeds, shots, val_per_class, cache=cache, masks=True, **detail),
            "recipe": tune.evaluate([], seeds, shots, val_per_class, cache=cache, **detail)}
    if background_detail:
        rows[CONTROL] = tune.evaluate([], seeds, shots, val_per_class, cache=cache, **detail,
                                      train_stream=CONTROL_SHOTS)
    acc = {row: [float(h.mean()) for h in r["oracle"][window]] for row, r in rows.items()}
    out = {"window": list(window),
           "mask quality": {k: float(np.mean([q[k] for q in qualities])) for k in qualities[0]},
           "mask quality per seed": qualities,
           "rows": {row: {"mean": float(np.mean(a)), "per_seed": a} for row, a in acc.items()}}
    for other in [row for row in rows if row != name]:
        out["rows"][name][f"minus {other}"] = paired_gain(acc[name], acc[other])
    print("mask quality:", {k: round(v, 3) for k, v in out["mask quality"].items()})
    for row, r in out["rows"].items():
        extra = "".join(f"  {k} {v['gain']:+.3f} (SE {v['se']:.3f}; {v['ahead']} / {v['behind']})"
                        for k, v in r.items() if k.startswith("minus"))
        print(f"{row:15s} {r['mean']:.3f}{extra}")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--pairs", type=int, default=8, help="(t, noise) pairs per shot in the recipe's window")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=None, help="tune_synthetic's cache: shared fits, resumable")
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    recipe = load_recipe("synthetic")
    derived, qualities = {}, []
    for seed in args.seeds:
        run = SyntheticSeed.for_recipe(recipe, seed, args.shots)
        clf = run.fit(recipe)
        derived[seed] = masks_of(gain_maps(clf, run.train.images, run.names(run.train), args.pairs, seed))
        qualities.append(quality(derived[seed], list(run.train_masks)))
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "pairs": args.pairs,
           **masked_swap_rows(derived, qualities, args.seeds, args.shots, args.val_per_class, args.cache,
                              {"masks from": "adapter gain, otsu at a bin's upper edge", "pairs": args.pairs},
                              name="adapter masks")}
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
