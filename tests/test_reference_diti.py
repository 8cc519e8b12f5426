"""The DiTi encoder's reference configuration (yue-zhongqi/diti, config/celeba64/diti64.yml and the code it runs),
pinned value by value; docs/reference-parity.md, "DiTi encoder", lists each with its source."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as F

from diti_sd.encoder.attributed import AttributedDataset, AttributedImages
from diti_sd.encoder.config import load_encoder_recipe
from diti_sd.encoder.subsets import subset_plan
from diti_sd.encoder.train import encoder_ema

# (recipe key, the reference's value, where the reference sets it)
CELEBA64 = [
    ("z_dim", 512, "diti64.yml latent_dim"),
    ("layout.stages", [[50, 10], [100, 25], [300, 327], [500, 100], [1000, 50]],
     "diti64.yml ssl_config.stages, dims_per_stage"),
    ("layout.subsets", 64, "diti64.yml ssl_config.k"),
    ("layout.k_per_stage", None, "diti64.yml: no k_per_stage, so t_to_idx is k equal ranges"),
    ("net.encoder", "reference", "diti64.yml encoder_config.model CELEBA64Encoder"),
    ("train.gradient_mode", "base", "diti64.yml: no pdae_mode; diti_trainer.py defaults to base"),
    ("train.snr_power", 0.1, "gaussian_diffusion.py: gamma = 0.1, weight snr ** gamma / (1 + snr)"),
    ("train.shift_coefficient", "pdae", "gaussian_diffusion.py shift_coef"),
    ("train.lr", 1e-4, "diti64.yml optimizer_config.lr (x local batch / 32: 1e-4 on 4 GPUs)"),
    ("train.batch_size", 128, "diti64.yml dataloader_config.batch_size (global)"),
    ("train.steps", 296_875, "diti64.yml runner_config.max_images 38,000,000 / 128"),
    ("train.ema_decay", 0.9999, "diti64.yml runner_config.ema_decay, ema_every 1"),
    ("train.ema_warmup", False, "base_trainer.py: accumulate(ema, model, decay) from the first step"),
    ("train.mixed_precision", "no", "diti64.yml optimizer_config.enable_amp: False"),
    ("train.flip", True, "dataset/celeba64.py RandomHorizontalFlip"),
    ("data.kind", "celeba", "diti64.yml train_dataset_config.name CELEBA64"),
    ("data.crop_box", [57, 25, 128, 128], "dataset/celeba64.py CropCelebA64: F.crop(img, 57, 25, 128, 128)"),
    ("data.crop", None, "the crop box instead"),
    ("data.resize", "bilinear", "dataset/celeba64.py transforms.Resize(image_size): bilinear on PIL images"),
    ("data.train_split", "train", "dataset/celeba64.py: split train, images 0..162,769"),
]


@pytest.mark.parametrize("key, value, source", CELEBA64, ids=[k for k, _, _ in CELEBA64])
def test_celeba64_recipe_is_the_references(key, value, source):
    recipe = load_encoder_recipe("celeba64")
    section, _, name = key.rpartition(".")
    got = getattr(getattr(recipe, section) if section else recipe, name)
    assert got == value, f"{key}: {got!r}, the reference's {value!r} ({source})"


def test_celeba64_layout_sizes_are_the_references():
    # get_mask_end_dim on the celeba config: int(dims / n) per subset, the stage's remainder on its last subset
    starts, sizes = subset_plan([[50, 10], [100, 25], [300, 327], [500, 100], [1000, 50]], 64)
    assert sizes == [2, 2, 2, 4] + [8, 8, 9] + [25] * 12 + [27] + [8] * 11 + [12] + [1] * 31 + [19]
    assert starts[:5] == [0, 16, 32, 47, 63] and starts[-1] == 985  # int(t / 15.625)


def test_celeba_pixels_are_the_references_crop_and_bilinear_resize(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "000001.jpg"
    Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(path, quality=95)  # an aligned face
    data = AttributedImages([path], None, [], ["000001.jpg"])
    ours = AttributedDataset.from_config(data, 64, load_encoder_recipe("celeba64").data)[0]
    reference = transforms.Resize(64)(F.crop(Image.open(path).convert("RGB"), 57, 25, 128, 128))
    assert torch.equal(ours, torch.from_numpy(np.asarray(reference).copy()).permute(2, 0, 1))
    bicubic = AttributedDataset(data, 64, crop_box=[57, 25, 128, 128], resample="bicubic")[0]
    assert not torch.equal(ours, bicubic)  # the filter is what is pinned, not only the box


def test_ema_decays_at_its_rate_from_the_second_step_as_the_reference():
    reference = load_encoder_recipe("celeba64").train
    ema = encoder_ema([torch.nn.Parameter(torch.zeros(1))], reference)
    assert [ema.get_decay(s) for s in (2, 10, 1000)] == [0.9999] * 3
    warm = encoder_ema([torch.nn.Parameter(torch.zeros(1))], load_encoder_recipe("granular").train)
    assert warm.get_decay(10) < 0.999 and warm.get_decay(10_000) == 0.999


def test_the_reference_encoder_is_celeba64encoder():
    from diti_sd.encoder.networks import ReferenceCelebA64Encoder, SelfAttention

    encoder = ReferenceCelebA64Encoder(512)
    # the reference's own count (model/representation/encoder/celeba64.py, its __main__): 1,487,104
    assert sum(p.numel() for p in encoder.parameters()) == 1_487_104
    assert encoder(torch.randn(2, 3, 64, 64)).shape == (2, 512)
    # its attention as guided diffusion's legacy block: heads split before q, k, v; softmax(q k / sqrt(c))
    attention = SelfAttention(128, 4)
    torch.nn.init.normal_(attention.proj_out.weight)
    x = torch.randn(2, 128, 4, 4)
    flat = x.reshape(2, 128, 16)
    qkv = attention.qkv(attention.norm(flat)).reshape(8, 96, 16)
    q, k, v = qkv[:, :32], qkv[:, 32:64], qkv[:, 64:]
    scale = 1 / math.sqrt(math.sqrt(32))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    expected = flat + attention.proj_out(torch.einsum("bts,bcs->bct", weight, v).reshape(2, 128, 16))
    torch.testing.assert_close(attention(x), expected.reshape(x.shape))


def test_the_reference_encoder_refuses_other_sizes_with_the_fix():
    from diti_sd.encoder import DiTiEncoder
    from diti_sd.encoder.config import EncoderError
    from diti_sd.encoder.ddpm import build_ddpm

    with pytest.raises(EncoderError, match="takes 64-px images; this DDPM makes 16-px ones: set net.encoder=conv"):
        DiTiEncoder(load_encoder_recipe("granular", ["net.encoder=reference"]), build_ddpm(16, (16, 32)))
