"""An image's coarse content (a Gaussian low-pass), and whether the shots' coarse content alone names their class.

The method's premise is that a fine-grained class lives in fine attributes, which diffusion noise destroys
first, while coarse ones (colour layout, lighting, background) survive it. Where every shot of a class shares
a coarse attribute by accident, an adapter learns it with the class, and the user's validation images, drawn
where the shots came from, share it too, so no score on them shows the accident. What a user can see before
any fit is whether the shots' coarse content alone tells the classes apart: :func:`coarse_shortcut` measures
it (leave-one-out nearest class mean on the low-pass, against the same with the labels permuted). It cannot
say whether that content is the class or an accident: only the user knows what the classes differ in.
``fit.coarse_swap`` (diti_sd/training/coarse_swap.py) is the remedy where it is an accident. No UNet call.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .seeding import numpy_rng

# a fit warns when the permutation test puts the shots' coarse content above chance at this level (the smallest
# p-value 100 permutations can give is 1/101)
SHORTCUT_P = 0.01


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, c, h, w) float images, ``sigma`` in pixels, reflected at the borders
    (the kernel is cut to the image so that reflection stays defined)."""
    h, w = images.shape[-2:]
    radius = min(math.ceil(3 * sigma), h - 1, w - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def coarse_sigma(sigma_fraction: float, shape) -> float:
    """The blur's sigma in pixels: ``sigma_fraction`` of the shorter side of ``shape`` (.., H, W), so that the
    split between coarse and fine is the same at any resolution (at least half a pixel)."""
    return max(sigma_fraction * min(shape[-2:]), 0.5)


def coarse_features(pixels: torch.Tensor, sigma_fraction: float, batch_size: int = 64) -> torch.Tensor:
    """(n, 3, H, W) uint8 images to their low-pass in [0, 1], averaged to a grid of about one cell per sigma
    (the low-pass holds nothing finer), flattened: (n, 3 x cells). The images are first averaged over blocks
    of a quarter sigma and blurred at that scale (a blur of sigma 64 pixels at 512 costs minutes on a CPU),
    in batches (a few-shot set at 512 pixels is gigabytes as floats)."""
    sigma = coarse_sigma(sigma_fraction, pixels.shape)
    side = max(2, round(min(pixels.shape[-2:]) / sigma))
    block = max(1, int(sigma // 4))
    out = []
    for i in range(0, len(pixels), batch_size):
        x = F.avg_pool2d(pixels[i:i + batch_size].float() / 255, block, ceil_mode=True)
        out.append(F.adaptive_avg_pool2d(gaussian_blur(x, sigma / block), side).flatten(1))
    return torch.cat(out)


def leave_one_out_accuracy(features: torch.Tensor, labels: np.ndarray) -> float:
    """Share of images whose nearest class mean (squared Euclidean; their own class's mean taken without
    them) is their class's. Images alone in their class are left out."""
    x = features.double()
    classes = np.unique(labels)
    index = torch.as_tensor(np.searchsorted(classes, labels))
    counts = torch.bincount(index, minlength=len(classes)).double()
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, index, x)
    distance = torch.cdist(x, sums / counts[:, None]) ** 2
    own = counts[index]
    kept = own > 1
    # the own class's mean without the image itself
    loo_mean = (sums[index] - x) / (own - 1).clamp(min=1)[:, None]
    distance[torch.arange(len(x)), index] = ((x - loo_mean) ** 2).sum(1)
    hits = distance.argmin(1) == index
    return float(hits[kept].double().mean()) if bool(kept.any()) else float("nan")


def coarse_shortcut(pixels: torch.Tensor, labels, sigma_fraction: float = 0.125, permutations: int = 100,
                    seed: int = 0) -> dict:
    """How well the shots' coarse content alone names their class: ``accuracy`` (leave-one-out nearest class
    mean on :func:`coarse_features`), ``chance`` (its mean with the labels permuted ``permutations`` times)
    and ``p_value`` (the share of permutations at or above it, counting the observed one). ``pixels``: (n, 3,
    H, W) uint8; ``labels``: one per image."""
    labels = np.asarray(labels)
    features = coarse_features(pixels, sigma_fraction)
    accuracy = leave_one_out_accuracy(features, labels)
    rng = numpy_rng(seed)
    null = np.array([leave_one_out_accuracy(features, rng.permutation(labels)) for _ in range(permutations)])
    return {"accuracy": round(accuracy, 4), "chance": round(float(null.mean()), 4),
            "p_value": round(float((1 + np.sum(null >= accuracy)) / (1 + permutations)), 4),
            "sigma_fraction": sigma_fraction, "images": len(labels)}


def shortcut_warning(report: dict, swap: float) -> str | None:
    """The one-line warning a fit gives when the shots' coarse content names their class beyond chance (the
    permutation p-value below :data:`SHORTCUT_P`) and ``fit.coarse_swap`` is off; None otherwise."""
    if swap > 0 or not report["p_value"] < SHORTCUT_P:
        return None
    return (f"the shots' coarse content alone (blurred, sigma {report['sigma_fraction']:g} of the side) names their "
            f"class on {report['accuracy']:.2f} of them (labels permuted: {report['chance']:.2f}); if the classes "
            f"differ in fine detail and that content is an accident of where the shots were taken, the adapters "
            f"learn it too: fit with fit.coarse_swap=1 (docs/method.md, 'Coarse swap')")
