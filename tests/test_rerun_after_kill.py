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

from diti_sd import DiTiFewShotClassifier
from diti_sd.cli import main
from diti_sd.work_folders import finished_set

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


def test_fit_overwrite_killed_in_its_first_set_resumes_every_set_it_replaces(folder, tiny_model_dir, tmp_path,
                                                                             capsys):
    base = ["fit", "--dataset", "tiny", "--data-root", str(folder), "--set", "fit.prior=false", "--set",
            "resolution=32", "--shots", "1,2", "--val-per-class", "1", "--no-progress"]
    new = [*base, "--model", str(tiny_model_dir), "--steps", "3"]
    _run([*new, "--out", str(tmp_path / "whole")])
    out = tmp_path / "replaced"
    _run([*base, "--model", str(tiny_model_dir), "--steps", "2", "--out", str(out)])  # the sets it replaces
    old = {k: (out / k / "adapters.safetensors").read_bytes() for k in ("1shot", "2shot")}
    # an interrupted fit's checkpoint of other settings in the first set's folder: overwritten, it goes at once
    (out / "1shot" / "checkpoint").mkdir()
    (out / "1shot" / "checkpoint" / "state.json").write_text('{"iteration": 1, "signature": "another fit"}')
    # refused once its checks passed (a model folder that holds none): the old sets stay whole, and still load
    (tmp_path / "no-model").mkdir()
    assert main([*base, "--model", str(tmp_path / "no-model"), "--steps", "3", "--out", str(out), "--overwrite"]) == 2
    assert {k: (out / k / "adapters.safetensors").read_bytes() for k in old} == old
    DiTiFewShotClassifier.from_pretrained(out / "1shot", model=str(tiny_model_dir), progress=False)
    assert not (out / "1shot" / "checkpoint").exists()  # the rerun's --resume cannot take it for the new fit's
    capsys.readouterr()
    assert main([*new, "--out", str(out)]) == 2  # and a fit without --resume or --overwrite says what happened
    assert "was stopped before it saved its own; pass --resume" in capsys.readouterr().err
    run = subprocess.run([sys.executable, "-c", _KILLED_IN_WRITE, "atomic_folder", "1", *new, "--out", str(out),
                          "--overwrite"], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr  # in the first set's first checkpoint
    # the rerun the interruption's message asks for, as a user types it: the same command with --resume
    _run([*new, "--out", str(out), "--overwrite", "--resume"])
    for k in old:
        new_weights = (tmp_path / "whole" / k / "adapters.safetensors").read_bytes()
        assert (out / k / "adapters.safetensors").read_bytes() == new_weights != old[k], k
        assert finished_set(out / k) and (out / k / "split.json").read_bytes() == (
            tmp_path / "whole" / k / "split.json").read_bytes()


def test_encoder_fit_overwrite_killed_before_its_save_resumes_to_the_new_encoder(made, tmp_path, capsys):
    argv = ["encoder", "fit", "--dataset", "granular", "--max-images", "64", "--ddpm", str(made / "ddpm"), "--steps",
            "4", "--no-progress"]
    _run([*argv, "--out", str(tmp_path / "whole")])
    out = tmp_path / "replaced"
    shutil.copytree(made / "enc", out)
    old = (out / "encoder.safetensors").read_bytes()
    # refused before any work (a DDPM that is not there): the old encoder stays whole
    assert main([*argv[:7], str(tmp_path / "no-ddpm"), *argv[8:], "--out", str(out), "--overwrite"]) != 0
    assert (out / "encoder.safetensors").read_bytes() == old and (out / "encoder.json").is_file()
    # killed in its first file's write once trained (the losses, written before the encoder's own files)
    run = subprocess.run([sys.executable, "-c", _KILLED_IN_WRITE, "atomic_write", "1", *argv, "--out", str(out),
                          "--overwrite"], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    _run([*argv, "--out", str(out), "--overwrite", "--resume"])
    assert (out / "encoder.safetensors").read_bytes() == (tmp_path / "whole" / "encoder.safetensors").read_bytes()
    assert (out / "encoder.safetensors").read_bytes() != old and (out / "losses.json").is_file()
    # another command's checkpoint in --out is neither resumed nor overwritten
    (tmp_path / "adapters" / "checkpoint").mkdir(parents=True)
    (tmp_path / "adapters" / "checkpoint" / "state.json").write_text('{"iteration": 3, "signature": "a fit"}')
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "adapters"), "--overwrite"]) == 2
    assert "is an adapter fit's checkpoint, not an encoder fit's" in capsys.readouterr().err
    assert (tmp_path / "adapters" / "checkpoint" / "state.json").is_file()
