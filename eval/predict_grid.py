"""The demo's reading of a recipe's scoring window against ``predict``'s own, and accuracy per single t.

    python eval/predict_grid.py --seeds 11-20 --cache reports/residual \
        --out docs/notes/2026-12-07-predict-grid.json --plot docs/notes/2026-12-07-predict-grid.png

The demo reads every row off one set of pairs per seed (``scoring_weights``): in each of its strata the
reference's even grid of ``pairs_per_window`` t, the noise drawn from the seed's own pair seed. ``predict`` scores
the window on the recipe's stages: the same rule, the noise of ``score.seed`` (the same for every seed). Both
estimate the same thing, the adapters' mean error over the window; this measures how far apart they read (before
2026-12-07 the demo's t were a radical-inverse draw from the window's first t:
``docs/notes/2026-12-07-predict-grid.md``). Per seed the recipe's
adapters (``--set`` for other values) are fitted on the k-shot split; each image of the user-like validation
stream and of the oracle stream is scored by ``score_images`` (``predict``) and on the demo's window pairs of the
seed's validation draw, paired per seed; and at every ``--t-step``-th t of the window alone, with ``predict``'s
noise, to show where the class evidence lies. ``--demo-row "all t"`` with ``--demo-window 0 200``: the demo's
reading of the reference-style rival (fit it with ``--set``). ``--cache``: one result per seed, resumable. A
diagnostic on validation streams, never a rule and never a sealed read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from diti_sd.benchmarks.synthetic.demo import DemoConfig, sealed_message
from diti_sd.benchmarks.synthetic.scoring import pair_seeds, scoring_weights
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write, cached_json
from diti_sd.plotting import save_figure
from diti_sd.recipes import load_recipe
from diti_sd.scoring.replay import weighted_mean
from diti_sd.stats import mean_se
from diti_sd.timesteps import timestep_noise

_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)

STREAMS = ("val", "oracle val")
PAIRS = DemoConfig().pairs_per_window


def single_t_grid(window: tuple[int, int], step: int) -> torch.Tensor:
    """Every ``step``-th t of the window, from its first."""
    return torch.arange(window[0], window[1], step)


def one_seed(seed: int, per_class: int, overrides: list[str], step: int, demo_row: str = "window",
             demo_window: tuple[int, int] | None = None) -> dict:
    recipe = load_recipe("synthetic", overrides)
    run = SyntheticSeed.for_recipe(recipe, seed, 8)
    clf = run.fit(recipe)
    window = (recipe.score.t_min, recipe.score.t_max)
    t, noise, weights = scoring_weights(demo_window or window, PAIRS, None, clf.backbone_.latent_shape,
                                        seed=pair_seeds(seed)[1])
    w = weights[demo_row]
    keep = torch.from_numpy(w > 0)
    grid = single_t_grid(window, step)
    out = {}
    for name in STREAMS:
        data = run.stream(name, per_class)
        labels, latents = run.labels(data, clf), clf.encode(data.images)
        demo = weighted_mean(clf.dense_errors(latents, t[keep], noise[keep]), w[keep.numpy()])
        per_t = clf.dense_errors(latents, grid, timestep_noise(grid, latents.shape[1:], recipe.score.seed))
        out[name] = {"predict": float((clf.score_images(data.images).logits.argmax(1) == labels).mean()),
                     "demo pairs": float((demo.argmin(1) == labels).mean()),
                     "per t": [float((per_t[:, :, i].argmin(1) == labels).mean()) for i in range(len(grid))]}
    return out


def plot(result: dict, path: str) -> None:
    """Mean accuracy at each single t over the seeds, per stream, with the two window readings as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for colour, stream in zip(("tab:orange", "tab:blue"), STREAMS):
        row = result["summary"][stream]
        ax.plot(result["t"], row["per t"], color=colour, marker=".", label=f"{stream}: one t")
        ax.axhline(row["predict"]["mean"], color=colour, linestyle="-", alpha=0.5, label=f"{stream}: predict")
        ax.axhline(row["demo pairs"]["mean"], color=colour, linestyle=":", label=f"{stream}: demo's pairs")
    ax.set_xlabel("t")
    ax.set_ylabel(f"accuracy (mean of {len(result['seeds'])} seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="fit with this recipe value (KEY=VALUE, repeatable)")
    parser.add_argument("--t-step", type=int, default=4, help="the single-t curve's spacing")
    parser.add_argument("--demo-row", choices=["window", "all t"], default="window",
                        help="the demo's scoring read against predict: its window row, or its all-t row (the "
                             "reference-style rival's, an equal share of each stratum weighted by its width)")
    parser.add_argument("--demo-window", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                        help="the window the demo's strata are laid around (default: the scoring window; the "
                             "all-t row of the headline: 0 200)")
    parser.add_argument("--cache", type=Path, default=None, help="one result per seed, resumable")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None, help="a PNG of the single-t curve")
    args = parser.parse_args(argv)
    if why := sealed_message(args.seeds):
        raise SystemExit(why)
    recipe = load_recipe("synthetic", args.overrides)
    demo_window = None if args.demo_window is None else tuple(args.demo_window)
    per_seed = {}
    for seed in args.seeds:
        parts = ["predict_grid", tune.recipe_key(recipe), seed, args.per_class, PAIRS, args.t_step]
        if args.demo_row != "window" or demo_window is not None:  # the window row's keys stay as they were
            parts.append({"demo row": args.demo_row, "demo window": demo_window})
        per_seed[seed] = cached_json(args.cache, parts, lambda seed=seed: one_seed(
            seed, args.per_class, args.overrides, args.t_step, args.demo_row, demo_window))
    summary = {}
    for stream in STREAMS:
        rows = [per_seed[s][stream] for s in args.seeds]
        gap, se = mean_se([r["predict"] - r["demo pairs"] for r in rows])
        summary[stream] = {k: {"mean": float(np.mean([r[k] for r in rows]))} for k in ("predict", "demo pairs")}
        summary[stream]["predict minus demo pairs"] = {"mean": gap, "se": se}
        summary[stream]["per t"] = np.mean([r["per t"] for r in rows], axis=0).round(4).tolist()
        print(f"{stream:11s} predict {summary[stream]['predict']['mean']:.3f}  demo's pairs "
              f"{summary[stream]['demo pairs']['mean']:.3f}  difference {gap:+.3f} (SE {se:.3f})")
    grid = single_t_grid((recipe.score.t_min, recipe.score.t_max), args.t_step).tolist()
    for stream in STREAMS:
        print(f"{stream:11s} one t: " + " ".join(f"{t}:{a:.2f}" for t, a in zip(grid, summary[stream]["per t"])))
    result = {"seeds": args.seeds, "overrides": args.overrides, "demo_row": args.demo_row,
              "demo_window": demo_window, "t": grid, "per_seed": per_seed, "summary": summary}
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    if args.plot:
        plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
