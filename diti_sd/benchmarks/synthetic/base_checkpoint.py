"""Where ``diti-sd train-base`` keeps its progress, so that a killed run resumes to the model an unbroken one saves.

The package's one checkpoint convention (:mod:`diti_sd.training.checkpoint`), in ``<out>/checkpoint``: both
networks' weights, the running stage's optimiser, learning-rate schedule and random generator, each stage's losses so
far and what identifies the run (the recipe, the device). Written every ``every`` steps and at each stage's end; the
finished model, swapped in whole for ``<out>``, takes it away. Torch-free until a checkpoint is read or written, so
that the command line can ask about one before anything loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...errors import ConfigError
from ...work_folders import CHECKPOINT

STAGES = ("vae", "unet")  # trained in this order
HELPERS = ("optimizer", "scheduler", "generator")


def interrupted_at(out: str | os.PathLike) -> str | None:
    """"unet step 400 of 3600" where ``out`` holds an interrupted run's checkpoint; None where it holds none."""
    try:
        state = json.loads((Path(out) / CHECKPOINT / "state.json").read_text())
        return f"{state['stage']} step {state['step']} of {state['steps']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


class StageCheckpoints:
    """The checkpoint of one train-base run in ``<out>/checkpoint``; ``resume`` reads the one there first."""

    def __init__(self, out: str | os.PathLike, identity: dict, every: int, resume: bool):
        from ...training.checkpoint import load_checkpoint

        self.folder, self.every = Path(out) / CHECKPOINT, every
        self.identity = json.loads(json.dumps(identity))  # as a checkpoint's state reads back
        self.saved = load_checkpoint(self.folder, HELPERS) if resume else None
        if self.saved is not None and self.saved.state.get("identity") != self.identity:
            raise ConfigError(f"the checkpoint in {self.folder} was made by another recipe or device; rerun with the "
                              f"same --recipe and --device, or delete {self.folder} to start again")
        self.losses = {stage: [] for stage in STAGES}
        self.resumed_from = {stage: 0 for stage in STAGES}

    def restore(self, stage: str, backbone, optimizer, scheduler, generator) -> list[float]:
        """This stage's losses so far (continue at their count), with the weights and, where the checkpoint stopped
        inside this stage, the helpers' states put back; an empty list where it starts afresh."""
        if self.saved is None:
            return self.losses[stage]
        state = self.saved.state
        at, here = STAGES.index(state["stage"]), STAGES.index(stage)
        if at < here:  # the checkpoint was written before this stage began
            return self.losses[stage]
        for name, module in (("vae", backbone.vae), ("unet", backbone.unet)):
            module.load_state_dict({k.split(".", 1)[1]: v for k, v in self.saved.weights.items()
                                    if k.startswith(f"{name}.")})
        if at == here:
            optimizer.load_state_dict(self.saved.helpers["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(self.saved.helpers["scheduler"])
            generator.set_state(self.saved.helpers["generator"]["state"])
        self.losses[stage].extend(state["losses"][stage])
        self.resumed_from[stage] = len(self.losses[stage])
        return self.losses[stage]

    def step(self, stage: str, done: int, steps: int, backbone, optimizer, scheduler, generator) -> None:
        """After ``done`` of the stage's ``steps``: a checkpoint every ``every`` steps and at the stage's end."""
        if not self.every or (done % self.every and done != steps):
            return
        from ...training.checkpoint import Checkpoint, save_checkpoint

        weights = {f"{name}.{k}": v for name, module in (("vae", backbone.vae), ("unet", backbone.unet))
                   for k, v in module.state_dict().items()}
        helpers = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else {},
                   "generator": {"state": generator.get_state()}}
        state = {"stage": stage, "step": done, "steps": steps, "losses": self.losses, "identity": self.identity}
        save_checkpoint(self.folder, Checkpoint(weights, helpers, state))
