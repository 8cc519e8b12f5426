"""The commands that keep nothing of an interrupted run (``sample``, ``encoder train-ddpm / probe / edit``), killed
while writing their output, leave no half file, and a rerun writes what an unbroken run writes, byte for byte. Each
kill is a real SIGKILL, sent by the process to itself once the named write's temporary is complete, before its
rename."""

from __future__ import annotations

import contextlib
import io
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
    # probe.json is written, probe.md's temporary complete, by_stage.png not begun
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
    _run(filled(killed))
    assert _files(killed) == _files(tmp_path / "whole")  # the same output, and no temporary left beside it
