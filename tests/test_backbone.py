import shutil

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from diti_sd.backbone import BackboneError, load_backbone
from diti_sd.preprocessing import to_pixels
from diti_sd.testing.tiny import build_tiny_backbone


def test_saved_tiny_model_loads_through_the_real_loader_with_sd_shapes(tiny_model_dir, tiny_backbone):
    bb = load_backbone(tiny_model_dir, device="cpu")
    assert isinstance(bb.unet, UNet2DConditionModel) and isinstance(bb.vae, AutoencoderKL)
    assert isinstance(bb.text_encoder, CLIPTextModel) and isinstance(bb.tokenizer, CLIPTokenizer)
    assert isinstance(bb.scheduler, DDPMScheduler)
    assert bb.dtype == torch.float32 and bb.resolution == 64 and bb.vae_scale_factor == 8
    pixels = to_pixels([Image.new("RGB", (80, 64), (200, 10, 10)), Image.new("RGB", (64, 96))], bb.resolution)
    assert pixels.shape == (2, 3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    latents = bb.encode_images(pixels)
    # SD 2 base at 512 px: (N, 4, 64, 64) latents, (N, 77, 1024) context; here the same at 64 px / width 32.
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    context = bb.encode_prompts(["a photo of a hta 737-800, a type of aircraft.", ""])
    assert context.shape == (2, 77, bb.unet.config.cross_attention_dim) and context.dtype == torch.float32
    t = torch.tensor([5, 900])
    out = bb.predict(bb.add_noise(latents, torch.randn_like(latents), t), t, context)
    assert out.shape == latents.shape and out.dtype == torch.float32
    # identical weights after the round trip: identical outputs and fingerprint
    ref = tiny_backbone.predict(tiny_backbone.add_noise(latents, torch.zeros_like(latents), t), t, context)
    assert torch.allclose(bb.predict(bb.add_noise(latents, torch.zeros_like(latents), t), t, context), ref, atol=1e-5)
    assert bb.fingerprint() == tiny_backbone.fingerprint()


def test_fingerprint_changes_with_the_weights(tiny_backbone):
    other = build_tiny_backbone(seed=1)
    assert other.fingerprint() != tiny_backbone.fingerprint()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_noising_target_and_epsilon_are_consistent_with_diffusers(prediction_type):
    bb = build_tiny_backbone(seed=0, prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 250, 999])
    x_t = bb.add_noise(x0, noise, t)
    assert torch.allclose(x_t, bb.scheduler.add_noise(x0, noise, t), atol=1e-5)
    target = bb.target(x0, noise, t)
    if prediction_type == "v_prediction":
        assert torch.allclose(target, bb.scheduler.get_velocity(x0, noise, t), atol=1e-5)
        assert not torch.allclose(target, noise)
    # a perfect model's output implies exactly the noise that was added, for both parameterisations
    assert torch.allclose(bb.output_to_epsilon(target, x_t, t), noise, atol=1e-4)
    wrong = bb.output_to_epsilon(torch.zeros_like(target), x_t, t)
    assert not torch.allclose(wrong, noise, atol=1e-2)


def test_v_prediction_model_round_trips_its_prediction_type(tmp_path):
    build_tiny_backbone(prediction_type="v_prediction").save_pretrained(tmp_path / "v")
    assert load_backbone(tmp_path / "v", device="cpu").prediction_type == "v_prediction"


def test_incomplete_folder_names_what_is_missing(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "unet" / "config.json").unlink()
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(BackboneError, match=r"unet/config.json.*tokenizer/vocab.json or tokenizer.json"):
        load_backbone(broken)


@pytest.mark.parametrize(
    "model, message",
    [("./no/such/dir", "neither an existing folder nor a hub id"), ("builtin:nope", "no built-in model")],
)
def test_bad_model_names_give_clear_errors(model, message):
    with pytest.raises(BackboneError, match=message):
        load_backbone(model)


def test_attention_backends(tiny_model_dir):
    with pytest.raises(BackboneError, match="unknown attention backend"):
        load_backbone(tiny_model_dir, attention="flash9")
    try:
        import xformers  # noqa: F401
    except ImportError:
        with pytest.raises(BackboneError, match=r"diti-sd\[xformers\]"):
            load_backbone(tiny_model_dir, attention="xformers")
    else:  # installed: every attention layer runs through xformers
        processors = load_backbone(tiny_model_dir, attention="xformers").unet.attn_processors.values()
        assert processors and all("XFormers" in type(p).__name__ for p in processors)
    processors = load_backbone(tiny_model_dir).unet.attn_processors.values()
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in processors)  # SDPA by default
