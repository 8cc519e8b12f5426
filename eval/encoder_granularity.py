"""What the DiTi encoder's shift network reads from each stage of z, on attributes of known granularity.

    python eval/encoder_granularity.py --seeds 0 1 2 --out reports/encoder-granularity
    python eval/encoder_granularity.py --seeds 0 --steps 50000 --device cuda   # the long run, on a GPU

Trains the `granular` recipe's encoder on the shipped 16-px DDPM of the synthetic images (a faint
checker mark: fine; a background colour and a disc size: coarse) once per seed, then measures the
transfer under counterfactual swaps on held-out images: swap one stage's dimensions of z from image j
into image i, sample, read the attribute; 1 means the shift network takes the attribute from that stage
entirely, 0 not at all. The DiTi claim is "fine attributes from the early stage, coarse ones from the
late stage". Prints the transfer table as mean ± std over seeds (the probe AP, trained and at the
initial weights, goes to granularity.json for reference); findings are in docs/encoder.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from diti_sd.encoder import DiTiEncoder, fit_encoder, load_ddpm, load_encoder_recipe
from diti_sd.encoder.granular import make_granular
from diti_sd.encoder.model import MANIFEST as ENCODER_MANIFEST
from diti_sd.encoder.report import run_probe
from diti_sd.files import write_json


def mean_std(tables: list[dict], names: list[str]) -> dict:
    """{group: {attribute: [mean, std]}} over the seeds' {group: {attribute: value}} tables."""
    return {group: {n: [float(np.mean([t[group][n] for t in tables])), float(np.std([t[group][n] for t in tables]))]
                    for n in names} for group in tables[0]}


def print_table(title: str, summary: dict, names: list[str]) -> None:
    print(f"\n{title}\n| swapped | {' | '.join(names)} |\n|---|" + "---|" * len(names))
    for group, values in summary.items():
        print(f"| {group} | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in values.values()) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--dataset", default="granular", help="encoder recipe (default: granular)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=None, help="swap pairs per attribute (default: the recipe's)")
    parser.add_argument("--out", default="reports/encoder-granularity")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="long runs (tens of thousands of steps) want a GPU")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run in the same --out with the same arguments: a finished seed's "
                             "encoder and probe are read back, an interrupted fit continues from its checkpoint")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    out = Path(args.out)
    ddpm = load_ddpm("builtin:granular-ddpm", args.device)
    train, test = make_granular(args.train_images, seed=0), make_granular(args.test_images, seed=1)
    overrides = list(args.overrides) + ([f"probe.transfer_pairs={args.pairs}"] if args.pairs is not None else [])
    reports = []
    for seed in args.seeds:
        folder = out / f"seed{seed}"
        if args.resume and (folder / "probe" / "probe.json").is_file():
            reports.append(json.loads((folder / "probe" / "probe.json").read_text()))
            continue
        if args.resume and (folder / ENCODER_MANIFEST).is_file():  # fitted; killed in its probe
            model = DiTiEncoder.from_pretrained(folder, ddpm, device=args.device)
        else:
            recipe = load_encoder_recipe(args.dataset, [*overrides, f"train.seed={seed}"])
            torch.manual_seed(seed)
            model = DiTiEncoder(recipe, ddpm).to(args.device)
            fit_encoder(model, train, folder, steps=args.steps, progress=not args.no_progress, resume=args.resume)
        reports.append(run_probe(model, train, test, folder / "probe", progress=False))
    names = train.names
    summary = {
        "transfer": mean_std([r["transfer"] for r in reports], names),
        "probe_ap": mean_std([r["by_stage"] for r in reports], names),
        "probe_ap_initial": mean_std([r["initial_weights"]["by_stage"] for r in reports], names),
    }
    print(f"Held-out synthetic images, mean ± std over seeds {args.seeds}")
    print_table("Transfer under a swap of one stage's subsets (what the shift network reads)", summary["transfer"],
                names)
    write_json(out / "granularity.json", {"seeds": args.seeds, "steps": args.steps, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
