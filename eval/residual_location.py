"""Where in the image the class evidence at small t lies: the error residual by region and by spatial frequency.

    python eval/residual_location.py --seeds 11-20 --out residual.json

A diagnostic of how the adapters read the shortcut, never a rule. Per seed the recipe's adapters are fitted
on the k-shot split; each image of the user-like validation stream (background follows the class) and of
the labelled oracle stream (independent) is noised at the seed's validation pairs below ``--t-max``, every
class predicts the noise, and the per-pixel residual (predicted minus true noise, in latent space) is kept.
The image's score per class is then its mean squared residual under each reading:

- ``all``: the whole latent (what the product scores);
- ``object`` / ``background``: weighted by each latent cell's share of object (or background) pixels, read
  from the image (a pixel whose colour differs from the corner's is object);
- ``minus mean``: the residual less its spatial mean per channel (a uniform offset removed);
- ``high-pass 3``: the residual less its 3x3 local mean (smooth errors removed).

If the adapters read the background through a colour offset where the background is, ``background`` would
carry the oracle's errors and ``object`` or the high-pass would be right more often; accuracy and the
true-class log-likelihood of each reading are printed per stream, paired per seed against ``all``.
``--background-detail A`` (``--background-detail-kind``): the benchmark's variant whose backgrounds carry a fine
pattern of their own; the object's cells are then read off the generator's exact masks, since the colour no longer
tells them. ``--train-stream``: fit on shots without the accident instead (the control); ``--set KEY=VALUE`` and
``--masks``: fit with recipe values and the shots' exact masks (e.g. the whole-background swap). ``--cache``: one
file per seed, so a killed run resumes and halves run in parallel. ``--masks attention`` (``--test-masks
attention``): the fit's (the readings') masks are read off the base as a user without masks would read them
(:class:`~diti_sd.attention_masks.AttentionMasks`: the word "pattern" under every caption of the base's vocabulary,
shrunk, at ``--mask-upscale``), not the generator's; ``--fit-masks-unshrunk``: the fit's kept as read (the
attention-masks study's best row); ``--test-masks-unshrunk``: the readings' kept as read.

    python eval/residual_location.py --seeds 11-20 --background-detail 0.1 --background-detail-kind class \
        --cache reports/residual --out docs/notes/2026-12-06-residual-location-class-detail.json
    python eval/residual_location.py --seeds 11-20 --background-detail 0.1 --background-detail-kind class \
        --set fit.coarse_swap=1.0 --set fit.coarse_sigma=0.125 --set fit.swap_background=whole --masks \
        --cache reports/residual --out docs/notes/2026-12-06-residual-location-class-detail-whole.json
    python eval/residual_location.py --seeds 11-20 --background-detail 0.1 --background-detail-kind class \
        --set fit.coarse_swap=1.0 --set fit.coarse_sigma=0.125 --set fit.swap_background=whole \
        --masks attention --test-masks attention --cache reports/residual \
        --out docs/notes/2026-12-07-residual-location-class-detail-whole-attention.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diti_sd.attention_masks import AttentionMasks, resolve_masks
from diti_sd.backbone import load_backbone
from diti_sd.benchmarks.synthetic.demo import sealed_message
from diti_sd.benchmarks.synthetic.scoring import PAIRS_RULE, stratified_pairs
from diti_sd.benchmarks.synthetic.streams import TRAIN_STREAMS, SyntheticSeed
from diti_sd.cli.common import seed_list
from diti_sd.files import atomic_write, cached_json
from diti_sd.recipes import load_recipe
from diti_sd.scoring import batch_residuals
from diti_sd.scoring.auto import per_image_log_likelihood
from diti_sd.seeding import VALIDATION_PAIRS, derive_seed
from diti_sd.stats import mean_se

_spec = importlib.util.spec_from_file_location("tune_synthetic", Path(__file__).with_name("tune_synthetic.py"))
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)
_spec = importlib.util.spec_from_file_location("attention_masks", Path(__file__).with_name("attention_masks.py"))
attention = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attention)

STREAMS = ("val", "oracle val")
READINGS = ("all", "object", "background", "minus mean", "high-pass 3")


def object_share(images: torch.Tensor, side: int) -> torch.Tensor:
    """Per latent cell (n, 1, side, side), the share of its pixels whose colour is not the corner's."""
    differs = (images - images[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.05
    return F.adaptive_avg_pool2d(differs.float(), side)


def readings(residual: torch.Tensor, share: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each reading's mean squared residual: ``residual`` (n, C, P, c, h, w), ``share`` (n, 1, h, w) -> (n, C)."""
    n, n_classes, n_pairs = residual.shape[:3]
    flat = residual.flatten(0, 2)
    weight = share[:, None, None].expand(n, n_classes, n_pairs, *share.shape[1:]).flatten(0, 2)
    smooth = F.avg_pool2d(flat, 3, 1, 1, count_include_pad=False)
    out = {"all": flat.pow(2), "object": flat.pow(2) * weight, "background": flat.pow(2) * (1 - weight),
           "minus mean": (flat - flat.mean((2, 3), keepdim=True)).pow(2), "high-pass 3": (flat - smooth).pow(2)}
    return {k: v.flatten(1).mean(1).view(n, n_classes, n_pairs).mean(2) for k, v in out.items()}


@torch.no_grad()
def residuals(clf, latents: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per (image, class, pair) the predicted minus the true noise, at the recipe's test-time scales."""
    contexts = clf.class_contexts()
    n, n_classes = len(latents), contexts.shape[0]
    out = torch.zeros(n, n_classes, len(t), *latents.shape[1:])
    ii = torch.arange(n)
    for c in range(n_classes):
        for p in range(len(t)):
            out[:, c, p] = batch_residuals(clf.backbone_, clf.adapters_, latents, contexts, t, noise, ii,
                                           torch.full((n,), c), torch.full((n,), p),
                                           clf.recipe_.score.unet_scale).cpu()
    return out


def mask_share(masks: list, side: int) -> torch.Tensor:
    """Per latent cell (n, 1, side, side), the share of its pixels inside each image's object mask."""
    return F.adaptive_avg_pool2d(torch.stack(masks).float()[:, None], side)


def attention_spec(model: str, seed: int, upscale: int, shrink: bool = True) -> AttentionMasks:
    """How a user without masks reads them here: the word every caption gives the object, under every caption of
    the base's vocabulary (the attention-masks study's fitted set), shrunk (the library's default) or not."""
    return AttentionMasks("pattern", attention.caption_prompts(model)["caption vocabulary"], seed=seed,
                          upscale=upscale, shrink=shrink)


def read_attention(spec: AttentionMasks, backbone, images, cache: Path | None, name: str) -> list:
    """``spec``'s masks of ``images``, kept under ``cache`` as ``name`` (resumable; re-read if the images or the
    reading differ)."""
    path = None if cache is None else Path(cache) / "attention-masks" / f"{name}.pt"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return resolve_masks(spec, backbone, images, path=path, resume=True)[0]


def one_seed(seed: int, per_class: int, pairs: int, t_max: int, detail: dict | None = None,
             train_stream: str = "train", overrides: list[str] | None = None, masks: str | None = None,
             test_masks: str = "exact", upscale: int = 2, cache: Path | None = None,
             fit_shrink: bool = True, test_shrink: bool = True) -> dict:
    recipe = load_recipe("synthetic", overrides or [])
    run = SyntheticSeed.for_recipe(recipe, seed, 8, train_stream=train_stream, **(detail or {}))
    variant = json.dumps(detail or {}, sort_keys=True)
    tag = hashlib.sha256(variant.encode()).hexdigest()[:8]
    spec = attention_spec(recipe.model, seed, upscale, test_shrink)
    if masks == "attention":
        backbone = load_backbone(recipe.model, device="cpu", dtype=torch.float32, progress=False)
        # the fit takes the run's shot masks: here the attention masks in place of the generator's
        kept = "" if fit_shrink else "-unshrunk"
        run.train_masks = read_attention(attention_spec(recipe.model, seed, upscale, fit_shrink), backbone,
                                         run.train.images, cache, f"seed{seed}-{train_stream}{kept}-{tag}")
    clf = run.fit(recipe, masks=masks is not None)
    t, noise, _ = stratified_pairs([0, t_max], [pairs], clf.backbone_.latent_shape, derive_seed(seed, VALIDATION_PAIRS))
    out = {}
    for name in STREAMS:
        data = run.stream(name, per_class)
        latents, labels = clf.encode(data.images), run.labels(data, clf)
        if test_masks == "attention":
            read = read_attention(spec, clf.backbone_, data.images, cache,
                                  f"seed{seed}-{name.replace(' ', '-')}{per_class}{'' if test_shrink else '-unshrunk'}"
                                  f"-{tag}")
            share = mask_share(read, latents.shape[-1])
        elif run.spec.background_detail:
            share = mask_share(run.stream_masks(name, per_class), latents.shape[-1])
        else:
            share = object_share(torch.stack(data.images), latents.shape[-1])
        out[name] = {k: {"accuracy": float((e.numpy().argmin(1) == labels).mean()),
                         "ll": float(np.mean(per_image_log_likelihood(e.numpy(), labels)))}
                     for k, e in readings(residuals(clf, latents, t, noise), share).items()}
    return out


def paired_summary(per_seed: dict, seeds: list, streams, readings) -> dict:
    """Per stream and reading, accuracy and the true class's log-likelihood: the mean over ``seeds``, and the gain
    over the whole image (reading ``all``) paired per seed, with its SE."""
    summary = {}
    for stream in streams:
        for reading in readings:
            row = summary.setdefault(stream, {}).setdefault(reading, {})
            for part in ("accuracy", "ll"):
                values = [per_seed[s][stream][reading][part] for s in seeds]
                gain, se = mean_se([v - per_seed[s][stream]["all"][part] for v, s in zip(values, seeds)])
                row[part] = {"mean": float(np.mean(values)), "gain": gain, "se": se}
    return summary


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="11-20")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--t-max", type=int, default=200, help="the pairs lie in [0, t_max)")
    tune.add_background_detail_args(parser)
    parser.add_argument("--train-stream", choices=TRAIN_STREAMS, default="train",
                        help="the shots the adapters are fitted on (the other: without the accident, a control)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="fit the adapters with this recipe value (KEY=VALUE, repeatable), e.g. the swap")
    parser.add_argument("--masks", nargs="?", const="exact", choices=["exact", "attention"], default=None,
                        help="the fits get the shots' object masks: the generator's, or read off the base")
    parser.add_argument("--test-masks", choices=["exact", "attention"], default="exact",
                        help="where the readings' object cells come from: the generator (or the colour), or the base")
    parser.add_argument("--mask-upscale", type=int, default=2, help="AttentionMasks.upscale of the masks read")
    parser.add_argument("--fit-masks-unshrunk", action="store_true",
                        help="with --masks attention: the fit's masks as read, not shrunk")
    parser.add_argument("--test-masks-unshrunk", action="store_true",
                        help="with --test-masks attention: the readings' masks as read, not shrunk")
    parser.add_argument("--cache", type=Path, default=None, help="one result per seed, resumable")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if why := sealed_message(args.seeds):
        raise SystemExit(why)
    if args.fit_masks_unshrunk and args.masks != "attention":
        parser.error("--fit-masks-unshrunk keeps the fit's attention masks as read: pass --masks attention")
    if args.test_masks_unshrunk and args.test_masks != "attention":
        parser.error("--test-masks-unshrunk keeps the readings' attention masks as read: pass --test-masks attention")
    detail = tune.background_detail(parser, args)
    # the resolved recipe, not how it was spelled: a changed recipe or base refits rather than reads a stale result
    recipe = tune.recipe_key(load_recipe("synthetic", args.overrides))
    per_seed = {}
    for seed in args.seeds:
        parts = ["residual_location", recipe, seed, args.per_class, args.pairs, args.t_max, detail, args.train_stream,
                 {"masks": args.masks == "exact"}, PAIRS_RULE]
        if "attention" in (args.masks, args.test_masks):  # the keys of the runs before these options stay as they were
            parts.append({"masks": args.masks, "test masks": args.test_masks,
                          "reading": attention_spec(load_recipe("synthetic").model, seed, args.mask_upscale).record(1),
                          **({"fit masks unshrunk": True} if args.fit_masks_unshrunk else {}),
                          **({"test masks unshrunk": True} if args.test_masks_unshrunk else {})})
        per_seed[seed] = cached_json(args.cache, parts, lambda seed=seed: one_seed(
            seed, args.per_class, args.pairs, args.t_max, detail, args.train_stream, args.overrides, args.masks,
            args.test_masks, args.mask_upscale, args.cache, not args.fit_masks_unshrunk, not args.test_masks_unshrunk))
    summary = paired_summary(per_seed, args.seeds, STREAMS, READINGS)
    for stream in STREAMS:
        for reading in READINGS:
            row = summary[stream][reading]
            print(f"{stream:11s} {reading:12s} accuracy {row['accuracy']['mean']:.3f} ({row['accuracy']['gain']:+.3f} "
                  f"SE {row['accuracy']['se']:.3f})  log-lik {row['ll']['mean']:.3f} ({row['ll']['gain']:+.3f} "
                  f"SE {row['ll']['se']:.3f})")
    result = {"seeds": args.seeds, **detail, "train_stream": args.train_stream, "overrides": args.overrides,
              "masks": args.masks, "test_masks": args.test_masks,
              **({"mask_upscale": args.mask_upscale} if "attention" in (args.masks, args.test_masks) else {}),
              "fit_masks_unshrunk": args.fit_masks_unshrunk, "test_masks_unshrunk": args.test_masks_unshrunk,
              "per_seed": per_seed,
              "summary": summary}
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    return result


if __name__ == "__main__":
    main()
