"""The reference's training inputs, reproduced: crops, colour jitter, posterior draws, whole-image batches
and the text-LoRA dropout at scoring (docs/reference-parity.md, "Training" and "Scoring").

Each expectation is computed here the way the reference code (github yue-zhongqi/tif) does it.
"""

import pytest
import torch
from helpers import record_fit

from diti_sd.lora import ClassAdapters


# ------------------------------------------------------------------ training inputs
def test_random_crop_takes_square_windows_of_the_uncropped_image():
    wide, _, encoded, _, _ = record_fit({"crop": "random"})
    offsets = set()
    for batch in encoded:
        instance = batch[0]
        matches = [left for left in range(wide.shape[-1] - 64 + 1)
                   if torch.equal(instance, wide[:, :, left : left + 64])]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1  # a new window per step


def test_color_jitter_reaches_instance_and_prior_images():
    _, prior, encoded, _, _ = record_fit({"crop": "random", "brightness": 0.2, "contrast": 0.1})
    for batch in encoded:
        image = batch[1]
        # the prior image is one of the two, jittered: close to it, not equal to it
        closest = min(float((image - p).abs().mean()) for p in prior)
        assert 0 < closest < 0.25


def test_training_latents_are_posterior_draws_with_latent_sample():
    for latent, equal in (("mean", True), ("sample", False)):
        _, _, _, means, noised = record_fit({"crop": "random", "latent": latent}, steps=2)
        for mean, x0 in zip(means, noised):
            assert torch.equal(mean, x0) is equal


def test_shift_moves_instances_by_whole_steps_and_leaves_priors():
    # ours, not the reference's (fit.shift): a translation that keeps a texture of period shift_step in phase
    square, prior, encoded, _, _ = record_fit({"shift": 8, "shift_step": 4}, width=64)
    shifts = set()
    for batch in encoded:
        assert any(torch.equal(batch[1], p) for p in prior)  # the prior image as it is
        found = [(dy, dx) for dy in range(-8, 9, 4) for dx in range(-8, 9, 4)
                 if torch.equal(batch[0], torch.roll(square, shifts=(dy, dx), dims=(-2, -1)))]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 1


def test_whole_image_training_encodes_the_uncropped_image():
    # the reference: Resize(512) (shorter side), no crop, batch 1; the prior image (square) runs apart
    wide, prior, encoded, _, noised = record_fit({"crop": "none"}, steps=3)
    instances = [b for b in encoded if b.shape[-1] == wide.shape[-1]]
    priors = [b for b in encoded if b.shape[-1] == 64]
    assert len(instances) == len(priors) == 3
    assert all(torch.equal(b[0], wide) for b in instances)
    assert all(any(torch.equal(b[0], p) for p in prior) for b in priors)
    assert {tuple(x.shape[-2:]) for x in noised} == {(8, 12), (8, 8)}


def _fit_shapes(batch_size):
    from diti_sd.recipes import FitConfig, LoraConfig
    from diti_sd.testing.tiny import build_tiny_backbone
    from diti_sd.training.loop import FitData, fit_adapters

    backbone = build_tiny_backbone(seed=0)
    g = torch.Generator().manual_seed(3)
    # non-square images of three shapes (shorter side at the resolution), two per class
    shapes = [(64, 96), (80, 64), (64, 72)]
    images = [[(torch.rand(3, h, w, generator=g) * 255).to(torch.uint8) for _ in range(2)] for h, w in shapes]
    prior = (torch.rand(2, 3, 64, 64, generator=g) * 255).to(torch.uint8)
    cfg = FitConfig(prior=True, prior_images=2, checkpoint_every=0, batch_size=batch_size, lr=1e-3,
                    crop="none", latent="sample", brightness=0.2, contrast=0.1)
    adapters = ClassAdapters(backbone, 3, LoraConfig(rank=2, text_rank=2))
    fit_adapters(backbone, adapters, FitData(images, ["a hta", "a sks", "a xon"], "a photo", prior), cfg, 3,
                 seed=1, progress=False)
    return adapters.lora_state_dict()


def test_whole_image_updates_are_each_class_alone_whatever_the_grouping():
    # each class's update is a batch-1 step on its own image, however the classes share UNet calls
    together, alone = _fit_shapes(batch_size=6), _fit_shapes(batch_size=2)
    assert together.keys() == alone.keys()
    for key in together:
        torch.testing.assert_close(together[key], alone[key], rtol=1e-5, atol=1e-6)
    assert any(float(v.abs().max()) > 0 for k, v in together.items() if k.endswith("lora_B"))


def test_instance_and_prior_each_draw_a_t_and_noise_and_the_loss_is_not_weighted_over_t():
    # train_lora_dreambooth.py: process_batch runs once for the instance and once for the prior image, each with its
    # own torch.randint t in [0, T) and randn noise; with weight_t='none' the loss is the latent-mean MSE of each,
    # the prior's times prior_loss_weight, summed, no weight over t
    from diti_sd.recipes import FitConfig, LoraConfig
    from diti_sd.testing.tiny import build_tiny_backbone
    from diti_sd.training.loop import FitData, fit_adapters

    backbone = build_tiny_backbone(seed=0)
    g = torch.Generator().manual_seed(2)
    image = (torch.rand(3, 64, 64, generator=g) * 255).to(torch.uint8)
    prior = (torch.rand(2, 3, 64, 64, generator=g) * 255).to(torch.uint8)
    cfg = FitConfig(prior=True, prior_images=2, checkpoint_every=0, batch_size=2, lr=1e-3, crop="random",
                    prior_weight=2.0, t_min=0, t_max=1000)
    calls = []
    add_noise, predict, target = backbone.add_noise, backbone.predict, backbone.target

    def recording_add_noise(x0, noise, t):
        calls.append({"noise": noise.detach().clone(), "t": t.detach().clone()})
        return add_noise(x0, noise, t)

    def recording_predict(x_t, t, context):
        out = predict(x_t, t, context)
        calls[-1]["output"] = out.detach().float().clone()
        return out

    def recording_target(x0, noise, t):
        out = target(x0, noise, t)
        calls[-1]["target"] = out.detach().float().clone()
        return out

    backbone.add_noise, backbone.predict, backbone.target = recording_add_noise, recording_predict, recording_target
    adapters = ClassAdapters(backbone, 1, LoraConfig(rank=2, text_rank=2))
    steps = 8
    summary = fit_adapters(backbone, adapters, FitData([[image]], ["a hta"], "a photo", prior), cfg, steps,
                           seed=4, progress=False)
    assert len(calls) == steps and all(len(c["t"]) == 2 for c in calls)  # instance and prior in one UNet call
    ts = torch.stack([c["t"] for c in calls])
    assert ts.min() >= 0 and ts.max() < 1000 and bool((ts[:, 0] != ts[:, 1]).any())  # two draws, not one shared
    assert all(not torch.equal(c["noise"][0], c["noise"][1]) for c in calls)
    for c, loss in zip(calls, summary["losses"]):
        mse = (c["output"] - c["target"]).pow(2).flatten(1).mean(1)
        assert loss == pytest.approx(float(mse[0] + 2.0 * mse[1]), rel=1e-5)


def test_text_dropout_is_dropout_on_the_lora_output_one_seeded_draw_per_class(tiny_backbone):
    # lora_diffusion's LoraInjectedLinear: linear(x) + Dropout(p)(up(down(x))) * scale, in train mode
    from diti_sd.recipes import LoraConfig
    from diti_sd.scoring import class_contexts

    adapters = ClassAdapters(tiny_backbone, 3, LoraConfig(rank=2, text_rank=4))
    try:
        with torch.no_grad():
            for layer in adapters.text_layers.values():
                layer.lora_B.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
        layer = next(iter(adapters.text_layers.values()))
        x = torch.randn(1, 77, layer.base.in_features)
        with adapters.use(text_index=[0]):
            full = layer(x) - layer.base(x)
        with adapters.use(text_index=[0], text_dropout=(0.1, torch.Generator().manual_seed(5))):
            dropped = layer(x) - layer.base(x)
        kept = dropped != 0
        assert 0.05 < 1 - kept.float().mean() < 0.15  # about p of the entries dropped
        torch.testing.assert_close(dropped[kept], full[kept] / 0.9)  # the rest scaled by 1 / (1 - p)

        prompts = ["a hta", "a sks", "a xon"]
        plain = class_contexts(tiny_backbone, adapters, prompts, 0.7)
        first = class_contexts(tiny_backbone, adapters, prompts, 0.7, dropout=0.1, seed=0)
        again = class_contexts(tiny_backbone, adapters, prompts, 0.7, dropout=0.1, seed=0)
        other = class_contexts(tiny_backbone, adapters, prompts, 0.7, dropout=0.1, seed=1)
        assert torch.equal(first, again)
        assert not torch.allclose(first, plain) and not torch.allclose(first, other)
        # one draw per class: a class's embedding does not depend on the classes embedded before it
        torch.testing.assert_close(class_contexts(tiny_backbone, adapters, prompts[:2], 0.7, dropout=0.1)[1],
                                   first[1])
    finally:
        adapters.remove()
