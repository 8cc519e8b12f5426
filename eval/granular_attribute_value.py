"""What knowing each synthetic attribute is worth to an ideal denoiser, by time-step.

    python eval/granular_attribute_value.py

For a binary attribute that adds a known pattern of energy E (squared norm in [-1, 1] pixel units) to
x_0, an ideal denoiser sees it in x_t with detectability d' = sqrt(SNR_t * E); told the attribute, it
saves E * Var(attribute | x_t) of squared x_0 error. Under the DiTi loss (epsilon MSE per pixel, weight
SNR^0.1 / (1 + SNR)) that is SNR^1.1 / (1 + SNR) * E * Var / N. Prints where that worth peaks and where
it is above half its peak, on the shipped DDPM's schedule, and the share of it at t below each given
stage boundary. The disc is left out there: its random position makes it no single known pattern.

The shipped DDPM is no ideal denoiser, and what G can gain from z is what that DDPM gets wrong. So the
second table measures it: on fresh images, the DDPM's noise residual r = eps_ddpm - eps at each t, and the
part of its weighted mean square that the attribute's class means of r (per pixel) explain. That is the
loss a shift knowing only the attribute and t could remove -- a lower bound on the attribute's worth to
G, which also sees x_t. The disc is included; its worth needs no known pattern here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diti_sd.data.granular import make_granular  # noqa: E402
from diti_sd.encoder import load_ddpm  # noqa: E402


def posterior_variance(d: float, rng: np.random.Generator, n: int = 20000) -> float:
    """E[Var(m | y)] for m ~ Bernoulli(1/2), y = d * m + N(0, 1)."""
    m = rng.integers(0, 2, n)
    y = d * m + rng.standard_normal(n)
    p = 1 / (1 + np.exp(np.clip(-d * (y - d / 2), -50, 50)))
    return float((p * (1 - p)).mean())


def measured_worth(ddpm, images: torch.Tensor, attributes: np.ndarray, timesteps: list[int], seed: int = 0):
    """Per t: the DiTi-weighted residual loss of the DDPM and, per attribute, the part of it explained
    by the attribute's class means of the residual."""
    x0 = images.float() / 127.5 - 1
    attrs = torch.as_tensor(attributes)
    abar_all = ddpm.scheduler.alphas_cumprod
    g = torch.Generator().manual_seed(seed)
    loss, explained = [], []
    for t in timesteps:
        abar = abar_all[t]
        noise = torch.randn(x0.shape, generator=g)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        with torch.no_grad():
            eps = torch.cat([ddpm.unet(x_t[i:i + 256], torch.full((len(x_t[i:i + 256]),), t)).sample
                             for i in range(0, len(x_t), 256)])
        r = eps - noise
        snr = abar / (1 - abar)
        weight = float(snr**0.1 / (1 + snr))
        loss.append(weight * float(r.pow(2).mean()))
        mean = r.mean(0)
        row = []
        for k in range(attrs.shape[1]):
            on = attrs[:, k] == 1
            share = on.float().mean()
            between = share * (r[on].mean(0) - mean).pow(2).mean() + (1 - share) * (r[~on].mean(0) - mean).pow(2).mean()
            row.append(weight * float(between))
        explained.append(row)
    return np.array(loss), np.array(explained)


def _summary_row(name: str, worth: np.ndarray, grid: np.ndarray, boundaries: list[int], extra: str) -> str:
    above = grid[worth >= worth.max() / 2]
    shares = " | ".join(f"{worth[grid < b].sum() / worth.sum():.2f}" for b in boundaries)
    return f"| {name} | {extra} | {int(grid[worth.argmax()])} | {above[0]}-{above[-1]} | {shares} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boundaries", type=int, nargs="+", default=[500, 600, 750])
    parser.add_argument("--images", type=int, default=1024, help="fresh images for the measured table")
    args = parser.parse_args(argv)

    ddpm = load_ddpm("builtin:granular-ddpm")
    abar = ddpm.scheduler.alphas_cumprod.double().numpy()
    snr = abar / (1 - abar)
    with_mark = make_granular(400, seed=0)
    without = make_granular(400, seed=0, mark_amplitude=0.0)  # same draws, the mark left out
    to_unit = 2.0 / 255.0
    has = with_mark.attributes[:, 0] == 1
    diff = (with_mark.images[has].double() - without.images[has].double()) * to_unit
    n_pix = diff[0].numel()
    warm, cool = np.array([0.8, 0.35, 0.2]), np.array([0.2, 0.4, 0.8])  # the families' mean colours
    energies = {
        "fine_mark": float(diff.pow(2).sum(dim=(1, 2, 3)).mean()),
        # the background covers most of the image; the disc hides about a fifth of it on average
        "warm_background": float(((2 * (warm - cool)) ** 2).sum() * n_pix / 3 * 0.8),
    }
    rng = np.random.default_rng(0)
    shares_head = " | ".join(f"share at t < {b}" for b in args.boundaries)
    print("Ideal denoiser (calculated)\n")
    print(f"| attribute | energy E | worth peaks at t | above half the peak | {shares_head} |")
    print("|---|---|---|---|" + "---|" * len(args.boundaries))
    grid = np.arange(len(snr))
    for name, energy in energies.items():
        worth = np.array([s**1.1 / (1 + s) * energy * posterior_variance(np.sqrt(s * energy), rng) / n_pix
                          for s in snr])
        print(_summary_row(name, worth, grid, args.boundaries, f"{energy:.1f}"))

    data = make_granular(args.images, seed=5)  # not the encoder's train (0) or test (1) images
    timesteps = list(range(25, 1000, 50))
    loss, explained = measured_worth(ddpm, data.images, data.attributes, timesteps)
    print(f"\nThe shipped DDPM (measured on {args.images} fresh images, t = 25, 75, ..., 975)\n")
    print(f"| attribute | share of the weighted loss | worth peaks at t | above half the peak | {shares_head} |")
    print("|---|---|---|---|" + "---|" * len(args.boundaries))
    for k, name in enumerate(data.names):
        print(_summary_row(name, explained[:, k], np.array(timesteps), args.boundaries,
                           f"{explained[:, k].sum() / loss.sum():.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
