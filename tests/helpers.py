"""Small seeded inputs the tests share."""

import torch

# an OpenCLIP model config small enough for CPU tests (random weights)
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                             "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
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
