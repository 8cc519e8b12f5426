"""The demo's report: the table, the paired comparisons against the targets, and the pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...coarse import shortcut_warning
from ...files import atomic_write
from ...plotting import pyplot, save_figure
from ...timesteps import tif_weights
from .summary import target_status

BANDS = ((0, 50), (50, 100), (100, 200), (200, 300), (300, 500), (500, 700), (700, 1000))
SPLITS = ("decorrelated", "correlated")
# adapter set -> its curves' name in the band plot (and the record's keys), and their colour
BAND_SETS = {"band": "recommended adapters", "all": "adapters trained over all t",
             "swap": "opt-in adapters (coarse swap)"}
BAND_COLOURS = {"recommended adapters": "tab:blue", "adapters trained over all t": "tab:orange",
                "opt-in adapters (coarse swap)": "tab:purple"}


def render_markdown(report: dict) -> str:
    cfg = report["config"]
    n_images = cfg["test_per_class"] * report["n_classes"]
    code = report.get("code", {})
    at = f"commit {code['commit'][:7]}{' with uncommitted changes' if code.get('dirty') else ''}" if code.get(
        "commit") else f"version {code.get('version', '?')}"
    if report.get("sealed"):
        kind = "Sealed run (`--full`): the test streams of seeds no tuning reads, read once for this change"
    else:
        kind = ("Short run: these seeds' test streams are not sealed (the short run's seeds are read often); the "
                "figures to quote are a sealed run's (`--full`, docs/benchmarks.md)")
    lines = [
        "# diti-sd demo: synthetic fine-grained benchmark",
        "",
        f"{kind}. Run at {at}. {len(cfg['seeds'])} seeds ({', '.join(map(str, cfg['seeds']))}), {cfg['shots']} "
        f"shots per class, {n_images} test images per split and seed; chance {report['chance']:.2f}. Base model "
        f"`{cfg['model']}`, recipe `{cfg['recipe']}`.",
        "",
        _accident(cfg) + "; on **decorrelated** it is independent "
        "of the class, on **correlated** it follows the train correlation. The class is a faint fine texture.",
        "",
        "| method | decorrelated | correlated | NLL / ECE decorrelated | NLL / ECE correlated |",
        "|---|---|---|---|---|",
    ]
    for method, by in report["results"].items():
        cells = [f"{by[s]['mean']:.3f} ± {by[s]['std']:.3f}" for s in SPLITS]
        cells += [f"{by[s]['nll']:.3f} / {by[s]['ece']:.3f}" if "nll" in by[s] else "" for s in SPLITS]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    lines += ["", f"Accuracy: mean ± std over seeds (ddof = 1). Every scoring window, all t and TiF's weight are "
              f"read on {report['grid']['pairs_per_window']} (t, noise) pairs of its own range (the reference's even "
              f"grid; the window's are the t `predict` scores), every method on the same ones. "
              f"NLL and expected calibration error (15 bins) of each method's probabilities (softmax of its "
              f"standardised scores), at a temperature chosen per seed on a validation stream of "
              f"{cfg.get('val_per_class', 4)} images per class drawn as the shots are (the background follows the "
              "class, as in a user's own validation images; the probes' regularisation is chosen there too); mean "
              "over seeds. Each seed has its own noise draws on a shared t grid, the validation stream's apart from "
              "the test streams'. The zero-shot row is the base model with no adapter, prompted with a caption "
              f"for every (texture, background) pair and asked only the texture, read on {_zero_shot_pairs(cfg)}. "
              f"{_wide_settings(cfg)}{_swap_settings(cfg)}TiF's weight uses d = "
              f"{', '.join(f'{d:.2f}' for d in report['tif_d'])} (per seed, from the train latents).", "",
              *_memorisation(report), *_shortcut(report)]
    lines += _grid(report) + _misled(report)
    lines += ["## The recommended configuration against the others", "",
              f"Paired differences (recommended minus the other) on the same {n_images * len(cfg['seeds'])} "
              "images per split, with the wider of two 95 % intervals: a hierarchical bootstrap (seeds, then images "
              "within seeds) and a t interval over the per-seed differences.", "",
              "| compared with | decorrelated | correlated |", "|---|---|---|"]
    for rival, by in report["comparisons"].items():
        lines.append(f"| {rival} | {' | '.join(_interval(by[s]) for s in SPLITS)} |")
    lines += ["", *_targets(report), "", *_opt_in(report),
              f"Wall time {report['seconds']:.0f} s, peak resident memory {report['peak_memory_gib']:.2f} GiB "
              "(ru_maxrss: file-backed pages such as the libraries' included, which vary between identical "
              "installs), "
              f"{report['torch_threads']} torch threads.", "",
              "![accuracy per band of t](accuracy_by_band.png)", "",
              "![reliability on the decorrelated split](reliability.png)", "",
              "![test predictions](test_predictions.png)", "",
              "![the shots as the shortcut check blurs them](coarse_shortcut.png)", "",
              "![samples from class adapters](adapter_samples.png)", ""]
    return "\n".join(lines)


def _interval(c: dict) -> str:
    """The difference with the wider of its two intervals (a report without them shows the bootstrap's)."""
    return f"{c['mean']:+.3f} [{c.get('wide_low', c['low']):+.3f}, {c.get('wide_high', c['high']):+.3f}]"


def _memorisation(report: dict) -> list[str]:
    """The recommended adapters on their own shots, on the same shots with another class's background, and
    on more images drawn like the shots: the first and the last carry their class's background (confounded with
    it), the middle one carries another class's."""
    rows = report.get("memorisation")
    if not rows:
        return []
    cells = "; ".join(f"{k} {v['mean']:.3f}" for k, v in rows.items())
    return [f"Memorisation (recommended window, mean over seeds): {cells}. The shots' background follows their "
            "class, as does the held-out shots' (drawn as the shots are), so accuracy on those alone cannot tell an "
            "adapter that learned its images from one that learned their background; the shots with another "
            "class's background can.", ""]


def _accident(cfg: dict) -> str:
    rate = cfg.get("shortcut_rate", 1.0)
    if rate == 1.0:
        return "In the train split the background colour follows the class"
    return (f"**A variant** (`--shortcut-rate {rate!r}`; the headline: 1): in the train split, and in the validation "
            f"and correlated test images drawn as it is, the background colour follows the class on a share {rate!r} "
            "of the images and is drawn apart from it on the rest")


def _shortcut(report: dict) -> list[str]:
    """What a user sees before any fit: whether the shots' blur alone names their class (the fit's warning)."""
    per_seed = report.get("coarse_shortcut")
    if not per_seed:
        return []
    found = [r for r in per_seed if r["accuracy"] is not None]
    if not found:
        return ["The shots' coarse-shortcut check: no class has two shots, so there is nothing to leave out.", ""]
    warned = sum(shortcut_warning(r, 0.0) is not None for r in found)
    read = [r["validation"] for r in found if r.get("validation")]
    breaking = "" if not read else (
        f" Of the user-like validation images the recipe's fit was given ({read[0]['images']} a seed), "
        f"{sum(len(v['breaking']) for v in read)} on {len(read)} seeds break it (their blur points to another "
        "class): " + ("none, so nothing a user holds can tell an accident from the class, and no rule on it can "
                      "turn the coarse swap on." if not any(v["breaking"] for v in read) else
                      "a fit with and without the coarse swap can be compared on exactly those." + _breaking(report)))
    return [f"The shots' coarse content alone (blurred, sigma {found[0]['sigma_fraction']:g} of the side) names their "
            f"class on {np.mean([r['accuracy'] for r in found]):.2f} of them, leave-one-out (labels permuted: "
            f"{np.mean([r['chance'] for r in found]):.2f}); a fit with the swap off warns of it on {warned} of "
            f"{len(found)} seeds. "
            "It cannot say whether that content is the class or an accident of where the shots were taken."
            + breaking, ""]


def _breaking(report: dict) -> str:
    """The user's comparison: the recommended and opt-in rows on the validation images that break the accident."""
    rows = report.get("breaking_validation") or {}
    if not rows or not next(iter(rows.values()))["images"]:
        return ""
    said = [f"{row} {r['right']} of {r['images']}" for row, r in rows.items()]
    return (" Right on them, over all seeds: " + "; ".join(said) + " (per seed: " + "; ".join(
        f"{row.split(',')[0]} " + " ".join(f"{a}/{n}" for a, n in r["per_seed"]) for row, r in rows.items()) + ").")


def _opt_in(report: dict) -> list[str]:
    """The opt-in row against the recommended row's rivals, read the way the targets are: not targets."""
    if not report.get("opt_in"):
        return []
    status = target_status(report, opt_in=True)
    acc = status.pop("accuracy")
    rows = ["## The opt-in row, read the way the targets are (it has none)", "",
            f"`{report['opt_in']['row']}`: decorrelated {acc['measured']:.3f} (the targets ask {acc['target']:.2f} "
            "of the recommended row)."]
    for rival, t in status.items():
        if t["gain"] is None:
            rows.append(f"- minus {rival}: not measured")
            continue
        c = report["opt_in"]["comparisons"][rival]["decorrelated"]
        rows.append(f"- minus {rival}: {_interval(c)} ({'clears' if t['clears'] else 'does not clear'} "
                    f"{t['margin']:.2f} with the interval above zero)")
    auto = report.get("auto_swap")
    if auto:
        seeds = auto["swap_on_seeds"]
        which = f" ({', '.join(map(str, seeds))})" if seeds else ""
        c = report["comparisons"][auto["row"]]["decorrelated"]
        rows += ["", f"What `fit.coarse_swap_auto` keeps, seed by seed (the opt-in adapters where strictly more of the "
                 f"seed's breaking validation images are right with them, read on this demo's validation pairs, a "
                 f"proxy for the fit's own pass through predict's stages; no UNet call of its own): the swap on "
                 f"{len(seeds)} of {len(report['config']['seeds'])} seeds{which}; decorrelated "
                 f"{report['results'][auto['row']]['decorrelated']['mean']:.3f}, the recommended row minus it "
                 f"{_interval(c)}."]
    return rows + [""]


def _zero_shot_pairs(cfg: dict) -> str:
    n = cfg.get("zero_shot_pairs")
    if n is None or n >= cfg["pairs_per_window"]:
        return "all of the window's pairs"
    return f"{n} of the window's pairs, evenly spaced"


def _wide_settings(cfg: dict) -> str:
    overrides = cfg.get("wide_overrides")
    if not overrides:
        return "The adapters trained over all t use the recipe's settings. "
    return (f"The adapters trained over all t use their own settings, "
            f"{', '.join(f'`{o}`' for o in overrides)} (their search, stream and budget beside the recipe's: "
            f"docs/benchmarks.md). ")


def _swap_settings(cfg: dict) -> str:
    overrides = cfg.get("swap_overrides")
    if not overrides:
        return ""
    return (f"The opt-in row is the recipe with {', '.join(f'`{o}`' for o in overrides)}: every shot's coarse content "
            "(a Gaussian low-pass) swapped for a prior image's while training, scored on the same pairs as the "
            "recipe's adapters. It is not the recommended row: validation drawn as a user's rewards the shortcut "
            "it removes, so no rule on it would pick it; it shows what a user gets who takes as given that the "
            "class lives in fine attributes. " + (
                "Its fit is given each shot's exact object mask (the generator's; no segmenter is this exact): the "
                "object is kept as it is and only the rest is swapped, which assumes less, that the background is "
                "not the class. " if cfg.get("swap_masks") else ""))


def _grid(report: dict) -> list[str]:
    """Training band x scoring band: the scoring window's effect read with the training fixed."""
    grid = report["grid"]
    scorings = [s for s in grid["scorings"] if s in grid["accuracy"]["decorrelated"]["band"]]
    head = [f"{s} {tuple(grid['scorings'][s])}" if grid["scorings"][s] else s for s in scorings]
    rows = ["## Training band x scoring band (decorrelated)", "",
            "| adapters trained over | " + " | ".join(head) + " |", "|---|" + "---|" * len(scorings)]
    train_window = (report["recipe"]["fit"]["t_min"], report["recipe"]["fit"]["t_max"])
    for key, label in (("band", f"the recipe's band {train_window}"), ("all", "all t (0, 1000)"),
                       ("swap", f"the recipe's band {train_window}, coarse swap (opt-in)")):
        acc = grid["accuracy"]["decorrelated"].get(key)
        if acc is None:
            continue
        rows.append(f"| {label} | " + " | ".join(f"{acc[s]:.3f}" for s in scorings) + " |")
    rows += ["", "Paired 95 % intervals (the wider of the hierarchical bootstrap and the seed-level t):", ""]
    rows += [f"- {label}: {_interval(c)}" for label, c in grid["contrasts"].items()]
    return rows + [""]


def _misled(report: dict) -> list[str]:
    """Where the spurious attribute disagrees with the class."""
    rows = ["## Where the background belongs to another class (decorrelated)", "",
            "| method | images | accuracy | predicted as the background's class |", "|---|---|---|---|"]
    for method, r in report["background_disagrees"].items():
        rows.append(f"| {method} | {r['images']} | {r['accuracy']:.3f} | {r['to_background']:.3f} |")
    return rows + ["", "A classifier that reads only the background answers the background's class on every one of "
                   f"these images; chance is {report['chance']:.2f} for each column.", ""]


def _targets(report: dict) -> list[str]:
    """The demo's targets on the decorrelated test, each with what this run measured and whether it is met."""
    status = target_status(report)
    acc = status.pop("accuracy")
    short = "met" if acc["met"] else f"{acc['target'] - acc['measured']:.3f} short"
    rows = ["## Targets", "", f"- decorrelated accuracy at least {acc['target']:.2f}: {acc['measured']:.3f} ({short})"]
    for rival, t in status.items():
        if t["gain"] is None:
            rows.append(f"- at least {t['margin']:.2f} above {rival}: not measured (not met)")
            continue
        c = report["comparisons"][rival]["decorrelated"]
        short = "met" if t["met"] else (f"not met: {t['margin'] - t['gain']:.3f} short" if t["gain"] < t["margin"]
                                        else "not met: the interval reaches zero")
        rows.append(f"- at least {t['margin']:.2f} above {rival}, interval above zero: {_interval(c)} ({short})")
    others = [r for r in report["comparisons"] if r.startswith(("reference configuration", "nearest prototype"))]
    if others:
        rows += ["", "Compared as well, not targets (the claim is about time-steps, not TiF's weight against a "
                 "window; a prototype reads the background by construction): " + "; ".join(
                     f"{r} {_interval(report['comparisons'][r]['decorrelated'])}" for r in others) + "."]
    return rows


def plot_bands(report: dict, path: Path) -> None:
    """Accuracy when scoring with one band of t at a time, with TiF's weight for the measured d."""
    plt = pyplot()
    edges = report["bands"]["edges"]
    centres = [(lo + hi) / 2 for lo, hi in edges]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for key, acc in report["bands"]["accuracy"].items():
        tag, split = key.split("|")
        ax.plot(centres, np.array(acc, dtype=float), "-" if split == "decorrelated" else ":", marker="o",
                color=BAND_COLOURS.get(tag, "tab:grey"), label=f"{tag}, {split}")
    ax.axhline(report["chance"], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("band of t scored (points at band centres: " + ", ".join(f"[{a},{b})" for a, b in edges) + ")",
                  fontsize=8)
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    w = tif_weights(float(np.mean(report["tif_d"])))
    twin.fill_between(np.arange(1000), w, color="tab:green", alpha=0.12)
    twin.set_ylabel(f"TiF weight, d = {np.mean(report['tif_d']):.2f}", color="tab:green")
    twin.set_ylim(0, 1.05)
    if "window" in report:
        ax.axvspan(*report["window"], color="tab:blue", alpha=0.08, label="recommended scoring window")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("Accuracy per band of t (solid: decorrelated, dotted: correlated); shaded: TiF's weight")
    fig.tight_layout()
    save_figure(fig, path)


def plot_examples(data, predicted, truth, window, path: Path, n: int = 20) -> None:
    plt = pyplot()
    n = min(n, len(data))
    cols = 5
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(cols * 2, ((n + cols - 1) // cols) * 2.2))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(data.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        ok = predicted[i] == truth[i]
        ax.set_title(f"{predicted[i]}\n(true {truth[i]})", fontsize=7, color="green" if ok else "red")
    fig.suptitle(f"decorrelated test images: prediction (window {tuple(window)}), true class")
    fig.tight_layout()
    save_figure(fig, path)


def save_samples(images: torch.Tensor, labels, per_class: int, path: Path) -> None:
    from torchvision.utils import make_grid, save_image

    grid = make_grid(images, nrow=per_class, padding=1, pad_value=1.0)
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=4, mode="nearest")[0]
    atomic_write(path, lambda tmp: save_image(grid, tmp, format="png"))


def plot_shortcut(report: dict, shots, shot_names, val, val_names, path: Path) -> None:
    """The first seed's shots as the fit's shortcut check blurs them, and the validation images that break the
    accident (none on the headline, whose accident follows every image), as ``diti-sd fit`` draws them where the
    check fires (the demo draws them whatever the check says)."""
    from ...plotting import plot_coarse_shortcut

    def as_uint8(images):
        return (torch.stack(list(images)) * 255).round().to(torch.uint8)

    breaking = (report.get("validation") or {}).get("breaking", [])
    plot_coarse_shortcut(as_uint8(shots), shot_names, report, path,
                         as_uint8([val[i] for i in breaking]) if breaking else None, [val_names[i] for i in breaking])
