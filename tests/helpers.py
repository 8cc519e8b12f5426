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
# a SigLIP-style OpenCLIP config (a learned logit bias: sigmoid logits), text tower on the bundled tokenizer
TINY_SIGMOID = {"embed_dim": 32, "init_logit_bias": -10, "custom_text": True,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                             "no_causal_mask": True, "pool_type": "last"}}


def make_tiny_dinov2(folder):
    """A random-weight DINOv2 of transformers' classes, with its image processor, saved as a hub folder."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder
