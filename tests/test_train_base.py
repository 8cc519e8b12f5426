"""``diti-sd train-base``: the model it writes, and a run killed at any stage resuming to the model an unbroken run
saves, bit for bit (each kill a real SIGKILL, sent by the process to itself at the named call)."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diti_sd.cli import main

RECIPE = ("resolution: 16\nlatent_factor: 2\nn_images: 20\nvae_steps: 5\nvae_batch: 4\nunet_steps: 5\nunet_batch: 4\n"
          "captions: attributes\n")
ARGS = ["train-base", "--checkpoint-every", "2", "--no-progress"]

# "before NAME n": dies at the n-th call of NAME, before it runs; "inside atomic_folder n": the n-th folder write
# (a checkpoint's, the model's) writes its temporary whole, then the process dies before the swap
_KILLED_AT = """
import os, signal, sys
import diti_sd.files as files

how, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = []

def due():
    calls.append(1)
    return len(calls) == n

if how == "inside":  # patched before any module binds it, so that the checkpoints' writes count too
    written = files.atomic_folder

    def write_then_die(target, write):
        if not due():
            return written(target, write)

        def then_die(tmp):
            write(tmp)
            os.kill(os.getpid(), signal.SIGKILL)
        return written(target, then_die)
    files.atomic_folder = write_then_die
import diti_sd.training.checkpoint
if how == "before":
    module = {"save_checkpoint": diti_sd.training.checkpoint, "atomic_folder": files}[name]
    called = getattr(module, name)

    def die_first(*args, **kwargs):
        if due():
            os.kill(os.getpid(), signal.SIGKILL)
        return called(*args, **kwargs)
    setattr(module, name, die_first)
from diti_sd.cli import main
sys.exit(main(sys.argv[4:]))
"""


def test_train_base_writes_a_loadable_model_and_its_recipe(tmp_path, capsys):
    from diti_sd.backbone import load_backbone

    recipe = tmp_path / "base.yaml"
    recipe.write_text("resolution: 16\nlatent_factor: 2\nn_images: 20\nvae_steps: 2\nvae_batch: 4\n"
                      "unet_steps: 2\nunet_batch: 4\ncaptions: attributes\n")
    out = tmp_path / "base"
    assert main(["train-base", "--recipe", str(recipe), "--out", str(out), "--no-progress"]) == 0
    backbone = load_backbone(str(out), device="cpu")
    saved = (out / "base_recipe.yaml").read_text()
    assert backbone.resolution == 16 and "unet_steps: 2" in saved and "captions: attributes" in saved
    first = backbone.fingerprint()
    recipe.write_text(recipe.read_text().replace("unet_steps: 2", "unet_steps: 3"))
    assert main(["train-base", "--recipe", str(recipe), "--out", str(out), "--no-progress"]) == 0  # replaced whole
    assert load_backbone(str(out), device="cpu").fingerprint() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "base.yaml"]
    # vae_from keeps another base's VAE as it is and trains only the UNet
    # (a VAE trained here would differ: one more step than the one kept)
    recipe.write_text(recipe.read_text().replace("vae_steps: 2", "vae_steps: 3") + f"vae_from: {out}\n")
    assert main(["train-base", "--recipe", str(recipe), "--out", str(tmp_path / "kept"), "--no-progress"]) == 0
    assert '"vae_loss": null' in capsys.readouterr().out  # nothing trained, nothing to report
    kept = load_backbone(str(tmp_path / "kept"), device="cpu")
    reference = load_backbone(str(out), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(kept.vae.state_dict().values(), reference.vae.state_dict().values()))
    recipe.write_text(recipe.read_text().replace("resolution: 16", "resolution: 32"))
    assert main(["train-base", "--recipe", str(recipe), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "VAE is not this recipe's shape" in capsys.readouterr().err
    recipe.write_text(recipe.read_text().replace(f"vae_from: {out}", f"vae_from: {tmp_path / 'nowhere'}"))
    assert main(["train-base", "--recipe", str(recipe), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "vae_from: no VAE at" in capsys.readouterr().err


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> tuple[Path, dict]:
    """The recipe, the model of a run never killed and its summary."""
    root = tmp_path_factory.mktemp("unbroken")
    (root / "base.yaml").write_text(RECIPE)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*ARGS, "--recipe", str(root / "base.yaml"), "--out", str(root / "whole")]) == 0
    return root, json.loads(printed.getvalue().strip().splitlines()[-1])


# with 5 steps a stage and a checkpoint every 2, the saves come at vae 2, 4, 5 and unet 2, 4, 5 (folder writes 1 to
# 6), then the model's (the 7th; "before atomic_folder 1" counts it alone, bound where it is called)
@pytest.mark.parametrize("kill, stopped, resumed", [
    ("before save_checkpoint 2", "vae step 2 of 5", {"vae": 2, "unet": 0}),  # killed at the VAE's step 4
    ("before save_checkpoint 5", "unet step 2 of 5", {"vae": 5, "unet": 2}),  # inside the UNet's training
    ("inside atomic_folder 4", "vae step 5 of 5", {"vae": 5, "unet": 0}),  # inside a checkpoint's write
    ("before atomic_folder 1", "unet step 5 of 5", {"vae": 5, "unet": 5}),  # as the save begins
    ("inside atomic_folder 7", "unet step 5 of 5", {"vae": 5, "unet": 5}),  # inside the model's write
])
def test_a_killed_train_base_resumes_to_the_unbroken_runs_model(unbroken, tmp_path, capsys, kill, stopped, resumed):
    root, whole = unbroken
    args = [*ARGS, "--recipe", str(root / "base.yaml")]
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT, *kill.split(), *args, "--out", str(out)],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert main([*args, "--out", str(out)]) == 2  # not started again over the checkpoint unasked
    assert f"holds an interrupted train-base (stopped at {stopped}); pass --resume" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--resume"]) == 0
    again = _summary(capsys)
    assert again["resumed_from"] == resumed
    assert {k: again[k] for k in ("vae_loss", "unet_loss")} == {k: whole[k] for k in ("vae_loss", "unet_loss")}
    assert _files(out) == _files(root / "whole")  # the same weights, configs and recipe; no checkpoint left
    assert [p.name for p in tmp_path.iterdir()] == ["killed"]  # nothing left beside it


def test_a_checkpoint_of_another_recipe_is_not_resumed(tmp_path, capsys):
    recipe = tmp_path / "base.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "m"
    args = [*ARGS, "--recipe", str(recipe), "--out", str(out)]
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT, "before", "save_checkpoint", "2", *args],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    recipe.write_text(RECIPE.replace("unet_steps: 5", "unet_steps: 6"))
    assert main([*args, "--resume"]) == 2
    assert "was made by another recipe or device; rerun with the same --recipe" in capsys.readouterr().err
    assert (out / "checkpoint" / "state.json").is_file()  # kept: the user may still resume it with its recipe


def test_checkpoints_leave_the_model_as_a_run_without_them_makes(unbroken, tmp_path, capsys):
    # the shipped models were trained without checkpoints; writing them draws nothing and changes no state
    root, _ = unbroken
    argv = ["train-base", "--checkpoint-every", "0", "--no-progress", "--recipe", str(root / "base.yaml")]
    assert main([*argv, "--out", str(tmp_path / "m")]) == 0
    assert _files(tmp_path / "m") == _files(root / "whole")


def test_another_commands_checkpoint_is_not_taken_for_train_bases(tmp_path, capsys):
    out = tmp_path / "x"  # an interrupted `fit` or `encoder fit` keeps a checkpoint/ of its own there
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.json").write_text(json.dumps({"step": 3}))
    assert main([*ARGS, "--out", str(out)]) == 2
    assert "holds something other than a model folder" in capsys.readouterr().err
    assert (out / "checkpoint" / "state.json").is_file()
