"""``encoder probe`` and the attribute directions ``encoder edit`` moves along."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..files import atomic_write
from .probe import (
    ProbeFeatures,
    extract_features,
    fit_linear_probe,
    fit_probe,
    held_out_ap,
    probe_by_subsets,
    stage_groups,
)
from .transfer import subset_transfer


def _probe_set(model, train, y_train, test, y_test, val, num_workers: int, progress: bool):
    """One probe on all of z (returned, for the swaps) with its test AP, and AP per stage."""
    cfg = model.recipe.probe

    def encode(data, flip=False):
        return extract_features(model, data, cfg.batch_size, num_workers, progress, flip=flip)

    features = ProbeFeatures(encode(train), y_train)
    if cfg.method == "reference":
        features.train_flipped, features.val, features.y_val = encode(train, flip=True), encode(val), \
            val.require_attributes("the probe")
    z_test = encode(test)
    probe = fit_probe(features, cfg)
    aps = held_out_ap(probe, z_test, y_test)
    by_stage = probe_by_subsets(model.layout, features, z_test, y_test, cfg)
    return probe, aps, by_stage


def run_probe(model, train, test, out, num_workers: int = 0, progress: bool = True, val=None) -> dict:
    """Probe all of z and each stage's subsets alone, trained and at the initial weights; swap each stage's
    subsets between test images (``subset_transfer``); write probe.json, probe.md and by_stage.png. ``val``:
    validation images, which the reference's probe (``probe.method: reference``) keeps its epoch on."""
    y_train = train.require_attributes("the probe")
    y_test = test.require_attributes("the probe")
    cfg = model.recipe.probe
    if cfg.method == "reference" and val is None:
        raise ConfigError("probe.method reference keeps the epoch of best validation AP: give validation images "
                          "(data.val_split), or use the L-BFGS probe (diti-sd encoder probe --method lbfgs)")
    probe, aps, by_stage = _probe_set(model, train, y_train, test, y_test, val, num_workers, progress)
    # the same probes on the untrained encoder: what z holds before training is not the method's doing
    _, init_aps, init_by_stage = _probe_set(model.at_initial_weights(), train, y_train, test, y_test, val,
                                            num_workers, progress)
    transfer = None
    if cfg.transfer_pairs > 0:
        values = subset_transfer(model, test, probe, stage_groups(model.layout), cfg.transfer_pairs,
                                 cfg.transfer_steps, progress=progress)
        transfer = {name: dict(zip(train.names, v)) for name, v in values.items()}
    report = {
        "encoder": str(getattr(model, "manifest", {}).get("ddpm", "")),
        "train_images": len(train), "test_images": len(test), "probe": cfg.method,
        "validation_images": None if val is None else len(val),
        "mean_ap": float(np.nanmean(aps)),
        "attributes": dict(zip(train.names, aps)),
        "by_stage": {name: dict(zip(train.names, values)) for name, values in by_stage.items()},
        "initial_weights": {
            "mean_ap": float(np.nanmean(init_aps)),
            "attributes": dict(zip(train.names, init_aps)),
            "by_stage": {name: dict(zip(train.names, values)) for name, values in init_by_stage.items()},
        },
        "stages": {name: members for name, members in stage_groups(model.layout)},
        "transfer": transfer,
        "transfer_pairs": cfg.transfer_pairs,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "probe.md", lambda tmp: tmp.write_text(_markdown(report)))
    _heatmap(report, out / "by_stage.png")
    # last: a resumed study reads a probe back from it, so it is there only once its page and picture are
    atomic_write(out / "probe.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report


def _ap_rows(stages: list[str], result: dict) -> list[str]:
    rows = ["| attribute | all of z | " + " | ".join(stages) + " |", "|---|---|" + "---|" * len(stages)]
    for name, ap in result["attributes"].items():
        rows.append(f"| {name} | {ap:.3f} | " + " | ".join(f"{result['by_stage'][s][name]:.3f}" for s in stages) + " |")
    return rows


def _markdown(report: dict) -> str:
    stages = list(report["by_stage"])
    init = report["initial_weights"]
    lines = [
        f"# Linear probe: mean AP {report['mean_ap']:.4f}",
        "",
        f"{report['train_images']} probe-train images, {report['test_images']} test images"
        + ("; the reference's probe (Adam, mirrored images, the epoch of best AP on "
           f"{report['validation_images']} validation images)" if report["probe"] == "reference" else
           "; a full-batch L-BFGS probe on standardised z") + ". Columns after "
        "'all of z' use only the dimensions of one stage's subsets.",
        "",
        *_ap_rows(stages, report),
        "",
        f"## The same encoder at its initial weights: mean AP {init['mean_ap']:.4f}",
        "",
        "Random conv features already separate many attributes linearly, and more dimensions separate more; "
        "compare a stage's AP with its AP here before reading it as what training put there.",
        "",
        *_ap_rows(stages, init),
    ]
    if report.get("transfer"):
        groups = list(report["transfer"])
        lines += [
            "",
            "## What the shift network reads from each stage (counterfactual swaps)",
            "",
            f"Up to {report['transfer_pairs']} test pairs (i, j) per attribute that differ in it: DDIM samples from "
            "one x_T under z_i and under z_i with one stage's dimensions taken from z_j, re-encoded and read by the "
            "probe on all of z. How far the swap moves the probability of the attribute towards j's value "
            "(0: the shift network ignores it there; 1: a confident flip).",
            "",
            "| attribute | " + " | ".join(groups) + " |",
            "|---|" + "---|" * len(groups),
        ]
        for name in report["attributes"]:
            lines.append(f"| {name} | " + " | ".join(f"{report['transfer'][g][name]:.2f}" for g in groups) + " |")
    return "\n".join(lines) + "\n"


def _heatmap(report: dict, path: Path) -> None:
    from ..plotting import pyplot, save_figure

    plt = pyplot()
    names = list(report["attributes"])
    stages = list(report["by_stage"])
    ap_tables = [report["by_stage"], report["initial_weights"]["by_stage"]]
    low = float(np.nanmin([[table[s][n] for s in stages] for table in ap_tables for n in names]))
    # (table, columns, title, colour map, lowest value shown)
    panels = [(ap_tables[0], stages, "probe AP, trained", "viridis", low),
              (ap_tables[1], stages, "probe AP, initial weights", "viridis", low)]
    if report.get("transfer"):
        panels.append((report["transfer"], list(report["transfer"]), "transfer under a swap", "magma", 0.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(stages) * len(panels) + 3, 0.28 * len(names) + 1.8),
                             sharey=True)
    for ax, (table, cols, title, cmap, vmin) in zip(axes, panels):
        grid = np.array([[table[c][n] for c in cols] for n in names])
        image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=1.0)
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    axes[0].set_yticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 9)
    save_figure(fig, path, dpi=120, bbox_inches="tight")


def attribute_direction(model, data, attribute: str, num_workers: int = 0, progress: bool = True) -> torch.Tensor:
    """d(logit)/dz of a linear classifier of ``attribute`` on z: the direction ``move_along`` follows."""
    y = data.require_attributes("an attribute edit")
    if attribute not in data.names:
        close = [n for n in data.names if attribute.lower() in n.lower()]
        hint = "did you mean " + ", ".join(close) if close else "have " + ", ".join(data.names)
        raise ConfigError(f"no attribute {attribute!r}; {hint}")
    column = y[:, [data.names.index(attribute)]]
    if column.min() == column.max():
        raise ConfigError(f"every image has {attribute} = {int(column[0, 0])}; a direction needs both values")
    z = extract_features(model, data, model.recipe.probe.batch_size, num_workers, progress)
    probe = model.recipe.probe
    weight, _, _, std = fit_linear_probe(z, column, probe.steps, weight_decay=probe.weight_decay)
    direction = weight[:, 0] / std
    if not math.isfinite(float(direction.norm())):
        raise ConfigError(f"the linear classifier of {attribute} did not converge")
    return direction
