"""Mixed precision for a training loop: autocast to fp16 or bf16 on a GPU and, for fp16, loss scaling.

torch.amp rather than accelerate's ``Accelerator``, whose process-wide state refuses a second fit with
another precision in the same process. A CPU always trains in fp32, whatever the recipe asks.
"""

from __future__ import annotations

import torch


class MixedPrecision:
    """``mixed``: no | fp16 | bf16 (the recipe's ``mixed_precision``), on ``device_type``."""

    def __init__(self, mixed: str, device_type: str):
        mixed = mixed if device_type == "cuda" else "no"
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed)
        self.device_type = device_type
        self.scaler = torch.amp.GradScaler(device_type, enabled=mixed == "fp16")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer, clip=None) -> None:
        """Unscale the gradients (so that ``clip()`` sees the true ones), clip, step and update the scale;
        an fp16 step whose gradients overflowed is skipped as a whole."""
        self.scaler.unscale_(optimizer)
        if clip is not None:
            clip()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state)
