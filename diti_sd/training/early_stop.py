"""Early stopping on a held-out shot (``fit.early_stop_every``; off by default).

One image per class is kept out of training. Every ``early_stop_every`` steps of a class (and at its
last step) that image is denoised with the class's own adapter at ``early_stop_pairs`` fixed (t, noise)
draws over the fit's window, and the class keeps the adapter of the check where this error was lowest:
the step at which it stopped learning what the held-out image shares with the shots and started
learning the shots themselves. The draws are the same at every check, so checks differ only by the
adapter. The held-out image is chosen per class by a seeded draw, so it does not depend on batching,
sharding or resuming; a checkpoint carries the best adapters found so far.

Cost: (steps / early_stop_every + 1) x early_stop_pairs forward UNet samples per class, beside the fit's
steps x (1 + prior) forward-and-backward ones; the fit's summary reports it (``early_stop_unet_samples``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..distributed import gather_rows
from ..preprocessing import resize_center_crop, uint8_to_float
from ..seeding import EARLY_STOP, torch_generator
from ..timesteps import draw_train_t

HELD_OUT = 0  # the draw of the held-out image
PAIRS = 1  # the draw of its (t, noise) pairs


def held_out_index(seed: int, c: int, k: int) -> int:
    """Which of class c's k images is held out (a seeded draw, the same in every process)."""
    return int(torch.randint(k, (1,), generator=torch_generator(seed, c, EARLY_STOP, HELD_OUT)))


def split_held_out(instance_pixels: list, seed: int, classes: list[int] | None = None) -> tuple[list, list]:
    """Per class, (the images trained on, the held-out image); a class not in ``classes`` (default: all)
    keeps its images and has no held-out one."""
    kept, held = [], []
    for c, images in enumerate(instance_pixels):
        if classes is not None and c not in classes:
            kept.append(images)
            held.append(None)
            continue
        j = held_out_index(seed, c, len(images))
        rest = [images[i] for i in range(len(images)) if i != j]
        kept.append(torch.stack(rest) if isinstance(images, torch.Tensor) else rest)
        held.append(images[j])
    return kept, held


def checks(steps: int, every: int) -> list[int]:
    """The class steps (1-based counts of steps done) after which the held-out error is read."""
    return sorted({*range(every, steps + 1, every), steps})


def cost(steps: int, every: int, pairs: int, classes: int) -> int:
    """Forward UNet samples the checks spend."""
    return len(checks(steps, every)) * pairs * classes if every else 0


def gather_summary(summary: dict, n_classes: int) -> dict:
    """With classes sharded over processes: every class's stop in class order, and the checks' cost over
    all classes (one process: the summary as it is)."""
    if "stopped_at" not in summary:
        return summary
    per_class = summary["early_stop_unet_samples"] // max(1, len(summary["stopped_at"]))
    return {**summary, "stopped_at": gather_rows(np.array(summary["stopped_at"]), n_classes).tolist(),
            "held_out_error": gather_rows(np.array(summary["held_out_error"]), n_classes).tolist(),
            "early_stop_unet_samples": per_class * n_classes}


class HeldOutStop:
    """Reads each class's held-out error at the checks and keeps its best adapter.

    The errors are read at the LoRA scales the adapters are scored at (``scales``), the same at every
    check, whatever scale a step trained at.
    """

    def __init__(self, backbone, adapters, held: list, prompts: list[str], cfg, seed: int, classes: list[int],
                 scales: tuple[float, float] = (1.0, 1.0)):
        self.backbone, self.adapters, self.cfg, self.classes = backbone, adapters, cfg, list(classes)
        self.prompts, self.scales = prompts, scales
        pairs = cfg.early_stop_pairs
        with torch.no_grad():
            size = backbone.resolution
            self.latents = {c: backbone.encode_images(resize_center_crop(uint8_to_float(held[c][None]), size))
                            for c in self.classes}
        self.draws = {}
        for c in self.classes:
            g = torch_generator(seed, c, EARLY_STOP, PAIRS)
            t = draw_train_t(pairs, cfg.t_min, cfg.t_max, g)
            self.draws[c] = (t, torch.randn((pairs, *self.latents[c].shape[1:]), generator=g))
        self.best_error = {c: math.inf for c in self.classes}
        self.best_step = {c: 0 for c in self.classes}
        self.history: dict[int, list] = {c: [] for c in self.classes}
        self.best_state: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def errors(self, scales: tuple[float, float] | None = None) -> dict[int, float]:
        """Each class's mean squared error on its held-out image at its fixed draws, its adapter on."""
        backbone, device = self.backbone, self.backbone.device
        scales = self.scales if scales is None else scales
        out = {}
        for c in self.classes:
            t, noise = self.draws[c]
            n = len(t)
            x0 = self.latents[c].to(device, backbone.dtype).expand(n, *self.latents[c].shape[1:])
            eps, tt = noise.to(device, backbone.dtype), t.to(device)
            with self.adapters.use(unet_index=[c] * n, text_index=[c], unet_scale=scales[0], text_scale=scales[1]):
                context = backbone.encode_prompts([self.prompts[c]]).expand(n, -1, -1)
                output = backbone.predict(backbone.add_noise(x0, eps, tt), tt, context)
            target = backbone.target(x0, eps, tt)
            out[c] = float((output.float() - target.float()).pow(2).mean())
        return out

    def check(self, class_step: int) -> None:
        """After ``class_step`` steps of every class: read the errors and keep each class's best."""
        improved = []
        for c, error in self.errors().items():
            self.history[c].append((class_step, error))
            if error < self.best_error[c]:
                self.best_error[c], self.best_step[c] = error, class_step
                improved.append(c)
        if improved:
            state = self.adapters.lora_state_dict()
            if self.best_state is None:
                self.best_state = {k: v.clone() for k, v in state.items()}
            for key, tensor in state.items():
                self.best_state[key][improved] = tensor[improved]

    def restore(self) -> None:
        """Set every class's adapter to the one of its best check."""
        if self.best_state is not None:
            current = self.adapters.lora_state_dict()
            for key, tensor in current.items():
                tensor[self.classes] = self.best_state[key][self.classes]
            self.adapters.load_lora_state_dict(current)

    # a checkpoint's helper: what a resumed fit needs to continue exactly
    def state_dict(self) -> dict:
        return {"best_error": [self.best_error[c] for c in self.classes],
                "best_step": [self.best_step[c] for c in self.classes],
                "history": [[list(h) for h in self.history[c]] for c in self.classes],
                "best_state": self.best_state or {}}

    def load_state_dict(self, state: dict) -> None:
        for i, c in enumerate(self.classes):
            self.best_error[c], self.best_step[c] = float(state["best_error"][i]), int(state["best_step"][i])
            self.history[c] = [(int(s), float(e)) for s, e in state["history"][i]]
        self.best_state = dict(state["best_state"]) or None

    def summary(self) -> dict:
        return {"stopped_at": [self.best_step[c] for c in self.classes],
                "held_out_error": [self.best_error[c] for c in self.classes]}
