"""The coarse swap with the class texture kept whole: what the texture the swap takes away costs, per blur.

    python eval/swap_texture_kept.py --seeds 11-20 --cache reports/tune-user \
        --out docs/notes/2026-12-05-swap-texture-kept-texture.json

``eval/swap_artifacts.py`` found that the swap's composites are equally foreign to the base on every texture
family at a given blur, while the share of the class texture the swap takes away differs by family (at half the
default blur about a fifth of the texture task's, a third of the stripes'). This study holds the second fixed: a
diagnostic fit in which each swapped shot is its texture-free twin swapped, with the shot's texture added back
(``bare - blur(bare) + blur(donor) + (shot - bare)``, clipped), so the composite keeps all of the texture at any
blur and the rest of the swap is unchanged. Only a synthetic benchmark, where the texture is known, allows it. On
the control shots (no accident), per blur: the swap's fit and the texture-kept fit (``tune_synthetic``'s cache,
the latter under its own keys), their oracle accuracy at the recipe's window, paired over seeds. Validation seeds
only, at least 10 unless ``--smoke``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from contextlib import contextmanager
from pathlib import Path

import torch

from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import mean_se
from diti_sd.training import loop
from diti_sd.training.coarse_swap import coarse_swap

_spec = importlib.util.spec_from_file_location("latent_texture", Path(__file__).with_name("latent_texture.py"))
texture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(texture)
strength, tune = texture.strength, texture.tune

CONTROL = "shots without the shortcut"
KEPT = {"study": "swap with the texture kept"}


def twins(recipe, seeds: list[int], shots: int, n_classes: int | None) -> dict[bytes, torch.Tensor]:
    """Every control shot of the seeds (as the fit receives it, uint8) to its texture-free twin."""
    out = {}
    for seed in seeds:
        run = SyntheticSeed.for_recipe(recipe, seed, shots, train_stream=CONTROL,
                                       **({"task": "many", "n_classes": n_classes} if n_classes else {}))
        images, bare, _ = texture.texture_pair(run, CONTROL, shots)
        out.update({x.numpy().tobytes(): b for x, b in zip(images, bare)})
    return out


def texture_kept_swap(pairs: dict[bytes, torch.Tensor]):
    """``coarse_swap`` for the fit: the twin swapped, the shot's texture added back."""
    def swap(pixels: torch.Tensor, donor: torch.Tensor, sigma_fraction: float) -> torch.Tensor:
        bare = pairs.get(pixels.numpy().tobytes())
        if bare is None:
            raise RuntimeError("a swapped training image that is not a control shot: the study's lookup failed")
        out = coarse_swap(bare, donor, sigma_fraction).float() + (pixels.float() - bare.float())
        return out.round().clamp(0, 255).to(torch.uint8)
    return swap


@contextmanager
def patched(pairs):
    original = loop.coarse_swap
    loop.coarse_swap = texture_kept_swap(pairs)
    try:
        yield
    finally:
        loop.coarse_swap = original


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--classes", type=int, default=None, help="the many-class variant (default: texture task)")
    parser.add_argument("--sigmas", default="0.125,0.0625")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--pairs", default="12,12", help="validation (t, noise) pairs below and above t = 200")
    parser.add_argument("--cache", type=Path, default=None, help="tune_synthetic's cache: shared fits, resumable")
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    pairs = tuple(int(v) for v in args.pairs.split(","))
    common = dict(pairs=pairs, cache=args.cache, train_stream=CONTROL, n_classes=args.classes)
    lookup = twins(recipe, args.seeds, args.shots, args.classes)
    out = {"what": __doc__.splitlines()[0], "classes": args.classes or 5, "seeds": args.seeds,
           "window": list(window), "blurs": {}}
    for sigma in (float(v) for v in args.sigmas.split(",")):
        swap = ["fit.coarse_swap=1.0", f"fit.coarse_sigma={sigma}"]
        plain = tune.evaluate(swap, args.seeds, args.shots, args.val_per_class, **common)
        with patched(lookup):
            kept = tune.evaluate(swap, args.seeds, args.shots, args.val_per_class, key_extra=KEPT, **common)
        a, b = (strength.per_seed(r, "oracle", window) for r in (kept, plain))
        gain, se = mean_se(list(a - b))
        out["blurs"][str(sigma)] = {"swap": float(b.mean()), "texture kept": float(a.mean()),
                                    "kept minus swap": {"gain": gain, "se": se, "ahead": int((a > b).sum()),
                                                        "behind": int((a < b).sum())},
                                    "per_seed": {"swap": b.tolist(), "texture kept": a.tolist()}}
        row = out["blurs"][str(sigma)]["kept minus swap"]
        print(f"blur {sigma:g}: the swap's fit on the control shots {b.mean():.3f}, with the texture kept "
              f"{a.mean():.3f}: {gain:+.3f} (SE {se:.3f}; {row['ahead']} seeds ahead, {row['behind']} behind)")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
