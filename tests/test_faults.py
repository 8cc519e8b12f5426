"""Nothing lost, nothing silently wrong: processes killed with SIGKILL at random moments resume or
rerun to the numbers an uninterrupted run gives; a full disk during each kind of atomic write keeps
the previous file or folder; a crash inside a folder swap is recovered; damaged caches are recomputed.

The kill moments are drawn from a seeded generator (the seed is printed with each kill), triggered by
what the process has written so far, so each kill lands in a known phase at a random point within it.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fakes import make_fake_fgvc
from helpers import TINY_CLIP, color_images
from safetensors.torch import load_file
from torchvision.utils import save_image

from diti_sd import files
from diti_sd.cli import main
from diti_sd.files import DiskFullError, atomic_folder, atomic_write, recover_folder, swapped_out

SEED = int(os.environ.get("DITI_FAULT_SEED", "20261201"))
FAST = ["--set", "fit.prior_images=2", "--set", "fit.prior_sample_steps=2", "--set", "resolution=32"]


@pytest.fixture(scope="module")
def masks(folder, tmp_path_factory):
    """An object mask per image of ``folder`` (a square at a place of its own), named as the image is under its
    root."""
    root = tmp_path_factory.mktemp("masks")
    for path in (folder / "train").rglob("*.png"):
        mask, i = torch.zeros(1, 32, 32), int(path.stem)
        mask[:, 2 + i:18 + i, 12 - i:28 - i] = 1.0
        target = root / path.relative_to(folder / "train")
        target.parent.mkdir(parents=True, exist_ok=True)
        save_image(mask, target)
    return root


def _cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "diti_sd.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready, rng: random.Random, spread: float, label: str) -> bool:
    """SIGKILL ``proc`` at a random moment up to ``spread`` s after ``ready()`` first holds; False if
    it finished first (nothing was interrupted)."""
    deadline = time.time() + 120
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            proc.wait()
            return False
        time.sleep(0.01)
    delay = rng.uniform(0, spread)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait()
    print(f"killed {label} {delay:.2f} s after its trigger (seed {SEED})")
    return True


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


def _weights(path: Path) -> dict:
    return load_file(str(path / "adapters.safetensors"))


@pytest.mark.parametrize("reads_masks", [None, "fit.coarse_swap=1", "fit.mask_loss=true", "attention"],
                         ids=["plain", "swap-outside-masks", "loss-over-masks", "swap-outside-attention-masks"])
def test_fit_killed_at_random_moments_resumes_to_the_same_adapters(folder, masks, tiny_model_dir, tmp_path,
                                                                   reads_masks):
    given = {None: [], "attention": ["--attention-masks", "photo", "--set", "fit.coarse_swap=1"]}.get(
        reads_masks, ["--masks", str(masks), "--set", str(reads_masks)])
    args = ["fit", "--dataset", "tiny", "--data-root", str(folder), "--model", str(tiny_model_dir), "--steps", "12",
            "--set", "fit.checkpoint_every=2", *FAST, "--no-progress", *given]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    checkpoint = out / "checkpoint" / "state.json"

    def iteration():
        try:
            return json.loads(checkpoint.read_text())["iteration"]
        except (OSError, ValueError):
            return None

    rng = random.Random(SEED)
    # anywhere from the prior images to the first checkpoints; then once a later checkpoint replaced one
    triggers = [("fit after writing its priors", lambda: (out / "prior").is_dir(), 1.5),
                ("fit after a later checkpoint", lambda: (iteration() or 0) >= 6, 1.0)]
    if reads_masks == "attention":  # while it reads the masks off the base, or just after it kept them
        triggers.insert(0, ("fit around its attention masks", lambda: out.is_dir(), 2.0))
    kills = 0
    for label, ready, spread in triggers:
        kills += _kill_when(_cli(*args, "--out", str(out), "--resume"), ready, rng, spread, label)
    assert kills >= 1, "the fit finished before every kill; lengthen it"
    _finish(_cli(*args, "--out", str(out), "--resume"))
    whole, resumed = _weights(tmp_path / "whole"), _weights(out)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not (out / "checkpoint").exists()


@pytest.fixture(scope="module")
def adapter_set(folder, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("set") / "adapters"
    assert main(["fit", "--dataset", "tiny", "--data-root", str(folder), "--model", str(tiny_model_dir), "--steps", "2",
                 *FAST, "--set", "score.rounds=[[6,3],[24,1]]", "--out", str(out), "--no-progress"]) == 0
    return out


def test_predict_killed_at_random_moments_reruns_to_the_same_csv(folder, adapter_set, tmp_path, capsys):
    images = sorted(str(p) for p in (folder / "train").rglob("*.png"))
    args = ["predict", "--adapters", str(adapter_set), *images, "--chunk-size", "2", "--top-k", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole.csv")]) == 0
    expected = (tmp_path / "whole.csv").read_text()
    shared = tmp_path / "cache"
    rng = random.Random(SEED + 1)
    assert _kill_when(_cli(*args, "--cache-dir", str(shared), "--out", str(tmp_path / "killed.csv")),
                      lambda: len(list(shared.glob("*.npz"))) >= 1, rng, 0.3, "predict after its first chunk")
    assert not (tmp_path / "killed.csv").exists()  # never a half-written CSV
    # the rerun: two processes at once, sharing the killed run's cache folder, each give what one alone gives
    procs = [_cli(*args, "--cache-dir", str(shared), "--out", str(tmp_path / f"p{i}.csv")) for i in range(2)]
    for proc in procs:
        _finish(proc)
    assert (tmp_path / "p0.csv").read_text() == expected == (tmp_path / "p1.csv").read_text()
    assert not [p for p in shared.iterdir() if p.name.endswith(".tmp")]
    # a damaged chunk is scored again, not read as numbers
    chunk = sorted(shared.glob("*.npz"))[0]
    chunk.write_bytes(chunk.read_bytes()[:50])
    capsys.readouterr()
    assert main([*args, "--cache-dir", str(shared), "--out", str(tmp_path / "p2.csv")]) == 0
    assert "diti-sd: warning: score cache" in capsys.readouterr().err  # one line, as the command shows it
    assert (tmp_path / "p2.csv").read_text() == expected


def test_eval_killed_at_random_moments_reruns_to_the_same_results(tiny_model_dir, tmp_path, capsys):
    data = make_fake_fgvc(tmp_path / "data", per_split=2, n_classes=3, seed=4)
    clip = tmp_path / "tiny-clip.json"
    clip.write_text(json.dumps(TINY_CLIP))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("inherit: tiny\ndataset: {kind: fgvc-aircraft}\nresolution: 32\n"
                      "fit: {prior_images: 2, prior_sample_steps: 2}\nscore: {rounds: [[4, 2], [8, 1]]}\n")
    args = ["eval", "--dataset", str(recipe), "--data-root", str(data), "--model", str(tiny_model_dir), "--shots", "1",
            "--seeds", "1,2", "--clip-model", str(clip), "--clip-pretrained", "none", "--aug-passes", "1",
            "--methods", "diti,openclip-zeroshot", "--no-progress"]

    def runs(report: Path) -> dict:
        return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "wall_s"}
                for p in (report / "runs").glob("*.json")}

    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    expected = runs(tmp_path / "whole")
    report = tmp_path / "killed"
    rng = random.Random(SEED + 2)
    assert _kill_when(_cli(*args, "--out", str(report)), lambda: len(list((report / "runs").glob("*.json"))) >= 1,
                      rng, 2.0, "eval after its first run file")
    _finish(_cli(*args, "--out", str(report)))
    assert runs(report) == expected

    def scored(report: Path) -> dict:  # each adapter set's model card keeps what it scored (before its run file)
        return {p.parent.name: {k: json.loads(p.read_text())[k] for k in ("score", "n_test")}
                for p in report.rglob("evaluation.json")}

    assert len(scored(tmp_path / "whole")) == 2 and scored(report) == scored(tmp_path / "whole")
    # a damaged run file is run again
    damaged = sorted((report / "runs").glob("diti-*.json"))[0]
    damaged.write_text(damaged.read_text()[:30])
    capsys.readouterr()
    assert main([*args, "--out", str(report)]) == 0
    assert "diti-sd: warning: run file" in capsys.readouterr().err
    assert runs(report) == expected
    # a damaged feature cache is computed again
    features = next((report / "features").glob("test-*.safetensors"))
    features.write_bytes(b"\0" * 64)
    for path in (report / "runs").glob("openclip-*.json"):
        path.unlink()
    assert main([*args, "--out", str(report)]) == 0
    assert "diti-sd: warning: feature cache" in capsys.readouterr().err
    assert runs(report) == expected


# ------------------------------------------------------------------------------------------ full disk
@pytest.fixture
def full_disk(monkeypatch):
    """The next atomic write writes its content, then the disk is full (ENOSPC)."""
    real = files._write

    def write_then_fail(write, tmp, target):
        def fill(path):
            write(path)
            raise OSError(errno.ENOSPC, "No space left on device")

        return real(fill, tmp, target)

    monkeypatch.setattr(files, "_write", write_then_fail)


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_full_disk_keeps_the_previous_adapter_set(adapter_set, tmp_path, full_disk):
    from diti_sd import DiTiFewShotClassifier

    copy = tmp_path / "set"
    shutil.copytree(adapter_set, copy)
    before = _snapshot(copy)
    clf = DiTiFewShotClassifier.from_pretrained(copy, progress=False)
    clf.temperature_ = 2.0
    with pytest.raises(DiskFullError, match=f"no space left on the device writing {copy}/adapters.safetensors"):
        clf.save_pretrained(copy)
    assert _snapshot(copy) == before
    DiTiFewShotClassifier.from_pretrained(copy, progress=False)  # still loads


def test_a_full_disk_keeps_the_previous_model_folder_and_file(tmp_path, full_disk):
    # atomic_folder is what fit checkpoints and train-base's model folder are written with
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights").write_text("old")
    with pytest.raises(DiskFullError, match="the previous version, if any, is intact"):
        atomic_folder(folder, lambda tmp: (tmp / "unet").mkdir() or (tmp / "unet" / "weights").write_text("new"))
    assert (folder / "unet" / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (tmp_path / "run.json").write_text("old")
    with pytest.raises(DiskFullError):  # atomic_write: manifests, weights, CSVs, run files, caches
        atomic_write(tmp_path / "run.json", lambda tmp: tmp.write_text("new"))
    assert (tmp_path / "run.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "run.json"]


def test_a_full_disk_during_predicts_csv_and_score_chunks_is_one_line(folder, adapter_set, tmp_path, capsys,
                                                                     full_disk):
    image = str(next((folder / "train").rglob("*.png")))
    (tmp_path / "preds.csv").write_text("previous\n")
    assert main(["predict", "--adapters", str(adapter_set), image, "--out", str(tmp_path / "preds.csv"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("diti-sd: error: no space left on the device writing") and "free some space" in err
    assert (tmp_path / "preds.csv").read_text() == "previous\n"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no half-written chunk or CSV


def test_a_safetensors_style_full_disk_error_is_recognised(tmp_path):
    def safetensors_write(path):
        path.write_bytes(b"12")
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                           "\"No space left on device\" })")

    with pytest.raises(DiskFullError):
        atomic_write(tmp_path / "w.safetensors", safetensors_write)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="another failure"):  # other errors pass through unchanged
        atomic_write(tmp_path / "w", lambda p: (_ for _ in ()).throw(RuntimeError("another failure")))


# ------------------------------------------------------------------------------------------ folder swaps
def test_a_crash_between_the_two_renames_resumes_from_the_old_checkpoint(tiny_model_dir, tmp_path):
    from diti_sd import DiTiFewShotClassifier

    X, y = color_images(12, seed=5)

    def clf():
        return DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", progress=False,
                                     overrides={"fit.prior_images": 2, "fit.prior_sample_steps": 2})

    whole = clf().fit(X, y, output_dir=tmp_path / "a").adapters_.lora_state_dict()

    def stop_at_five(iteration, loss):
        if iteration == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        clf().fit(X, y, output_dir=tmp_path / "b", callback=stop_at_five)
    checkpoint = tmp_path / "b" / "checkpoint"
    os.replace(checkpoint, swapped_out(checkpoint))  # the state a crash after the first rename leaves
    resumed = clf().fit(X, y, output_dir=tmp_path / "b", resume=True)
    assert resumed.fit_summary_["resumed_from"] == 3
    assert all(torch.equal(v, whole[k]) for k, v in resumed.adapters_.lora_state_dict().items())
    assert not swapped_out(checkpoint).exists() and checkpoint.exists()  # the trained adapters, until saved there
    resumed.save_pretrained(tmp_path / "b")
    assert not checkpoint.exists()


def test_a_failed_second_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint"
    atomic_folder(target, lambda tmp: (tmp / "state.json").write_text("old"))
    real = os.replace

    def second_rename_fails(src, dst):
        if Path(src).name.endswith(".tmp"):
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="I/O error"):
        atomic_folder(target, lambda tmp: (tmp / "state.json").write_text("new"))
    assert (target / "state.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    monkeypatch.setattr(os, "replace", real)
    # a crash after the second rename but before the old copy was removed: the new one stays
    shutil.copytree(target, swapped_out(target))
    (target / "state.json").write_text("new")
    assert (recover_folder(target) / "state.json").read_text() == "new"
    assert not swapped_out(target).exists()


def test_a_damaged_checkpoint_is_a_clear_error_not_wrong_adapters(folder, tiny_model_dir, tmp_path, capsys,
                                                                  monkeypatch):
    import diti_sd.training.loop as fit

    args = ["fit", "--dataset", "tiny", "--data-root", str(folder), "--model", str(tiny_model_dir), "--steps", "4",
            "--set", "fit.checkpoint_every=2", *FAST, "--out", str(tmp_path / "o"), "--no-progress"]
    real = fit.save_checkpoint

    def save_then_stop(*a, **kw):  # Ctrl-C right after the first checkpoint
        real(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "save_checkpoint", save_then_stop)
    assert main(args) == 130
    assert "rerun the same command with --resume" in capsys.readouterr().err
    monkeypatch.setattr(fit, "save_checkpoint", real)
    optimizer = tmp_path / "o" / "checkpoint" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "checkpoint" in err and "cannot be read" in err and "delete that folder" in err
    assert not (tmp_path / "o" / "manifest.json").exists()


_SWAP_AUTO_RUN = """
import json, sys, warnings
from safetensors.torch import save_file
from helpers import color_images
from diti_sd import DiTiFewShotClassifier
from diti_sd.errors import CoarseShortcutWarning

X, y = color_images(12, seed=3, size=32)  # class c: a flat colour on every shot
Xv, yv = color_images(6, seed=4, size=32)
yv = yv[1:] + yv[:1]  # every validation image but one labelled as the next class: they break the accident
yv[0] = "c0"
calls = []
clf = DiTiFewShotClassifier(model=sys.argv[1], recipe="tiny", steps=12, progress=False, overrides={
    "fit.coarse_swap_auto": True, "fit.checkpoint_every": 2, "fit.prior_images": 2, "fit.prior_sample_steps": 2,
    "resolution": 32})
with warnings.catch_warnings():
    warnings.simplefilter("ignore", CoarseShortcutWarning)
    clf.fit(X, y, validation=(Xv, yv), output_dir=sys.argv[2], resume=True, callback=lambda *a: calls.append(a))
save_file(clf.adapters_.lora_state_dict(), sys.argv[3])
clf.save_pretrained(sys.argv[2])
print(json.dumps({"first_fit_steps": len(calls), "chosen": clf.fit_summary_["coarse_swap_choice"]["chosen"]}))
"""


def test_fit_coarse_swap_auto_killed_in_its_second_fit_resumes_without_refitting_the_first(tiny_model_dir, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SWAP_AUTO_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}

    def run(out: Path, weights: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(tiny_model_dir), str(out), str(weights)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    whole = json.loads(_finish(run(tmp_path / "whole", tmp_path / "whole.safetensors")))
    assert whole["first_fit_steps"] == 12
    out = tmp_path / "killed"
    second = out / "coarse-swap" / "checkpoint" / "state.json"
    rng = random.Random(SEED)
    killed = _kill_when(run(out, tmp_path / "x.safetensors"), second.is_file, rng, 1.0, "the comparison's second fit")
    assert killed, "the comparison finished before the kill; lengthen it"
    assert (out / "checkpoint" / "state.json").is_file()  # the first set, kept until the set is saved
    resumed = json.loads(_finish(run(out, tmp_path / "resumed.safetensors")))
    # the first set was loaded, not trained again, and the choice and adapters are the unbroken run's
    assert resumed == {**whole, "first_fit_steps": 0}
    a, b = load_file(str(tmp_path / "whole.safetensors")), load_file(str(tmp_path / "resumed.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (out / "checkpoint").exists() and not (out / "coarse-swap").exists()  # gone once saved
