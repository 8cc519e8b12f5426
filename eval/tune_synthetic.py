"""Choose the synthetic recipe's settings on the benchmark's VALIDATION streams, under the sealed protocol.

A candidate setting (``--set``) is fitted beside a baseline (``--against``; default: the recipe as it
is) on the same k-shot train splits, and both are scored on each seed's validation stream, drawn as the
shots are (the background follows the class, as in a user's validation images), for several scoring
windows and for TiF's data-derived per-t weight ("tif"), all read off one set of UNet calls per fit, at the
seed's own validation pairs. On that stream the shortcut is right, so accuracy saturates near 1 and
cannot choose; the rule reads each image's true-class log-likelihood (softmax over the standardised minus
errors, as ``score.weighting: auto`` ranks windows): the candidate counts as better on a window only when
its paired gain there exceeds two standard errors of the per-seed gains (ddof = 1). The accuracy gain with
its hierarchical bootstrap interval is printed beside it, and the accuracy on an oracle stream (the
background independent of the class) as a labelled row, never what a setting is chosen on.

The rivals get the same search: ``--against rivals`` as the baseline (the demo's all-t adapters:
``fit.t_max=1000`` and the demo's ``WIDE_OVERRIDES``) and the same ``--variant`` grid, read on (0, 1000)
(reference-style) and "tif" (the reference configuration).

    python eval/tune_synthetic.py --seeds 11-20 --set fit.text_lr=1e-3
    python eval/tune_synthetic.py --seeds 11-20 --variant "lora.rank=2;lora.text_rank=2" --variant fit.steps=60

Several ``--variant`` (overrides separated by ";") are each compared with one baseline fit per seed; a
candidate's overrides apply on top of the baseline's.

The protocol is enforced here (docs/benchmarks.md, "Sealed test protocol"): only validation streams are
ever read, at least 10 seeds, and never the sealed (or retired) seeds of ``diti-sd demo --full``. ``--smoke`` lifts
the seed count for a quick check of the script itself; its verdicts are marked as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from diti_sd.benchmarks.synthetic.data import BACKGROUND_DETAIL_KINDS
from diti_sd.benchmarks.synthetic.demo import WIDE_OVERRIDES, sealed_message
from diti_sd.benchmarks.synthetic.scoring import PAIRS_RULE, stratified_pairs
from diti_sd.benchmarks.synthetic.streams import TRAIN_STREAMS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write, cached_json
from diti_sd.recipes import load_recipe
from diti_sd.scoring import weighted_mean, window_weights
from diti_sd.scoring.auto import per_image_log_likelihood
from diti_sd.seeding import VALIDATION_PAIRS, derive_seed
from diti_sd.stats import beyond_2se, hierarchical_difference, mean_se
from diti_sd.timesteps import tif_weights

WINDOWS = [(0, 200), (200, 500), (0, 500), (500, 1000), (0, 1000)]
MIN_SEEDS = 10
# the user-like validation stream (the background follows the class) and the labelled oracle (independent)
STREAMS = ("val", "oracle val")
PARTS = ("correct", "ll", "oracle")
# the masks studies' shared rows: the plain swap at the masks studies' blur, and the control row's name (the recipe
# fitted on ``train_stream=CONTROL_SHOTS``, shots without the shortcut: what the accident costs)
SWAP = ["fit.coarse_swap=1.0", "fit.coarse_sigma=0.125"]
CONTROL = "recipe on shots without the accident"


def check_protocol(seeds: list[int], smoke: bool) -> None:
    if why := sealed_message(seeds):
        raise SystemExit(why)
    if len(set(seeds)) < MIN_SEEDS and not smoke:
        raise SystemExit(f"{len(set(seeds))} seeds: the sealed protocol asks for at least {MIN_SEEDS} (seed-to-seed "
                         f"sd is 0.04-0.06, so fewer cannot tell most settings apart); e.g. --seeds 11-20")


def add_background_detail_args(parser: argparse.ArgumentParser) -> None:
    """The detailed-background variant's options, as every study that reads it spells them."""
    parser.add_argument("--background-detail", type=float, default=0.0,
                        help="the amplitude of a fine pattern each background colour carries (0: flat backgrounds)")
    parser.add_argument("--background-detail-kind", choices=BACKGROUND_DETAIL_KINDS, default="thin",
                        help="that pattern: thin stripes no class has, or another class's texture")


def background_detail(parser: argparse.ArgumentParser, args) -> dict:
    """The variant :func:`add_background_detail_args` asked for, as ``SyntheticSeed.for_recipe`` and :func:`evaluate`
    take it; a kind without an amplitude stops with one line before any work."""
    if args.background_detail_kind != "thin" and not args.background_detail:
        parser.error("--background-detail-kind needs --background-detail A (the pattern's amplitude)")
    return {"background_detail": args.background_detail, "background_detail_kind": args.background_detail_kind}


def recipe_key(recipe) -> dict:
    """The resolved recipe as the cache names a fit by. A key added to the schema at its default that changes
    nothing fitted (``fit.coarse_swap_premise`` off) is left out, so the fits cached before it existed still
    count, as the fit's own checkpoint signature does."""
    key = dataclasses.asdict(recipe)
    for name in ("coarse_swap_premise", "mask_loss"):
        if not key["fit"][name]:
            del key["fit"][name]
    if key["fit"]["swap_background"] == "coarse":
        del key["fit"]["swap_background"]
    if key["score"]["cells"] == "all":
        del key["score"]["cells"]
    return key


def evaluate(overrides: list[str], seeds: list[int], shots: int, val_per_class: int,
             windows: list[tuple[int, int]] = WINDOWS, pairs: tuple[int, int] = (12, 12),
             split_at: int = 200, model: str | None = None, cache: Path | None = None,
             train_stream: str = "train", shortcut_rate: float = 1.0,
             generic_backgrounds: list[int] | None = None, n_classes: int | None = None,
             key_extra=None, masks: bool = False, mask_rim: int = 0,
             background_detail: float = 0.0, mask_kind: str = "object",
             background_detail_kind: str = "thin") -> dict:
    """Per window (and "tif"), per seed: which user-like validation images each fit gets right
    (``correct``), each one's true-class log-likelihood there (``ll``, what the rule reads: accuracy
    saturates where the shortcut is right), and which oracle images it gets right (``oracle``, a labelled
    row). (Accuracy on the shots is not read: their background follows the class, so it cannot tell
    memorised shots from a learnt shortcut; the demo measures memorisation without it.) ``pairs``: (t,
    noise) pairs in [0, split_at) and in [split_at, 1000), the same for both streams. With ``cache``,
    each seed's result is kept in a file named by everything it depends on (the resolved recipe, not how
    it was spelled), so a killed run resumes and runs that share a setting fit it once. ``train_stream``:
    ``"shots without the shortcut"`` fits on shots whose background is independent of the class, a control
    that prices the shortcut (a user never has such shots). ``shortcut_rate`` < 1: a variant of the benchmark
    whose shots, and the user-like stream drawn as they are, break the accident on the remaining share.
    ``generic_backgrounds``: the background colours the prior-preservation images (the coarse swap's donors) draw
    from, a variant where they do not span the test's. ``n_classes``: the many-class variant (``task="many"``: stripe
    textures on five backgrounds, class c's shots on colour c mod 5) with that many classes. ``key_extra``: a
    caller that changes what a fit does beyond the recipe (a study's patch) names it here, so that its results
    are cached apart (a callable: given the seed, names that seed's patch, e.g. a hash of its masks). ``masks``: the
    fits get the shots' object masks (what the coarse swap keeps), grown by ``mask_rim`` pixels (shrunk where
    negative), as a less exact segmenter's would be; ``mask_kind="box"``: each object's filled bounding box instead
    (grown first), as a data set's box annotation. ``background_detail``: a variant whose backgrounds carry a fine
    pattern of their own, one per colour (a photograph's background); ``background_detail_kind="class"``: that pattern
    is another class's texture."""
    recipe = load_recipe("synthetic", [*([f"model={model}"] if model else []), *overrides])
    names = [*windows, "tif"]
    out = {part: {w: [] for w in names} for part in PARTS}
    out["coarse_sigma"] = []  # per seed, as each fit resolved it (None: a result cached before it was kept)
    start = time.time()
    for seed in seeds:
        parts = [recipe_key(recipe), seed, shots, val_per_class, windows, pairs, split_at, STREAMS, PAIRS_RULE]
        if train_stream != "train":  # keeps the keys of the runs on the real shots
            parts.append(train_stream)
        if shortcut_rate != 1.0:  # likewise
            parts.append({"shortcut_rate": shortcut_rate})
        if generic_backgrounds:
            parts.append({"generic_backgrounds": list(generic_backgrounds)})
        if n_classes:
            parts.append({"task": "many", "n_classes": n_classes})
        if background_detail:
            parts.append({"background_detail": background_detail,
                          **({"kind": background_detail_kind} if background_detail_kind != "thin" else {})})
        if masks:
            parts.append({"masks": mask_kind, **({"rim": mask_rim} if mask_rim else {})})
        if key_extra:
            parts.append(key_extra(seed) if callable(key_extra) else key_extra)
        saved = cached_json(cache, parts, lambda seed=seed, parts=parts: {
            "key": json.dumps(parts, default=str),
            **_one_seed(recipe, seed, shots, val_per_class, windows, pairs, split_at, train_stream, shortcut_rate,
                        generic_backgrounds, n_classes, masks, mask_rim, background_detail, mask_kind,
                        background_detail_kind)})
        for part in PARTS:
            for w in names:
                out[part][w].append(np.array(saved[part][window_name(w)], dtype=float if part == "ll" else bool))
        out["coarse_sigma"].append(saved.get("coarse_sigma"))
    return {"overrides": overrides, "seconds": round(time.time() - start, 1), **out}


def _one_seed(recipe, seed, shots, val_per_class, windows, pairs, split_at, train_stream="train",
              shortcut_rate=1.0, generic_backgrounds=None, n_classes=None, masks=False, mask_rim=0,
              background_detail=0.0, mask_kind="object", background_detail_kind="thin") -> dict:
    """One fit, scored on both validation streams at the seed's own validation pairs."""
    run = SyntheticSeed.for_recipe(recipe, seed, shots, train_stream=train_stream, shortcut_rate=shortcut_rate,
                                   generic_backgrounds=generic_backgrounds, background_detail=background_detail,
                                   background_detail_kind=background_detail_kind,
                                   **({"task": "many", "n_classes": n_classes} if n_classes else {}))
    streams = {name: run.stream(name, val_per_class) for name in STREAMS}  # the only streams tuning reads
    clf = run.fit(recipe, masks=masks, mask_rim=mask_rim, mask_kind=mask_kind)
    t, noise, weights = stratified_pairs([0, split_at, 1000], pairs, clf.backbone_.latent_shape,
                                         derive_seed(seed, VALIDATION_PAIRS))
    t_np = t.numpy()
    tif = weights * tif_weights(clf.tif_d_)[t_np]
    saved = {part: {} for part in PARTS}
    for name, stream in streams.items():
        errors = clf.dense_errors(clf.encode(stream.images), t, noise)
        labels = run.labels(stream, clf)
        for w in [*windows, "tif"]:
            mean = weighted_mean(errors, window_weights(t_np, tif, (0, 1000)) if w == "tif"
                                 else window_weights(t_np, weights, w))
            if name == "val":
                saved["correct"][window_name(w)] = [bool(v) for v in mean.argmin(1) == labels]
                saved["ll"][window_name(w)] = [float(v) for v in per_image_log_likelihood(mean, labels)]
            else:
                saved["oracle"][window_name(w)] = [bool(v) for v in mean.argmin(1) == labels]
    saved["coarse_sigma"] = clf.recipe_.fit.coarse_sigma  # as the fit resolved it (fit.coarse_sigma: auto)
    return saved


def default_pairs(recipe) -> tuple[int, int]:
    """As many pairs below and above the split as the recipe's first scoring stage has time-steps: with the split at
    the window's end, the window's pairs are then the t and noise ``predict`` scores (the demo's rule)."""
    n = recipe.score.rounds[0][0]
    return n, n


def window_name(w) -> str:
    return "tif" if w == "tif" else f"[{w[0]},{w[1]})"


def _paired(a: list, b: list) -> dict:
    """The per-seed means' paired gain, its standard error (ddof = 1) and whether it is beyond 2 SE."""
    gain, se = mean_se([np.nanmean(x) - np.nanmean(y) for x, y in zip(a, b)])
    return {"candidate": float(np.mean([np.nanmean(x) for x in a])),
            "baseline": float(np.mean([np.nanmean(y) for y in b])), "gain": gain, "se": se,
            "beyond_2_se": beyond_2se(gain, se)}


def compare(candidate: dict, baseline: dict, smoke: bool = False) -> dict:
    """Per window: the user-like accuracies with the paired gain, its hierarchical interval and standard
    error; the true-class log-likelihood's paired gain (``ll``), which the verdict reads; the oracle's
    (a labelled row)."""
    out = {}
    for w, hits in candidate["correct"].items():
        d = hierarchical_difference(hits, baseline["correct"][w], n_boot=2000)
        ll = _paired(candidate["ll"][w], baseline["ll"][w])
        out[window_name(w)] = {"candidate": float(np.mean([h.mean() for h in hits])),
                         "baseline": float(np.mean([h.mean() for h in baseline["correct"][w]])),
                         "gain": d["mean"], "low": d["low"], "high": d["high"], "se": d["seed_se"],
                         "ll": ll, "oracle": _paired(candidate["oracle"][w], baseline["oracle"][w]),
                         "verdict": ("smoke run: no verdict" if smoke else
                                     "better (log-likelihood gain > 2 SE)" if ll["beyond_2_se"]
                                     else "not shown better")}
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
            out[window_name(w)] = {"gain": d["mean"], "low": d["low"], "high": d["high"], "se": d["seed_se"],
                             "ll": _paired(baseline["ll"][w], baseline["ll"][recipe_window]),
                             "oracle": _paired(baseline["oracle"][w], baseline["oracle"][recipe_window])}
    return out


def baseline_overrides(against: str) -> list[str]:
    """``--against``: overrides separated by ";", or ``rivals`` for the demo's all-t adapters."""
    if against == "rivals":
        return ["fit.t_max=1000", *WIDE_OVERRIDES]
    return [o for o in against.split(";") if o]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20", help="e.g. 11-20 or 11,12,15 (at least 10)")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="the candidate: KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[],
                        help='a further candidate, its overrides separated by ";" (repeatable)')
    parser.add_argument("--against", default="", help='the baseline, overrides separated by ";", or "rivals" for the '
                        "demo's all-t adapters (default: the recipe)")
    parser.add_argument("--windows", default=None,
                        help="scoring windows to report, e.g. 0-200,150-500 (default: "
                             + ",".join(f"{a}-{b}" for a, b in WINDOWS) + ")")
    parser.add_argument("--pairs", default=None,
                        help="(t, noise) pairs below and above --split-at, e.g. 12,12 (default: the recipe's first "
                             "scoring stage in each, so that its window reads the t predict scores)")
    parser.add_argument("--split-at", type=int, default=200)
    parser.add_argument("--model", default=None, help="the benchmark's base model (default: the recipe's)")
    parser.add_argument("--out", default=None, help="also write the result as JSON to this file")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep each (setting, seed) result here: a killed run resumes, and runs that share a "
                             "baseline fit it once")
    parser.add_argument("--train-stream", default="train", choices=TRAIN_STREAMS,
                        help="the shots every fit learns from; 'shots without the shortcut' (background independent "
                             "of the class) is a control that prices the shortcut, not what a user has")
    parser.add_argument("--shortcut-rate", type=float, default=1.0,
                        help="the share of the shots (and of the user-like validation) whose background follows the "
                             "class; below 1 a variant of the benchmark where some break the accident (default 1)")
    parser.add_argument("--prior-backgrounds", type=lambda v: [int(b) for b in v.split(",") if b], default=None,
                        help="the background colours (indices) the prior images, the coarse swap's donors, draw from; "
                             "a variant where they do not span the test's (default: all)")
    parser.add_argument("--classes", type=int, default=None,
                        help="the many-class variant with this many classes (stripe textures on five backgrounds: the "
                             "background narrows the class to about five; default: the 5-class texture task)")
    parser.add_argument("--smoke", action="store_true",
                        help="allow fewer than 10 seeds (checks the script, no verdict)")
    args = parser.parse_args(argv)
    seeds = args.seeds
    check_protocol(seeds, args.smoke)
    if not 0.0 <= args.shortcut_rate <= 1.0:
        raise SystemExit(f"--shortcut-rate must be in [0, 1]; got {args.shortcut_rate}")
    windows = WINDOWS if args.windows is None else [tuple(int(v) for v in w.split("-"))
                                                    for w in args.windows.split(",")]
    pairs = default_pairs(load_recipe("synthetic")) if args.pairs is None else tuple(
        int(v) for v in args.pairs.split(","))
    candidates = ([args.overrides] if args.overrides or not args.variant else []) + [
        [o for o in v.split(";") if o] for v in args.variant]
    against_overrides = baseline_overrides(args.against)
    if args.train_stream != "train":
        print(f"control: every fit learns from {args.train_stream!r}, not the shots a user has")
    if args.prior_backgrounds:
        print(f"variant: the prior images (the coarse swap's donors) draw their backgrounds from "
              f"{args.prior_backgrounds} only")
    if args.classes is not None and args.classes < 6:
        raise SystemExit(f"--classes is the many-class variant, at least 6 classes; got {args.classes}")
    if args.classes:
        print(f"variant: {args.classes} classes on five backgrounds")
    if args.shortcut_rate != 1.0:
        print(f"variant: the background follows the class in a share {args.shortcut_rate} of the shots and of "
              "the user-like validation")
    baseline = evaluate(against_overrides, seeds, args.shots, args.val_per_class, windows, pairs, args.split_at,
                        args.model, args.cache, args.train_stream, args.shortcut_rate, args.prior_backgrounds,
                        args.classes)
    score = load_recipe("synthetic", against_overrides).score
    recipe_window = (score.t_min, score.t_max)
    against = windows_against_recipe(baseline, recipe_window)
    out = {"baseline": against_overrides, "seeds": seeds, "model": args.model, "streams": list(STREAMS),
           "train_stream": args.train_stream, "shortcut_rate": args.shortcut_rate,
           "prior_backgrounds": args.prior_backgrounds, "classes": args.classes,
           "baseline_windows_minus_recipe_window": against, "candidates": []}
    if against:
        print(f"the baseline's scorings minus its recipe's window {window_name(recipe_window)} (paired, validation):")
        print(f"  {'window':12s} {'accuracy gain':>31s} {'log-lik gain':>20s} {'oracle gain':>20s}")
        for w, r in against.items():
            print(f"  {w:12s} {r['gain']:+7.3f} [{r['low']:+.3f}, {r['high']:+.3f}] SE {r['se']:.3f} "
                  f"{r['ll']['gain']:+9.3f} SE {r['ll']['se']:.3f} "
                  f"{r['oracle']['gain']:+9.3f} SE {r['oracle']['se']:.3f}")
    for overrides in candidates:
        run = evaluate([*against_overrides, *overrides], seeds, args.shots, args.val_per_class, windows, pairs,
                       args.split_at, args.model, args.cache, args.train_stream, args.shortcut_rate,
                       args.prior_backgrounds, args.classes)
        table = compare(run, baseline, smoke=args.smoke)
        base_name = " ".join(against_overrides) or "the recipe"
        print(f"candidate {' '.join(overrides) or '(the recipe)'} against {base_name}")
        print(f"{'window':12s} {'candidate':>9s} {'baseline':>9s} {'gain':>7s} {'95 % interval':>18s} "
              f"{'SE':>6s} {'log-lik':>8s} {'gain':>7s} {'SE':>6s} {'oracle':>7s} {'gain':>7s} {'SE':>6s}  verdict")
        for w, r in table.items():
            ll, orc = r["ll"], r["oracle"]
            print(f"{w:12s} {r['candidate']:9.3f} {r['baseline']:9.3f} {r['gain']:+7.3f} "
                  f"[{r['low']:+.3f}, {r['high']:+.3f}] {r['se']:6.3f} {ll['candidate']:8.3f} {ll['gain']:+7.3f} "
                  f"{ll['se']:6.3f} {orc['candidate']:7.3f} {orc['gain']:+7.3f} {orc['se']:6.3f}  {r['verdict']}")
        if any("coarse_sigma=auto" in o for o in overrides):
            print("fit.coarse_sigma as each seed's fit resolved it: " + ", ".join(map(str, run["coarse_sigma"])))
        out["candidates"].append({"overrides": overrides, "windows": table, "coarse_sigma": run["coarse_sigma"]})
    print(json.dumps(out), flush=True)
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))


if __name__ == "__main__":
    main()
