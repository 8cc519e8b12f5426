"""The coarse swap with the class texture (or the whole object) kept: what the swap takes from the object costs.

    python eval/swap_texture_kept.py --seeds 11-20 --cache reports/tune-user \
        --out docs/notes/2026-12-05-swap-texture-kept-texture.json

``eval/swap_artifacts.py`` found that the swap's composites are equally foreign to the base on every texture
family at a given blur, while the share of the class texture the swap takes away differs by family (its figures:
``docs/notes/2026-12-05-swap-artifacts.md``). This study holds the second fixed: a
diagnostic fit in which each swapped shot is its texture-free twin swapped, with the shot's texture added back
(``bare - blur(bare) + blur(donor) + (shot - bare)``, clipped), so the composite keeps all of the texture at any
blur and the rest of the swap is unchanged. Only a synthetic benchmark, where the texture is known, allows it. On
the control shots (no accident), per blur: the swap's fit and the texture-kept fit (``tune_synthetic``'s cache,
the latter under its own keys), their oracle accuracy at the recipe's window, paired over seeds. Validation seeds
only, at least 10 unless ``--smoke``.

``--keep object`` keeps more: each swapped shot keeps its whole object as it is (texture and the object's own
coarse content, read off the texture-free twin, where it differs from its background), and only the background
is swapped. It asks whether the swap's own cost comes from what the composites put under the class texture.
``--keep box`` keeps the object's bounding box instead (corners of background included), as a data set's box
annotations (FGVC-Aircraft's, CUB's) would allow. ``--keep masks`` keeps the object through the product's own path
(``fit(masks=...)`` with the generator's object masks, no patch): it must give the object-kept figures seed for
seed; with ``--mask-rim N`` each mask is grown by N pixels (shrunk where negative) first, a less exact
segmenter's mask: how exact the masks must be. ``--train-stream train`` fits on the benchmark's shots (the
accident included) instead of the control shots; every run reports the recipe without the swap beside both fits.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from contextlib import contextmanager
from pathlib import Path

import torch

from diti_sd.benchmarks.synthetic.streams import CONTROL_SHOTS, TRAIN_STREAMS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.data.masks import bounding_box, box_mask
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import paired_gain
from diti_sd.training import loop
from diti_sd.training.coarse_swap import coarse_swap

_spec = importlib.util.spec_from_file_location("latent_texture", Path(__file__).with_name("latent_texture.py"))
texture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(texture)
strength, tune = texture.strength, texture.tune

CONTROL = CONTROL_SHOTS
KEPT = {"texture": {"study": "swap with the texture kept"}, "object": {"study": "swap with the object kept"},
        "box": {"study": "swap with the object's box kept"}, "masks": None}  # masks: the product's own path


def twins(recipe, seeds: list[int], shots: int, n_classes: int | None,
          stream: str = CONTROL) -> dict[bytes, torch.Tensor]:
    """Every shot of the seeds (as the fit receives it, uint8) to its texture-free twin."""
    out = {}
    for seed in seeds:
        run = SyntheticSeed.for_recipe(recipe, seed, shots, train_stream=stream,
                                       **({"task": "many", "n_classes": n_classes} if n_classes else {}))
        images, bare, _ = texture.texture_pair(run, stream, shots)
        out.update({x.numpy().tobytes(): b for x, b in zip(images, bare)})
    return out


def object_mask(bare: torch.Tensor) -> torch.Tensor:
    """(1, H, W) True on the object of a texture-free twin: every pixel unlike its background (the corner's colour;
    objects never reach the corners)."""
    return (bare != bare[:, :1, :1]).any(0, keepdim=True)


def object_box(bare: torch.Tensor) -> torch.Tensor:
    """(1, H, W) True inside the object's bounding box, as a data set's box annotation gives it."""
    mask = object_mask(bare)[0]
    return box_mask(tuple(mask.shape[::-1]), bounding_box(mask))[None]


def texture_kept_swap(pairs: dict[bytes, torch.Tensor], keep: str = "texture"):
    """``coarse_swap`` for the fit: the twin swapped, the shot's texture added back; with ``keep="object"`` (or
    ``"box"``) the shot swapped, its object (or the object's bounding box) put back as it was."""
    def swap(pixels: torch.Tensor, donor: torch.Tensor, sigma_fraction: float, _mask=None) -> torch.Tensor:
        # _mask: the product's own (fit(masks=...)); the study's fits are given none
        bare = pairs.get(pixels.numpy().tobytes())
        if bare is None:
            raise RuntimeError("a swapped training image that is not one of the study's shots: its lookup failed")
        if keep in ("object", "box"):
            mask = object_mask(bare) if keep == "object" else object_box(bare)
            return torch.where(mask, pixels, coarse_swap(pixels, donor, sigma_fraction))
        out = coarse_swap(bare, donor, sigma_fraction).float() + (pixels.float() - bare.float())
        return out.round().clamp(0, 255).to(torch.uint8)
    return swap


@contextmanager
def patched(pairs, keep: str = "texture"):
    original = loop.coarse_swap
    loop.coarse_swap = texture_kept_swap(pairs, keep)
    try:
        yield
    finally:
        loop.coarse_swap = original


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--classes", type=int, default=None, help="the many-class variant (default: texture task)")
    parser.add_argument("--sigmas", default="0.125,0.0625")
    parser.add_argument("--keep", choices=tuple(KEPT), default="texture",
                        help="what each swapped shot keeps whole: the class texture, the object, or its box; masks: "
                             "the object through the product's fit(masks=...)")
    parser.add_argument("--mask-rim", type=int, default=0,
                        help="with --keep masks: grow each mask by this many pixels (negative: shrink it)")
    parser.add_argument("--train-stream", default=CONTROL, choices=TRAIN_STREAMS,
                        help="the shots: the control shots (default) or the benchmark's, accident included")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--pairs", default="12,12", help="validation (t, noise) pairs below and above t = 200")
    parser.add_argument("--cache", type=Path, default=None, help="tune_synthetic's cache: shared fits, resumable")
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    if args.mask_rim and args.keep != "masks":
        parser.error("--mask-rim edits the masks of --keep masks; add --keep masks or leave it out")
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    pairs = tuple(int(v) for v in args.pairs.split(","))
    common = dict(pairs=pairs, cache=args.cache, train_stream=args.train_stream, n_classes=args.classes)
    lookup = None if args.keep == "masks" else twins(recipe, args.seeds, args.shots, args.classes, args.train_stream)
    out = {"what": __doc__.splitlines()[0], "keep": args.keep, "mask_rim": args.mask_rim,
           "train_stream": args.train_stream,
           "classes": args.classes or 5, "seeds": args.seeds,
           "window": list(window), "blurs": {}}
    recipe_fit = strength.per_seed(tune.evaluate([], args.seeds, args.shots, args.val_per_class, **common), "oracle",
                                   window)
    out["recipe"] = {"mean": float(recipe_fit.mean()), "per_seed": recipe_fit.tolist()}
    print(f"the recipe (no swap) on {args.train_stream!r}: {recipe_fit.mean():.3f}")
    for sigma in (float(v) for v in args.sigmas.split(",")):
        swap = ["fit.coarse_swap=1.0", f"fit.coarse_sigma={sigma}"]
        plain = tune.evaluate(swap, args.seeds, args.shots, args.val_per_class, **common)
        if args.keep == "masks":  # no patch: fit(masks=...) with the generator's object masks
            kept = tune.evaluate(swap, args.seeds, args.shots, args.val_per_class, masks=True,
                                 **({"mask_rim": args.mask_rim} if args.mask_rim else {}), **common)
        else:
            with patched(lookup, args.keep):
                kept = tune.evaluate(swap, args.seeds, args.shots, args.val_per_class, key_extra=KEPT[args.keep],
                                     **common)
        a, b = (strength.per_seed(r, "oracle", window) for r in (kept, plain))
        name = f"{args.keep} kept"
        row = out["blurs"][str(sigma)] = {"swap": float(b.mean()), name: float(a.mean()),
                                          "kept minus swap": paired_gain(a, b),
                                          "kept minus recipe": paired_gain(a, recipe_fit),
                                          "swap minus recipe": paired_gain(b, recipe_fit),
                                          "per_seed": {"swap": b.tolist(), name: a.tolist()}}
        print(f"blur {sigma:g}: the swap's fit {b.mean():.3f}, with the {name} {a.mean():.3f}")
        for what in ("kept minus swap", "kept minus recipe", "swap minus recipe"):
            r = row[what]
            print(f"  {what}: {r['gain']:+.3f} (SE {r['se']:.3f}; {r['ahead']} seeds ahead, {r['behind']} behind)")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
