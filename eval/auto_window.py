"""Does ``score.weighting: auto`` find the band on data it was not designed on? Two synthetic domains.

    python eval/auto_window.py --task texture --seeds 301-310 --out reports/auto-window
    python eval/auto_window.py --task colour --seeds 301-310 --set fit.t_max=1000 --out reports/auto-window

Choosing auto's own rule of choice, on validation streams only: ``--eval-split val`` scores the
candidates on a second validation stream instead of the test stream; then ``--compare-rules`` (with
``--pool`` for the other task's folder) replays each rule on the saved validation passes, paired.

Per seed: fit the synthetic recipe's adapters (``--set`` changes it) on a k-shot train split, let
``auto`` choose the scoring window on a validation stream (CoOp's min(k, 4) per class, seed 5000 +
seed), then score a decorrelated test stream (seed 1000 + seed) under every candidate of auto's family
as the product would (the recipe's stages inside each window), all replayed from one set of UNet calls
at the union of the t those stages evaluate (noise at t is the test pass's). The auto row is the
candidate auto chose on validation; nothing here is chosen on the test stream. Each seed's result is
written as it finishes, so a killed run continues. Comparisons are paired, with a hierarchical
bootstrap (seeds, then images).

Tasks: ``texture`` (the demo's benchmark: class = fine texture, spurious = background colour),
``colour`` (class = background colour, spurious = texture) and ``shape`` (class = shape, spurious =
texture); diti_sd/data/synthetic.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule, dense_errors, simulate_rounds
from diti_sd.scoring.auto import (
    THIRDS,
    candidate_family,
    choose,
    per_image_log_likelihood,
    replay,
)
from diti_sd.scoring.validation_pass import validation_errors
from diti_sd.stats import hierarchical_difference, mean_sd
from diti_sd.timesteps import t_weights, timestep_noise

N_CLASSES = {"texture": 5, "colour": 5, "shape": 3}


def run_seed(task: str, seed: int, shots: int, test_per_class: int, overrides: list[str],
             eval_split: str = "decorrelated", val_per_class: int | None = None) -> tuple[dict, dict]:
    recipe = load_recipe("synthetic", [*overrides, "score.weighting=auto"])
    run = SyntheticSeed.for_recipe(recipe, seed, shots, task=task, n_classes=N_CLASSES[task])
    # a larger stream starts with CoOp's min(k, 4) per class (same images, same pairs), so both sizes
    # can be compared on one validation pass
    val = run.stream("val", val_per_class or min(shots, 4))
    # --eval-split val: a second validation stream (never the test streams), for choosing auto's own rules
    test = run.stream("decorrelated" if eval_split == "decorrelated" else "second val", test_per_class)
    clf = run.fit(recipe, validation=val, validation_budget=None)  # the whole stream, as this study replays it
    score = clf.recipe_.score
    family = candidate_family(score)
    stages = {c["name"]: Schedule.of(score).within(c["t_min"], c["t_max"]) for c in family}
    needed = sorted({t for schedule in stages.values() for t in schedule.timesteps})
    t = torch.tensor(needed)
    latents = clf.encode(test.images)
    errors = dense_errors(clf.backbone_, clf.adapters_, latents, clf.class_contexts(), t,
                          timestep_noise(t, latents.shape[1:], score.seed), batch_size=score.batch_size)
    labels = run.labels(test, clf)
    correct = {}
    for c in family:
        w = t_weights(t, c["weighting"], tif_d=clf.tif_d_).numpy() if c["weighting"] == "tif" else None
        predicted, calls = simulate_rounds(errors, t.numpy(), stages[c["name"]], weights=w)
        correct[c["name"]] = (predicted == labels).astype(int).tolist()
    # the validation pass again (deterministic), kept so that rules of choice can be compared offline
    val_labels = run.labels(val, clf).tolist()
    val_errors, val_t = validation_errors(clf.backbone_, clf.adapters_, clf.encode(val.images), clf.class_contexts(),
                                          score)
    assert choose(val_errors, val_t, val_labels, score, clf.tif_d_)["name"] == clf.score_choice_["name"]
    arrays = {"val_errors": val_errors, "val_t": val_t, "val_labels": np.array(val_labels),
              "tif_d": np.array(clf.tif_d_), "coop_images": np.array(min(shots, 4) * N_CLASSES[task])}
    return {"seed": seed, "task": task, "choice": clf.score_choice_, "correct": correct,
            "test_images": len(labels), "calls_per_test_image": float(calls.mean())}, arrays


def _savez(path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def summarise(results: list[dict]) -> dict:
    names = list(results[0]["correct"])
    auto = [np.array(r["correct"][r["choice"]["name"]]) for r in results]
    acc = {n: mean_sd([np.mean(r["correct"][n]) for r in results]) for n in names}
    acc["auto"] = mean_sd([a.mean() for a in auto])
    best = max(names, key=lambda n: acc[n][0])
    recipe = next(n for n in names if n.startswith("recipe's"))
    rivals = {"best fixed candidate (" + best + ", in hindsight on test)": best, "recipe's window": recipe,
              "all t": "[0, 1000)", "TiF weight": "tif weight"}
    return {"accuracy": {k: {"mean": v[0], "sd": v[1]} for k, v in acc.items()},
            "auto_minus": {label: hierarchical_difference(auto, [np.array(r["correct"][n]) for r in results])
                           for label, n in rivals.items()},
            "choices": {r["seed"]: r["choice"]["name"] for r in results},
            "validation_accuracy": {r["seed"]: r["choice"]["candidates"] for r in results}}


# "likelihood" is the product's rule (score_choice.choose); the others were compared with it and not kept
RULES = ("accuracy", "likelihood", "likelihood, the default unless beaten by 2 SE", "likelihood, no thirds",
         "likelihood, CoOp's min(k, 4) per class")


def default_candidate(family: list[dict], score) -> str:
    """The last rule's default: the recipe's own window where narrower than [0, 1000), else TiF's weight."""
    if (score.t_min, score.t_max) != (0, 1000):
        return next(c["name"] for c in family if (c["t_min"], c["t_max"]) == (score.t_min, score.t_max)
                    and c["weighting"] == "uniform")
    return family[0]["name"]


def rule_choice(arrays, score, rule: str) -> str:
    """The candidate a rule of choice picks on one seed's saved validation pass (ties: family order)."""
    errors, t, labels, tif_d = arrays["val_errors"], arrays["val_t"], arrays["val_labels"], float(arrays["tif_d"])
    if rule == "likelihood, CoOp's min(k, 4) per class":  # the first images of a larger --val-per-class pass
        n = int(arrays["coop_images"]) if "coop_images" in arrays else len(labels)
        return choose(errors[:n], t[:n], labels[:n], score, tif_d)["name"]
    if rule == "likelihood":
        return choose(errors, t, labels, score, tif_d)["name"]
    family = candidate_family(score)
    if rule == "likelihood, no thirds":  # fewer candidates for the few validation images to mislead
        family = [c for c in family if (c["t_min"], c["t_max"]) not in THIRDS or c["name"].startswith("recipe's")]
    means = {c["name"]: replay(errors, t, c, tif_d) for c in family}
    if rule == "accuracy":
        keys = {n: float((m.argmin(1) == labels).mean()) for n, m in means.items()}
        return max(keys, key=lambda n: keys[n])
    per_image = {n: per_image_log_likelihood(m, labels) for n, m in means.items()}
    best = max(per_image, key=lambda n: np.nanmean(per_image[n]))  # max keeps the first of equals: tie order
    if rule == "likelihood, no thirds":
        return best
    default = default_candidate(family, score)
    gain = per_image[best] - per_image[default]
    gain = gain[~np.isnan(gain)]
    beaten = len(gain) > 1 and gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(len(gain))
    return best if beaten else default


def rule_picks(folder: Path, overrides: list[str]) -> dict[str, list[np.ndarray]]:
    """Per rule, per finished seed of ``folder``: which eval-stream images its pick gets right."""
    score = load_recipe("synthetic", [*overrides, "score.weighting=auto"]).score
    runs = [(json.loads(p.read_text()), np.load(p.with_suffix(".npz"))) for p in sorted(folder.glob("seed*.json"))]
    return {rule: [np.array(r["correct"][rule_choice(a, score, rule)]) for r, a in runs] for rule in RULES}


def compare_rules(folders: list[tuple[Path, list[str]]]) -> dict:
    """Each rule's pick scored on the eval stream, pooled over ``folders`` (each with its overrides),
    paired against the accuracy rule and against the likelihood rule."""
    picked = {rule: [] for rule in RULES}
    for folder, overrides in folders:
        for rule, hits in rule_picks(folder, overrides).items():
            picked[rule] += hits
    out = {rule: {"accuracy": float(np.mean([c.mean() for c in v])), "seeds": len(v),
                  **{f"minus {ref} rule": hierarchical_difference(v, picked[ref])
                     for ref in ("accuracy", "likelihood")}}
           for rule, v in picked.items()}
    for rule, row in out.items():
        gains = "  ".join(f"{k} {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (SE {d['seed_se']:.3f})"
                          for k, d in row.items() if k.startswith("minus"))
        print(f"{rule:28s} {row['accuracy']:.3f}  {gains}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(N_CLASSES), default="texture")
    parser.add_argument("--seeds", type=seed_list, default="301-310")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--test-per-class", type=int, default=12)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--eval-split", choices=["decorrelated", "val"], default="decorrelated",
                        help="what the candidates are scored on: the decorrelated test stream, or a second "
                             "validation stream (seed 6000 + seed) for choosing auto's rules")
    parser.add_argument("--val-per-class", type=int, default=None,
                        help="validation images per class for auto's choice (default CoOp's min(k, 4)); "
                             "--compare-rules then also replays the choice on the first min(k, 4) per class")
    parser.add_argument("--out", default="reports/auto-window")
    parser.add_argument("--compare-rules", action="store_true",
                        help="no fitting: compare rules of choice on the saved validation passes of finished seeds")
    parser.add_argument("--pool", action="append", default=[], metavar="FOLDER",
                        help="with --compare-rules: also pool the seeds of this finished run folder under --out "
                             "(e.g. colour_fit.t_max-1000_on-val)")
    args = parser.parse_args(argv)
    tag = args.task + "".join(f"_{o.replace('=', '-')}" for o in args.overrides)
    tag += "" if args.val_per_class is None else f"_val{args.val_per_class}"
    tag += "" if args.eval_split == "decorrelated" else "_on-val"
    out = Path(args.out) / tag
    if args.compare_rules:
        pooled = [(Path(args.out) / p, json.loads((Path(args.out) / p / "summary.json").read_text())["overrides"])
                  for p in args.pool]
        result = compare_rules([(out, args.overrides), *pooled])
        (out / "rules.json").write_text(json.dumps(result, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        path = out / f"seed{seed}.json"
        if not path.is_file():
            start = time.time()
            result, arrays = run_seed(args.task, seed, args.shots, args.test_per_class, args.overrides,
                                      args.eval_split, args.val_per_class)
            result["seconds"] = round(time.time() - start, 1)
            atomic_write(path.with_suffix(".npz"), lambda tmp, a=arrays: _savez(tmp, a))
            atomic_write(path, lambda tmp, r=result: tmp.write_text(json.dumps(r)))
            print(f"seed {seed}: chose {result['choice']['name']} ({result['seconds']} s)", flush=True)
        results.append(json.loads(path.read_text()))
    summary = {"task": args.task, "overrides": args.overrides, "shots": args.shots, **summarise(results)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for k, v in summary["accuracy"].items():
        print(f"{k:28s} {v['mean']:.3f} ± {v['sd']:.3f}")
    for k, v in summary["auto_minus"].items():
        print(f"auto - {k:60s} {v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]")


if __name__ == "__main__":
    main()
