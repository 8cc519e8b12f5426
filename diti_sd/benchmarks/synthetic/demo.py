"""The demo: the seed's claim on the synthetic fine-grained benchmark, on the shipped tiny base model.

Per seed: sample a k-shot train split (background colour follows the class), fit class adapters with
the recommended recipe (its training window, prior preservation) and with the training window widened
to all of [0, 1000), then score decorrelated and correlated test splits on one shared set of (t, noise)
pairs (``demo_scoring``), so that each adapter set under each scoring window or weight is read off the
same UNet calls, with the same number of pairs in every window. Also read: the base model alone as a
zero-shot classifier (what it knows before any adapter), nearest-prototype baselines, linear probes on pixels
and on VAE latents (their regularisation chosen on validation), and, on the
decorrelated split, how each row does on the images whose background belongs to another class.
Every comparison is a paired difference on the same images, with a hierarchical bootstrap interval
(seeds, then images within seeds).

``--full`` reads the sealed test streams (seeds 501-510): no tuning reads them, each read goes on the ledger
(``docs/reads/``), and the README's figures are such a read (docs/benchmarks.md, "Sealed test protocol").
Each seed's figures are saved under ``OUT/seeds/`` as it finishes, so a killed run continues where it stopped.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...baselines.probe import fit_probe
from ...errors import ConfigError
from ...files import atomic_write
from ...metrics import calibration_report, standardise
from ...plotting import plot_reliability
from ...recipes import load_recipe
from ...scoring.replay import weighted_mean
from .data import SyntheticSpec
from .ledger import check_unread, default_ledger, fingerprint, record_read
from .report import BAND_SETS, BANDS, plot_bands, plot_examples, plot_shortcut, render_markdown, save_samples
from .scoring import (
    SCORINGS,
    background_classes,
    coarser_pairs,
    disagreement,
    pair_seeds,
    prototype_logits,
    scoring_weights,
    window_accuracy,
    zero_shot_logits,
)
from .streams import SyntheticSeed
from .summary import (
    PROBES,
    PROTOTYPES,
    TEST_SPLITS,
    add_auto_swap_row,
    auto_swap_name,
    band_means,
    method_names,
    summarise,
    zero_shot_name,
)

# the sealed test streams of `--full`: never read by tuning (eval/tune_synthetic.py refuses them and the
# retired ones); 401-405 were read three times and are retired
SEALED_SEEDS = tuple(range(501, 511))
RETIRED_SEEDS = (401, 402, 403, 404, 405)


def sealed_message(seeds, also=()) -> str | None:
    """Why a study may not run on ``seeds`` (the sealed or retired test seeds of ``demo --full``, and ``also``),
    or None: studies choose and measure on validation seeds."""
    sealed = sorted(set(seeds) & set(SEALED_SEEDS + RETIRED_SEEDS + tuple(also)))
    return (f"seeds {sealed} are sealed (or retired) test seeds: choose and measure on validation seeds "
            f"(e.g. 11-20)") if sealed else None


ZERO_SHOT_PAIRS = 8  # the pairs of the window the base alone is read on (every caption at each): half of them
# The adapters trained over all t (the reference-style rivals) on top of the recipe: searched with the
# recipe's grid, validation seeds and rule (eval/tune_synthetic.py; docs/benchmarks.md gives each family's
# budget): it gave them the recipe's learning rate, colour jitter and test-time scales (their UNet scale was 1 until
# the re-check on predict's grid of 2026-12-07 moved it to the recipe's 0.6), and kept their LoRA rank at 8 where the
# recipe's moved to 16 and their prior images under the generic prompt where the recipe's moved to the class's
WIDE_OVERRIDES: tuple[str, ...] = ("lora.rank=8", "lora.text_rank=8", "fit.prior_prompt=generic")
# The opt-in row: the recipe with every shot's coarse content swapped for a prior image's (fit.coarse_swap,
# diti_sd/training/coarse_swap.py). Not the rule's choice (validation drawn as a user's rewards the shortcut it
# removes); the row shows what a user who takes the method's premise as given, that a fine-grained class lives
# in fine attributes, gets. Sigma is the option's default; the rate, every shot, was fixed after rates 0.5 and 1
# had been read on the oracle stream (docs/notes/2026-12-05-coarse-swap.md)
SWAP_OVERRIDES: tuple[str, ...] = ("fit.coarse_swap=1.0",)
# 50 test images per split and seed over 10 seeds, the zero-shot row on 8 of the window's pairs as in the
# short run: about 93,000 UNet calls a seed to score the two adapter sets (the opt-in set adds a fit and about
# 19,000 calls: 120 images x 5 classes x 32 pairs; each sealed read's time is in docs/benchmarks.md); the
# seed-to-seed spread, not the images within a seed, dominates the intervals
FULL = {"seeds": list(SEALED_SEEDS), "test_per_class": 10, "zero_shot_pairs": ZERO_SHOT_PAIRS}
# what a seed's saved figures hold: a saved seed of another version is run again (2: the opt-in set on every
# pair, and the shots' coarse-shortcut check; 3: the rows on the validation images that break the accident;
# 4: the class count, and validation pairs whose noise no test pair shares; 5: the reference's t grid and
# predict's noise at each t)
RECORD = 5


@dataclass
class DemoConfig:
    # the headline base: its UNet never saw the class textures (recipes/base/tiny-base-unseen.yaml); the
    # base that knows them by name is builtin:tiny-base
    model: str = "builtin:tiny-base-unseen"
    recipe: str = "synthetic"  # its scoring window is the recommended one; large t is the rest above it
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    shots: int = 8
    test_per_class: int = 8
    # (t, noise) pairs in each scoring window, all t and TiF's weight included: the recipe's grid size, so that
    # the window's are the t `predict` scores (scoring_weights)
    pairs_per_window: int = 16
    # the all-t adapters' own settings (chosen for the synthetic recipe; [] keeps the recipe's)
    wide_overrides: list[str] = field(default_factory=lambda: list(WIDE_OVERRIDES))
    # the opt-in row's settings on top of the recipe ([]: no such row, one fit less per seed)
    swap_overrides: list[str] = field(default_factory=lambda: list(SWAP_OVERRIDES))
    # the opt-in set gets the shots' object masks (fit(masks=...)): the swap keeps each object and swaps the rest
    swap_masks: bool = False
    # how many of the window's pairs the zero-shot row reads (None: all). It scores a caption prompt per (texture,
    # background) pair, the backgrounds' count times an adapter set's calls per pair, so the short run reads
    # half to stay within its few minutes
    zero_shot_pairs: int | None = ZERO_SHOT_PAIRS
    steps: int | None = None  # fit steps per class (None: the recipe's)
    samples_per_class: int = 4
    # the validation stream (drawn as the shots are: the background follows the class) that each method's
    # temperature and the probes' regularisation are chosen on
    val_per_class: int = 4
    device: str = "cpu"
    full: bool = False  # the README's run: the sealed seeds and FULL test images
    # the share of the shots, and of the validation images drawn as they are, whose background follows the
    # class: 1 is the headline; below it a labelled variant in which some break the accident
    shortcut_rate: float = 1.0

    def __post_init__(self):
        if self.full:
            self.seeds, self.test_per_class = list(FULL["seeds"]), FULL["test_per_class"]
            self.zero_shot_pairs = FULL["zero_shot_pairs"]


def code_version() -> dict:
    """The commit the run is made at (and whether the tree had changes), where the package is a checkout."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        from ...version import __version__

        return {"commit": None, "version": __version__}


@dataclass
class _SeedScorer:
    """One seed's adapter sets (the recipe's band, all t, the opt-in row's) and the pairs they are scored on."""

    sets: dict  # "band" | "all" | "swap" -> classifier
    t: torch.Tensor
    noise: torch.Tensor
    weights: dict  # scoring -> per-pair weight
    names: dict
    zero_shot: str
    train_pix: torch.Tensor
    train_lat: torch.Tensor
    train_y: np.ndarray
    label_of: dict
    spec: SyntheticSpec
    progress: bool
    probes: dict = field(default_factory=dict)

    def fit_probes(self, val) -> None:
        """What a user would fit on the same images: a logistic-regression probe on pixels and on the VAE's
        latents, its regularisation chosen on ``val`` (the stream the temperatures are chosen on)."""
        val_y = np.array([self.label_of[self.spec.classnames[i]] for i in val.labels])
        val_x = (torch.stack(val.images), self.sets["band"].encode(val.images))
        for name, train_x, x in zip(PROBES, (self.train_pix, self.train_lat), val_x):
            self.probes[name] = fit_probe(train_x.flatten(1), self.train_y, x.flatten(1), val_y)

    def logits(self, data, noise: torch.Tensor | None = None):
        """Every row's logits on ``data`` (one dense pass per adapter set), the labels, and each set's errors;
        ``noise``: the pairs' noise for this stream (default: the test pairs')."""
        clf = self.sets["band"]
        latents = clf.encode(data.images)
        noise = self.noise if noise is None else noise
        errors = {key: c.dense_errors(latents, self.t, noise, progress=self.progress) for key, c in self.sets.items()}
        logits = {self.names[(key, s)]: -weighted_mean(err, self.weights[s])
                  for key, err in errors.items() for s in SCORINGS if s in self.weights and (key, s) in self.names}
        logits[self.zero_shot] = zero_shot_logits(clf.backbone_, latents, self.t, noise, self.weights["zero-shot"],
                                                  self.spec, self.label_of)
        logits[PROTOTYPES[0]] = prototype_logits(self.train_pix, self.train_y, torch.stack(data.images))
        logits[PROTOTYPES[1]] = prototype_logits(self.train_lat, self.train_y, latents)
        for name, x in zip(PROBES, (torch.stack(data.images), latents)):
            if name in self.probes:
                logits[name] = self.probes[name].logits(x.flatten(1))
        return logits, np.array([self.label_of[self.spec.classnames[i]] for i in data.labels]), errors


def _run_seed(cfg: DemoConfig, recipe, wide_recipe, swap_recipe, seed: int, window, names, progress: bool,
              samples_to: Path | None) -> dict:
    """One seed's fits and reads: every row's per-image hits and calibration on each test split, the bands,
    the memorisation figures; ``samples_to``: where to draw the adapters' samples (the first seed's)."""
    recommended = names[("band", "window")]
    run = SyntheticSeed.for_recipe(recipe, seed, cfg.shots, shortcut_rate=cfg.shortcut_rate)
    spec, train = run.spec, run.train
    tests = {name: run.stream(name, cfg.test_per_class) for name in TEST_SPLITS}
    labels = run.names(train)
    # each method's softmax temperature is chosen on a validation stream (CoOp's size, 4 per class); the
    # recipe's fit also reads it as a user's fit would: which of its images break the shots' accident
    val = run.stream("val", cfg.val_per_class)
    clf = run.fit(recipe, validation=val, device=cfg.device, steps=cfg.steps)
    if samples_to is not None:
        plot_shortcut(clf.fit_summary_["coarse_shortcut"], train.images, labels, val.images, run.names(val),
                      samples_to / "coarse_shortcut.png")
    wide = run.fit(wide_recipe, device=cfg.device, steps=cfg.steps, train_window=(0, 1000))
    # this seed's own noise on the shared t grid, the validation stream's drawn apart from the test streams'
    test_seed, val_seed = pair_seeds(seed)
    t, noise, weights = scoring_weights(window, cfg.pairs_per_window, clf.tif_d_, clf.backbone_.latent_shape,
                                        seed=test_seed)
    val_noise = scoring_weights(window, cfg.pairs_per_window, clf.tif_d_, clf.backbone_.latent_shape,
                                seed=val_seed)[1]
    weights["zero-shot"] = coarser_pairs(weights["window"], cfg.zero_shot_pairs)
    t_np = t.numpy()
    # the band plot reads every pair, each weighted by its stratum's width
    width = sum(weights.get(s, 0.0) for s in ("small t", "window", "large t"))
    label_of = {name: i for i, name in enumerate(clf.classes_.tolist())}
    train_lat = clf.encode(train.images)
    train_y = np.array([label_of[n] for n in labels])
    sets = {"band": clf, "all": wide}  # each scored at its own recipe's test-time scales, as its predict
    if swap_recipe is not None:
        sets["swap"] = run.fit(swap_recipe, device=cfg.device, steps=cfg.steps, masks=cfg.swap_masks)
    # TiF's per-t weight from this seed's train latents (the same for every fit)
    record = {"correct": {}, "probs": {}, "conflicts": {}, "bands": {}, "memorised": {}, "tif_d": clf.tif_d_,
              "coarse_shortcut": clf.fit_summary_["coarse_shortcut"], "n_classes": len(label_of)}
    # memorisation: the shots themselves (their background follows the class), the same shots with another
    # class's background, and more images drawn like the shots
    for key, data in (("the shots", train), ("the shots, another class's background",
                                              run.stream("train, other backgrounds", cfg.shots)),
                      ("held-out shots", run.stream("held-out shots", cfg.shots))):
        err = clf.dense_errors(clf.encode(data.images), t, noise)
        hits = weighted_mean(err, weights["window"]).argmin(1) == np.array([label_of[n] for n in run.names(data)])
        record["memorised"][key] = float(hits.mean())

    scorer = _SeedScorer(sets, t, noise, weights, names, zero_shot_name(window), torch.stack(train.images),
                         train_lat, train_y, label_of, spec, progress)
    scorer.fit_probes(val)
    val_logits, val_y, _ = scorer.logits(val, val_noise)
    # a user's comparison: the recommended and opt-in rows on the validation images that break the accident
    breaking = (clf.fit_summary_["coarse_shortcut"].get("validation") or {}).get("breaking", [])
    record["breaking_val"] = {m: val_logits[m].argmax(1)[breaking] == val_y[breaking]
                              for m in (recommended, names[("swap", "window")]) if m in val_logits}
    for split, data in tests.items():
        logits, y, errors = scorer.logits(data)
        background = background_classes(data.images, spec, label_of) if split == "decorrelated" else None
        for method, scores in logits.items():
            predicted = scores.argmax(1)
            record["correct"].setdefault(method, {})[split] = predicted == y
            record["probs"].setdefault(method, {})[split] = calibration_report(
                standardise(val_logits[method]), val_y, standardise(scores), y)
            if background is not None:
                record["conflicts"][method] = disagreement(predicted, y, background)
        for key, tag in BAND_SETS.items():
            if key in errors:
                record["bands"][f"{tag}|{split}"] = [window_accuracy(errors[key], t_np, width, y, band)
                                                     for band in BANDS]
        if samples_to is not None and split == "decorrelated":
            predicted = logits[recommended].argmax(1)
            record["examples"] = (data, clf.classes_[predicted], [clf.classes_[i] for i in y], window)
    if samples_to is not None:
        samples, sample_labels = clf.sample(n_per_class=cfg.samples_per_class, steps=20, guidance=1.0, seed=seed)
        save_samples(samples, sample_labels, cfg.samples_per_class, samples_to / "adapter_samples.png")
    return record


def run_demo(cfg: DemoConfig, out: str | Path = "reports/demo", progress: bool = True,
             ledger: str | Path | None = None, reason: str | None = None) -> dict:
    """The demo; a sealed run (``cfg.full``) is checked against the ``ledger`` (default: the checkout's) first and
    recorded in it after."""
    ledger = default_ledger() if ledger is None else ledger
    start = time.time()
    code = code_version()  # read before the work: the tree may change while a long run goes on
    out = Path(out)
    recipe = load_recipe(cfg.recipe, {"model": cfg.model})
    wide_recipe = load_recipe(recipe, cfg.wide_overrides)  # a bad override fails before any fit
    swap_recipe = load_recipe(recipe, cfg.swap_overrides) if cfg.swap_overrides else None
    if cfg.swap_masks and not cfg.swap_overrides:
        raise ConfigError("swap_masks gives the opt-in set its shots' masks, but there is no opt-in set "
                          "(swap_overrides is empty); set both or neither")
    SyntheticSpec(shortcut_rate=cfg.shortcut_rate)  # a bad rate fails before anything is written
    sealed = list(cfg.seeds) == list(SEALED_SEEDS)
    method = fingerprint(asdict(cfg), recipe.to_dict(), cfg.model)
    if sealed:
        check_unread(Path(ledger), cfg.seeds, method, reason)
    out.mkdir(parents=True, exist_ok=True)
    window = (recipe.score.t_min, recipe.score.t_max)
    if window[1] >= 1000:
        raise ConfigError(f"the demo compares the recipe's scoring window with large t above it; recipe "
                          f"{cfg.recipe!r} scores up to t = {window[1]}: set score.t_max below 1000")
    scoring_weights(window, cfg.pairs_per_window)  # a bad pair count fails before any fit
    if cfg.zero_shot_pairs is not None and (not 1 <= cfg.zero_shot_pairs <= cfg.pairs_per_window
                                            or cfg.pairs_per_window % cfg.zero_shot_pairs):
        raise ConfigError(f"zero_shot_pairs = {cfg.zero_shot_pairs}: it must divide pairs_per_window = "
                          f"{cfg.pairs_per_window} (the row reads every k-th pair of the window), or be None for "
                          f"all of the window's pairs")
    names = method_names(window, cfg.swap_masks)
    correct: dict[str, dict[str, list[np.ndarray]]] = {}  # method -> split -> per seed, per image
    probs: dict[str, dict[str, list[dict]]] = {}  # method -> split -> per seed, its calibration report
    conflicts: dict[str, list[dict]] = {}  # method -> per seed, on decorrelated images with another class's background
    bands: dict[str, list[list[float]]] = {}
    memorised: dict[str, list[float]] = {}  # images -> per seed, the recommended row's accuracy on them
    d_values, shortcuts, examples = [], [], None
    breaking_val: dict[str, list[np.ndarray]] = {}  # row -> per seed, hits on the val images breaking the accident
    # a seed's figures are kept as it finishes: a killed run continues from the next seed, to the same report
    per_seed = fingerprint({**asdict(cfg), "seeds": None, "full": None, "record": RECORD}, recipe.to_dict(),
                           cfg.model)
    for seed in tqdm(cfg.seeds, desc="seeds", disable=not progress):
        path = out / "seeds" / f"{seed}.pt"
        record = torch.load(path, weights_only=False) if path.is_file() else None
        if record is None or record["fingerprint"] != per_seed:
            record = _run_seed(cfg, recipe, wide_recipe, swap_recipe, seed, window, names, progress,
                               out if seed == cfg.seeds[0] else None)
            record["fingerprint"] = per_seed
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, lambda tmp, record=record: torch.save(record, tmp))
        for row, by_split in record["correct"].items():
            for split, hits in by_split.items():
                correct.setdefault(row, {}).setdefault(split, []).append(hits)
                probs.setdefault(row, {}).setdefault(split, []).append(record["probs"][row][split])
        for row, found in record["conflicts"].items():
            conflicts.setdefault(row, []).append(found)
        for key, accuracy in record["bands"].items():
            bands.setdefault(key, []).append(accuracy)
        for key, accuracy in record["memorised"].items():
            memorised.setdefault(key, []).append(accuracy)
        d_values.append(record["tif_d"])
        shortcuts.append(record["coarse_shortcut"])
        for row, hits in record["breaking_val"].items():
            breaking_val.setdefault(row, []).append(hits)
        examples = record.get("examples") if examples is None else examples
    auto_picks = add_auto_swap_row(names, window, correct, probs, breaking_val)
    report = summarise(cfg, recipe, window, names, correct, probs, conflicts, n_classes=record["n_classes"])
    report["auto_swap"] = None if auto_picks is None else {"row": auto_swap_name(window), "swap_on_seeds": [
        seed for seed, pick in zip(cfg.seeds, auto_picks) if pick]}
    report["code"] = code
    report["sealed"] = sealed
    report.update({
        "memorisation": {k: {"mean": float(np.mean(v)), "per_seed": v} for k, v in memorised.items()},
        "tif_d": d_values, "fingerprint": method, "coarse_shortcut": shortcuts,
        "breaking_validation": {row: {"images": int(sum(len(h) for h in hits)),
                                      "right": int(sum(h.sum() for h in hits)),
                                      "per_seed": [[int(h.sum()), len(h)] for h in hits]}
                                for row, hits in breaking_val.items()},
        "bands": {"edges": [list(b) for b in BANDS], "accuracy": {k: band_means(v) for k, v in bands.items()}},
        "seconds": round(time.time() - start, 1),
        "peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "torch_threads": torch.get_num_threads(),
    })
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    atomic_write(out / "README.md", lambda tmp: tmp.write_text(render_markdown(report)))
    plot_bands(report, out / "accuracy_by_band.png")
    pooled = {method: ({k: np.sum([r["bins"][k] for r in by["decorrelated"]], 0) for k in ("count", "confidence",
                                                                                      "correct")},
                       float(np.mean([r["ece"] for r in by["decorrelated"]]))) for method, by in probs.items()}
    plot_reliability(pooled, "decorrelated test images, all seeds: reliability", out / "reliability.png")
    if examples is not None:
        plot_examples(*examples, out / "test_predictions.png")
    if sealed:
        record_read(Path(ledger), report, method, reason)
    return report
