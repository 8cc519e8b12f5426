"""``score.weighting: auto`` as a user has it: chosen on validation images that carry the shortcut.

    python eval/auto_window.py --task texture --seeds 11-20 --out reports/auto-window
    python eval/auto_window.py --task colour --seeds 11-20 --set fit.t_max=1000 --out reports/auto-window
    python eval/auto_window.py --task texture --seeds 11-20 --out reports/auto-window --rules   # offline

A user's validation images come from where the shots came from: their spurious attribute follows the
class, as in the k-shot split. So per seed: fit the synthetic recipe's adapters on the k-shot split, then
score, each image at pairs of its own (the product's validation pass):

- ``val``: the user's validation stream (drawn as the shots are, ``--val-per-class`` per class), in full
  (``score.auto_pairs`` pairs) and at the size the product's default budget allows (``validation_budget``
  0.2 of the fit's work);
- ``val, perturbed``: the same images with their coarse attributes perturbed (the colour channels rotated:
  the grey object and its texture stay, the background takes another colour);
- ``oracle``: a further validation stream whose spurious attribute is independent of the class, as the
  decorrelated test's is: what rules of choice are compared on, never what a rule chooses on;
- with ``--test``, the decorrelated and correlated test streams, under every candidate as the product
  scores it (the recipe's stages inside the window), replayed from one set of UNet calls.

The candidate family is the one a user of ``image-folder`` gets: TiF's weight, all t, the halves and the
thirds (the recipe's own window, tuned on this benchmark, is left out unless ``--family recipe``). Each
seed's arrays are saved as it finishes (a killed run continues); ``--rules`` replays every rule of choice
on them, offline, and scores each pick on the oracle stream (and on the test streams where they were read).
Tasks: ``texture`` (class = a fine texture, spurious = the background colour), ``colour`` (class = the
background colour, spurious = the texture), ``shape`` (class = the object's silhouette, of 3; spurious = the
texture); diti_sd/benchmarks/synthetic/data.py.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.demo import sealed_message
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write, write_json
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule, simulate_rounds
from diti_sd.scoring.auto import candidate_family, choose, per_image_log_likelihood
from diti_sd.scoring.validation_pass import replay, validation_errors
from diti_sd.stats import beyond_2se, hierarchical_difference, mean_sd, mean_se
from diti_sd.timesteps import t_weights, tif_weights, timestep_noise
from diti_sd.validation import balanced_subset, fit_work, pass_size

# the resolved recipe as the studies' caches name it (a key added at a default that fits nothing new leaves it)
_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)

N_CLASSES = {"texture": 5, "colour": 5, "shape": 3}
# the sealed seeds of this study's one test read (the demo's sealed seeds are its own)
SEALED = tuple(range(601, 611))
RULES = ("likelihood", "likelihood, default budget", "likelihood, perturbed", "likelihood, within TiF's band",
         "TiF's weight unless beaten by 2 SE", "accuracy")


def perturbed(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """The coarse attributes moved: the colour channels rotated (R -> G -> B -> R). A grey object and its
    texture are unchanged; a saturated background becomes another colour."""
    return [image[[2, 0, 1]] for image in images]


def recipe_for(args) -> object:
    overrides = [*args.overrides, "score.weighting=auto", f"score.auto_pairs={args.pairs}"]
    if args.model:
        overrides.append(f"model={args.model}")
    if args.family == "user":  # a user's window is all of [0, 1000): no candidate tuned on this benchmark
        overrides += ["score.t_min=0", "score.t_max=1000"]
    return load_recipe("synthetic", overrides)


def run_seed(args, seed: int) -> tuple[dict, dict]:
    recipe = recipe_for(args)
    recipe = load_recipe(recipe, [f"score.seed={seed}"])  # this seed's own pairs
    run = SyntheticSeed.for_recipe(recipe, seed, args.shots, task=args.task, n_classes=N_CLASSES[args.task])
    # the adapters do not depend on the weighting; --masks: the fit gets the shots' exact object masks
    clf = run.fit(load_recipe(recipe, ["score.weighting=tif"]), masks=args.masks)
    score, contexts = recipe.score, clf.class_contexts()
    arrays: dict = {"tif_d": np.array(clf.tif_d_)}

    def dense_pass(name, data, images=None):
        errors, t = validation_errors(clf.backbone_, clf.adapters_, clf.encode(images or data.images), contexts,
                                      score)
        arrays.update({f"{name}_errors": errors, f"{name}_t": t, f"{name}_labels": run.labels(data, clf)})

    val = run.stream("val", args.val_per_class)
    dense_pass("val", val)
    dense_pass("perturbed", val, perturbed(val.images))
    dense_pass("oracle", run.stream("second oracle val", args.oracle_per_class))
    # the product's default pass: validation_budget 0.2 of this fit's work, fewer pairs then fewer images
    size = pass_size(len(val), len(clf.classes_), score.auto_pairs, 0.2 * fit_work(clf.fit_summary_["unet_samples"]))
    keep = balanced_subset(arrays["val_labels"].tolist(), size.images, seed) if size else []
    if size:
        errors, t = validation_errors(clf.backbone_, clf.adapters_, clf.encode([val.images[i] for i in keep]),
                                      contexts, score, n_pairs=size.pairs)
        arrays.update(budget_errors=errors, budget_t=t, budget_labels=arrays["val_labels"][keep])
    result = {"seed": seed, "task": args.task, "images": {"val": len(val), "budget": len(keep)},
              "budget_pairs": size.pairs if size else 0, "correct": {}}
    if args.test:
        family = candidate_family(score)
        stages = {c["name"]: Schedule.of(score).within(c["t_min"], c["t_max"]) for c in family}
        needed = torch.tensor(sorted({t for s in stages.values() for t in s.timesteps}))
        for split in ("decorrelated", "correlated"):
            data = run.stream(split, args.test_per_class)
            errors = clf.dense_errors(clf.encode(data.images), needed,
                                      timestep_noise(needed, clf.backbone_.latent_shape, score.seed),
                                      batch_size=score.batch_size)
            labels = run.labels(data, clf)
            for c in family:
                w = t_weights(needed, c["weighting"], tif_d=clf.tif_d_).numpy() if c["weighting"] == "tif" else None
                predicted, _ = simulate_rounds(errors, needed.numpy(), stages[c["name"]], weights=w)
                result["correct"].setdefault(split, {})[c["name"]] = (predicted == labels).astype(int).tolist()
    return result, arrays


# ----------------------------------------------------------------------------- rules of choice, offline
def tif_band(tif_d: float, share: float = 0.5) -> tuple[int, int]:
    """Where TiF's weight is at least ``share`` of its peak: the data-derived band."""
    w = tif_weights(tif_d)
    inside = np.flatnonzero(w >= share * w.max())
    return int(inside[0]), int(inside[-1]) + 1


def rule_choice(arrays, score, rule: str) -> str:
    """The candidate a rule picks from one seed's saved passes (ties: the family's order)."""
    tif_d = float(arrays["tif_d"])
    stream = {"likelihood, default budget": "budget", "likelihood, perturbed": "perturbed"}.get(rule, "val")
    if f"{stream}_errors" not in arrays:
        return "tif weight"  # the budget could not score 10 images: the product falls back to TiF's weight
    errors, t, labels = arrays[f"{stream}_errors"], arrays[f"{stream}_t"], arrays[f"{stream}_labels"]
    family = candidate_family(score)
    if rule in ("likelihood", "likelihood, default budget", "likelihood, perturbed"):
        return choose(errors, t, labels, score, tif_d)["name"]
    if rule == "accuracy":
        acc = {c["name"]: float((replay(errors, t, c, tif_d).argmin(1) == labels).mean()) for c in family}
        return max(acc, key=acc.get)
    per_image = {c["name"]: per_image_log_likelihood(replay(errors, t, c, tif_d), labels) for c in family}
    if rule == "likelihood, within TiF's band":
        lo, hi = tif_band(tif_d)
        inside = [c["name"] for c in family if c["weighting"] == "tif" or (c["t_min"] < hi and c["t_max"] > lo)]
        return max(inside, key=lambda n: np.nanmean(per_image[n]))
    # TiF's weight unless another candidate's per-image log-likelihood gain is beyond two standard errors
    best = max(per_image, key=lambda n: np.nanmean(per_image[n]))
    gain = per_image[best] - per_image["tif weight"]
    gain = gain[~np.isnan(gain)]
    beaten = len(gain) > 1 and beyond_2se(*mean_se(gain))
    return best if beaten else "tif weight"


def oracle_correct(arrays, score, name: str) -> np.ndarray:
    """Which oracle-stream images a candidate gets right (replayed on the oracle pass)."""
    cand = next(c for c in candidate_family(score) if c["name"] == name)
    mean = replay(arrays["oracle_errors"], arrays["oracle_t"], cand, float(arrays["tif_d"]))
    return (mean.argmin(1) == arrays["oracle_labels"]).astype(int)


def compare_rules(folder: Path, args) -> dict:
    """Every rule's pick, scored on the oracle stream (and the test streams where read), paired against
    TiF's weight and against the best fixed candidate in hindsight."""
    score = recipe_for(args).score
    runs = [(json.loads(p.read_text()), np.load(p.with_suffix(".npz"))) for p in sorted(folder.glob("seed*.json"))]
    family = [c["name"] for c in candidate_family(score)]
    streams = {"oracle": [{n: oracle_correct(a, score, n) for n in family} for _, a in runs]}
    if all(r["correct"] for r, _ in runs):
        streams.update({s: [{n: np.array(r["correct"][s][n]) for n in family} for r, _ in runs]
                        for s in ("decorrelated", "correlated")})
    out = {"seeds": [r["seed"] for r, _ in runs], "picks": {}, "streams": {}}
    for rule in RULES:
        out["picks"][rule] = [rule_choice(a, score, rule) for _, a in runs]
    for stream, hits in streams.items():
        acc = {n: mean_sd([h[n].mean() for h in hits])[0] for n in family}
        best = max(acc, key=acc.get)
        rows = {}
        for rule, picks in out["picks"].items():
            picked = [h[p] for h, p in zip(hits, picks)]
            rows[rule] = {"accuracy": float(np.mean([p.mean() for p in picked])),
                          "minus TiF's weight": hierarchical_difference(picked, [h["tif weight"] for h in hits]),
                          f"minus the best fixed ({best})": hierarchical_difference(picked, [h[best] for h in hits])}
        out["streams"][stream] = {"candidates": acc, "best fixed": best, "rules": rows}
    return out


def _savez(path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(N_CLASSES), default="texture")
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--oracle-per-class", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=24, help="score.auto_pairs of the full validation pass")
    parser.add_argument("--family", choices=["user", "recipe"], default="user")
    parser.add_argument("--model", default=None, help="the base model (default: the recipe's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--masks", action="store_true",
                        help="give each fit the shots' exact object masks (what fit.coarse_swap keeps)")
    parser.add_argument("--test", action="store_true",
                        help="also read the test streams (only on the sealed seeds, once per change of a rule)")
    parser.add_argument("--out", default="reports/auto-window")
    parser.add_argument("--rules", action="store_true", help="no fitting: compare the rules on the saved seeds")
    return parser.parse_args(argv)


def seed_folder(args) -> Path:
    """Where the seeds of one setting are kept. The name says what a reader looks for; its hash, everything a seed's
    result depends on (the resolved recipe with --pairs and --model in it, the stream sizes), so that a rerun with
    other values never reads these back."""
    settings = hashlib.sha256(json.dumps([tune.recipe_key(recipe_for(args)), args.shots, args.val_per_class,
                                          args.oracle_per_class, args.test_per_class], sort_keys=True,
                                         default=str).encode()).hexdigest()[:8]
    return Path(args.out) / "_".join([args.task, args.family, *(o.replace("=", "-") for o in args.overrides),
                                      *([Path(args.model).name.replace(":", "-")] if args.model else []),
                                      *(["masks"] if args.masks else []), settings, "test" if args.test else "val"])


def main(argv=None):
    args = parse_args(argv)
    if args.test and not set(args.seeds) <= set(SEALED):
        raise SystemExit(f"--test reads test streams: only this study's sealed seeds ({SEALED[0]}-{SEALED[-1]}), "
                         "for the read that reports a rule")
    if not args.test and (why := sealed_message(args.seeds, also=SEALED)):
        raise SystemExit(why)
    folder = seed_folder(args)
    if args.rules:
        result = compare_rules(folder, args)
        write_json(folder / "rules.json", result)
        for stream, table in result["streams"].items():
            print(f"{stream}: best fixed {table['best fixed']} {table['candidates'][table['best fixed']]:.3f}")
            for rule, row in table["rules"].items():
                gains = "  ".join(f"{k} {d['mean']:+.3f} [{d['wide_low']:+.3f}, {d['wide_high']:+.3f}]"
                                  for k, d in row.items() if k.startswith("minus"))
                print(f"  {rule:38s} {row['accuracy']:.3f}  {gains}")
        return result
    folder.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        path = folder / f"seed{seed}.json"
        if path.is_file():
            continue
        start = time.time()
        result, arrays = run_seed(args, seed)
        result["seconds"] = round(time.time() - start, 1)
        atomic_write(path.with_suffix(".npz"), lambda tmp, a=arrays: _savez(tmp, a))
        atomic_write(path, lambda tmp, r=result: tmp.write_text(json.dumps(r)))
        print(f"seed {seed}: {result['seconds']} s", flush=True)
    return None


if __name__ == "__main__":
    main()
