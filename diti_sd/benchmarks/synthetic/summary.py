"""The demo's numbers: its rows' names, per row and split the accuracy over seeds, the paired comparisons
with both intervals, the training x scoring grid, the rows on the images whose background misleads, and
the targets the benchmark exists to show."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ...stats import hierarchical_difference, mean_sd
from .scoring import SCORINGS, window_of

TEST_SPLITS = ("decorrelated", "correlated")
REFERENCE_CONFIGURATION = "reference configuration: trained over (0, 1000), TiF weight"
REFERENCE_STYLE = "reference-style: trained and scored over (0, 1000)"
PROTOTYPES = ("nearest prototype, pixels", "nearest prototype, VAE latents")
PROBES = ("linear probe, pixels", "linear probe, VAE latents")
# on the decorrelated test: the recommended row at least ACCURACY, and at least each margin above each rival
# with the wider of the two 95 % intervals above zero
ACCURACY = 0.70
MARGIN, ZERO_SHOT_MARGIN = 0.10, 0.15


def method_names(window: tuple[int, int], masks: bool = False) -> dict[tuple[str, str], str]:
    """Each (adapter set, scoring) row's name: "band" adapters are the recipe's, "all" ones were trained
    over all of [0, 1000), "swap" ones are the opt-in row's (the recipe with every shot's coarse content
    swapped; ``masks``: outside the objects' masks)."""
    w = tuple(window)
    where = {"large t": f"large t {(w[1], 1000)}", "small t": f"small t {(0, w[0])}", "all t": "all t (0, 1000)",
             "TiF weight": "TiF weight"}
    band = {"window": f"DiTi-SD, window {w} (recommended)",
            **{s: f"DiTi-SD, same adapters, {v}" for s, v in where.items()}}
    wide = {"all t": REFERENCE_STYLE, "TiF weight": REFERENCE_CONFIGURATION,
            "window": f"trained over (0, 1000), scored over the window {w}",
            "large t": f"trained over (0, 1000), scored over large t {(w[1], 1000)}",
            "small t": f"trained over (0, 1000), scored over small t {(0, w[0])}"}
    what = "coarse swap outside the objects" if masks else "coarse swap"
    swap = {"window": swap_name(window, masks), **{s: f"opt-in: {what}, same adapters, {v}" for s, v in where.items()}}
    return {**{("band", s): n for s, n in band.items()}, **{("all", s): n for s, n in wide.items()},
            **{("swap", s): n for s, n in swap.items()}}


def swap_name(window, masks: bool = False) -> str:
    """The opt-in row: the recipe with every shot's coarse content swapped (``DemoConfig.swap_overrides``); with
    ``masks`` (``DemoConfig.swap_masks``), only outside each shot's object."""
    if masks:
        return (f"opt-in: coarse swap outside the objects, window {tuple(window)} (assumes the background is not the "
                "class)")
    return f"opt-in: coarse swap, window {tuple(window)} (assumes coarse attributes are not the class)"


def auto_swap_name(window) -> str:
    """The demo's proxy for ``fit.coarse_swap_auto``: per seed, the opt-in row where the seed's breaking validation
    images prefer it (scored on the demo's validation pairs, not ``predict``'s stages), else the recommended row
    (no UNet call of its own)."""
    return (f"fit.coarse_swap_auto: the opt-in row where the seed's breaking validation images prefer it, window "
            f"{tuple(window)}")


def add_auto_swap_row(names: dict, window, correct: dict, probs: dict, breaking: dict) -> list[bool] | None:
    """Add the ``fit.coarse_swap_auto`` row to ``correct`` and ``probs`` (row -> split -> per seed), its per-seed
    choice read from ``breaking`` (row -> per seed, hits on the validation images that break the accident) by
    the product's rule: the swap only where strictly more of them are right. The choices, or None without an
    opt-in row."""
    recommended, swap = names[("band", "window")], names.get(("swap", "window"))
    if swap not in correct or recommended not in breaking or swap not in breaking:
        return None
    picks = [len(s) > 0 and int(s.sum()) > int(r.sum()) for r, s in zip(breaking[recommended], breaking[swap])]
    name = auto_swap_name(window)
    for table in (correct, probs):
        table[name] = {split: [b if p else a for p, a, b in zip(picks, table[recommended][split], table[swap][split])]
                       for split in table[recommended]}
    return picks


def zero_shot_name(window) -> str:
    return f"the base alone, zero-shot (its caption words), window {tuple(window)}"


def target_margins(names: dict, window, key: str = "band") -> dict[str, float]:
    """The rivals a row must beat on the decorrelated test, each with its margin: the recommended row's
    targets (``key`` "band"), or the same rivals for the opt-in row ("swap"), its own large t in place of
    the recipe's."""
    return {REFERENCE_STYLE: MARGIN, names[(key, "large t")]: MARGIN, PROBES[1]: MARGIN,
            zero_shot_name(window): ZERO_SHOT_MARGIN}


def target_status(report: dict, opt_in: bool = False) -> dict:
    """Each target with what the run measured on the decorrelated test: the row's accuracy, and per rival
    the paired gain with the wider of its two intervals; met = the gain reaches the margin and the interval
    lies above zero; a rival the run did not score has gain None and is not met. The recommended row's, or
    with ``opt_in`` the opt-in row's read the same way, "clears" in place of "met" (it has no targets: what
    it would show if it had)."""
    part = report["opt_in"] if opt_in else report
    row = part["row"] if opt_in else report["recommended"]
    met = "clears" if opt_in else "met"  # the opt-in row has no targets to meet
    rec = report["results"][row]["decorrelated"]["mean"]
    out = {"accuracy": {"target": ACCURACY, "measured": round(rec, 4), met: rec >= ACCURACY}}
    for rival, margin in part["targets"].items():
        if rival not in part["comparisons"]:  # a rival the run did not score: said, never dropped
            out[rival] = {"margin": margin, "gain": None, met: False}
            continue
        c = part["comparisons"][rival]["decorrelated"]
        low, high = c.get("wide_low", c["low"]), c.get("wide_high", c["high"])
        out[rival] = {"margin": margin, "gain": round(c["mean"], 4), "low": round(low, 4),
                      "high": round(high, 4), met: bool(c["mean"] >= margin and low > 0)}
    return out


def band_means(per_seed: list[list[float]]) -> list[float | None]:
    """Mean over seeds per band; None where no seed had a pair in the band."""
    arr = np.array(per_seed, dtype=float)
    seen = ~np.isnan(arr)
    means = np.nansum(arr, 0) / np.maximum(seen.sum(0), 1)
    return [float(m) if n else None for m, n in zip(means, seen.sum(0))]


def summarise(cfg, recipe, window, names, correct, probs, conflicts, n_classes: int) -> dict:
    """The report's numbers: per row and split, accuracy (mean and sd over seeds, ddof = 1), NLL and ECE;
    the paired comparisons; the training x scoring grid; the rows on images the background misleads."""
    recommended = names[("band", "window")]
    summary = {}
    for method, by in correct.items():
        summary[method] = {}
        for split, v in by.items():
            mean, sd = mean_sd([h.mean() for h in v])
            summary[method][split] = {"mean": mean, "std": sd, "per_seed": [float(h.mean()) for h in v],
                                      **{k: float(np.mean([r[k] for r in probs[method][split]]))
                                         for k in ("nll", "ece")}}
    targets = target_margins(names, window)
    others = [m for m in correct if m != recommended]
    def paired(row, rival):  # row minus rival on each test split, the same images and seeds
        return {split: hierarchical_difference(correct[row][split], correct[rival][split]) for split in TEST_SPLITS}

    comparisons = {rival: paired(recommended, rival) for rival in others}
    swap = names.get(("swap", "window"))
    opt_in = None
    if swap in correct:  # the opt-in row against the recommended row's rivals, its own large t in place of theirs
        margins = target_margins(names, window, "swap")
        opt_in = {"row": swap, "targets": margins,
                  "comparisons": {rival: paired(swap, rival) for rival in margins if rival in correct}}
    grid_contrasts = {}
    for key, label in (("band", "adapters trained over the recipe's band"), ("all", "adapters trained over all t"),
                       ("swap", "the opt-in adapters (coarse swap)")):
        for other in ("all t", "large t", "TiF weight"):
            a, b = names.get((key, "window")), names.get((key, other))
            if a in correct and b in correct:
                grid_contrasts[f"{label}: the window minus {other}"] = hierarchical_difference(
                    correct[a]["decorrelated"], correct[b]["decorrelated"])
    for s in SCORINGS:
        a, b = names.get(("band", s)), names.get(("all", s))
        if a in correct and b in correct:
            grid_contrasts[f"scored by {s}: trained over the band minus trained over all t"] = hierarchical_difference(
                correct[a]["decorrelated"], correct[b]["decorrelated"])
    misled = {}
    for method, per_seed in conflicts.items():
        n = sum(r["images"] for r in per_seed)
        misled[method] = {"images": n, "accuracy": sum(r["correct"] for r in per_seed) / max(n, 1),
                          "to_background": sum(r["to_background"] for r in per_seed) / max(n, 1)}
    grid = {split: {key: {s: summary[names[(key, s)]][split]["mean"]
                          for s in SCORINGS if names.get((key, s)) in summary}
                    for key in ("band", "all", "swap") if names.get((key, "window")) in summary}
            for split in TEST_SPLITS}
    return {
        "config": asdict(cfg),
        "recipe": recipe.to_dict(), "results": summary, "comparisons": comparisons, "recommended": recommended,
        "window": list(window), "targets": targets, "zero_shot": zero_shot_name(window),
        "grid": {"scorings": {s: window_of(s, window) for s in SCORINGS}, "accuracy": grid,
                 "contrasts": grid_contrasts, "pairs_per_window": cfg.pairs_per_window},
        "opt_in": opt_in, "background_disagrees": misled, "n_classes": n_classes,
        "chance": 1 / n_classes,
    }
