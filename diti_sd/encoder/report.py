"""``encoder probe`` and the attribute directions ``encoder edit`` moves along."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from .probe import extract_features, fit_linear_probe, probe_ap, probe_by_subsets, stage_groups


def run_probe(model, train, test, out, num_workers: int = 0, progress: bool = True) -> dict:
    """Probe all of z and each stage's subsets alone; write probe.json, probe.md and by_stage.png."""
    y_train = train.require_attributes("the probe")
    y_test = test.require_attributes("the probe")
    cfg = model.recipe.probe
    z_train = extract_features(model, train, cfg.batch_size, num_workers, progress)
    z_test = extract_features(model, test, cfg.batch_size, num_workers, progress)
    aps = probe_ap(z_train, y_train, z_test, y_test, cfg.steps, cfg.weight_decay)
    by_stage = probe_by_subsets(model.layout, z_train, y_train, z_test, y_test, steps=cfg.steps,
                                weight_decay=cfg.weight_decay)
    report = {
        "encoder": str(getattr(model, "manifest", {}).get("ddpm", "")),
        "train_images": len(train), "test_images": len(test),
        "mean_ap": float(np.nanmean(aps)),
        "attributes": dict(zip(train.names, aps)),
        "by_stage": {name: dict(zip(train.names, values)) for name, values in by_stage.items()},
        "stages": {name: members for name, members in stage_groups(model.layout)},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(report, indent=2))
    (out / "probe.md").write_text(_markdown(report))
    _heatmap(report, out / "by_stage.png")
    return report


def _markdown(report: dict) -> str:
    stages = list(report["by_stage"])
    lines = [
        f"# Linear probe: mean AP {report['mean_ap']:.4f}",
        "",
        f"{report['train_images']} probe-train images, {report['test_images']} test images. Columns after "
        "'all of z' use only the dimensions of one stage's subsets.",
        "",
        "| attribute | all of z | " + " | ".join(stages) + " |",
        "|---|---|" + "---|" * len(stages),
    ]
    for name, ap in report["attributes"].items():
        row = [f"{report['by_stage'][s][name]:.3f}" for s in stages]
        lines.append(f"| {name} | {ap:.3f} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _heatmap(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["attributes"])
    stages = list(report["by_stage"])
    grid = np.array([[report["by_stage"][s][n] for s in stages] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 * len(stages) + 3, 0.28 * len(names) + 1.5))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=np.nanmin(grid), vmax=1.0)
    ax.set_xticks(range(len(stages)), stages, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 9)
    ax.set_title("AP of a linear probe on one stage's subsets of z")
    fig.colorbar(image, ax=ax, label="AP")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def attribute_direction(model, data, attribute: str, num_workers: int = 0, progress: bool = True) -> torch.Tensor:
    """d(logit)/dz of a linear classifier of ``attribute`` on z: the direction ``move_along`` follows."""
    y = data.require_attributes("an attribute edit")
    if attribute not in data.names:
        close = [n for n in data.names if attribute.lower() in n.lower()]
        raise ValueError(f"no attribute {attribute!r}; {'did you mean ' + ', '.join(close) if close else 'have ' + ', '.join(data.names)}")
    column = y[:, [data.names.index(attribute)]]
    if column.min() == column.max():
        raise ValueError(f"every image has {attribute} = {int(column[0, 0])}; a direction needs both values")
    z = extract_features(model, data, model.recipe.probe.batch_size, num_workers, progress)
    weight, _, _, std = fit_linear_probe(z, column, model.recipe.probe.steps, weight_decay=model.recipe.probe.weight_decay)
    direction = weight[:, 0] / std
    if not math.isfinite(float(direction.norm())):
        raise ValueError(f"the linear classifier of {attribute} did not converge")
    return direction
