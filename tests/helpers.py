"""Small seeded inputs the tests share."""

import torch

COLORS = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.9, 0.2], [0.2, 0.2, 0.9]])


def color_images(n: int, seed: int, size: int = 64):
    """Class c: a flat colour plus pixel noise; labels 'c0', 'c1', 'c2' in turn."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for i in range(n):
        c = i % 3
        image = COLORS[c].view(3, 1, 1) + 0.15 * torch.randn(3, size, size, generator=g)
        images.append(image.clamp(0, 1))
        labels.append(f"c{c}")
    return images, labels
