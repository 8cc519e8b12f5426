"""How a class adapter is shaped: its rank, the modules it adapts, the blocks by shots, its init.

Beside the layer that reads it (:mod:`diti_sd.lora.layer`), as peft keeps a config beside its layer; it
loads no torch, so a recipe can be checked before the model is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..constraints import NAME, POSITIVE, Each, Interval, Options, Pattern, Table

# the reference's unet_lora_filter names
BLOCK_FILTER = Pattern(r"none|(down|mirror|all)-[012]", "none or <down|mirror|all>-<0|1|2>")


@dataclass
class LoraConfig:
    rank: int = 16
    alpha: float | None = None  # None: alpha = rank (scale 1)
    # the linears of every attention module and the GEGLU input projection: what the reference's
    # LoRA (lora_diffusion, targets Attention/CrossAttention/GEGLU) adapts; not ff.net.2
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj"])
    feed_forward: bool = False  # also both feed-forward linears, ff.net.0.proj and ff.net.2
    # the reference's unet_lora_filter by shots (the largest key <= shots applies): "none" adapts every
    # block; "all-1" down_blocks.1-2, up_blocks.1-2, mid_block; "all-2" down_blocks.2, up_blocks.1,
    # mid_block; also "down-<l>" and "mirror-<l>". Empty: every block.
    filter_by_shots: dict[int, str] = field(default_factory=dict)
    text_rank: int = 0  # 0: no text-encoder LoRA
    text_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])
    init: str = "normal"  # A ~ N(0, 1/r^2) as the reference; "kaiming": peft's Kaiming-uniform
    init_seed: int = 0

    CONSTRAINTS: ClassVar[dict] = {
        "rank": Interval(1), "alpha": [None, POSITIVE], "targets": Each(NAME, min_len=1),
        "filter_by_shots": Table(BLOCK_FILTER, empty=True), "text_rank": Interval(0),
        "text_targets": Each(NAME, min_len=1), "init": Options("normal", "kaiming"),
    }
