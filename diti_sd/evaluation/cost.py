"""What each method costs per test image, and which methods no other beats on both accuracy and cost.

A method's cost is what one test image takes: UNet calls (DiTi-SD's pruning stages, Stable Diffusion
zero-shot) and frozen-encoder forwards (the CLIP / DINOv2 rivals, a prefilter, an ensemble's partner),
counted as forward passes; with ``--speed`` (``eval/bench_speed.py``'s JSON for the device) also in
GPU-seconds. The Pareto front, per shots, is the set of methods that no other method matches or beats on
both accuracy and cost.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..plotting import pyplot, save_figure


def read_speed(path: str | None) -> dict:
    """Per-forward GPU seconds from ``eval/bench_speed.py --json`` on the device: the UNet's (with stacked
    LoRAs, as DiTi-SD scores) and, where it timed one, a frozen encoder's. Empty without a file."""
    if not path:
        return {}
    if not Path(path).is_file():
        raise ConfigError(f"speed file {path} is not a file; write one with python eval/bench_speed.py --json FILE")
    try:
        data = json.loads(Path(path).read_text())
        rows = [{"part": str(r["part"]), "per_s": float(r["per_s"])} for r in data["rows"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"speed file {path} is not eval/bench_speed.py's --json output ({type(err).__name__}: "
                          f"{err}); write one with python eval/bench_speed.py --json FILE") from None
    out = {"device": data.get("device")}
    unet = [r for r in rows if r["part"].startswith("UNet forward") and "stacked" in r["part"]]
    unet = unet or [r for r in rows if r["part"].startswith("UNet forward")]
    if unet:
        out["unet_s"] = 1.0 / unet[0]["per_s"]
    encoder = [r for r in rows if r["part"].startswith("encoder forward")]
    if encoder:
        out["encoder_s"] = 1.0 / encoder[0]["per_s"]
    return out


def cost_table(runs: list[dict], speed: dict) -> dict:
    """Per method, its mean cost per test image: UNet calls, encoder forwards, both as forward passes, and
    GPU-seconds where ``speed`` has the device's timings for every part the method runs."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        costs = [r.get("cost", {}) for r in runs if r["method"] == method]
        unet = float(np.mean([c.get("unet_calls_per_image", 0) for c in costs]))
        enc = float(np.mean([c.get("encoder_forwards_per_image", c.get("clip_forwards_per_image", 0))
                             for c in costs]))
        row = {"unet_calls_per_image": unet, "encoder_forwards_per_image": enc, "forwards_per_image": unet + enc}
        if (unet == 0 or "unet_s" in speed) and (enc == 0 or "encoder_s" in speed) and speed:
            row["gpu_s_per_image"] = unet * speed.get("unet_s", 0) + enc * speed.get("encoder_s", 0)
        extra = {k: v for c in costs for k, v in c.items() if isinstance(v, str)}
        out[method] = {**row, **extra}
    return out


def pareto_fronts(summary: dict, cost: dict) -> dict:
    """Per shots, the methods no other method beats on both accuracy (higher) and cost per test image
    (fewer forward passes; GPU-seconds where every method has them), cheapest first."""
    key = "gpu_s_per_image" if cost and all("gpu_s_per_image" in c for c in cost.values()) else "forwards_per_image"
    fronts = {}
    for shots in sorted({s for by in summary.values() for s in by}, key=int):
        points = {m: (cost[m][key], by[shots]["mean"]) for m, by in summary.items() if shots in by}
        front = [m for m, (c, a) in points.items()
                 if not any(c2 <= c and a2 >= a and (c2, a2) != (c, a) for c2, a2 in points.values())]
        fronts[shots] = sorted(front, key=lambda m: points[m][0])
    return {"cost": key, "front": fronts}


def prefilter_summary(runs: list[dict]) -> dict:
    """Per shots, a prefilter's top-k recall on the test split (mean over seeds): DiTi-SD scores only those
    classes, so recall bounds its accuracy."""
    out: dict = {}
    for r in runs:
        if "prefilter" in r:  # every DiTi-SD method of a split carries the same: one per (shots, seed)
            out.setdefault(r["prefilter"]["method"], {}).setdefault(str(r["shots"]), {})[r["seed"]] = r["prefilter"]
    out = {m: {s: list(v.values()) for s, v in by.items()} for m, by in out.items()}
    return {m: {s: {"k": v[0]["k"], "recall": {k: float(np.mean([x["recall"][k] for x in v])) for k in v[0]["recall"]}}
                for s, v in by.items()} for m, by in out.items()}


def cost_markdown(report: dict) -> list[str]:
    """The report's cost table, each shots' Pareto front and a prefilter's recall, as Markdown lines."""
    cost, pareto = report["cost"], report["pareto"]
    gpu = any("gpu_s_per_image" in c for c in cost.values())
    lines = ["## Accuracy against cost", "",
             "Per test image: UNet calls, frozen-encoder forwards" + (", GPU-seconds on the device eval/bench_speed.py "
                                                                     "timed" if gpu else "") + ".", "",
             "| method | UNet calls | encoder forwards |" + (" GPU-s |" if gpu else "") + " on the front at |",
             "|---|---|---|" + ("---|" if gpu else "") + "---|"]
    for method, c in cost.items():
        fronts = [f"{s}-shot" for s, members in pareto["front"].items() if method in members]
        gpu_cell = f" {c['gpu_s_per_image']:.3g} |" if "gpu_s_per_image" in c else (" n/a |" if gpu else "")
        lines.append(f"| {method} | {c['unet_calls_per_image']:g} | {c['encoder_forwards_per_image']:g} |{gpu_cell} "
                     f"{', '.join(fronts) or '-'} |")
    lines += ["", f"Pareto front by accuracy and {pareto['cost'].replace('_', ' ')}, cheapest first:", ""]
    lines += [f"- {s}-shot: {', '.join(members)}" for s, members in pareto["front"].items()]
    lines += ["", "![accuracy against cost](accuracy_vs_cost.png)", ""]
    for method, by in report.get("prefilter", {}).items():
        ks = list(next(iter(by.values()))["recall"])
        lines += [f"## Prefilter: {method}", "",
                  "DiTi-SD scores only the prefilter's top-k classes per image; the share of test images whose "
                  "class is among them (mean over seeds) bounds its accuracy.", "",
                  "| shots | k used | " + " | ".join(f"recall@{k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
        lines += [f"| {s} | {v['k']} | " + " | ".join(f"{v['recall'][k]:.3f}" for k in ks) + " |"
                  for s, v in by.items()]
        lines.append("")
    return lines


def plot_cost(summary: dict, cost: dict, pareto: dict, metric: str, title: str, path: Path) -> None:
    """Accuracy against cost per test image, one panel per shots, the Pareto front joined."""
    key = pareto["cost"]
    shots = list(pareto["front"])
    fig, axes = pyplot().subplots(1, len(shots), figsize=(4.2 * len(shots), 3.8), squeeze=False)
    for ax, s in zip(axes[0], shots):
        for method, by in summary.items():
            if s in by:
                on = method in pareto["front"][s]
                ax.scatter(max(cost[method][key], 1e-3), by[s]["mean"] * 100, s=40 if on else 20,
                           marker="o" if on else "x", label=method)
        front = [(max(cost[m][key], 1e-3), summary[m][s]["mean"] * 100) for m in pareto["front"][s]]
        ax.plot(*zip(*front), "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(key.replace("_", " "))
        ax.set_title(f"{s}-shot")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title}: accuracy against cost (circles: the Pareto front)")
    fig.tight_layout()
    save_figure(fig, path)
