"""Where "coarse" ends by the method's premise: the blur ``fit.coarse_sigma: auto`` resolves to, per fit.

The DiTi premise: coarse attributes survive the noise over the time-steps the adapters are scored on, fine ones
are destroyed in them. So the blur that splits an image into what the coarse swap replaces and what it keeps
(and what the shortcut check reads) can be placed from the shots and the noise schedule instead of fixed: the
shots' latents, their power per spatial frequency (radially averaged over channels and shots, each channel's
mean removed; unit-variance white noise has power 1 in every bin), times the schedule's signal-to-noise ratio at
the scoring window's last time-step; the first frequency where that falls below 1 (interpolated on the log);
and the Gaussian whose amplitude response is one half there (the usual cut-off of a Gaussian filter, and the
gain a Wiener filter has where signal and noise are equal), as a fraction of the image's shorter side. Each
step is a convention (the time-step, the threshold, the response, the bins, no window before the transform),
fixed here and recorded in the notes; the reading places the blur, it does not measure where the class lies.
No UNet call: the autoencoder's latents of the shots, which a fit computes anyway.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from .timesteps import signal_to_noise

# a Gaussian of sigma s passes half the amplitude of frequency f where s * f is this
HALF_AMPLITUDE = math.sqrt(math.log(2) / (2 * math.pi ** 2))
BINS = 12  # radial frequency bins


def radial_power(latents: torch.Tensor, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """(n, c, h, w) latents to their mean power per radial frequency bin (cycles per latent cell), each channel's
    mean removed; a bin is placed at its frequencies' mean radius, not its middle. White noise of unit variance
    has power 1 in every bin."""
    z = latents.detach().float().cpu()
    z = z - z.mean((0, 2, 3), keepdim=True)
    h, w = z.shape[-2:]
    power = (torch.fft.fft2(z).abs() ** 2 / (h * w)).mean((0, 1))
    radius = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None] ** 2)
    edges = np.linspace(0, float(radius.max()) + 1e-9, bins + 1)
    centres, means = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (radius >= lo) & (radius < hi) & (radius > 0)
        if inside.any():
            centres.append(float(radius[inside].mean()))
            means.append(float(power[inside].mean()))
    return np.array(centres), np.array(means)


def crossing(freqs: np.ndarray, snr: np.ndarray) -> float:
    """The first frequency where ``snr`` falls below 1, interpolated on log(snr); the first bin's if it starts
    below, the last bin's if it never falls."""
    below = np.flatnonzero(snr < 1)
    if not len(below):
        return float(freqs[-1])
    i = int(below[0])
    if i == 0:
        return float(freqs[0])
    a, b = math.log(snr[i - 1]), math.log(max(float(snr[i]), 1e-12))  # a bin of no power at all
    return float(freqs[i - 1] + (freqs[i] - freqs[i - 1]) * a / (a - b))


def premise_cutoff(latents: torch.Tensor, alpha_bar: float, latent_factor: int, side: int) -> dict:
    """Where the noise of ``alpha_bar`` drowns the ``latents``' power (``crossing_cycles_per_cell``) and the blur
    that passes half the amplitude there, in pixels of the images (``latent_factor`` pixels a latent cell) and as
    a fraction of their shorter ``side`` (``sigma_fraction``, as ``fit.coarse_sigma`` counts it)."""
    freqs, power = radial_power(latents)
    snr = power * signal_to_noise(alpha_bar)
    f = crossing(freqs, snr)
    sigma_px = HALF_AMPLITUDE / f * latent_factor
    # at an end of the measured frequencies the number is set by the latents' size, not by the shots
    edge = "drowned everywhere" if snr[0] < 1 else "drowned nowhere" if not (snr < 1).any() else None
    return {"crossing_cycles_per_cell": f, "sigma_pixels": sigma_px, "sigma_fraction": sigma_px / side,
            "edge": edge}


def window_end(score) -> int:
    """The time-step ``fit.coarse_sigma: auto`` reads the noise at: the scoring window's last."""
    return score.t_max - 1


def resolve_coarse_sigma(recipe, backbone, latents: torch.Tensor, pixel_shape):
    """``recipe`` with ``fit.coarse_sigma: auto`` replaced by the premise's blur for these shots (their latents,
    the images' (.., H, W) shape), rounded to 4 digits, and the reading (:func:`premise_cutoff` with the time-step
    and its ``alpha_bar``); any other recipe as it is, and None. The recipe's checks have already refused a
    window that reaches every time-step or is chosen after fitting."""
    if recipe.fit.coarse_sigma != "auto":
        return recipe, None
    t = window_end(recipe.score)
    alpha_bar = float(backbone.alphas_cumprod("cpu")[t])
    factor = pixel_shape[-1] // latents.shape[-1]
    reading = {"t": t, "alpha_bar": alpha_bar, **premise_cutoff(latents, alpha_bar, factor, min(pixel_shape[-2:]))}
    sigma = round(reading["sigma_fraction"], 4)
    return replace(recipe, fit=replace(recipe.fit, coarse_sigma=sigma)), {**reading, "sigma_fraction": sigma}


def edge_warning(reading: dict) -> str:
    """One line for a reading at an end of the frequencies the latents hold, where the number is not the shots'."""
    where = "below" if reading["edge"] == "drowned everywhere" else "above"
    return (f"fit.coarse_sigma auto: the shots' latent power is {where} the noise at every frequency at t = "
            f"{reading['t']} (the scoring window's last time-step), so the blur, {reading['sigma_fraction']:g} of the "
            "side, is set by the latents' size, not by the shots; set fit.coarse_sigma to a number (0.125 by "
            "default)")
