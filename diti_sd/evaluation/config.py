"""What one ``diti-sd eval`` run compares, on what, and how."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalConfig:
    dataset: str
    data_root: str
    report: str
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    methods: list[str] = field(default_factory=lambda: ["diti", "openclip-zeroshot", "tip-adapter", "tip-adapter-f"])
    adapters_dir: str | None = None
    model: str | None = None
    overrides: list[str] = field(default_factory=list)
    # the first frozen encoder (TiF's rows, the prefilter and the ensembles use it): an OpenCLIP model and tag
    clip_model: str = "ViT-H-14"
    clip_pretrained: str | None = "laion2b_s32b_b79k"
    # further encoders every frozen-encoder method also runs on: openclip:MODEL[:TAG] or dinov2:ID
    encoders: list[str] = field(default_factory=list)
    aug_passes: int | None = None  # None: the recipe's baselines.augment_passes
    # which validation images every choice is made on: "coop" min(k, 4) per class from the k-shot split,
    # or "full": the whole official validation split, as Tip-Adapter's protocol and the published
    # Tip-Adapter numbers; None: the recipe's baselines.val_protocol (DiTi-SD itself uses none)
    val_protocol: str | None = None
    # TiF's split files (train_<k>_<seed>.data, its lora/splits/<data set>/): every method trains on them
    split_dir: str | None = None
    prefilter: str | None = None  # a frozen-encoder method: DiTi-SD scores only its top score.prefilter_k
    # eval/bench_speed.py's JSON for the device: the cost table adds GPU-seconds per test image
    speed: str | None = None
    device: str | None = None
    compile: bool = False  # score DiTi-SD with a torch.compile'd UNet
    progress: bool = True

    @property
    def encoder_specs(self) -> list[str]:
        """Every frozen encoder, the first one from ``clip_model`` / ``clip_pretrained``."""
        return [f"openclip:{self.clip_model}:{self.clip_pretrained or ''}".rstrip(":"), *self.encoders]
