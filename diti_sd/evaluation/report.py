"""The report of ``diti-sd eval``: results.json, README.md with the tables, accuracy_vs_shots.png,
accuracy_vs_cost.png (the Pareto front per shots) and reliability.png."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from ..files import atomic_write
from ..plotting import plot_reliability, pyplot, save_figure
from .cost import cost_markdown, cost_table, pareto_fronts, plot_cost, prefilter_summary, read_speed

METRIC_NAMES = {"accuracy": "Top-1 accuracy", "macro-f1": "Macro-averaged F1"}


def seed_summary(values) -> dict:
    """Mean and spread over seeds as CoOp reports them (``parse_test_res.py``: ``np.std``, ddof 0, over its three
    seeds), so a table here reads as the reference's ± does; the synthetic benchmark's own tables use ddof 1."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def write_eval_report(folder: str | Path, runs: list[dict], config: dict, recipe, test, validation: str,
                      speed: str | None = None) -> dict:
    """Summarise the finished runs (one per method, shots and seed) into the report folder; returns the report.

    ``test`` is the test split (its labels and class names give the confusion); ``validation`` says on
    which images every choice was made."""
    folder = Path(folder)
    metric = recipe.dataset.metric
    table: dict = {}
    for r in runs:
        table.setdefault(r["method"], {}).setdefault(r["shots"], []).append(r.get("score", r["accuracy"]))
    summary = {m: {str(k): seed_summary(v) for k, v in sorted(by.items())} for m, by in table.items()}
    report = {"config": config, "recipe": recipe.to_dict(), "results": summary, "validation": validation,
              "calibration": calibration_summary(runs), "score_choice": choice_summary(runs),
              "cost": cost_table(runs, read_speed(speed)), "prefilter": prefilter_summary(runs),
              "wall_s": {m: float(np.mean([r["wall_s"] for r in runs if r["method"] == m])) for m in table},
              "machine": platform.platform(), "confusion": confusion(runs, test.labels, test.classnames),
              "runs": [{k: v for k, v in r.items() if k != "predictions"} for r in runs]}
    report["pareto"] = pareto_fronts(summary, report["cost"])
    atomic_write(folder / "results.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    text = markdown(report, recipe.name, metric, config["seeds"], len(test))
    atomic_write(folder / "README.md", lambda tmp: tmp.write_text(text))
    plot_shots(summary, metric, recipe.name, folder / "accuracy_vs_shots.png")
    plot_cost(summary, report["cost"], report["pareto"], metric, recipe.name, folder / "accuracy_vs_cost.png")
    if report["calibration"]:
        plot_reliability({m: (c["bins"], c["ece"]["mean"]) for m, c in report["calibration"].items()},
                         f"{recipe.name}: reliability", folder / "reliability.png")
    return report


def choice_summary(runs: list[dict]) -> list[dict]:
    """Per DiTi-SD run scored with ``score.weighting: auto``: the window chosen, every candidate's
    validation score, and the validation pass's UNet calls as a share of the run's test pass."""
    return [{"method": r["method"], "shots": r["shots"], "seed": r["seed"], "choice": r["score_choice"]["name"],
             "source": r["score_choice"]["source"], "candidates": r["score_choice"]["candidates"],
             "unet_calls": r["score_choice"]["unet_calls"],
             "share_of_test_pass": r["cost"].get("auto_share_of_test_pass")}
            for r in runs if r.get("score_choice")]


def calibration_summary(runs: list[dict]) -> dict:
    """Per method, at its largest shots: NLL and ECE (mean, std over seeds) at the temperature each run
    chose on its validation draw, and the reliability bins pooled over seeds."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method and "calibration" in r]
        if not mine:
            continue
        top = max(r["shots"] for r in mine)
        cal = [r["calibration"] for r in mine if r["shots"] == top]
        bins = {k: np.sum([c["bins"][k] for c in cal], 0).tolist() for k in ("count", "confidence", "correct")}
        out[method] = {"shots": top, "runs": len(cal), "source": cal[0]["source"],
                       **{k: seed_summary([c[k] for c in cal]) for k in ("nll", "nll_at_1", "ece")},
                       "temperature_median": float(np.median([c["temperature"] for c in cal])), "bins": bins}
    return out


def confusion(runs: list[dict], labels, names: list[str]) -> dict:
    """Per method, from its run with the most shots: the worst classes and the most confused pairs."""
    labels = np.array(labels)
    out = {}
    for method in {r["method"] for r in runs}:
        mine = [r for r in runs if r["method"] == method]
        top = max(mine, key=lambda r: (r["shots"], -r["seed"]))
        pred = np.array(top["predictions"])
        per_class = {names[c]: float((pred[labels == c] == c).mean()) for c in np.unique(labels)}
        pairs: dict = {}
        for t, p in zip(labels, pred):
            if t != p:
                pairs[(names[t], names[p])] = pairs.get((names[t], names[p]), 0) + 1
        worst = sorted(pairs.items(), key=lambda kv: -kv[1])[:10]
        out[method] = {"shots": top["shots"], "seed": top["seed"],
                       "worst_classes": sorted(per_class.items(), key=lambda kv: kv[1])[:10],
                       "most_confused": [{"true": a, "predicted": b, "count": n} for (a, b), n in worst]}
    return out


def markdown(report: dict, name: str, metric: str, seeds: list[int], n_test: int) -> str:
    shots = sorted({int(s) for by in report["results"].values() for s in by})
    lines = [f"# diti-sd eval: {name}", "",
             f"{METRIC_NAMES[metric]}, mean ± std over seeds {seeds}; {n_test} test images.",
             f"Validation (every choice a method makes): {report['validation']}.", "",
             "| method | " + " | ".join(f"{s}-shot" for s in shots) + " | forwards per test image | mean wall s |",
             "|---|" + "---|" * (len(shots) + 2)]
    for method, by in report["results"].items():
        cells = [f"{by[str(s)]['mean'] * 100:.1f} ± {by[str(s)]['std'] * 100:.1f}" if str(s) in by else ""
                 for s in shots]
        passes = report["cost"][method]["forwards_per_image"]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {passes:g} | {report['wall_s'][method]:.1f} |")
    lines += ["", "![accuracy against shots](accuracy_vs_shots.png)", "", *cost_markdown(report)]
    if report["calibration"]:
        source = next(iter(report["calibration"].values()))["source"]
        lines += ["## Probabilities", "",
                  f"Each run's softmax temperature is chosen by log-likelihood on {source}; test NLL and "
                  "expected calibration error (15 equal-width bins) at it, mean ± std over seeds, at each "
                  "method's largest shots.", "",
                  "| method | shots | NLL | NLL at temperature 1 | ECE | temperature (median) |",
                  "|---|---|---|---|---|---|"]
        for method, c in report["calibration"].items():
            lines.append(f"| {method} | {c['shots']} | {c['nll']['mean']:.3f} ± {c['nll']['std']:.3f} | "
                         f"{c['nll_at_1']['mean']:.3f} | {c['ece']['mean']:.3f} ± {c['ece']['std']:.3f} | "
                         f"{c['temperature_median']:.3g} |")
        lines += ["", "![reliability](reliability.png)", ""]
    if report["score_choice"]:
        lines += ["## Scoring window chosen on validation (`score.weighting: auto`)", "",
                  "Each candidate's validation metric on the split's validation draw; the chosen one (bold) is the one "
                  "under which the true classes are most probable (mean log-probability, which tells windows apart "
                  "on few images where the metric moves in steps of one image); "
                  "the last column is that validation pass's UNet calls as a share of the test pass's.", "",
                  "| method | shots | seed | candidates (validation) | extra calls |", "|---|---|---|---|---|"]
        for c in report["score_choice"]:
            cells = ", ".join(f"**{k} {v:.3f}**" if k == c["choice"] else f"{k} {v:.3f}"
                              for k, v in c["candidates"].items())
            share = c["share_of_test_pass"]
            lines.append(f"| {c['method']} | {c['shots']} | {c['seed']} | {cells or c['source']} | "
                         f"{c['unet_calls']} ({'n/a' if share is None else f'{share:.1%}'}) |")
        lines.append("")
    lines += ["## Most confused (largest shots)", ""]
    for method, c in report["confusion"].items():
        pairs = "; ".join(f"{p['true']} -> {p['predicted']} ({p['count']})" for p in c["most_confused"][:5])
        lines.append(f"- {method}: {pairs or 'none'}")
    return "\n".join(lines) + "\n"


def plot_shots(summary: dict, metric: str, title: str, path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for method, by in summary.items():
        xs = sorted(int(s) for s in by)
        ys = [by[str(s)]["mean"] * 100 for s in xs]
        es = [by[str(s)]["std"] * 100 for s in xs]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    ax.set_xscale("log", base=2)
    all_shots = sorted({int(s) for by in summary.values() for s in by})
    ax.set_xticks(all_shots, [str(s) for s in all_shots])
    ax.minorticks_off()
    ax.set_xlabel("shots per class")
    ax.set_ylabel(f"{METRIC_NAMES[metric].lower()} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)

