"""A fit killed after its training ended (in the window choice, the temperature pass, the pictures or the save)
resumes without training again, to the set an unbroken run saves: the finished training's checkpoint stays in
``--out`` until the set is saved whole there (:mod:`diti_sd.work_folders`). Each kill is a real SIGKILL, sent by the
process to itself at the start of the named phase."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import color_images
from safetensors.torch import load_file

from diti_sd.cli import main
from diti_sd.work_folders import finished_set, remove_working_folders, working_folders

FAST = ["--set", "fit.prior_images=2", "--set", "fit.prior_sample_steps=2", "--set", "resolution=32",
        "--set", "fit.checkpoint_every=2", "--steps", "12", "--shots", "2", "--validation-budget", "1", "--no-progress"]

# the phase's first call kills the process; the rest of the arguments go to the command line
_KILLED_IN = """
import os, signal, sys
import diti_sd.persistence
from diti_sd import DiTiFewShotClassifier
from diti_sd.cli import main

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

phase = sys.argv[1]
if phase == "model card":  # the manifest is written, the card not yet
    diti_sd.persistence.write_model_card = die
elif phase == "pictures":  # its first figure, once the temperature is fitted
    import diti_sd.plotting
    diti_sd.plotting.save_figure = die
else:
    setattr(DiTiFewShotClassifier, {"temperature": "fit_temperature", "window choice": "choose_scoring"}[phase], die)
sys.exit(main(sys.argv[2:]))
"""


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("phase, extra", [("temperature", []), ("model card", []),
                                          ("window choice", ["--set", "score.weighting=auto"]),
                                          ("pictures", ["--attention-masks", "photo", "--set", "fit.coarse_swap=1"])])
def test_a_fit_killed_after_its_training_resumes_without_training_again(folder, tiny_model_dir, tmp_path, capsys,
                                                                        phase, extra):
    args = ["fit", "--dataset", "tiny", "--data-root", str(folder), "--model", str(tiny_model_dir), *FAST, *extra]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = _summary(capsys)
    assert whole["resumed_from"] == 0
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", _KILLED_IN, phase, *args, "--out", str(out)], capture_output=True,
                            text=True, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # the trained adapters are on disk, in the checkpoint the save would have removed last
    assert json.loads((out / "checkpoint" / "state.json").read_text())["iteration"] == whole["iterations"]
    if phase == "model card":  # a manifest without its card: not taken for a finished set
        assert (out / "manifest.json").is_file() and not (out / "README.md").exists()
        assert main([*args, "--out", str(out)]) == 2
        assert "stopped after its training" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--resume"]) == 0
    resumed = _summary(capsys)
    assert resumed["resumed_from"] == resumed["iterations"] == whole["iterations"]  # no step trained again
    # the loss curve too: the checkpoint keeps the losses until its iteration
    assert {k: v for k, v in resumed.items() if k not in ("out", "resumed_from")} == \
        {k: v for k, v in whole.items() if k not in ("out", "resumed_from")}
    a, b = load_file(str(tmp_path / "whole" / "adapters.safetensors")), load_file(str(out / "adapters.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = {name: json.loads((root / "manifest.json").read_text()) for name, root in (("a", tmp_path / "whole"),
                                                                                             ("b", out))}
    assert len(manifest["b"]["fit"]["loss_curve"]) == whole["iterations"]
    for key in ("temperature", "calibration", "score_choice"):
        assert manifest["a"][key] == manifest["b"][key]
    assert {**manifest["b"]["fit"], "resumed_from": 0} == manifest["a"]["fit"]
    assert (out / "README.md").is_file() and working_folders(out) == []
    if phase == "pictures":  # drawn by the resumed fit, from the masks the killed one kept
        assert (out / "attention_masks.png").read_bytes() == (tmp_path / "whole" / "attention_masks.png").read_bytes()
    assert main([*args, "--out", str(out), "--resume"]) == 0  # now finished: nothing to do
    assert "already fitted" in capsys.readouterr().out


def test_only_a_fits_own_folders_count_as_work_under_way(tmp_path):
    for name in ("checkpoint", "checkpoint-rank1", ".checkpoint-rank0.old", "auto-probe", ".coarse-swap.old",
                 "prior", "diffusers", "checkpoints-of-mine", ".old"):
        (tmp_path / name).mkdir()
    (tmp_path / "coarse-swap").write_text("a file of the user's")
    assert [p.name for p in working_folders(tmp_path)] == [".checkpoint-rank0.old", ".coarse-swap.old", "auto-probe",
                                                           "checkpoint", "checkpoint-rank1"]
    assert not finished_set(tmp_path)  # no manifest either
    (tmp_path / "manifest.json").write_text("{}")
    assert not finished_set(tmp_path)
    remove_working_folders(tmp_path)
    assert finished_set(tmp_path) and (tmp_path / "prior").is_dir() and (tmp_path / "checkpoints-of-mine").is_dir()


def test_the_removal_renames_the_checkpoints_last_and_clears_what_a_kill_left(tmp_path, monkeypatch):
    import diti_sd.work_folders as wf

    for name in ("checkpoint", "auto-probe", "coarse-swap"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text("{}")
    (tmp_path / "manifest.json").write_text("{}")
    real = os.replace

    def killed_at_the_checkpoint(src, dst):
        if Path(src).name == "checkpoint":
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(wf.os, "replace", killed_at_the_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        remove_working_folders(tmp_path)
    # the trained adapters are still there, and the folder is not taken for a finished set
    assert [p.name for p in working_folders(tmp_path)] == ["checkpoint"] and not finished_set(tmp_path)
    (tmp_path / ".coarse-swap.removing").mkdir(exist_ok=True)  # as a kill while deleting leaves it
    monkeypatch.setattr(wf.os, "replace", real)
    remove_working_folders(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"] and finished_set(tmp_path)


def test_a_finished_runs_checkpoint_goes_whole_after_the_old_copy_a_swap_left(tmp_path, monkeypatch):
    import shutil

    from diti_sd.files import recover_folder, removing, swapped_out
    from diti_sd.training.checkpoint import remove_checkpoint

    folder = tmp_path / "checkpoint"
    for copy in (folder, swapped_out(folder)):  # the encoder's last checkpoint, and an older one a crash left
        copy.mkdir()
        (copy / "state.json").write_text("{}")
        (copy / "weights.safetensors").write_bytes(b"weights")
    real = shutil.rmtree

    def killed_while_deleting(path, *args, **kwargs):
        if Path(path) == removing(folder) and Path(path).is_dir():
            (Path(path) / "weights.safetensors").unlink()  # deleted in part, state.json left
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_while_deleting)
    with pytest.raises(KeyboardInterrupt):
        remove_checkpoint(folder)
    monkeypatch.setattr(shutil, "rmtree", real)
    # what the next fit reads first: no checkpoint, neither a state without its weights nor the old one put back
    recover_folder(folder)
    assert not folder.exists() and not swapped_out(folder).exists()
    remove_checkpoint(folder)  # the next removal clears what the kill left
    assert list(tmp_path.iterdir()) == []
    # a checkpoint folder that is a link the user made: the link goes, what it points to stays
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "state.json").write_text("{}")
    folder.symlink_to(tmp_path / "elsewhere")
    remove_checkpoint(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["elsewhere"] and (tmp_path / "elsewhere" / "state.json").is_file()


def test_a_later_fit_into_the_folder_on_other_images_is_refused_on_resume(tiny_model_dir, tmp_path):
    from diti_sd import DiTiFewShotClassifier
    from diti_sd.errors import ConfigError
    from diti_sd.testing.tiny import build_tiny_backbone

    def clf():
        return DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False,
                                     overrides={"fit.prior_images": 2, "fit.prior_sample_steps": 2})

    X, y = color_images(6, seed=5)
    other, _ = color_images(6, seed=99)  # the same shapes and labels, other pixels
    clf().fit(X, y, output_dir=tmp_path, resume=True)  # not saved there: its trained checkpoint stays
    with pytest.raises(ConfigError, match="made by a fit with other data"):
        clf().fit(other, y, output_dir=tmp_path, resume=True)
    # another base under the same settings, or another generic prompt (other prior images), is another fit too
    another_base = build_tiny_backbone(seed=1).save_pretrained(tmp_path / "another-base")
    with pytest.raises(ConfigError, match="base model or precision"):
        clf().set_params(model=str(another_base)).fit(X, y, output_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="base model or precision"):
        clf().set_params(overrides={"fit.prior_images": 2, "fit.prior_sample_steps": 2,
                                    "prompt.generic": "a picture"}).fit(X, y, output_dir=tmp_path, resume=True)
    assert clf().fit(X, y, output_dir=tmp_path, resume=True).fit_summary_["resumed_from"] > 0  # the same images


def test_a_checkpoint_written_before_the_pixels_and_losses_were_kept_still_resumes(tiny_model_dir, tmp_path):
    from diti_sd import DiTiFewShotClassifier

    def clf():
        return DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", progress=False,
                                     overrides={"fit.prior_images": 2, "fit.prior_sample_steps": 2})

    def stop_at_five(iteration, loss):
        if iteration == 5:
            raise KeyboardInterrupt

    X, y = color_images(12, seed=5)  # 4 shots: 6 steps in the tiny recipe, a checkpoint every 3
    whole = clf().fit(X, y).adapters_.lora_state_dict()
    with pytest.raises(KeyboardInterrupt):
        clf().fit(X, y, output_dir=tmp_path, callback=stop_at_five)
    state = tmp_path / "checkpoint" / "state.json"
    old = {k: v for k, v in json.loads(state.read_text()).items() if k not in ("pixels", "losses")}
    state.write_text(json.dumps(old))  # as an earlier version wrote it
    resumed = clf().fit(X, y, output_dir=tmp_path, resume=True)
    assert resumed.fit_summary_["resumed_from"] == 3 and len(resumed.loss_curve_) == 3  # the losses after it only
    assert all(torch.allclose(v, whole[k], atol=1e-6) for k, v in resumed.adapters_.lora_state_dict().items())


_PROBE_ROUTE = """
import json, os, signal, sys
import diti_sd.training.classes as classes
from helpers import color_images
from diti_sd import DiTiFewShotClassifier

model, out, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "kill"
resumed_from, real = [], classes.fit_adapters

def recorded(*args, **kwargs):
    summary = real(*args, **kwargs)
    resumed_from.append(summary["resumed_from"])
    return summary

classes.fit_adapters = recorded
if kill:  # the probe fit is trained; killed as its held-out images are about to be scored
    DiTiFewShotClassifier.choose_scoring = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
clf = DiTiFewShotClassifier(model=model, recipe="tiny", score_window="auto", validation_budget=None, auto_refit=True,
                            progress=False, overrides={"score.auto_pairs": 6, "fit.prior_images": 2,
                                                       "fit.prior_sample_steps": 2})
X, y = color_images(9, seed=5)  # 3 shots per class: one held out for the probe fit
clf.fit(X, y, output_dir=out, resume=True)
clf.save_pretrained(out)
print(json.dumps({"resumed_from": resumed_from, "choice": clf.score_choice_["name"]}))
"""


def test_auto_refits_probe_fit_killed_after_its_training_is_not_trained_again(tiny_model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}

    def run(out: Path, kill: bool) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _PROBE_ROUTE, str(tiny_model_dir), str(out), str(kill and "kill")],
                              capture_output=True, text=True, env=env)

    whole = run(tmp_path / "whole", False)
    assert whole.returncode == 0, whole.stderr
    killed = run(tmp_path / "killed", True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    probe = json.loads((tmp_path / "killed" / "auto-probe" / "checkpoint" / "state.json").read_text())
    resumed = run(tmp_path / "killed", False)
    assert resumed.returncode == 0, resumed.stderr
    unbroken, again = json.loads(whole.stdout.splitlines()[-1]), json.loads(resumed.stdout.splitlines()[-1])
    # the probe fit loaded from its kept checkpoint, the final fit trained as in the unbroken run, the same choice
    assert unbroken["resumed_from"] == [0, 0] and again["resumed_from"] == [probe["iteration"], 0]
    assert again["choice"] == unbroken["choice"] and probe["iteration"] > 0
    a = load_file(str(tmp_path / "whole" / "adapters.safetensors"))
    b = load_file(str(tmp_path / "killed" / "adapters.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert working_folders(tmp_path / "killed") == []


def test_a_fit_clears_only_an_adapter_fits_work_and_refuses_another_commands_checkpoint(folder, tiny_model_dir,
                                                                                        tmp_path, capsys):
    from diti_sd.errors import ConfigError
    from diti_sd.work_folders import clear_earlier_work

    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text('{"stage": "unet", "step": 300, "steps": 4000}')
    (tmp_path / "auto-probe").mkdir()
    with pytest.raises(ConfigError, match="is train-base's checkpoint, not an adapter fit's"):
        clear_earlier_work(tmp_path)
    assert (tmp_path / "checkpoint" / "state.json").is_file()
    for flags in ([], ["--overwrite"], ["--resume"]):  # the command line refuses it before any work, whatever it asks
        assert main(["fit", "--dataset", "tiny", "--data-root", str(folder), "--model", str(tiny_model_dir), "--out",
                     str(tmp_path), "--no-progress", *flags]) == 2
        assert "is train-base's checkpoint, not an adapter fit's" in capsys.readouterr().err
    assert (tmp_path / "checkpoint" / "state.json").is_file()
    # killed between the two renames of its checkpoint's write: its old copy beside the place is its checkpoint too
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")
    assert main(["fit", "--dataset", "tiny", "--data-root", str(folder), "--model", str(tiny_model_dir), "--out",
                 str(tmp_path), "--no-progress", "--overwrite"]) == 2
    assert "is train-base's checkpoint" in capsys.readouterr().err
    assert (tmp_path / "checkpoint" / "state.json").is_file()  # put back in its place
    (tmp_path / "checkpoint" / "state.json").write_text('{"iteration": 3, "signature": "an earlier fit"}')
    clear_earlier_work(tmp_path)  # an adapter fit's own work goes
    assert list(tmp_path.iterdir()) == []
