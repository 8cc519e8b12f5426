"""A tiny Stable Diffusion of the real classes, built offline.

Same component classes and folder layout as SD 2 base (UNet2DConditionModel with linear projections,
AutoencoderKL with a factor-8 latent, CLIPTextModel, a CLIP BPE tokenizer, the SD noise schedule), only
narrower, shallower and at 64 px. Tests use it; the demo's shipped base is trained from one of these.
"""

from __future__ import annotations

import torch

from ..backbone import Backbone
from ..errors import ConfigError

# Words that get a single token each in the tiny vocabulary; everything else falls back to
# characters, which every CLIP BPE vocabulary has.
BASE_WORDS = (
    "a an the of photo type aircraft image picture with on in and or bird car object pattern texture "
    "mark shape background small large class hta sks xon qel vry zud pom tiv wub kex jag lor myr bex "
)


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2 / CLIP byte-level alphabet: printable bytes map to themselves, the rest to U+0100 onwards.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tiny_tokenizer(words: str = BASE_WORDS, model_max_length: int = 77):
    """A CLIPTokenizer over bytes plus whole-word tokens for ``words`` (merges built left to right)."""
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [s + "</w>" for s in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(words.split()):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pieces[0] + pieces[1]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def check_tiny_shape(resolution: int, latent_factor: int) -> None:
    """A tiny SD's VAE halves the side once per level: the latent factor is a power of two dividing the resolution."""
    if latent_factor < 1 or latent_factor & (latent_factor - 1):
        raise ConfigError(f"latent_factor {latent_factor} must be a power of two (each VAE level halves the side); "
                          "pass 1, 2, 4 or 8")
    if resolution < latent_factor or resolution % latent_factor:
        raise ConfigError(f"resolution {resolution} must be a multiple of the latent factor {latent_factor}; pass e.g. "
                          f"{max(1, round(resolution / latent_factor)) * latent_factor}")


def build_tiny_backbone(
    seed: int = 0,
    prediction_type: str = "epsilon",
    resolution: int = 64,
    latent_factor: int = 8,
    cross_attention_dim: int = 32,
    block_out_channels: tuple[int, ...] = (32, 64),
    words: str = BASE_WORDS,
) -> Backbone:
    """Random-weight tiny SD components, seeded, fp32 on CPU."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    check_tiny_shape(resolution, latent_factor)
    torch.manual_seed(seed)
    n_down = latent_factor.bit_length() - 1
    vae_channels = tuple([16] * (n_down + 1))
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=resolution,
    )
    tokenizer = build_tiny_tokenizer(words)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cross_attention_dim,
        intermediate_size=cross_attention_dim * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cross_attention_dim,
    )
    text_encoder = CLIPTextModel(text_config)
    n = len(block_out_channels)
    unet = UNet2DConditionModel(
        sample_size=resolution // latent_factor,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        block_out_channels=block_out_channels,
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=True,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
    )
    backbone = Backbone(vae, unet, text_encoder, tokenizer, scheduler, model_id="tiny", resolution=resolution)
    backbone.requires_grad_(False)
    for module in (vae, unet, text_encoder):
        module.eval()
    return backbone
