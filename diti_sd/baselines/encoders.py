"""Frozen image encoders a few-shot user would put a cheap classifier on: any OpenCLIP tower (CLIP, EVA,
SigLIP) and DINOv2 (transformers), each at its own resolution and with its own preprocessing.

An encoder is named by a spec: ``openclip:MODEL[:TAG]`` (a registered OpenCLIP model or a model-config
JSON, with a weights tag or a checkpoint file; no tag: random weights) or ``dinov2:ID`` (a transformers
hub id such as ``facebook/dinov2-giant``, or a local folder). Its ``identity`` hashes everything that
changes its features (config, weights, transforms), so cached features are reused only where they hold.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError

KINDS = ("openclip", "dinov2")


@dataclass
class FrozenEncoder:
    """An image tower (and, for OpenCLIP, its text tower) behind one interface."""

    spec: str
    kind: str
    name: str  # the model name or hub id
    weights: str  # the weights tag, checkpoint file or "random"
    model: torch.nn.Module
    preprocess: object  # PIL image -> normalised tensor at the encoder's resolution
    image_size: int
    tokenizer: object = None  # OpenCLIP only
    logit_scale: float = 100.0  # zero-shot logits = scale * f @ W + bias (CLIP: TiF's fixed 100)
    logit_bias: float | None = None  # SigLIP towers' learned bias: their logits are sigmoid logits

    @property
    def label(self) -> str:
        return spec_label(self.spec)

    @property
    def has_text(self) -> bool:
        return self.tokenizer is not None

    @property
    def sigmoid(self) -> bool:
        """SigLIP-family towers are trained with a sigmoid loss: each class's logit stands alone."""
        return self.logit_bias is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (n, 3, s, s) -> features (n, D), as the tower gives them (not normalised)."""
        batch = batch.to(self.device)
        if self.kind == "openclip":
            return self.model.encode_image(batch).float()
        out = self.model(pixel_values=batch)
        # DINOv2's own linear evaluation reads the class token beside the mean of the patch tokens
        tokens = out.last_hidden_state
        return torch.cat([out.pooler_output, tokens[:, 1:].mean(1)], dim=-1).float()

    @torch.no_grad()
    def text_classifier(self, classnames: list[str], templates: list[str]) -> torch.Tensor:
        """Zero-shot weights (C, D): per class, the normalised mean of the normalised template embeddings."""
        if not self.has_text:
            raise ConfigError(f"{self.label} has no text tower: it has no zero-shot classifier")
        weights = []
        for name in classnames:
            tokens = self.tokenizer([t.format(name) for t in templates]).to(self.device)
            emb = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
            weights.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
        return torch.stack(weights).cpu()

    def augmented(self):
        """Tip-Adapter's cache augmentation at this encoder's size: RandomResizedCrop(scale 0.5-1), flip,
        then the encoder's own normalisation."""
        from torchvision import transforms

        normalize = [t for t in self.preprocess.transforms if isinstance(t, transforms.Normalize)][0]
        return transforms.Compose([
            transforms.RandomResizedCrop(self.image_size, scale=(0.5, 1.0),
                                         interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.ToTensor(),
            normalize,
        ])

    def identity(self) -> str:
        """Everything about the encoder that changes its features: its config, its weights (tag, or the
        checkpoint's size and time) and its transforms."""
        weights = self.weights
        if os.path.exists(weights):  # a checkpoint file or a model folder: its files' sizes and times
            files = sorted(Path(weights).rglob("*")) if os.path.isdir(weights) else [Path(weights)]
            weights = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files if p.is_file())
        if self.kind == "openclip":
            import open_clip

            config = open_clip.get_model_config(Path(self.name).stem if self.name.endswith(".json") else self.name)
        else:
            config = self.model.config.to_dict()
        parts = [self.kind, self.name, weights, json.dumps(config, sort_keys=True, default=str),
                 repr(self.preprocess), repr(self.augmented())]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def spec_label(spec: str) -> str:
    """How reports name an encoder: the model and its weights (``ViT-H-14/laion2b_s32b_b79k``)."""
    kind, name, weights = parse_spec(spec)
    name = Path(name).stem if name.endswith(".json") else Path(name).name if os.path.isdir(name) else name
    return name if kind == "dinov2" else f"{name}/{Path(weights).name if weights else 'random'}"


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``openclip:MODEL[:TAG]`` or ``dinov2:ID`` -> (kind, name, weights); the error names the forms."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS or not rest:
        raise ConfigError(f"encoder {spec!r}: write openclip:MODEL[:TAG] (e.g. "
                          "openclip:ViT-SO400M-14-SigLIP-384:webli) or dinov2:ID (e.g. dinov2:facebook/dinov2-giant)")
    if kind == "dinov2":
        return kind, rest, None
    name, _, tag = rest.partition(":")
    return kind, name, tag or None


def check_spec(spec: str) -> None:
    """A frozen encoder's name and weights checked without loading them, so that a misspelt one stops an
    evaluation before its first fit: an OpenCLIP model open_clip knows (or a config file) and one of its weight tags
    (or a checkpoint file); a DINOv2 folder, or a Hub id (owner/name: only the download can tell it exists)."""
    kind, name, weights = parse_spec(spec)
    if kind == "dinov2":
        if not Path(name).is_dir() and name.count("/") != 1:
            raise ConfigError(f"encoder {spec!r}: {name!r} is no folder here and no Hub id (owner/name, e.g. "
                              "facebook/dinov2-giant)")
        return
    import open_clip

    if name.endswith(".json"):
        if not Path(name).is_file():
            raise ConfigError(f"encoder {spec!r}: no OpenCLIP model config at {name}")
        return
    # open_clip reads "ViT-B/32" as "ViT-B-32" and a tag in any case with "-" for "_"
    if name.replace("/", "-") not in open_clip.list_models():
        near = [m for m in open_clip.list_models() if m.lower().startswith(name.lower()[:6])][:6]
        raise ConfigError(f"encoder {spec!r}: open_clip {open_clip.__version__} knows no model {name!r}"
                          f"{'; e.g. ' + ', '.join(near) if near else ''} (open_clip.list_models() lists them)")
    tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))
    if weights and weights.lower().replace("-", "_") not in tags and not Path(weights).is_file():
        raise ConfigError(f"encoder {spec!r}: {name} has no weights {weights!r} and no such file here; its tags: "
                          f"{', '.join(tags) or 'none'}")


def load_encoder(spec: str, device=None) -> FrozenEncoder:
    kind, name, weights = parse_spec(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = _load_openclip(name, weights, device) if kind == "openclip" else _load_dinov2(name, device)
    encoder.spec = spec
    return encoder


def _load_openclip(name: str, pretrained: str | None, device) -> FrozenEncoder:
    import open_clip

    if name.endswith(".json"):
        open_clip.add_model_config(name)
    model_name = Path(name).stem if name.endswith(".json") else name
    if not pretrained:
        torch.manual_seed(0)  # random weights (speed runs, tests): the same ones every time
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained or None,
                                                                     device=device)
    except RuntimeError as err:
        raise ConfigError(f"could not create OpenCLIP {name!r} with weights {pretrained!r}: {err}. Offline? Pass a "
                          "local checkpoint file as the tag.") from err
    model.eval().requires_grad_(False)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    bias = getattr(model, "logit_bias", None)
    scale, bias = (100.0, None) if bias is None else (model.logit_scale.exp().item(), bias.item())
    return FrozenEncoder("", "openclip", name, pretrained or "random", model, preprocess, size,
                         open_clip.get_tokenizer(model_name), scale, bias)


def _load_dinov2(source: str, device) -> FrozenEncoder:
    from torchvision import transforms
    from transformers import AutoImageProcessor, AutoModel

    try:
        model = AutoModel.from_pretrained(source).to(device).eval().requires_grad_(False)
        processor = AutoImageProcessor.from_pretrained(source)
    except OSError as err:
        raise ConfigError(f"could not load DINOv2 {source!r}: {err}. Offline? Pass a local folder.") from err
    size = processor.crop_size["height"] if getattr(processor, "do_center_crop", False) else processor.size["height"]
    short = processor.size.get("shortest_edge", size)
    preprocess = transforms.Compose([
        transforms.Resize(short, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(processor.image_mean, processor.image_std),
    ])
    return FrozenEncoder("", "dinov2", source, source, model, preprocess, int(size))
