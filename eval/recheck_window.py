"""The recipe's scoring window re-checked on a user's validation images, from the auto study's saved passes.

    python eval/recheck_window.py reports/auto-window/texture_user_val --json reports/window-recheck.json

``eval/auto_window.py`` saves, per validation seed, the recipe's adapters' errors on the user-like
validation stream (the background follows the class) at 24 pairs over [0, 1000), and on an oracle stream
(background independent of the class). This replays them, with no UNet call, under each scoring window
and under TiF's weight, and prints per window its accuracy and its true-class log-likelihood (what auto
ranks by) on the user-like stream, and its accuracy on the oracle stream, each paired against the
recipe's window (``--against``) with the standard error of the per-seed gains. A window counts as better
only beyond two of them, on the user-like stream; the oracle is a labelled row, never the choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from diti_sd.files import write_json
from diti_sd.scoring.auto import per_image_log_likelihood
from diti_sd.scoring.validation_pass import replay
from diti_sd.stats import beyond_2se, mean_se

WINDOWS = ((0, 200), (200, 500), (0, 500), (500, 1000), (0, 1000), (0, 333), (333, 667), "tif")


def candidate(window) -> dict:
    if window == "tif":
        return {"t_min": 0, "t_max": 1000, "weighting": "tif"}
    return {"t_min": window[0], "t_max": window[1], "weighting": "uniform"}


def per_seed(folder: Path) -> dict:
    """measure -> window -> per seed: user-like accuracy and log-likelihood, oracle accuracy."""
    out: dict = {"val accuracy": {}, "val log-likelihood": {}, "oracle accuracy": {}}
    for path in sorted(folder.glob("seed*.npz")):
        a = np.load(path)
        for w in WINDOWS:
            for stream in ("val", "oracle"):
                mean = replay(a[f"{stream}_errors"], a[f"{stream}_t"], candidate(w), float(a["tif_d"]))
                out[f"{stream} accuracy"].setdefault(str(w), []).append(
                    float((mean.argmin(1) == a[f"{stream}_labels"]).mean()))
                if stream == "val":
                    ll = per_image_log_likelihood(mean, a["val_labels"])
                    out["val log-likelihood"].setdefault(str(w), []).append(float(np.nanmean(ll)))
    return out


def against(values: dict, ref: str) -> dict:
    rows, base = {}, np.asarray(values[ref])
    for w, v in values.items():
        gain, se = mean_se(np.asarray(v) - base)
        rows[w] = {"mean": float(np.mean(v)), "gain": gain, "se": se,
                   "beyond_2_se": beyond_2se(abs(gain), se)}  # either way
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="an eval/auto_window.py seed folder, e.g. reports/auto-window/texture_user_val")
    parser.add_argument("--against", default="200-500",
                        help="the window to compare with, as A-B, or tif for TiF's weight "
                             "(default: 200-500, the recipe's before the re-check)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    ref = "tif" if args.against == "tif" else str(tuple(int(v) for v in args.against.split("-")))
    seeds = per_seed(Path(args.folder))
    if not seeds["val accuracy"]:
        raise SystemExit(f"no seed*.npz in {args.folder}: run eval/auto_window.py first")
    result = {"seeds": len(seeds["val accuracy"][ref]), "against": ref,
              "rows": {m: against(v, ref) for m, v in seeds.items()}, "per_seed": seeds}
    for measure, rows in result["rows"].items():
        print(f"{measure} ({result['seeds']} seeds), minus {ref}:")
        for w, r in rows.items():
            flag = "  beyond 2 SE" if r["beyond_2_se"] else ""
            print(f"  {w:12s} {r['mean']:7.3f}  {r['gain']:+.3f} SE {r['se']:.3f}{flag}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
