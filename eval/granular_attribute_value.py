"""What knowing each synthetic attribute is worth to an ideal denoiser, by time-step.

    python eval/granular_attribute_value.py

For a binary attribute that adds a known pattern of energy E (squared norm in [-1, 1] pixel units) to
x_0, an ideal denoiser sees it in x_t with detectability d' = sqrt(SNR_t * E); told the attribute, it
saves E * Var(attribute | x_t) of squared x_0 error. Under the DiTi loss (epsilon MSE per pixel, weight
SNR^0.1 / (1 + SNR)) that is SNR^1.1 / (1 + SNR) * E * Var / N. Prints where that worth peaks and where
it is above half its peak, on the shipped DDPM's schedule, and the share of it at t below each given
stage boundary. The disc is left out: its random position makes it no single known pattern.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diti_sd.data.granular import make_granular  # noqa: E402
from diti_sd.encoder import load_ddpm  # noqa: E402


def posterior_variance(d: float, rng: np.random.Generator, n: int = 20000) -> float:
    """E[Var(m | y)] for m ~ Bernoulli(1/2), y = d * m + N(0, 1)."""
    m = rng.integers(0, 2, n)
    y = d * m + rng.standard_normal(n)
    p = 1 / (1 + np.exp(np.clip(-d * (y - d / 2), -50, 50)))
    return float((p * (1 - p)).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boundaries", type=int, nargs="+", default=[600, 750])
    args = parser.parse_args(argv)

    abar = load_ddpm("builtin:granular-ddpm").scheduler.alphas_cumprod.double().numpy()
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
    print("| attribute | energy E | worth peaks at t | above half the peak | " +
          " | ".join(f"share at t < {b}" for b in args.boundaries) + " |")
    print("|---|---|---|---|" + "---|" * len(args.boundaries))
    for name, energy in energies.items():
        worth = np.array([s**1.1 / (1 + s) * energy * posterior_variance(np.sqrt(s * energy), rng) / n_pix
                          for s in snr])
        above = np.flatnonzero(worth >= worth.max() / 2)
        shares = " | ".join(f"{worth[:b].sum() / worth.sum():.2f}" for b in args.boundaries)
        print(f"| {name} | {energy:.1f} | {int(worth.argmax())} | {above[0]}-{above[-1]} | {shares} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
