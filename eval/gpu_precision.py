"""The synthetic recipe fitted and scored at each precision a GPU user can pick, side by side.

    python eval/gpu_precision.py --device cuda            # fp32, fp16 (the reference's), bf16

Per precision: one seed's adapters fitted with ``fit.mixed_precision`` and scored with ``gpu_dtype`` at
that precision; prints the fit's seconds, whether every adapter weight is finite, the accuracy on the
user-like validation stream and on the labelled oracle stream, and how often each precision's
predictions agree with the first one's. A check that reduced precision neither breaks fitting (an fp16
overflow, a loss scaler that never recovers) nor moves the predictions, on the tiny base; it is not an
accuracy figure for Stable Diffusion.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.recipes import load_recipe

PRECISIONS = {"fp32": [], "fp16": ["fit.mixed_precision=fp16", "gpu_dtype=fp16"],
              "bf16": ["fit.mixed_precision=bf16", "gpu_dtype=bf16"]}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", default="fp32,fp16,bf16", help="comma-separated, from fp32, fp16, bf16")
    parser.add_argument("--seed", type=int, default=11, help="a validation seed (never a sealed one)")
    parser.add_argument("--per-class", type=int, default=10, help="images per class of each stream")
    parser.add_argument("--steps", type=int, default=None, help="fit steps per class (default: the recipe's)")
    args = parser.parse_args(argv)
    names = args.precisions.split(",")
    unknown = sorted(set(names) - set(PRECISIONS))
    if unknown:
        raise SystemExit(f"unknown precision {', '.join(unknown)}: choose from {', '.join(PRECISIONS)}")
    if args.device.startswith("cuda"):
        print(torch.cuda.get_device_name(args.device), torch.__version__, flush=True)
    rows, first = [], None
    for name in names:
        recipe = load_recipe("synthetic", PRECISIONS[name])
        run = SyntheticSeed.for_recipe(recipe, args.seed, shots=8)
        start = time.time()
        clf = run.fit(recipe, device=args.device, steps=args.steps)
        row = {"precision": name, "fit_seconds": time.time() - start,
               "finite": all(bool(torch.isfinite(v).all()) for v in clf.adapters_.lora_state_dict().values())}
        for stream in ("val", "oracle val"):
            data = run.stream(stream, args.per_class)
            predicted = clf.predict(data.images)
            row[stream] = float((predicted == np.array(run.names(data))).mean())
        first = predicted if first is None else first
        row["agrees_with_first"] = float((predicted == first).mean())
        rows.append(row)
        print(f"{name}: fit {row['fit_seconds']:.0f} s, adapters finite {row['finite']}; val {row['val']:.2f}, "
              f"oracle val {row['oracle val']:.2f}; predictions agree with {names[0]}'s on "
              f"{row['agrees_with_first']:.2f} of the oracle images", flush=True)
    return rows


if __name__ == "__main__":
    main()
