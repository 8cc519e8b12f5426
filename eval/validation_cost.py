"""What `diti-sd fit`'s default validation work costs beside the fit, measured side by side.

    python eval/validation_cost.py                       # 20 classes, 4 shots, image-folder recipe, tiny SD
    python eval/validation_cost.py --classes 100 --shots 1 --steps 1

Builds an image folder of ``--classes`` classes (flat colours with noise) and a tiny random-weight Stable
Diffusion of the real classes, then runs the same `diti-sd fit` three times, in fresh processes one after
the other: with default flags (TiF's weight; the temperature on the split's validation images, within
``--validation-budget``), with ``--no-calibrate`` (no validation pass at all), and with
``--set score.weighting=auto`` (the window and the temperature from one pass, within the same budget).
Prints the wall times, their ratio to ``--no-calibrate``, and each validation pass's UNet calls as a
share of the fit's work.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from diti_sd.files import write_json
from diti_sd.testing.tiny import build_tiny_backbone


def make_folder(root: Path, n_classes: int, per_class: int, size: int = 64, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    for c in range(n_classes):
        colour = torch.rand(3, 1, 1, generator=g)
        (root / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = (colour + 0.15 * torch.randn(3, size, size, generator=g)).clamp(0, 1)
            save_image(image, root / f"class{c:03d}" / f"{i}.png")
    return root


def fit(args, folder: Path, model: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "diti_sd.cli", "fit", "--dataset", args.recipe, "--data-root", str(folder),
           "--model", str(model), "--shots", str(args.shots), "--out", str(out), "--no-progress", "--device", "cpu",
           *(["--steps", str(args.steps)] if args.steps else []), *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="fit steps per class (default: the recipe's)")
    parser.add_argument("--recipe", default="image-folder")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_folder(tmp / "data", args.classes, args.shots + 4)
        model = build_tiny_backbone(seed=0).save_pretrained(tmp / "model", progress=False)
        rows = {}
        for name, extra in (("default flags", []), ("--no-calibrate", ["--no-calibrate"]),
                            ("auto", ["--set", "score.weighting=auto"])):
            seconds, summary = fit(args, folder, model, tmp / name.split()[0].strip("-,"), extra)
            rows[name] = {"seconds": round(seconds, 1), "validation": summary.get("validation"),
                          "unet_samples": summary.get("unet_samples")}
    base = rows["--no-calibrate"]["seconds"]
    for name, row in rows.items():
        v = row["validation"] or {}
        print(f"{name:30s} {row['seconds']:7.1f} s  x{row['seconds'] / base:.2f}  validation UNet calls "
              f"{v.get('unet_calls', 0)} ({v.get('share_of_fit', 0):.1%} of the fit's work, "
              f"{row['unet_samples']} training samples)")
    if args.json:
        write_json(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
