"""Public configuration values of the Stable Diffusion models the reference recipes use.

Enough to build the full-size UNet and text encoder on the meta device (no weights, no download), so
that module names are checked on the real architecture.
"""

SD2_BASE_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "attention_head_dim": (5, 10, 20, 20),
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}

SD15_UNET = {
    **SD2_BASE_UNET,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "use_linear_projection": False,
}

# OpenCLIP ViT-H/14's text tower as SD 2 ships it (23 of its 24 layers), and CLIP ViT-L/14's for SD 1.5
SD2_TEXT = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
            "projection_dim": 512, "hidden_act": "gelu"}
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
             "projection_dim": 768, "hidden_act": "quick_gelu"}

# SD 2 base's VAE (AutoencoderKL, factor 8) and noise schedule (its scheduler_config.json)
SD2_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
           "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512),
           "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512}
SD2_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "clip_sample": False,
                 "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1}
