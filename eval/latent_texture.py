"""How distinctly the autoencoder carries a synthetic task's class texture, on the shots as they are and swapped.

    python eval/latent_texture.py --seeds 11-20 --out docs/notes/2026-12-05-latent-texture.json

The adapters learn the class from latents, never from pixels, so what the autoencoder keeps of the fine texture
bounds what any fit can read. On the synthetic benchmark the texture alone is known: each shot is rendered again
with the texture's amplitude at zero (the same draw otherwise), and the class's latent signal is the difference
of the two latents. Per task (the 5-class texture task; the stripe variants with ``--classes``), per seed:

- ``reconstruction``: the correlation between the texture as it enters the autoencoder and what encoding and
  decoding gives back of it;
- ``separable``: nearest class mean on the amplitude spectrum of the latent signal (shift-invariant), the means
  from the shots (from several donor draws where swapped), read on the oracle validation stream's own signal
  (background apart from the class, as on the test), as is; beside it the same reading in pixels, before the
  autoencoder;

each for the shots as they are and with ``fit.coarse_swap``'s pixel swap (donors: the prior images; the shift, crop
and jitter training also applies are left out). No UNet call, no fit; validation seeds
only (never the sealed ones), at least 10 unless ``--smoke``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from diti_sd.backbone import load_backbone
from diti_sd.benchmarks.synthetic.data import make_split
from diti_sd.benchmarks.synthetic.streams import STREAMS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import mean_se
from diti_sd.training.coarse_swap import coarse_swap

_spec = importlib.util.spec_from_file_location("shortcut_strength",
                                               Path(__file__).with_name("shortcut_strength.py"))
strength = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(strength)
tune = strength.tune

DRAWS = 4  # donors drawn per shot for the swapped means


def texture_pair(run: SyntheticSeed, stream: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A stream's images and the same images without their texture (uint8), and their labels."""
    split, offset, shift = STREAMS[stream]
    flat = dataclasses.replace(run.spec, texture_amplitude=0.0)
    data = make_split(run.spec, split, per_class, offset + run.seed, shift)
    bare = make_split(flat, split, per_class, offset + run.seed, shift)
    return strength.as_uint8(data.images), strength.as_uint8(bare.images), np.array(data.labels)


def swapped_pair(images: torch.Tensor, bare: torch.Tensor, donors: torch.Tensor, pick: torch.Tensor,
                 sigma_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Both twins swapped with the same donor each, as training swaps a shot: they differ only by the texture (what
    is left of it after the swap's high-pass and clipping)."""
    def swap(batch):
        return torch.stack([coarse_swap(x, donors[j], sigma_fraction) for x, j in zip(batch, pick)])

    return swap(images), swap(bare)


def spectrum(batch: torch.Tensor) -> np.ndarray:
    return torch.fft.rfft2(batch.float()).abs().flatten(1).numpy()


def nearest_mean(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> float:
    means = np.stack([train[train_y == c].mean(0) for c in range(int(train_y.max()) + 1)])
    return float(np.mean(np.argmin(((test[:, None] - means[None]) ** 2).sum(-1), 1) == test_y))


def measure(backbone, recipe, run: SyntheticSeed, val_per_class: int) -> dict:
    """One seed: reconstruction and separability of the class texture, as is and swapped, and the separability of
    the texture in pixels (the same reading before the autoencoder)."""
    def encode(pixels):
        return backbone.encode_batches(pixels)

    shots, bare, y = texture_pair(run, "train", run.shots)
    test, test_bare, test_y = texture_pair(run, "oracle val", val_per_class)  # background apart from the class
    read = spectrum(encode(test) - encode(test_bare))
    pixels = nearest_mean(spectrum(shots.float() - bare.float()), y, spectrum(test.float() - test_bare.float()), test_y)
    donors = strength.as_uint8(run.prior(recipe))  # the prior images, the swap's donors
    g = torch.Generator().manual_seed(run.seed)
    out = {"separable in pixels": pixels}
    for name in ("as is", "swapped"):
        draws = DRAWS if name == "swapped" else 1
        signals, recon = [], []
        for _ in range(draws):
            a, b = shots, bare
            if name == "swapped":
                a, b = swapped_pair(shots, bare, donors, torch.randint(len(donors), (len(shots),), generator=g),
                                    recipe.fit.coarse_sigma)
            texture = (a.float() - b.float()) / 255  # as it enters the autoencoder
            za, zb = encode(a), encode(b)
            signals.append(spectrum(za - zb))
            back = backbone.decode_latents(za) - backbone.decode_latents(zb)
            recon.append(float((back * texture).sum() / (back.norm() * texture.norm())))
        out[name] = {"reconstruction": float(np.mean(recon)),
                     "separable": nearest_mean(np.concatenate(signals), np.tile(y, draws), read, test_y)}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--classes", default="5,6,10",
                        help="the variants: 5 is the texture task, more the stripe variant with that many classes")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=6)
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    recipe = load_recipe("synthetic")
    backbone = load_backbone(recipe.model, device="cpu", progress=False)
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "shots": args.shots,
           "val_per_class": args.val_per_class, "variants": {}}
    for n in (int(v) for v in args.classes.split(",")):
        task, n_classes = ("texture", None) if n == 5 else ("many", n)
        rows = [measure(backbone, recipe, SyntheticSeed.for_recipe(recipe, seed, args.shots, task=task,
                                                                   n_classes=n_classes), args.val_per_class)
                for seed in args.seeds]
        name = "texture task, 5 classes" if n == 5 else f"stripes, {n} classes"
        variant = {"chance": 1 / n, "per_seed": [{"seed": s, **r} for s, r in zip(args.seeds, rows)]}
        m, se = mean_se([r["separable in pixels"] for r in rows])
        variant["separable in pixels"] = {"mean": m, "se": se}
        print(f"{name} (chance {1 / n:.3f}); separable in pixels {m:.3f} (SE {se:.3f})")
        for how in ("as is", "swapped"):
            for what in ("reconstruction", "separable"):
                m, se = mean_se([r[how][what] for r in rows])
                variant[f"{what}, {how}"] = {"mean": m, "se": se}
            print(f"  {how:8s} reconstruction {variant[f'reconstruction, {how}']['mean']:.3f}   "
                  f"separable {variant[f'separable, {how}']['mean']:.3f} (SE {variant[f'separable, {how}']['se']:.3f})")
        m, se = mean_se([r["swapped"]["separable"] - r["as is"]["separable"] for r in rows])
        variant["separable, swapped minus as is"] = {"mean": m, "se": se}
        print(f"  swapped minus as is, separable {m:+.3f} (SE {se:.3f}, paired)")
        out["variants"][name] = variant
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
