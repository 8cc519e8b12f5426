"""What a fit keeps in its output folder while it works, and whether that folder holds a finished set.

A fit given ``output_dir`` keeps there, until its adapter set is saved into that same folder: each process's
checkpoint (``checkpoint``, or ``checkpoint-rank{r}`` under ``accelerate launch``; once training ends it holds the
trained adapters), the probe fit's folder (``auto_refit``) and the coarse swap comparison's (``fit.coarse_swap_auto``).
A run killed after its training (in a validation pass, the temperature fit, the pictures or the save) then resumes
without training again; ``save_pretrained`` into the folder removes them last. Under ``fit --overwrite``, an empty
``replacing`` folder says that a new fit is replacing the set there, until it saves its own. Torch-free, so that the
command line can ask before anything loads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .files import REMOVING, recover_folder, remove_folder, swapped_from

MANIFEST = "manifest.json"  # an adapter set's (diti_sd.adapter_set): named here, where no torch is loaded
CHECKPOINT = "checkpoint"
PROBE = "auto-probe"  # auto_refit's fit without one image per class
SWAP = "coarse-swap"  # fit.coarse_swap_auto's second fit
REPLACING = "replacing"  # `fit --overwrite`: an empty folder saying a new fit is replacing the set beside it


def checkpoint_name(rank: int = 0, size: int = 1) -> str:
    """The folder of one process's checkpoint (each process under ``accelerate launch`` trains its own classes)."""
    return CHECKPOINT if size == 1 else f"{CHECKPOINT}-rank{rank}"


def working_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The folders a fit into ``output_dir`` keeps until its set is saved there (none: no fit is under way)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and _working((swapped_from(p) or p).name) is not None)


def _working(name: str) -> str | None:
    """What the folder is: "checkpoint" (a process's), "probe" or "swap"; None for none of a fit's."""
    if name == CHECKPOINT or name.startswith(f"{CHECKPOINT}-rank"):
        return "checkpoint"
    return {PROBE: "probe", SWAP: "swap", REPLACING: "replacing"}.get(name)


def finished_set(output_dir: str | os.PathLike) -> bool:
    """``output_dir`` holds a saved adapter set that no interrupted fit is still working on."""
    return (Path(output_dir) / MANIFEST).is_file() and not working_folders(output_dir)


def mark_replacing(output_dir: str | os.PathLike) -> None:
    """A fit replacing the set in ``output_dir`` (``--overwrite``) says so before it starts: until it saves its own
    set, the folder is a fit under way (``--resume`` continues it), never the old set finished. The old set stays
    whole and loads as before, should the new fit be refused or never run again."""
    (Path(output_dir) / REPLACING).mkdir(parents=True, exist_ok=True)


def replacing(output_dir: str | os.PathLike) -> bool:
    """A fit replacing the set in ``output_dir`` was started and has not saved its own."""
    return (Path(output_dir) / REPLACING).is_dir()


def checkpoint_owner(folder: str | os.PathLike) -> str | None:
    """Whose checkpoint ``folder`` is, read from its ``state.json`` before anything loads: "fit" (an adapter fit's),
    "encoder", "train-base", or None (none there, or unreadable)."""
    try:
        state = json.loads((Path(folder) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    if "iteration" in state:
        return "fit"
    if "stage" in state:
        return "train-base"
    return "encoder" if "step" in state and "z_dim" in (state.get("recipe") or {}) else None


WHOSE = {"fit": "an adapter fit's", "encoder": "an encoder fit's", "train-base": "train-base's"}


def foreign_checkpoint(output_dir: str | os.PathLike, command: str) -> str | None:
    """Whose checkpoint ``output_dir/checkpoint`` is ("train-base's"), where that is not ``command``'s (None: it
    is, or there is none): ``fit``, ``encoder fit`` and ``train-base`` all keep theirs there."""
    recover_folder(Path(output_dir) / CHECKPOINT)  # a checkpoint a kill left beside its place counts as one
    owner = checkpoint_owner(Path(output_dir) / CHECKPOINT)
    return WHOSE[owner] if owner not in (None, command) else None


def clear_earlier_work(output_dir: str | os.PathLike) -> None:
    """A fit starting afresh in ``output_dir`` (not resumed) forgets an earlier fit's checkpoints and folders there,
    so that a resume of the new fit never finds them; ``replacing``'s mark stays until the new set is saved. Another
    command's checkpoint there is refused (the fit would write over it), an unreadable one left alone."""
    if owner := foreign_checkpoint(output_dir, "fit"):
        from .errors import ConfigError

        raise ConfigError(f"{Path(output_dir) / CHECKPOINT} is {owner} checkpoint, not an adapter fit's; choose "
                          "another output folder")
    for folder in working_folders(output_dir):
        kind = _working((swapped_from(folder) or folder).name)
        if kind != "replacing" and (kind != "checkpoint" or checkpoint_owner(folder) == "fit"):
            remove_folder(folder)


def remove_working_folders(output_dir: str | os.PathLike) -> None:
    """The set is saved: what its fit kept is no longer needed. Each folder goes whole (:func:`remove_folder`), the
    checkpoints last, so that a kill before them leaves the trained adapters; a kill while deleting leaves a hidden
    ``.NAME.removing`` that the next removal clears, never half a checkpoint."""
    out = Path(output_dir)
    _delete_removing(out)  # an earlier removal's, killed while deleting
    for folder in sorted(working_folders(out), key=lambda p: _working((swapped_from(p) or p).name) == "checkpoint"):
        remove_folder(folder)


def _delete_removing(out: Path) -> None:
    for folder in out.glob(f".*{REMOVING}"):
        shutil.rmtree(folder, ignore_errors=True)
