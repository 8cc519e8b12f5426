"""Choose the synthetic recipe's settings on the benchmark's VALIDATION streams, under the sealed protocol.

A candidate setting (``--set``) is fitted beside a baseline (``--against``; default: the recipe as it
is) on the same k-shot train splits, and both are scored on each seed's validation stream, drawn as the
shots are (the background follows the class, as in a user's validation images), for several scoring
windows and for TiF's data-derived per-t weight ("tif"), all read off one set of UNet calls per fit, at the
seed's own validation pairs. ``--oracle`` scores on a stream whose background is independent of the class
instead: a labelled oracle, never what a setting is chosen on. The candidate counts as better on a window
only when its paired gain exceeds two standard errors of the per-seed gains (ddof = 1); a hierarchical
bootstrap interval is printed beside it.

    python eval/tune_synthetic.py --seeds 11-20 --set fit.text_lr=1e-3
    python eval/tune_synthetic.py --seeds 11-20 --variant "lora.rank=2;lora.text_rank=2" --variant fit.steps=60

Several ``--variant`` (overrides separated by ";") are each compared with one baseline fit per seed.

The protocol is enforced here (docs/benchmarks.md, "Sealed test protocol"): only validation streams are
ever read, at least 10 seeds, and never the sealed (or retired) seeds of ``diti-sd demo --full``. ``--smoke`` lifts
the seed count for a quick check of the script itself; its verdicts are marked as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from diti_sd.benchmarks.synthetic.demo import RETIRED_SEEDS, SEALED_SEEDS
from diti_sd.benchmarks.synthetic.scoring import stratified_pairs
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.scoring import dense_errors, weighted_mean, window_weights
from diti_sd.seeding import VALIDATION_PAIRS, derive_seed
from diti_sd.stats import hierarchical_difference
from diti_sd.timesteps import tif_weights

WINDOWS = [(0, 200), (200, 500), (0, 500), (500, 1000), (0, 1000)]
MIN_SEEDS = 10


def check_protocol(seeds: list[int], smoke: bool) -> None:
    sealed = sorted(set(seeds) & set(SEALED_SEEDS + RETIRED_SEEDS))
    if sealed:
        raise SystemExit(f"seeds {sealed} are sealed (or retired) test seeds of `diti-sd demo --full`; tune on "
                         f"others (e.g. 11-20)")
    if len(set(seeds)) < MIN_SEEDS and not smoke:
        raise SystemExit(f"{len(set(seeds))} seeds: the sealed protocol asks for at least {MIN_SEEDS} (seed-to-seed "
                         f"sd is 0.04-0.06, so fewer cannot tell most settings apart); e.g. --seeds 11-20")


def evaluate(overrides: list[str], seeds: list[int], shots: int, val_per_class: int,
             windows: list[tuple[int, int]] = WINDOWS, pairs: tuple[int, int] = (12, 12),
             split_at: int = 200, model: str | None = None, stream: str = "val", cache: Path | None = None) -> dict:
    """Per window (and "tif"): per seed, which validation images each fit gets right. (Accuracy on the shots
    is not read: their background follows the class, so it cannot tell memorised shots from a learnt
    shortcut; the demo measures memorisation without it.) ``pairs``: (t, noise)
    pairs in [0, split_at) and in [split_at, 1000). With ``cache``, each seed's result is kept in a file
    named by everything it depends on (the resolved recipe, not how it was spelled), so a killed run
    resumes and runs that share a setting fit it once."""
    recipe = load_recipe("synthetic", [*([f"model={model}"] if model else []), *overrides])
    correct = {w: [] for w in [*windows, "tif"]}
    start = time.time()
    for seed in seeds:
        key = json.dumps([dataclasses.asdict(recipe), seed, shots, val_per_class, windows, pairs, split_at, stream],
                         default=str)
        path = None if cache is None else cache / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        if path is not None and path.exists():
            saved = json.loads(path.read_text())
            for w in correct:
                correct[w].append(np.array(saved["correct"][_name(w)], dtype=bool))
            continue
        run = SyntheticSeed.for_recipe(recipe, seed, shots)
        val = run.stream(stream, val_per_class)  # the only stream tuning reads
        clf = run.fit(recipe)
        t, noise, weights = stratified_pairs([0, split_at, 1000], pairs, clf.backbone_.latent_shape,
                                             derive_seed(seed, VALIDATION_PAIRS))
        t_np = t.numpy()
        contexts = clf.class_contexts()
        scale = clf.recipe_.score.unet_scale  # the test-time LoRA scale is a setting too
        errors = dense_errors(clf.backbone_, clf.adapters_, clf.encode(val.images), contexts, t, noise,
                              unet_scale=scale)
        labels = run.labels(val, clf)
        for w in windows:
            correct[w].append(_predict(errors, t_np, weights, w) == labels)
        tif = weights * tif_weights(clf.tif_d_)[t_np]
        correct["tif"].append(_predict(errors, t_np, tif, (0, 1000)) == labels)
        if path is not None:
            saved = {"key": key,
                     "correct": {_name(w): [bool(v) for v in hits[-1]] for w, hits in correct.items()}}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp, text=json.dumps(saved): tmp.write_text(text))
    return {"overrides": overrides, "seconds": round(time.time() - start, 1), "correct": correct}


def _predict(errors: np.ndarray, t: np.ndarray, weights: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Each image's class of lowest weighted mean error over the pairs in ``window``."""
    return weighted_mean(errors, window_weights(t, weights, window)).argmin(1)


def _name(w) -> str:
    return "tif" if w == "tif" else f"[{w[0]},{w[1]})"


def compare(candidate: dict, baseline: dict, smoke: bool = False) -> dict:
    """Per window: both accuracies, the paired gain with its interval and standard error, and the verdict."""
    out = {}
    for w, hits in candidate["correct"].items():
        d = hierarchical_difference(hits, baseline["correct"][w], n_boot=2000)
        better = d["mean"] > 2 * d["seed_se"] if np.isfinite(d["seed_se"]) else False
        out[_name(w)] = {"candidate": float(np.mean([h.mean() for h in hits])),
                         "baseline": float(np.mean([h.mean() for h in baseline["correct"][w]])),
                         "gain": d["mean"], "low": d["low"], "high": d["high"], "se": d["seed_se"],
                         "verdict": ("smoke run: no verdict" if smoke else
                                     "better (gain > 2 SE)" if better else "not shown better")}
    return out


def windows_against_recipe(baseline: dict, recipe_window: tuple[int, int]) -> dict:
    """The baseline's adapters: each other scoring minus the recipe's own window, paired per image, the
    validation evidence for the recipe's scoring window."""
    ref = baseline["correct"].get(recipe_window)
    if ref is None:
        return {}
    out = {}
    for w, hits in baseline["correct"].items():
        if w != recipe_window:
            d = hierarchical_difference(hits, ref, n_boot=2000)
            out[_name(w)] = {"gain": d["mean"], "low": d["low"], "high": d["high"], "se": d["seed_se"]}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20", help="e.g. 11-20 or 11,12,15 (at least 10)")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="the candidate: KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[],
                        help='a further candidate, its overrides separated by ";" (repeatable)')
    parser.add_argument("--against", action="append", default=[], help="the baseline: KEY=VALUE (default: the recipe)")
    parser.add_argument("--windows", default=None,
                        help="scoring windows to report, e.g. 0-200,150-500 (default: "
                             + ",".join(f"{a}-{b}" for a, b in WINDOWS) + ")")
    parser.add_argument("--pairs", default="12,12", help="(t, noise) pairs below and above --split-at")
    parser.add_argument("--split-at", type=int, default=200)
    parser.add_argument("--model", default=None, help="the benchmark's base model (default: the recipe's)")
    parser.add_argument("--oracle", action="store_true",
                        help="score on a validation stream whose background is independent of the class (a "
                             "labelled oracle; settings are chosen on the default stream)")
    parser.add_argument("--out", default=None, help="also write the result as JSON to this file")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep each (setting, seed) result here: a killed run resumes, and runs that share a "
                             "baseline fit it once")
    parser.add_argument("--smoke", action="store_true",
                        help="allow fewer than 10 seeds (checks the script, no verdict)")
    args = parser.parse_args(argv)
    seeds = args.seeds
    check_protocol(seeds, args.smoke)
    windows = WINDOWS if args.windows is None else [tuple(int(v) for v in w.split("-"))
                                                    for w in args.windows.split(",")]
    pairs = tuple(int(v) for v in args.pairs.split(","))
    candidates = ([args.overrides] if args.overrides or not args.variant else []) + [
        [o for o in v.split(";") if o] for v in args.variant]
    stream = "oracle val" if args.oracle else "val"
    baseline = evaluate(args.against, seeds, args.shots, args.val_per_class, windows, pairs, args.split_at,
                        args.model, stream, args.cache)
    score = load_recipe("synthetic", args.against).score
    recipe_window = (score.t_min, score.t_max)
    against = windows_against_recipe(baseline, recipe_window)
    out = {"baseline": args.against, "seeds": seeds, "model": args.model, "stream": stream,
           "baseline_windows_minus_recipe_window": against, "candidates": []}
    if against:
        print(f"the baseline's scorings minus its recipe's window {_name(recipe_window)} (paired, validation):")
        for w, r in against.items():
            print(f"  {w:12s} {r['gain']:+7.3f} [{r['low']:+.3f}, {r['high']:+.3f}] SE {r['se']:.3f}")
    for overrides in candidates:
        run = evaluate(overrides, seeds, args.shots, args.val_per_class, windows, pairs, args.split_at,
                       args.model, stream, args.cache)
        table = compare(run, baseline, smoke=args.smoke)
        print(f"candidate {' '.join(overrides) or '(the recipe)'} against {' '.join(args.against) or 'the recipe'}")
        print(f"{'window':12s} {'candidate':>9s} {'baseline':>9s} {'gain':>7s} {'95 % interval':>18s} "
              f"{'SE':>6s}  verdict")
        for w, r in table.items():
            print(f"{w:12s} {r['candidate']:9.3f} {r['baseline']:9.3f} {r['gain']:+7.3f} "
                  f"[{r['low']:+.3f}, {r['high']:+.3f}] {r['se']:6.3f}  {r['verdict']}")
        out["candidates"].append({"overrides": overrides, "windows": table})
    print(json.dumps(out), flush=True)
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))


if __name__ == "__main__":
    main()
