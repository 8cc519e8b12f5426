"""A fitted adapter set in the formats other libraries load, one class at a time.

- diffusers: one LoRA file per class that ``StableDiffusionPipeline.load_lora_weights`` accepts;
- peft: per class, ``unet/`` and ``text_encoder/`` adapter folders (``adapter_config.json`` +
  ``adapter_model.safetensors``) that ``PeftModel.from_pretrained(base.unet, folder)`` loads.

The stacked per-class layer stays this package's own (peft trains one adapter per batch); these
exports are how a class leaves it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..files import atomic_write


def class_slug(c: int, name) -> str:
    """``008-737-800``: the class index and a file-safe form of its name."""
    return f"{c:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', str(name)).strip('_') or 'class'}"


def export_diffusers(adapters, classes, prompts, base_model: str, folder) -> list[Path]:
    """Each class as ``<folder>/<slug>.safetensors`` (alpha / r folded into B)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for c, name in enumerate(classes):
        target = folder / f"{class_slug(c, name)}.safetensors"
        meta = {"class": str(name), "prompt": prompts[c], "base_model": base_model}
        atomic_write(target, lambda tmp, c=c, meta=meta: save_file(adapters.class_lora_state_dict(c), str(tmp),
                                                                    metadata=meta))
        written.append(target)
    return written


def export_peft(adapters, classes, prompts, base_model: str, folder) -> list[Path]:
    """Each class as ``<folder>/<slug>/{unet,text_encoder}/`` peft LoRA adapter folders.

    The config names every adapted module in full (``target_modules``), with ``r`` and ``lora_alpha`` as
    trained; B is saved as trained (peft applies alpha / r itself). The test-time scale of the recipe
    (``score.unet_scale``) is not in the files: peft's ``set_scale`` or diffusers' ``scale`` applies it.
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    folder = Path(folder)
    written = []
    for c, name in enumerate(classes):
        root = folder / class_slug(c, name)
        for part in ("unet", "text_encoder"):
            weights = adapters.class_weights(c, part)
            if not weights:
                continue
            a, _, scaling = next(iter(weights.values()))
            rank = a.shape[0]
            config = LoraConfig(r=rank, lora_alpha=scaling * rank, target_modules=sorted(weights), lora_dropout=0.0,
                                bias="none", base_model_name_or_path=base_model)
            state = {}
            for module, (a, b, _) in weights.items():
                state[f"base_model.model.{module}.lora_A.weight"] = a
                state[f"base_model.model.{module}.lora_B.weight"] = b
            target = root / part
            target.mkdir(parents=True, exist_ok=True)
            meta = {"class": str(name), "prompt": prompts[c], "base_model": base_model}
            atomic_write(target / "adapter_model.safetensors",
                         lambda tmp, state=state, meta=meta: save_file(state, str(tmp), metadata=meta))
            config_dict = config.to_dict()
            config_dict["target_modules"] = sorted(weights)  # a set in peft's dict; a sorted list on disk
            atomic_write(target / "adapter_config.json",
                         lambda tmp, d=config_dict: tmp.write_text(json.dumps(d, indent=2, default=str)))
        written.append(root)
    return written
