"""A lever against the shortcut, tried offline: small-t class evidence with the large-t evidence discounted.

    python eval/auto_window.py --task texture --seeds 11-20 --pairs 48 --out reports/auto-window-now
    python eval/coarse_discount.py reports/auto-window-now/texture_user_val --out discount.json

By the method's premise the class evidence that survives to large t is coarse (on the synthetic texture task:
the background, the shortcut). Per image, each band's mean errors are standardised over the classes and the
score is ``z_small - beta * z_large``: a class whose large-t error is low (the coarse attribute matches) is
marked down. ``beta = "proj"`` removes, per image, the part of the small-t evidence along the large-t evidence.
Read off ``eval/auto_window.py``'s saved validation passes (every image at its own pairs over [0, 1000)): the
oracle stream's accuracy (a labelled row) and the user-like stream's accuracy and true-class log-likelihood
(what a rule could read), each paired per seed against ``beta = 0`` (the small-t window alone).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diti_sd.files import atomic_write
from diti_sd.metrics import standardise
from diti_sd.recipes import T_STEPS
from diti_sd.scoring.auto import per_image_log_likelihood
from diti_sd.scoring.validation_pass import replay
from diti_sd.stats import mean_se

BETAS = ("0", "0.25", "0.5", "0.75", "1", "proj")


def band_evidence(errors: np.ndarray, t: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the classes' standardised mean errors over its pairs below and at or above ``split``.
    Every image needs pairs on both sides and every class scored (``standardise`` maps a missing entry to -inf,
    which would read as the lowest error)."""
    small, large = (replay(errors, t, {"t_min": lo, "t_max": hi, "weighting": "uniform"}, None)
                    for lo, hi in ((0, split), (split, T_STEPS)))
    if not (np.isfinite(small).all() and np.isfinite(large).all()):
        raise SystemExit(f"some images have no scored pair below or at/above t = {split}, or an unscored class: "
                         f"choose a --split inside the pairs' range (t in {int(t.min())}..{int(t.max())} here)")
    return standardise(small), standardise(large)


def discounted(small: np.ndarray, large: np.ndarray, beta: str) -> np.ndarray:
    """The score to minimise: small-t evidence minus ``beta`` times the large-t evidence."""
    if beta == "proj":
        along = (small * large).sum(1, keepdims=True) / np.maximum((large * large).sum(1, keepdims=True), 1e-12)
        return small - np.clip(along, 0, None) * large
    return small - float(beta) * large


def seed_rows(arrays, split: int) -> dict:
    out = {}
    for stream in ("oracle", "val"):
        small, large = band_evidence(arrays[f"{stream}_errors"], arrays[f"{stream}_t"], split)
        labels = arrays[f"{stream}_labels"]
        for beta in BETAS:
            score = discounted(small, large, beta)
            row = out.setdefault(beta, {})
            row[stream] = float((score.argmin(1) == labels).mean())
            if stream == "val":
                row["val_ll"] = float(np.nanmean(per_image_log_likelihood(score, labels)))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder of eval/auto_window.py's seed*.npz")
    parser.add_argument("--split", type=int, default=200, help="where small t ends")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    files = sorted(args.folder.glob("seed*.npz"))
    if not files:
        raise SystemExit(f"no seed*.npz in {args.folder}: run eval/auto_window.py --out first")
    per_seed = [seed_rows(np.load(f), args.split) for f in files]
    result = {"seeds": [f.stem for f in files], "split": args.split, "betas": {}}
    print(f"{len(files)} seeds, small t below {args.split}; gains paired per seed against beta 0 (SE)")
    for beta in BETAS:
        row = {}
        for key in ("oracle", "val", "val_ll"):
            values = [r[beta][key] for r in per_seed]
            gain, se = mean_se([v - r["0"][key] for v, r in zip(values, per_seed)])
            row[key] = {"mean": float(np.mean(values)), "gain": gain, "se": se}
        result["betas"][beta] = row
        print(f"beta {beta:5s} oracle {row['oracle']['mean']:.3f} ({row['oracle']['gain']:+.3f}, "
              f"{row['oracle']['se']:.3f})  user-like accuracy {row['val']['mean']:.3f}  log-likelihood "
              f"{row['val_ll']['mean']:.3f} ({row['val_ll']['gain']:+.3f}, {row['val_ll']['se']:.3f})")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    return result


if __name__ == "__main__":
    main()
