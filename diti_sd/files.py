"""Writing files so that a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

from .errors import DitiError

# a write that fails for want of room: a full disk, or the user's quota
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(DitiError, OSError):
    """A write ran out of disk space; what was there before is kept."""


def _no_room(err: OSError, target: Path) -> DiskFullError:
    return DiskFullError(f"no space left on the device writing {target} ({err.strerror or err}); the previous "
                         "version, if any, is intact: free some space and rerun the same command")


def _write(write, tmp: Path, target: Path) -> None:
    """``write(tmp)``, with a full disk turned into a :class:`DiskFullError` naming ``target``."""
    try:
        write(tmp)
    except OSError as err:
        if err.errno in _NO_ROOM:
            raise _no_room(err, target) from err
        raise
    except RuntimeError as err:  # safetensors and torch report a failed write as a RuntimeError
        if "No space left" in str(err) or "Disk quota" in str(err):
            raise _no_room(OSError(errno.ENOSPC, str(err)), target) from err
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> None:
    """Delete the temporaries of ``target`` that a killed process left (``.NAME.<pid>.tmp`` whose
    process is gone); a live writer's are left alone."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 : -4]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write(target: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a hidden file beside ``target``, then rename it over ``target``.

    The temporary name carries the process id, so processes writing the same entry do not collide;
    one a killed process left is removed by the next write.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        _write(write, tmp, target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


REMOVING = ".removing"  # a folder renamed aside to be deleted: ``.NAME.removing``


def removing(target: str | os.PathLike) -> Path:
    """Where :func:`remove_folder` puts ``target`` while it deletes it (no reader takes it for ``target``)."""
    target = Path(target)
    return target.parent / f".{target.name}{REMOVING}"


def remove_folder(target: str | os.PathLike) -> None:
    """Delete the folder ``target`` so that a kill at any moment leaves it whole or gone, never half of it: renamed
    aside first (one atomic step), then deleted; what an earlier removal killed while deleting left is cleared."""
    target, aside = Path(target), removing(target)
    shutil.rmtree(aside, ignore_errors=True)
    if target.is_symlink():  # a link the user made: it goes, what it points to stays
        target.unlink()
    elif target.is_dir():
        os.replace(target, aside)
        shutil.rmtree(aside, ignore_errors=True)


def swapped_out(target: str | os.PathLike) -> Path:
    """Where :func:`atomic_folder` keeps the old ``target`` between its two renames."""
    target = Path(target)
    return target.parent / f".{target.name}.old"


def swapped_from(path: str | os.PathLike) -> Path | None:
    """The folder whose old copy ``path`` is, as :func:`swapped_out` names it, or None when it is no such copy."""
    path = Path(path)
    name = path.name
    if len(name) > len("..old") and name.startswith(".") and name.endswith(".old"):
        return path.parent / name[1:-len(".old")]
    return None


def recover_folder(target: str | os.PathLike) -> Path:
    """Finish a swap a crash cut short: with ``target`` gone and its old copy beside it, the old copy
    is put back; with both there (a crash after the second rename), the old copy is removed. A killed
    writer's half-written temporary folder is removed too."""
    target, old = Path(target), swapped_out(target)
    remove_stale_temporaries(target)
    if old.is_dir():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, target)
    return target


def atomic_folder(target: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_folder)`` on a fresh hidden folder beside ``target``, then swap it in for
    ``target``: a crash leaves the old folder or the new one, never a half-written one. Between the
    two renames the old folder sits at :func:`swapped_out`, where :func:`recover_folder` (called here
    first, and by readers) finds it; a failed second rename puts it back.

    One writer per ``target`` at a time (each fit process has its own checkpoint folder).
    """
    target = recover_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    old = swapped_out(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write(write, tmp, target)
        had_old = target.exists()
        if had_old:
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if had_old:
                os.replace(old, target)
            raise
        if had_old:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (a manifest records it to detect a save cut short)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


WEIGHT_FILES = (".safetensors", ".bin")


def weights_digest(folder: str | os.PathLike, parts: tuple[str, ...]) -> str | None:
    """A cheap digest of the weight files in ``folder``'s ``parts`` (a diffusers model's ``unet``, ``vae``, ...;
    None where ``folder`` is no folder, e.g. a hub id): each one's name, size and first and last MiB. It changes
    when a model is trained again in place, without reading gigabytes."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    files = [p for part in parts for p in (folder / part).glob("*") if p.suffix in WEIGHT_FILES and p.is_file()]
    for path in sorted(files):
        size = path.stat().st_size
        h.update(f"{path.relative_to(folder).as_posix()}:{size}".encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read())
    return h.hexdigest()[:16]


def write_json(target: str | os.PathLike, value, indent: int | None = 2) -> Path:
    """``value`` as JSON in ``target``, written atomically (:func:`atomic_write`)."""
    return atomic_write(target, lambda tmp: tmp.write_text(json.dumps(value, indent=indent)))


def cached_json(folder: str | os.PathLike | None, parts: list, compute) -> dict:
    """``compute()``, kept in ``folder`` as JSON named by the hash of ``parts`` (everything the result depends
    on, e.g. a resolved recipe as a dict and a seed): a killed run resumes, runs that share ``parts`` compute
    it once. With no ``folder``, just ``compute()``."""
    if folder is None:
        return compute()
    path = Path(folder) / f"{hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(result)))
    return result
