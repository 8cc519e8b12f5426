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
    ("ddpm_linear_betas", [0.0001, 0.02], "diti64.yml diffusion_config: linear, 1e-4 .. 0.02"),
    ("layout.stages", [[50, 10], [100, 25], [300, 327], [500, 100], [1000, 50]],
     "diti64.yml ssl_config.stages, dims_per_stage"),
    ("layout.subsets", 64, "diti64.yml ssl_config.k"),
    ("layout.k_per_stage", None, "diti64.yml: no k_per_stage, so t_to_idx is k equal ranges"),
    ("net.encoder", "celeba64", "diti64.yml encoder_config.model CELEBA64Encoder"),
    ("train.gradient_mode", "base", "diti64.yml: no pdae_mode; diti_trainer.py defaults to base"),
    ("train.snr_power", 0.1, "gaussian_diffusion.py: gamma = 0.1, weight snr ** gamma / (1 + snr)"),
    ("train.shift_coefficient", "pdae", "gaussian_diffusion.py shift_coef"),
    ("train.lr", 2e-4, "diti64.yml lr 1e-4 x local batch / 32 (diti_trainer.py): 2e-4 on its README's 2 GPUs"),
    ("train.batch_size", 128, "diti64.yml dataloader_config.batch_size (global)"),
    ("train.steps", 296_875, "diti64.yml runner_config.max_images 38,000,000 / 128"),
    ("train.ema_decay", 0.9999, "diti64.yml runner_config.ema_decay, ema_every 1"),
    ("train.ema_warmup", False, "representation_learning_trainer.py: accumulate every step from a deepcopy"),
    ("train.mixed_precision", "no", "diti64.yml optimizer_config.enable_amp: False"),
    ("train.flip", True, "dataset/celeba64.py RandomHorizontalFlip"),
    ("data.kind", "celeba", "diti64.yml train_dataset_config.name CELEBA64"),
    ("data.crop_box", [57, 25, 128, 128], "dataset/celeba64.py CropCelebA64: F.crop(img, 57, 25, 128, 128)"),
    ("data.crop", None, "the crop box instead"),
    ("data.resize", "bilinear", "dataset/celeba64.py transforms.Resize(image_size): bilinear on PIL images"),
    ("data.train_split", "train", "dataset/celeba64.py: split train, images 0..162,769"),
    ("data.val_split", "val", "eval/multitask_classification.py: the valid split chooses the probe's epoch"),
    ("probe.method", "reference", "eval/multitask_classification.py"),
    ("probe.epochs", 15, "eval/multitask_classification.py --epochs 15 (its README's command)"),
    ("probe.lr", 1e-3, "eval/multitask_classification.py Adam(lr=0.001)"),
    ("probe.train_batch_size", 128, "eval/multitask_classification.py train_loader batch_size=128"),
]


# config/celeba64/diti64_stopgrad.yml and config/ffhq/diti64.yml: what differs from diti64.yml
STOPGRAD = [("train.gradient_mode", "stop_grad", "pdae_mode: stop_grad"),
            ("train.steps", 468_750, "max_images 60,000,000 / 128")]
FFHQ = [("net.encoder", "ffhq", "encoder_config.model FFHQEncoder"),
        ("data.kind", "folder", "name FFHQ: the 70,000 images"), ("data.train_split", "all", "dataset/ffhq.py"),
        ("data.crop_box", None, "dataset/ffhq.py: Resize(image_size) only"), ("data.crop", None, "the same"),
        ("data.resize", "bilinear", "transforms.Resize on PIL images"),
        ("train.steps", 500_000, "max_images 64,000,000 / 128")]
UNCHANGED = ["z_dim", "ddpm_linear_betas", "layout.stages", "layout.subsets", "train.lr", "train.batch_size",
             "train.ema_decay", "train.ema_warmup", "train.mixed_precision", "train.snr_power", "train.flip"]
CASES = [("celeba64", *row) for row in CELEBA64] + [("celeba64-stopgrad", *row) for row in STOPGRAD] + \
    [("ffhq", *row) for row in FFHQ] + \
    [(name, key, value, "as diti64.yml") for name in ("celeba64-stopgrad", "ffhq") for key, value, _ in CELEBA64
     if key in UNCHANGED]


@pytest.mark.parametrize("recipe_name, key, value, source", CASES, ids=[f"{r}-{k}" for r, k, _, _ in CASES])
def test_reference_recipes_are_the_references(recipe_name, key, value, source):
    recipe = load_encoder_recipe(recipe_name)
    section, _, name = key.rpartition(".")
    got = getattr(getattr(recipe, section) if section else recipe, name)
    assert got == value, f"{recipe_name} {key}: {got!r}, the reference's {value!r} ({source})"


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


def _reference_layers(name):
    """model/representation/encoder/{celeba64,ffhq}.py, layer by layer: (kind, in, out) of the Sequential."""
    celeba = [("conv", 3, 64), ("gn", 64), ("conv", 64, 128), ("attn", 128), ("gn", 128), ("conv", 128, 128),
              ("gn", 128), ("conv", 128, 128), ("gn", 128), ("linear", 2048, 512)]
    ffhq = [("conv", 3, 64), ("gn", 64), ("conv", 64, 128), ("gn", 128), ("conv", 128, 256), ("attn", 256),
            ("gn", 256), ("conv", 256, 256), ("gn", 256), ("conv", 256, 256), ("gn", 256), ("linear", 4096, 512)]
    return {"celeba64": celeba, "ffhq": ffhq}[name]


def _layers(module):
    from diti_sd.encoder.networks import SelfAttention

    out = []
    for m in [*module.features, module.head]:
        if isinstance(m, torch.nn.Conv2d):
            assert (m.kernel_size, m.stride, m.padding) == ((3, 3), (2, 2), (1, 1))
            out.append(("conv", m.in_channels, m.out_channels))
        elif isinstance(m, torch.nn.GroupNorm):
            assert m.num_groups == 32
            out.append(("gn", m.num_channels))
        elif isinstance(m, SelfAttention):
            assert m.heads == 4
            out.append(("attn", m.qkv.in_channels))
        elif isinstance(m, torch.nn.Linear):
            out.append(("linear", m.in_features, m.out_features))
    return out


@pytest.mark.parametrize("name, size, params", [("celeba64", 64, 1_487_104), ("ffhq", 128, None)])
def test_the_reference_encoders_are_the_references_layers(name, size, params):
    from diti_sd.encoder.networks import ReferenceEncoder, SelfAttention

    encoder = ReferenceEncoder(name, 512)
    assert _layers(encoder) == _reference_layers(name)
    if params:  # the reference's own count (model/representation/encoder/celeba64.py, its __main__)
        assert sum(p.numel() for p in encoder.parameters()) == params
    assert encoder(torch.randn(2, 3, size, size)).shape == (2, 512)
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

    with pytest.raises(EncoderError, match="for 64-px images; this DDPM makes 16-px ones: set net.encoder=conv"):
        DiTiEncoder(load_encoder_recipe("granular", ["net.encoder=celeba64"]), build_ddpm(16, (16, 32)))


def test_the_recipe_refuses_a_ddpm_on_other_betas_with_the_fix():
    from diffusers import DDPMScheduler

    from diti_sd.encoder import DiTiEncoder
    from diti_sd.encoder.config import EncoderError
    from diti_sd.encoder.ddpm import DDPM, build_ddpm

    recipe = load_encoder_recipe("granular", ["ddpm_linear_betas=[0.0001, 0.02]"])
    ddpm = build_ddpm(16, (16, 32))
    DiTiEncoder(recipe, ddpm)  # diffusers' linear default: the reference's
    cosine = DDPM(ddpm.unet, DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"), "cosine")
    with pytest.raises(EncoderError, match="linear betas 0.0001..0.02 .*cosine has squaredcos_cap_v2.*=null"):
        DiTiEncoder(recipe, cosine)
    DiTiEncoder(load_encoder_recipe("granular"), cosine)  # a recipe that asks for no schedule takes it


def _features(seed=0, n=96, dim=6, attributes=3):
    from diti_sd.encoder.probe import ProbeFeatures

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g)
    y = (z[:, :attributes] + 0.5 * torch.randn(n, attributes, generator=g) > 0).int().numpy()
    zv = torch.randn(40, dim, generator=g)
    yv = (zv[:, :attributes] > 0).int().numpy()
    return ProbeFeatures(z, y, -z, zv, yv)


def test_the_reference_probe_keeps_the_epoch_of_best_validation_ap(monkeypatch):
    from diti_sd.encoder import probe as module

    features = _features()

    def fit(epochs, aps):
        scores = iter(aps)
        monkeypatch.setattr(module, "held_out_ap", lambda probe, z, y: [next(scores)])
        return module.fit_reference_probe(features, epochs=epochs)

    second, last = fit(2, [0.1, 0.2]), fit(3, [0.1, 0.2, 0.3])  # each epoch's state, as the runs replay alike
    kept = fit(3, [0.5, 0.8, 0.7])
    assert all(torch.equal(a, b) for a, b in zip(kept, second))  # the second epoch's, not the last
    assert not torch.equal(kept[0], last[0])
    tied = fit(3, [0.5, 0.8, 0.8])
    assert all(torch.equal(a, b) for a, b in zip(tied, second))  # a tie keeps the first (strictly better only)


def test_the_reference_probe_reads_z_as_it_is_and_the_mirrored_images():
    from diti_sd.encoder.probe import ProbeFeatures, fit_reference_probe

    base = _features()
    weight, bias, mean, std = fit_reference_probe(base, epochs=2)
    assert torch.equal(mean, torch.zeros(6)) and torch.equal(std, torch.ones(6))  # no standardising
    same = ProbeFeatures(base.train, base.y_train, base.train, base.val, base.y_val)  # mirroring changes nothing
    assert not torch.equal(fit_reference_probe(same, epochs=2)[0], weight)
    # one epoch is Adam over batches of 128 in order: with one batch, the first step's size is lr per weight
    first = fit_reference_probe(base, epochs=1, batch_size=len(base.train))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        initial = torch.nn.Linear(6, 3)
    torch.testing.assert_close((first[0] - initial.weight.detach().T).abs(), torch.full((6, 3), 1e-3),
                               rtol=1e-3, atol=1e-6)


def test_run_probe_refuses_the_reference_probe_without_validation_images(tmp_path):
    from diti_sd.encoder import DiTiEncoder, run_probe
    from diti_sd.encoder.ddpm import build_ddpm
    from diti_sd.encoder.granular import make_granular
    from diti_sd.errors import ConfigError

    model = DiTiEncoder(load_encoder_recipe("granular", ["probe.method=reference"]), build_ddpm(16, (16, 32)))
    data = make_granular(8, seed=0)
    with pytest.raises(ConfigError, match="validation AP: give validation images .* --method lbfgs"):
        run_probe(model, data, data, tmp_path)


def test_ddim_steps_shift_and_clamp_as_the_references_sampler():
    from diti_sd.encoder import DiTiEncoder
    from diti_sd.encoder.ddpm import build_ddpm
    from diti_sd.encoder.edit import _step

    model = DiTiEncoder(load_encoder_recipe("granular"), build_ddpm(16, (16, 32)))
    torch.nn.init.normal_(model.shift.unet.conv_out.weight, std=0.1)
    abar = model.alphas_cumprod.double()
    # model/diffusion/ddim.py shift_ddim_sample / shift_ddim_encode: predicted_noise - sqrt(1 - abar_t) * gradient
    torch.testing.assert_close(model.sample_shift_coef.double(), -(1 - abar).sqrt(), rtol=1e-5, atol=1e-7)
    x, z = torch.full((2, 3, 16, 16), 3.0), torch.randn(2, 16)
    t = torch.full((2,), 500)
    eps = model.eps(x, t, z, sampling=True)
    x0 = ((x - (1 - abar[500]).sqrt().float() * eps) / abar[500].sqrt().float()).clamp(-1, 1)  # x_0 clamped
    eps = (x - abar[500].sqrt().float() * x0) / (1 - abar[500]).sqrt().float()  # the noise re-derived from it
    expected = abar[400].sqrt().float() * x0 + (1 - abar[400]).sqrt().float() * eps
    torch.testing.assert_close(_step(model, x, z, 500, 400), expected)
    assert not torch.allclose(model.eps(x, t, z, sampling=True), model.eps(x, t, z))


def test_the_ffhq_probe_never_trains_on_its_test_images(tmp_path):
    from diti_sd.encoder.data import load_attributed

    for i in range(20):
        Image.fromarray(np.full((8, 8, 3), i * 10, dtype=np.uint8)).save(tmp_path / f"{i:05d}.png")
    recipe = load_encoder_recipe("ffhq")
    data = recipe.data

    def ids(split):
        return set(load_attributed(data.kind, tmp_path, split, data.image_column, None, 128).ids)

    fit, probe, test = ids(data.train_split), ids(recipe.probe.train_split), ids(data.test_split)
    assert len(fit) == 20 and test <= fit  # the encoder learns from every image, as the reference's
    assert probe and not probe & test and probe | test == fit
