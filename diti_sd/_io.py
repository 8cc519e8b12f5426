"""Writing files so that a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def atomic_write(target: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a hidden file beside ``target``, then rename it over ``target``.

    The temporary name carries the process id, so processes writing the same entry do not collide.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def atomic_folder(target: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_folder)`` on a fresh hidden folder beside ``target``, then swap it in for
    ``target``: a crash leaves the old folder or the new one (or, between the two renames, the old one
    under ``.NAME.old``), never a half-written one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    old = target.parent / f".{target.name}.{os.getpid()}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (a manifest records it to detect a save cut short)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
