"""The commands that keep nothing of an interrupted run (``sample``, ``encoder train-ddpm / probe / edit``), killed
while writing their output, leave no half file, and a rerun writes what an unbroken run writes, byte for byte; a fit
replacing a set (``--overwrite``) killed before it saved its own is resumed to the new set, never taken for the old
one. Each kill is a real SIGKILL, sent by the process to itself once the named write's temporary is complete, before
its rename."""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from diti_sd.cli import main

# the n-th atomic write (file or folder) writes its temporary, then the process dies before the rename
_KILLED_IN_WRITE = """
import os, signal, sys
import diti_sd.files as files

def dying(name, n):
    original, calls = getattr(files, name), []

    def write(target, content):
        calls.append(1)
        if len(calls) != n:
            return original(target, content)

        def then_die(tmp):
            content(tmp)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(target, then_die)
    setattr(files, name, write)

dying(sys.argv[1], int(sys.argv[2]))
from diti_sd.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _run(argv) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0, argv


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir, folder) -> Path:
    """An adapter set on the tiny model, a small DDPM, an encoder on it and two images of its domain."""
    from PIL import Image

    from diti_sd.encoder.granular import make_granular

    root = tmp_path_factory.mktemp("made")
    _run(["fit", "--dataset", "tiny", "--data-root", str(folder), "--model", str(tiny_model_dir), "--steps", "2",
          "--set", "fit.prior=false", "--set", "resolution=32", "--out", str(root / "set"), "--no-progress"])
    _run(["encoder", "train-ddpm", "--dataset", "granular", "--max-images", "64", "--steps", "3", "--channels",
          "16,32", "--out", str(root / "ddpm"), "--no-progress"])
    _run(["encoder", "fit", "--dataset", "granular", "--max-images", "64", "--ddpm", str(root / "ddpm"), "--out",
          str(root / "enc"), "--steps", "3", "--no-progress"])
    for i, pixels in enumerate(make_granular(2, size=16, seed=9).images):
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize("name, writer, call, argv", [
    ("sample", "atomic_write", 1, ["sample", "--adapters", "{root}/set", "--n", "2", "--steps", "3", "--out",
                                   "{out}/grid.png"]),
    ("train-ddpm", "atomic_folder", 1, ["encoder", "train-ddpm", "--dataset", "granular", "--max-images", "64",
                                        "--steps", "3", "--channels", "16,32", "--out", "{out}/ddpm"]),
    # probe.md is written, by_stage.png's temporary complete, probe.json (what a resumed study reads) not begun
    ("probe", "atomic_write", 2, ["encoder", "probe", "--encoder", "{root}/enc", "--max-train", "32", "--max-test",
                                  "16", "--transfer-pairs", "0", "--out", "{out}/probe"]),
    ("edit", "atomic_write", 1, ["encoder", "edit", "--encoder", "{root}/enc", "--images", "{root}/0.png",
                                 "{root}/1.png", "--subsets", "1", "--frames", "2", "--ddim-steps", "3", "--out",
                                 "{out}/edit.png"]),
])
def test_killed_while_writing_reruns_to_the_unbroken_output(made, tmp_path, name, writer, call, argv):
    def filled(out: Path) -> list[str]:
        return [a.format(root=made, out=out) for a in argv] + ["--no-progress"]

    (tmp_path / "whole").mkdir()
    _run(filled(tmp_path / "whole"))
    killed = tmp_path / "killed"
    killed.mkdir()
    run = subprocess.run([sys.executable, "-c", _KILLED_IN_WRITE, writer, str(call), *filled(killed)],
                         capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    left = [p.name for p in killed.rglob("*")]
    assert any(n.startswith(".") and n.endswith(".tmp") for n in left), left  # the kill came inside the write
    assert "probe.json" not in left  # what a resumed granularity study would take for a whole probe
    _run(filled(killed))
    assert _files(killed) == _files(tmp_path / "whole")  # the same output, and no temporary left beside it


@pytest.mark.parametrize("name, writer, argv, weights", [
    # killed in its first checkpoint's write: nothing of the new fit is kept
    ("fit", "atomic_folder", ["fit", "--dataset", "tiny", "--data-root", "{data}", "--model", "{model}", "--steps", "3",
                              "--set", "fit.prior=false", "--set", "resolution=32"],
     "adapters.safetensors"),
    # killed in its first file's write once trained (the losses, before the encoder's own files)
    ("encoder fit", "atomic_write", ["encoder", "fit", "--dataset", "granular", "--max-images", "64", "--ddpm",
                                     "{root}/ddpm", "--steps", "4"], "encoder.safetensors"),
])
def test_a_fit_replacing_a_set_killed_before_its_save_resumes_to_the_new_set(made, tmp_path, folder, tiny_model_dir,
                                                                             name, writer, argv, weights):
    def filled(out: Path) -> list[str]:
        return [a.format(root=made, data=folder, model=tiny_model_dir) for a in argv] + [
            "--out", str(out), "--no-progress"]

    _run(filled(tmp_path / "whole"))
    replaced = tmp_path / "replaced"
    old = made / ("set" if name == "fit" else "enc")
    shutil.copytree(old, replaced)
    run = subprocess.run([sys.executable, "-c", _KILLED_IN_WRITE, writer, "1", *filled(replaced), "--overwrite"],
                         capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    # the rerun the interruption's message asks for, as a user types it: the same command with --resume
    _run([*filled(replaced), "--overwrite", "--resume"])
    assert (replaced / weights).read_bytes() == (tmp_path / "whole" / weights).read_bytes() != (
        old / weights).read_bytes()
    assert name == "fit" or (replaced / "losses.json").is_file()
