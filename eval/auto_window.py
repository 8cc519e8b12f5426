"""Does ``score.weighting: auto`` find the band on data it was not designed on? Two synthetic domains.

    python eval/auto_window.py --task texture --seeds 301-310 --out reports/auto-window
    python eval/auto_window.py --task shape --seeds 301-310 --out reports/auto-window

Per seed: fit the synthetic recipe's adapters (``--set`` changes it) on a k-shot train split, let
``auto`` choose the scoring window on a validation stream (CoOp's min(k, 4) per class, seed 5000 +
seed), then score a decorrelated test stream (seed 1000 + seed) under every candidate of auto's family
as the product would (the recipe's stages inside each window), all replayed from one set of UNet calls
at the union of the t those stages evaluate (noise at t is the test pass's). The auto row is the
candidate auto chose on validation; nothing here is chosen on the test stream. Each seed's result is
written as it finishes, so a killed run continues. Comparisons are paired, with a hierarchical
bootstrap (seeds, then images).

Tasks: ``texture`` (the demo's benchmark: class = fine texture, spurious = background colour) and
``shape`` (class = shape, spurious = texture; diti_sd/data/synthetic.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diti_sd import DiTiFewShotClassifier  # noqa: E402
from diti_sd._io import atomic_write  # noqa: E402
from diti_sd.data.synthetic import SyntheticSpec, make_split  # noqa: E402
from diti_sd.score_choice import candidate_family, capped_rounds  # noqa: E402
from diti_sd.scoring import dense_errors, simulate_rounds, stage_timesteps  # noqa: E402
from diti_sd.stats import hierarchical_difference, mean_sd  # noqa: E402
from diti_sd.timesteps import t_weights, timestep_noise  # noqa: E402

N_CLASSES = {"texture": 5, "shape": 3}


def seed_list(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def run_seed(task: str, seed: int, shots: int, test_per_class: int, overrides: list[str]) -> dict:
    spec = SyntheticSpec(size=16, task=task, n_classes=N_CLASSES[task])
    over = dict(o.split("=", 1) for o in overrides)
    over = {k: json.loads(v) if v[:1] in "[{0123456789-tfn" else v for k, v in over.items()}
    clf = DiTiFewShotClassifier(recipe="synthetic", overrides={**over, "score.weighting": "auto"}, random_state=seed,
                                progress=False)
    train = make_split(spec, "train", shots, seed)
    val = make_split(spec, "val", min(shots, 4), 5000 + seed)
    test = make_split(spec, "decorrelated", test_per_class, 1000 + seed)
    prior = make_split(spec, "generic", max(1, clf.resolved_recipe().fit.prior_images // spec.n_classes), 7000 + seed)
    name = spec.classnames
    clf.fit(train.images, [name[i] for i in train.labels], prior_images=prior.images,
            validation=(val.images, [name[i] for i in val.labels]))
    score = clf.recipe_.score
    family = candidate_family(score)
    stages = {c["name"]: capped_rounds(score.rounds, c["t_max"] - c["t_min"]) for c in family}
    needed = sorted({t for c in family for s in stage_timesteps(stages[c["name"]], c["t_min"], c["t_max"]) for t in s})
    t = torch.tensor(needed)
    latents = clf.encode(test.images)
    errors = dense_errors(clf.backbone_, clf.adapters_, latents, clf._class_contexts(), t,
                          timestep_noise(t, latents.shape[1:], score.seed), batch_size=score.batch_size)
    index = {c: i for i, c in enumerate(clf.classes_.tolist())}
    labels = np.array([index[name[i]] for i in test.labels])
    correct = {}
    for c in family:
        w = t_weights(t, c["weighting"], tif_d=clf.tif_d_).numpy() if c["weighting"] == "tif" else None
        predicted, calls = simulate_rounds(errors, t.numpy(), stages[c["name"]], c["t_min"], c["t_max"], weights=w)
        correct[c["name"]] = (predicted == labels).astype(int).tolist()
    return {"seed": seed, "task": task, "choice": clf.score_choice_, "correct": correct,
            "test_images": len(labels), "calls_per_test_image": float(calls.mean())}


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(N_CLASSES), default="texture")
    parser.add_argument("--seeds", default="301-310")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--test-per-class", type=int, default=12)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="reports/auto-window")
    args = parser.parse_args(argv)
    tag = args.task + "".join(f"_{o.replace('=', '-')}" for o in args.overrides)
    out = Path(args.out) / tag
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in seed_list(args.seeds):
        path = out / f"seed{seed}.json"
        if not path.is_file():
            start = time.time()
            result = run_seed(args.task, seed, args.shots, args.test_per_class, args.overrides)
            result["seconds"] = round(time.time() - start, 1)
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
