"""What the coarse swap's composites are to the base model: its denoising error on them, and the texture they keep.

    python eval/swap_artifacts.py --seeds 11-20 --out docs/notes/2026-12-05-swap-artifacts.json

``eval/swap_accounting.py`` found that the swap costs accuracy of its own, measured on control shots that carry
no accident (its figures: ``docs/notes/2026-12-05-swap-accounting.md``), and left why open. Two readings of the
images the adapters are trained on, no fit:

- **the base's denoising error** (epsilon MSE under the generic prompt, the scoring window's time-steps, 12
  (t, noise) draws per seed) on the control shots as they are, swapped at each blur (each shot with the same
  donor at every width), and on the donors (the prior images) themselves. The base never saw the class
  textures, so the shots already cost it more than the donors; what the swap adds on top is how far the
  composites lie outside what the base models, which the adapters then have to learn;
- **the texture kept**: what survives of the class texture (the shot minus its texture-free twin) through the
  swap, projected on the texture and over its energy (1: untouched), linearly (the blur's high-pass) and after
  clipping to [0, 255].

Paired over seeds (mean and SE of the per-seed differences). Validation seeds only (never the sealed ones), at
least 10 unless ``--smoke``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from diti_sd.backbone import load_backbone
from diti_sd.benchmarks.synthetic.streams import CONTROL_SHOTS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.coarse import coarse_sigma, gaussian_blur
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.seeding import derive_seed
from diti_sd.stats import mean_se

_spec = importlib.util.spec_from_file_location("latent_texture", Path(__file__).with_name("latent_texture.py"))
texture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(texture)
strength, tune = texture.strength, texture.tune

PAIRS = 12
STREAM = CONTROL_SHOTS  # the control shots the swap's own cost was measured on
SWAP_ARTIFACTS = 41  # derive_seed key of the (t, noise) draws, apart from every key the package uses


@torch.no_grad()
def denoising_error(backbone, pixels: torch.Tensor, window: tuple[int, int], seed: int) -> float:
    """The base's mean epsilon MSE on (n, 3, H, W) uint8 images under the generic prompt, at ``PAIRS`` draws of
    (t in ``window``, noise) from ``seed``, the same draws for every set of images of a seed."""
    z = backbone.encode_batches(pixels).float()
    g = torch.Generator().manual_seed(derive_seed(seed, SWAP_ARTIFACTS))
    context = backbone.encode_prompts(["a photo"]).expand(len(z), -1, -1)
    errors = []
    for t in torch.randint(window[0], window[1], (PAIRS,), generator=g).tolist():
        noise = torch.randn(z.shape, generator=g)
        steps = torch.full((len(z),), t)
        x_t = backbone.add_noise(z, noise, steps)
        eps = backbone.output_to_epsilon(backbone.predict(x_t, steps, context), x_t, steps)
        errors.append(float(((eps.float() - noise) ** 2).mean()))
    return float(np.mean(errors))


def texture_kept(shots: torch.Tensor, swapped: torch.Tensor, bare: torch.Tensor, bare_swapped: torch.Tensor,
                 sigma_fraction: float) -> dict:
    """What the swap keeps of the texture, projected on it over its energy (1: untouched): through the blur's
    high-pass alone, and as the swap leaves it (clipped)."""
    tex = shots.float() - bare.float()
    high = tex - gaussian_blur(tex, coarse_sigma(sigma_fraction, shots.shape))
    kept = swapped.float() - bare_swapped.float()
    energy = float((tex * tex).sum())
    return {"high_pass": float((high * tex).sum()) / energy, "after_clipping": float((kept * tex).sum()) / energy}


def measure(backbone, recipe, run: SyntheticSeed, sigmas: list[float]) -> dict:
    shots, bare, _ = texture.texture_pair(run, STREAM, run.shots)
    donors = strength.as_uint8(run.prior(recipe))
    pick = torch.randint(len(donors), (len(shots),), generator=torch.Generator().manual_seed(run.seed))
    window = (recipe.score.t_min, recipe.score.t_max)
    out = {"as is": denoising_error(backbone, shots, window, run.seed),
           "donors": denoising_error(backbone, donors[pick], window, run.seed), "swapped": {}}
    for sigma in sigmas:
        swapped, bare_swapped = texture.swapped_pair(shots, bare, donors, pick, sigma)
        out["swapped"][str(sigma)] = {"error": denoising_error(backbone, swapped, window, run.seed),
                                      **texture_kept(shots, swapped, bare, bare_swapped, sigma)}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--classes", default="5,6,10",
                        help="the variants: 5 is the texture task, more the stripe variant with that many classes")
    parser.add_argument("--sigmas", default="0.125,0.0625", help="the blurs, fractions of the side")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds")
    args = parser.parse_args(argv)
    tune.check_protocol(args.seeds, args.smoke)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    recipe = load_recipe("synthetic")
    backbone = load_backbone(recipe.model, device="cpu", progress=False)
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "shots": args.shots, "stream": STREAM,
           "window": [recipe.score.t_min, recipe.score.t_max], "pairs": PAIRS, "variants": {}}
    for n in (int(v) for v in args.classes.split(",")):
        task, n_classes = ("texture", None) if n == 5 else ("many", n)
        rows = [measure(backbone, recipe, SyntheticSeed.for_recipe(recipe, seed, args.shots, task=task,
                                                                   n_classes=n_classes, train_stream=STREAM), sigmas)
                for seed in args.seeds]
        name = "texture task, 5 classes" if n == 5 else f"stripes, {n} classes"
        base = [r["as is"] for r in rows]
        summary = {"as is": float(np.mean(base)), "donors minus as is": mean_se([r["donors"] - b
                                                                                 for r, b in zip(rows, base)])}
        print(f"{name}: the base's error on the shots {summary['as is']:.3f}, on the donors "
              f"{summary['donors minus as is'][0]:+.3f} (SE {summary['donors minus as is'][1]:.3f})")
        for s in map(str, sigmas):
            added = mean_se([r["swapped"][s]["error"] - b for r, b in zip(rows, base)])
            kept = {k: float(np.mean([r["swapped"][s][k] for r in rows])) for k in ("high_pass", "after_clipping")}
            summary[f"swapped at {s}"] = {"error minus as is": added, "texture kept": kept}
            print(f"  swapped at {s}: error {added[0]:+.3f} (SE {added[1]:.3f}); texture kept "
                  f"{kept['high_pass']:.3f} by the high-pass, {kept['after_clipping']:.3f} after clipping")
        out["variants"][name] = {"summary": summary, "per_seed": rows}
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
