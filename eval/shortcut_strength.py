"""How strong the shots' accident must be before the user's validation cannot steer away from it.

    python eval/shortcut_strength.py --seeds 11-20 --rates 1,0.9,0.75,0.5 --cache reports/tune-user \
        --out docs/notes/2026-12-05-shortcut-strength.json
    python eval/shortcut_strength.py --replay docs/notes/2026-12-05-shortcut-strength.json

The headline benchmark draws every shot of class c on background c (rate 1): validation drawn as the shots
are then holds no image that breaks the accident, and the rule on it cannot prefer reading the texture.
Real shots break an accident now and then. Per rate (the share of the shots, and of the user-like
validation drawn as they are, whose background follows the class; the rest draw it independently), three
fits per seed, as ``eval/tune_synthetic.py`` makes them and in its cache: the recipe, the recipe with
``fit.coarse_swap=1.0`` (the premise as a training prior), and the all-t rivals. Printed per rate:

- the rule (``tune_synthetic``'s: true-class log-likelihood on user-like validation, paired over seeds,
  better only beyond 2 SE) on the swap against the recipe, at the recipe's window;
- the same rule read only on the user-like validation images that break the shots' accident
  (``diti_sd.coarse.coarse_conflicts``: their blur lies nearer another class's shot mean than their own's, by
  more than a typical shot lies from its own; found from the user's own shots and labels, no oracle), the worst-
  group reading of the spurious-correlation literature with the groups inferred; at rate 1 there are none, and no
  verdict (nor on the colour task, whose class is the colour, at any rate: counted without a fit). Pooled over
  seeds, as the recipe's values are chosen; beside it, what one user with one seed's images would see: per seed,
  whether the swap's accuracy on those images is ahead of, level with or behind the recipe's;
- the scoring window each family's log-likelihood picks on all the user-like validation and on the breaking
  images (pooled, and seed by seed as one user would choose), beside the oracle's best;
- on the oracle stream (the background independent of the class; a labelled row, never chosen on): the
  recipe's window, the same adapters at larger t ([200, 500) and [500, 1000): the demo's large t, [200,
  1000), lies across both), reference-style (all-t adapters over all t), the
  reference configuration (TiF's weight) and the swap, with the recipe's paired margins over each;
- ``fit.coarse_swap_auto``'s rule as one user meets it (per seed, the swap's fit kept where it is more accurate
  on that seed's breaking images), on the oracle stream against the recipe. ``--replay FILE`` prints it from a
  committed study's JSON without fitting anything.

Only validation streams are read, at least 10 seeds, never the sealed ones (``--smoke`` lifts the count).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.coarse import coarse_conflicts, coarse_shortcut, fired
from diti_sd.files import atomic_write
from diti_sd.recipes import load_recipe
from diti_sd.stats import beyond_2se, mean_se

_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)

SWAP = ["fit.coarse_swap=1.0"]
LARGE_T = ((200, 500), (500, 1000))  # the demo's large t, [200, 1000), lies across both


def per_seed(run: dict, part: str, window) -> np.ndarray:
    return np.array([np.mean(v) for v in run[part][window]])


def as_uint8(images: list) -> torch.Tensor:
    return (torch.stack(images) * 255).round().to(torch.uint8)


def conflicts(recipe, seeds: list[int], shots: int, val_per_class: int, rate: float,
              task: str = "texture", n_classes: int | None = None) -> list[np.ndarray]:
    """Per seed, which user-like validation images (in the stream's order, as the fits' rows are) break the
    shots' coarse accident."""
    out = []
    for seed in seeds:
        run = SyntheticSeed.for_recipe(recipe, seed, shots, task=task, n_classes=n_classes, shortcut_rate=rate)
        val = run.stream("val", val_per_class)
        out.append(coarse_conflicts(as_uint8(run.train.images), run.train.labels, as_uint8(val.images), val.labels,
                                    recipe.fit.coarse_sigma))
    return out


def check_fired(recipe, seeds: list[int], shots: int, rate: float, n_classes: int | None = None) -> list[bool]:
    """Per seed, whether the fit's shortcut check fires on its shots (pixels only, no fit), with the seed the fit
    gives it: ``fit.coarse_swap_auto`` compares only where it does."""
    out = []
    for seed in seeds:
        run = SyntheticSeed.for_recipe(recipe, seed, shots, shortcut_rate=rate,
                                       **({"task": "many", "n_classes": n_classes} if n_classes else {}))
        report = coarse_shortcut(as_uint8(run.train.images), run.train.labels, recipe.fit.coarse_sigma, seed=seed)
        out.append(fired(report))
    return out


def on_conflicts(candidate: list, baseline: list, masks: list[np.ndarray]) -> dict:
    """The paired per-seed gain of ``candidate`` over ``baseline`` (per image values) on the masked images,
    over the seeds that have any; better only beyond 2 SE."""
    gains = [np.mean(c[m]) - np.mean(b[m]) for c, b, m in zip(candidate, baseline, masks) if m.any()]
    if len(gains) < 2:
        return {"seeds": len(gains), "gain": None, "se": None, "beyond_2_se": False}
    gain, se = mean_se(gains)
    return {"seeds": len(gains), "gain": gain, "se": se, "beyond_2_se": beyond_2se(gain, se)}


def window_choices(fit: dict, masks: list[np.ndarray]) -> dict:
    """Which scoring (window or TiF's weight) the true-class log-likelihood picks on all the user-like validation
    and on the images that break the accident, pooled over seeds, beside the oracle's best; and one seed at a
    time (as one user would choose; the highest log-likelihood, not auto's own rule with its ties), the oracle
    gain of the breaking images' pick over the all-images pick."""
    names = list(fit["ll"])
    having = [i for i, m in enumerate(masks) if m.any()]
    pooled_all = max(names, key=lambda w: per_seed(fit, "ll", w).mean())
    pooled_breaking = max(names, key=lambda w: np.mean([fit["ll"][w][i][masks[i]].mean() for i in having])) \
        if having else None
    oracle = {tune.window_name(w): float(per_seed(fit, "oracle", w).mean()) for w in names}
    gains = []
    for i in having:
        on_all = max(names, key=lambda w: fit["ll"][w][i].mean())
        on_breaking = max(names, key=lambda w: fit["ll"][w][i][masks[i]].mean())
        gains.append(fit["oracle"][on_breaking][i].mean() - fit["oracle"][on_all][i].mean())
    gain, se = mean_se(gains) if len(gains) > 1 else (None, None)
    return {"pooled_pick_all": tune.window_name(pooled_all),
            "pooled_pick_breaking": None if pooled_breaking is None else tune.window_name(pooled_breaking),
            "oracle_best": max(oracle, key=oracle.get), "oracle": oracle,
            "per_seed_breaking_minus_all": {"gain": gain, "se": se, "seeds": len(gains)}}


def measure(rate: float, seeds: list[int], shots: int, val_per_class: int, cache: Path | None,
            pairs: tuple[int, int] = (12, 12), n_classes: int | None = None) -> dict:
    """The three fits at one rate, read as the module says (``n_classes``: the many-class variant)."""
    recipe = load_recipe("synthetic")
    window = (recipe.score.t_min, recipe.score.t_max)
    task = "many" if n_classes else "texture"
    fits = {name: tune.evaluate(overrides, seeds, shots, val_per_class, pairs=pairs, cache=cache,
                                shortcut_rate=rate, n_classes=n_classes)
            for name, overrides in (("recipe", []), ("swap", SWAP), ("rivals", tune.baseline_overrides("rivals")))}
    rule = tune.compare(fits["swap"], fits["recipe"])[tune.window_name(window)]
    oracle = {"recipe window": per_seed(fits["recipe"], "oracle", window),
              **{f"same adapters [{a}, {b})": per_seed(fits["recipe"], "oracle", (a, b)) for a, b in LARGE_T},
              "reference-style": per_seed(fits["rivals"], "oracle", (0, 1000)),
              "reference configuration": per_seed(fits["rivals"], "oracle", "tif"),
              "coarse swap": per_seed(fits["swap"], "oracle", window)}
    rows = {}
    for name, accs in oracle.items():
        mean, se = mean_se(list(accs))
        rows[name] = {"mean": mean, "se": se, "per_seed": [float(a) for a in accs]}
        if name != "recipe window":
            gain, gse = mean_se(list(oracle["recipe window"] - accs))
            rows[name]["recipe_minus"] = {"gain": gain, "se": gse}
    user = per_seed(fits["recipe"], "correct", window)
    masks = conflicts(recipe, seeds, shots, val_per_class, rate, task, n_classes)
    swap, base = fits["swap"], fits["recipe"]
    ll = on_conflicts(swap["ll"][window], base["ll"][window], masks)
    # one user holds one seed: accuracy on that seed's breaking images, the swap's fit against the recipe's
    seed_acc = {name: [float(np.mean(c[m])) if m.any() else None for c, m in zip(fit["correct"][window], masks)]
                for name, fit in (("recipe", base), ("swap", swap))}
    pairs = [(a, b) for a, b in zip(seed_acc["swap"], seed_acc["recipe"]) if a is not None]
    one_user = {"swap_better": sum(a > b for a, b in pairs), "tie": sum(a == b for a, b in pairs),
                "recipe_better": sum(a < b for a, b in pairs)}
    verdict = ("no verdict: no such image" if not ll["seeds"] else "no verdict: such images on one seed only"
               if ll["gain"] is None else "swap chosen" if ll["beyond_2_se"] else "recipe kept")
    return {"rate": rate, "window": list(window), "recipe_user_like_accuracy": float(user.mean()),
            "rule_swap_vs_recipe": {"ll_gain": rule["ll"]["gain"], "ll_se": rule["ll"]["se"],
                                    "beyond_2_se": rule["ll"]["beyond_2_se"],
                                    "verdict": "swap chosen" if rule["ll"]["beyond_2_se"] else "recipe kept"},
            "conflicts": {"per_seed": [int(m.sum()) for m in masks], "images_per_seed": int(len(masks[0])),
                          # where the class is the colour, none can break it: no fit is needed to see that
                          "fired_per_seed": check_fired(recipe, seeds, shots, rate, n_classes),
                          "colour_task_per_seed": [] if n_classes else [
                              int(m.sum()) for m in conflicts(recipe, seeds, shots, val_per_class, rate, "colour")],
                          "accuracy": {name: float(np.mean([a for a in accs if a is not None])) if pairs else None
                                       for name, accs in seed_acc.items()},
                          "accuracy_per_seed": seed_acc, "one_user_accuracy_comparisons": one_user,
                          "rule_swap_vs_recipe": {**ll, "verdict": verdict}},
            "oracle": rows,
            "windows": {name: window_choices(fits[name], masks) for name in ("recipe", "rivals")}}


def one_user_rule(r: dict, fired_per_seed: list[bool], lead: int = 1) -> dict:
    """``fit.coarse_swap_auto``'s rule, one seed (one user) at a time: where the shortcut check fires on the
    seed's shots, the swap's fit kept if it is more accurate than the recipe's on that seed's breaking images
    (none, or a tie: the recipe's), scored on the oracle stream, against the recipe's. ``lead``: a stricter rule,
    the swap kept only when right on at least this many more of those images (1: the fit's rule). Reads one
    rate's record, so it replays a committed study too."""
    acc, oracle = r["conflicts"]["accuracy_per_seed"], r["oracle"]
    recipe = np.array(oracle["recipe window"]["per_seed"])
    swap = np.array(oracle["coarse swap"]["per_seed"])
    picks = np.array([f and a is not None and b is not None and (b - a) * n > lead - 0.5
                      for f, a, b, n in zip(fired_per_seed, acc["recipe"], acc["swap"], r["conflicts"]["per_seed"])])
    kept = np.where(picks, swap, recipe)
    gain, se = mean_se(list(kept - recipe))
    return {"fired_on": int(sum(fired_per_seed)), "swap_kept_on": int(picks.sum()), "oracle": float(kept.mean()),
            "per_seed": kept.tolist(), "minus_recipe": {"gain": gain, "se": se}}


def print_one_user_rule(r: dict, fired_per_seed: list[bool], lead: int = 1) -> None:
    rule = one_user_rule(r, fired_per_seed, lead)
    gain = rule["minus_recipe"]
    what = "fit.coarse_swap_auto" if lead == 1 else f"the swap kept when right on {lead} more breaking images"
    print(f"  {what}, one seed at a time: the check fired on {rule['fired_on']}, the swap kept on "
          f"{rule['swap_kept_on']} of {len(rule['per_seed'])}; oracle {rule['oracle']:.3f}, minus the recipe's "
          f"{gain['gain']:+.3f} (SE {gain['se']:.3f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--rates", default="1,0.9,0.75,0.5", help="shares of the shots whose background follows")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=None, help="tune_synthetic's cache: shared fits, resumable")
    parser.add_argument("--pairs", default="12,12", help="validation (t, noise) pairs below and above t = 200")
    parser.add_argument("--classes", type=int, default=None,
                        help="the many-class variant (stripe textures on five backgrounds) with this many classes")
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="allow fewer than 10 seeds (no verdict)")
    parser.add_argument("--replay", type=Path, default=None,
                        help="a study's JSON: print fit.coarse_swap_auto's rule on its records, fit nothing")
    parser.add_argument("--lead", type=int, default=1,
                        help="with --replay: keep the swap only when right on this many more breaking images")
    args = parser.parse_args(argv)
    if args.replay:
        study = json.loads(args.replay.read_text())
        recipe = load_recipe("synthetic")
        for r in study["rates"]:
            print(f"rate {r['rate']:g}:")
            # studies written before the record kept it: the check is on the shots' pixels, no fit to redo
            fired_per_seed = r["conflicts"].get("fired_per_seed") or check_fired(recipe, study["seeds"],
                                                                                 study["shots"], r["rate"])
            print_one_user_rule(r, fired_per_seed, args.lead)
        return study
    tune.check_protocol(args.seeds, args.smoke)
    rates = [float(v) for v in args.rates.split(",") if v]
    if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
        raise SystemExit(f"--rates must be shares in [0, 1]; got {args.rates!r}")
    out = {"what": __doc__.splitlines()[0], "seeds": args.seeds, "shots": args.shots,
           "val_per_class": args.val_per_class, "smoke": args.smoke, "classes": args.classes or 5, "rates": []}
    for rate in rates:
        r = measure(rate, args.seeds, args.shots, args.val_per_class, args.cache,
                    tuple(int(v) for v in args.pairs.split(",")), args.classes)
        out["rates"].append(r)
        rule = r["rule_swap_vs_recipe"]
        print(f"rate {rate:g}: recipe on user-like validation {r['recipe_user_like_accuracy']:.3f}; the rule on the "
              f"swap {rule['ll_gain']:+.3f} (SE {rule['ll_se']:.3f}): "
              f"{'no verdict (smoke)' if args.smoke else rule['verdict']}")
        c = r["conflicts"]
        crule, acc, tally = c["rule_swap_vs_recipe"], c["accuracy"], c["one_user_accuracy_comparisons"]
        print(f"  user-like images that break the accident: {sum(c['per_seed'])} of "
              f"{c['images_per_seed'] * len(c['per_seed'])}" + ("" if crule["gain"] is None else
              f"; on them recipe {acc['recipe']:.3f}, swap {acc['swap']:.3f}; the rule on them {crule['gain']:+.3f} "
              f"(SE {crule['se']:.3f}, {crule['seeds']} seeds); one seed at a time, the swap's accuracy on them "
              f"ahead on {tally['swap_better']}, level on {tally['tie']}, behind on {tally['recipe_better']}") +
              f": {'no verdict (smoke)' if args.smoke else crule['verdict']}" +
              ("" if args.classes else f"; on the colour task {sum(c['colour_task_per_seed'])} break it"))
        print_one_user_rule(r, c["fired_per_seed"])
        for name, row in r["oracle"].items():
            margin = row.get("recipe_minus")
            tail = "" if margin is None else f"   recipe minus it {margin['gain']:+.3f} (SE {margin['se']:.3f})"
            print(f"  oracle {name:28s} {row['mean']:.3f} (SE {row['se']:.3f}){tail}")
        for name, w in r["windows"].items():
            g = w["per_seed_breaking_minus_all"]
            print(f"  {name} adapters' scoring picked on all the user-like images {w['pooled_pick_all']}, on those "
                  f"breaking the accident {w['pooled_pick_breaking']}, oracle's best {w['oracle_best']}" +
                  ("" if g["gain"] is None else f"; seed by seed, the breaking images' pick minus the all-images "
                   f"pick on the oracle {g['gain']:+.3f} (SE {g['se']:.3f})"))
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=2)))
    return out


if __name__ == "__main__":
    main()
