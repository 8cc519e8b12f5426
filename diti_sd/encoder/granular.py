"""Synthetic attributed images whose attributes have known granularity (the encoder's offline test bed).

Each image: a background colour from a warm or a cool family (coarse), a grey disc of random size and
position, and optionally a faint checker mark in a fixed corner (fine). The attributes are independent
coin flips, so where an encoder puts each of them can be measured (docs/encoder.md has the findings).
"""

from __future__ import annotations

import numpy as np
import torch

from .attributed import AttributedImages

ATTRIBUTES = ("fine_mark", "warm_background", "large_disc")


def make_granular(n: int, size: int = 16, seed: int = 0, mark_amplitude: float = 0.3, mark_fraction: float = 0.375,
                  disc: bool = True) -> AttributedImages:
    rng = np.random.default_rng(seed)
    attrs = rng.integers(0, 2, size=(n, len(ATTRIBUTES)))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    mark_side = max(2, round(size * mark_fraction))
    checker = np.where((x + y) % 2 == 0, 1.0, -1.0)[:mark_side, :mark_side]
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        mark, warm, large = attrs[i]
        base = np.array([0.8, 0.35, 0.2]) if warm else np.array([0.2, 0.4, 0.8])
        colour = np.clip(base + rng.uniform(-0.12, 0.12, 3), 0, 1)
        img = np.broadcast_to(colour.reshape(3, 1, 1), (3, size, size)).copy()
        radius = size * (rng.uniform(0.28, 0.36) if large else rng.uniform(0.12, 0.18))
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
        if disc:
            img[:, inside] = rng.uniform(0.45, 0.6)
        if mark:
            img[:, :mark_side, :mark_side] += mark_amplitude * checker
        images[i] = np.clip(img, 0, 1)
    pixels = torch.from_numpy((images * 255).round().astype(np.uint8))
    ids = [f"granular-{seed}-{i}" for i in range(n)]
    return AttributedImages(pixels, attrs.astype(np.int64), list(ATTRIBUTES), ids)
