"""Two CPU processes (gloo), launched the way `accelerate launch` launches GPU processes (torchrun)."""

import csv
import json
import subprocess
import sys

import pytest
import torch
from helpers import color_images
from safetensors.torch import load_file
from torchvision.utils import save_image

from diti_sd.cli import main


def launch(args, cwd):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "diti_sd.cli", *args]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_processes_give_a_single_process_result(tmp_path, tiny_model_dir):
    images, labels = color_images(15, seed=11)
    for i, (image, label) in enumerate(zip(images, labels)):
        split = "test" if i >= 9 else "train"
        (tmp_path / "data" / split / label).mkdir(parents=True, exist_ok=True)
        save_image(image, tmp_path / "data" / split / label / f"{i}.png")
    common = ["--dataset", "tiny", "--data-root", str(tmp_path / "data"), "--model", str(tiny_model_dir),
              "--shots", "3", "--no-progress"]
    assert main(["fit", *common, "--out", str(tmp_path / "one")]) == 0
    launch(["fit", *common, "--out", "two"], tmp_path)
    one = load_file(str(tmp_path / "one" / "adapters.safetensors"))
    two = load_file(str(tmp_path / "two" / "adapters.safetensors"))
    # each process trained its own classes (0 and 2, or 1); merged, they equal one process's training up to
    # thread-count rounding, far below one optimiser step (lr 3e-3)
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-3), key
    assert any(two[k].abs().sum() > 0 for k in two if k.endswith("lora_B"))

    # early stopping: each process stops its own classes; the summary lists every class in class order
    stop = ["--set", "fit.early_stop_every=1", "--set", "fit.early_stop_pairs=2"]
    assert main(["fit", *common, *stop, "--out", str(tmp_path / "es1")]) == 0
    launch(["fit", *common, *stop, "--out", "es2"], tmp_path)
    fits = [json.loads((tmp_path / f / "manifest.json").read_text())["fit"] for f in ("es1", "es2")]
    assert len(fits[0]["stopped_at"]) == 3 and fits[0]["stopped_at"] == fits[1]["stopped_at"]
    assert fits[0]["held_out_error"] == pytest.approx(fits[1]["held_out_error"], rel=1e-3)
    assert fits[0]["early_stop_unet_samples"] == fits[1]["early_stop_unet_samples"] > 0
    es1, es2 = (load_file(str(tmp_path / f / "adapters.safetensors")) for f in ("es1", "es2"))
    for key in es1:
        assert torch.allclose(es1[key], es2[key], atol=1e-3), key

    assert main(["predict", "--adapters", str(tmp_path / "one"), str(tmp_path / "data" / "test"),
                 "--out", str(tmp_path / "p1.csv"), "--no-progress", "--top-k", "3"]) == 0
    launch(["predict", "--adapters", "one", "data/test", "--out", "p2.csv", "--no-progress", "--top-k", "3"], tmp_path)
    rows1 = list(csv.DictReader(open(tmp_path / "p1.csv")))
    rows2 = list(csv.DictReader(open(tmp_path / "p2.csv")))
    assert len(rows1) == 6
    assert [r["path"].split("data/")[-1] for r in rows1] == [r["path"].split("data/")[-1] for r in rows2]
    assert [r["prediction"] for r in rows1] == [r["prediction"] for r in rows2]
    assert [r["top_k"] for r in rows1] == [r["top_k"] for r in rows2]


def test_a_finished_command_closes_its_process_group(tmp_path):
    # left open, gloo's threads can abort the process at interpreter exit after the work succeeded
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        assert main(["tiny-model", "--out", str(tmp_path / "tiny")]) == 0
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_the_encoder_trains_on_two_processes_as_on_one(tmp_path):
    from diti_sd.encoder import DiTiEncoder

    ddpm, one = tmp_path / "ddpm", tmp_path / "one"
    assert main(["encoder", "train-ddpm", "--dataset", "granular", "--max-images", "32", "--steps", "2",
                 "--channels", "16,32", "--out", str(ddpm), "--no-progress"]) == 0
    common = ["encoder", "fit", "--dataset", "granular", "--max-images", "48", "--ddpm", str(ddpm), "--steps", "4",
              "--set", "train.batch_size=8", "--set", "train.checkpoint_every=2", "--set", "train.flip=true",
              "--no-progress"]
    assert main([*common, "--out", str(one)]) == 0
    done = launch([*common, "--out", "two"], tmp_path)
    assert done.stdout.count('"out"') == 1  # the first process reports
    summary = json.loads(done.stdout)
    assert summary["processes"] == 2 and summary["images_per_process_step"] == 4  # each half of each batch of 8
    a, b = (DiTiEncoder.from_pretrained(tmp_path / name) for name in ("one", "two"))
    for key, value in a.state_dict().items():  # each process half of each batch, gradients averaged
        assert torch.allclose(value, b.state_dict()[key], atol=1e-5), key
    losses = [json.loads((tmp_path / name / "losses.json").read_text()) for name in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4) and len(losses[1]) == 4
    odd = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "diti_sd.cli",
                          *common, "--set", "train.batch_size=7", "--out", "odd"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert odd.returncode != 0 and "train.batch_size 7 does not split evenly over 2 processes" in odd.stderr
