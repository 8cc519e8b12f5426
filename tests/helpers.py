"""Small seeded inputs the tests share."""

import torch

# an OpenCLIP model config small enough for CPU tests (random weights)
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                             "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
COLORS = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.9, 0.2], [0.2, 0.2, 0.9]])


def square_shots(n, size=(56, 72)):
    """Images whose object is a light square at a different place in each (on a dark ground), and the squares as
    their masks; labels c0, c1, c2 in turn."""
    images, masks = [], []
    for i in range(n):
        mask = torch.zeros(size, dtype=torch.bool)
        top, left = 4 + 5 * i, 6 + 7 * i
        mask[top:top + 20, left:left + 24] = True
        images.append(0.1 + 0.8 * mask.float().expand(3, -1, -1))
        masks.append(mask)
    return images, masks, [f"c{i % 3}" for i in range(n)]


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


def record_fit(cfg_overrides, steps=6, width=96, mask=None):
    """Fit one class on one random image for ``steps`` steps with two prior images under ``cfg_overrides``
    (``mask``: the image's (1, 64, width) object mask), recording the pixels each step encodes, their posterior
    means and the latents it noises: (the image and the prior images in [-1, 1], encoded, means, noised)."""
    from diti_sd.lora import ClassAdapters
    from diti_sd.preprocessing import uint8_to_float
    from diti_sd.recipes import FitConfig, LoraConfig
    from diti_sd.testing.tiny import build_tiny_backbone
    from diti_sd.training.loop import FitData, fit_adapters

    backbone = build_tiny_backbone(seed=0)
    g = torch.Generator().manual_seed(1)
    wide = (torch.rand(3, 64, width, generator=g) * 255).to(torch.uint8)  # shorter side at the resolution
    prior = (torch.rand(2, 3, 64, 64, generator=g) * 255).to(torch.uint8)
    cfg = FitConfig(prior=True, prior_images=2, checkpoint_every=0, batch_size=2, lr=1e-3, **cfg_overrides)
    encoded, noised = [], []
    encode, add_noise = backbone.encode_posterior, backbone.add_noise

    def recording_encode(pixels):
        encoded.append(pixels.detach().clone())
        mean, std = encode(pixels)
        encoded_means.append(mean)
        return mean, std

    def recording_add_noise(x0, noise, t):
        noised.append(x0.detach().clone())
        return add_noise(x0, noise, t)

    encoded_means = []
    backbone.encode_posterior, backbone.add_noise = recording_encode, recording_add_noise
    adapters = ClassAdapters(backbone, 1, LoraConfig(rank=2))
    data = FitData([[wide]], ["a photo of hta"], "a photo", prior, None if mask is None else [[mask]])
    fit_adapters(backbone, adapters, data, cfg, steps, progress=False)
    return uint8_to_float(wide), uint8_to_float(prior), encoded, encoded_means, noised


def eval_script(name: str):
    """A script under eval/ imported as a module (they are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
