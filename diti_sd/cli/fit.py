"""``diti-sd fit``: sample a k-shot split of a data set and fit its class adapters."""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from .common import (
    add_attention_mask_arguments,
    add_runtime_arguments,
    attention_masks_from,
    budget_share,
    positive_int,
    positive_int_list,
)

EXAMPLE = """example:
  diti-sd fit --dataset fgvc-aircraft --data-root ~/data --shots 16 --out adapters/fgvc-16shot
  diti-sd fit --dataset fgvc-aircraft --data-root ~/data --shots 1,2,4 --out adapters/fgvc
    (several --shots: one adapter set per value, in OUT/<k>shot/)"""

# the override example of --help and the README: loads on every shipped recipe (tested)
SET_EXAMPLE = "--set fit.lr=5e-5 --set score.t_max=500"


def add_arguments(parser):
    parser.add_argument("--dataset", required=True,
                        help="a registered recipe (fgvc-aircraft, image-folder, hf, ...) or a recipe YAML path")
    parser.add_argument("--data-root", required=True, help="the data set's folder (or a hub id for hf)")
    parser.add_argument("--shots", type=positive_int_list, default=None,
                        help="images per class, or a list such as 1,2,4 (default: all train images)")
    parser.add_argument("--seed", type=int, default=1, help="k-shot sampling and training seed (CoOp: 1, 2, 3)")
    parser.add_argument("--model", default=None, help="base model: hub id, local diffusers folder, builtin:NAME")
    parser.add_argument("--out", required=True,
                        help="folder for the adapter set (and checkpoints while fitting); with several --shots, "
                             "one sub-folder <k>shot per value")
    parser.add_argument("--split", default=None,
                        help="reuse a saved k-shot split instead of sampling one: a split.json, or one of TiF's "
                             "train_<k>_<seed>.data files (the images behind the published numbers)")
    parser.add_argument("--val-per-class", type=positive_int, default=None,
                        help="validation images per class in the k-shot split (default CoOp's min(k, 4)); auto's "
                             "window and the temperature are chosen on them, so more choose better where the data "
                             "set has them")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="steps per class (default: the recipe's table)")
    parser.add_argument("--rank", type=positive_int, default=None,
                        help="LoRA rank of the UNet adapters (default: the recipe's; --set lora.text_rank=R sets the "
                             "text encoder's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override any recipe value, e.g. {SET_EXAMPLE}")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted fit in --out (finished adapter sets are kept as they are)")
    parser.add_argument("--overwrite", action="store_true", help="replace an adapter set already in --out")
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                        help="fit predict_proba's temperature on the k-shot split's validation images (CoOp's "
                             "min(k, 4) per class; on by default when the split has them; with score.weighting "
                             "auto it comes from auto's own pass at no further cost)")
    parser.add_argument("--validation-budget", type=budget_share, default=0.2, metavar="SHARE",
                        help="the validation pass (auto's window and the temperature) costs at most this share of "
                             "the fit's own UNet work (default 0.2; 'none': every validation image at "
                             "score.auto_pairs pairs)")
    masks = parser.add_mutually_exclusive_group()
    masks.add_argument("--masks", default=None, metavar="DIR",
                       help="object masks for the coarse swap (fit.coarse_swap, _auto or _premise) to keep: one image "
                            "per shot, named by the shot's id with any image suffix (an image folder's "
                            "train/Boeing/0001.jpg -> DIR/Boeing/0001.png; FGVC-Aircraft's image 1025794 -> "
                            "DIR/1025794.png), the object bright, the size of the image file; tight (a rim of "
                            "background around the object undoes the gain: docs/method.md). Needed by "
                            "fit.swap_background=whole (the rest of each shot replaced by a prior image's pixels). "
                            "Where DIR holds the validation images' masks too, the shortcut check reads them")
    masks.add_argument("--box-masks", action="store_true",
                       help="use the archive's aircraft boxes (FGVC-Aircraft's images_box.txt) as the masks: no "
                            "segmenter needed, but a box keeps background in its corners (on synthetic shots it kept "
                            "less of the swap's gain than the object's own mask: docs/method.md, 'Masks')")
    add_attention_mask_arguments(parser, masks, "(shots + validation images)")
    parser.add_argument("--export-diffusers", action="store_true",
                        help="also write each class as a diffusers LoRA file under --out/diffusers")
    parser.add_argument("--export-peft", action="store_true",
                        help="also write each class as peft adapter folders under "
                             "--out/peft/NNN-<class>/{unet,text_encoder}")
    add_runtime_arguments(parser)


def resume_hint(args) -> str:
    return f"rerun the same command with --resume to continue from the last checkpoint in {args.out}"


def run(args):
    from ..recipes import load_recipe
    from ..work_folders import (
        CHECKPOINT,
        MANIFEST,
        REPLACING,
        finished_set,
        foreign_checkpoint,
        replacing,
        working_folders,
    )
    from . import CLIError
    from .common import check_out_folder

    recipe = load_recipe(args.dataset, args.overrides)  # a bad value fails here, before torch loads
    check_out_folder(args.out)
    shots = args.shots or [None]
    if args.split and len(shots) > 1:
        raise CLIError("--split reuses one saved split; pass a single --shots value with it (or none)")
    if args.val_per_class and (args.split or not args.shots):
        raise CLIError("--val-per-class sizes the validation part of a sampled k-shot split: pass it with --shots "
                       "and without --split (a saved split keeps its own; without --shots the data set's whole "
                       "validation split is used)")
    outs = [Path(args.out)] if len(shots) == 1 else [Path(args.out) / f"{k}shot" for k in shots]
    for out in outs:
        if owner := foreign_checkpoint(out, "fit"):  # never resumed, overwritten or cleared by a fit
            raise CLIError(f"{out / CHECKPOINT} is {owner} checkpoint, not an adapter fit's; choose another --out")
    for out in [] if args.resume or args.overwrite else outs:
        if replacing(out):
            raise CLIError(f"a fit replacing the set in {out} was stopped before it saved its own; pass --resume to "
                           "finish the new fit, or --overwrite to start it afresh (to keep the old set instead, "
                           f"delete {out / REPLACING} and the checkpoints beside it)")
        if (out / MANIFEST).exists():
            if not finished_set(out):
                raise CLIError(f"a fit into {out} was stopped after its training, before its set was saved whole; "
                               "pass --resume to finish it without training again, or --overwrite to start afresh")
            raise CLIError(f"{out} already holds an adapter set; pass --overwrite to replace it or choose "
                           "another --out")
        if working_folders(out):
            raise CLIError(f"{out} holds an interrupted fit; pass --resume to continue it, or --overwrite to start "
                           "afresh")
    if args.box_masks and recipe.dataset.kind != "fgvc-aircraft":
        raise CLIError(f"--box-masks reads FGVC-Aircraft's images_box.txt; a {recipe.dataset.kind} data set has no "
                       "boxes the package reads: draw each shot's mask as an image and pass --masks DIR")
    attention = attention_masks_from(args, args.seed)
    if args.model:
        recipe.model = args.model
    from ..data import load_configured_split, load_fgvc_boxes

    train = load_configured_split(recipe.dataset, args.data_root, recipe.dataset.train_split)
    val = load_configured_split(recipe.dataset, args.data_root, recipe.dataset.val_split)
    boxes = load_fgvc_boxes(args.data_root) if args.box_masks else None
    if boxes is not None:  # every train image's box checked once, before any fit (headers only)
        from ..data import dataset_box_masks

        dataset_box_masks(train, boxes)
    # every draw to fit made and its masks checked before the first fit (headers only)
    todo = [(k, out) for k, out in zip(shots, outs) if not (args.resume and finished_set(out))]
    draws = {k: shot_draw(args, recipe, train, val, k, boxes, attention) for k, _ in todo}
    if args.overwrite and not args.resume:  # every set to replace marked at once: --resume then continues them all
        from ..distributed import is_main
        from ..work_folders import clear_earlier_work, mark_replacing

        for out in outs if is_main() else []:
            if (out / MANIFEST).exists():
                mark_replacing(out)
            # an interrupted fit's work goes now, not once the model has loaded: a kill before that would leave it
            # for the rerun's --resume to continue as if it were the new fit's
            clear_earlier_work(out)
    for k, out in zip(shots, outs):
        if k not in draws:
            print(f"{out} is already fitted; --resume continues only unfinished adapter sets")
            continue
        _fit_one(args, recipe, draws[k], out, attention)
    return 0


def shot_sets(args, recipe, train, val, shots):
    """The k-shot split ``--split`` or ``shots`` names (None: none, the data set's splits as they are) and the train
    and validation images it selects."""
    from ..data import load_split, make_kshot_split

    if args.split:
        split = load_split(args.split, train, val, dataset=recipe.name)
    elif shots:
        split = make_kshot_split(train, val, shots, args.seed, dataset=recipe.name, val_per_class=args.val_per_class)
    else:
        return None, train, val
    return split, split.select(train, "train"), split.select(val if val is not None else train, "val")


@dataclass
class ShotDraw:
    """What one fit reads from the user: its split (None: the data set's own), train and validation images, masks,
    and whether the temperature is fitted on the validation images."""

    split: object
    train_set: object
    val_set: object
    masks: object
    validation: tuple | None
    val_masks: object
    calibrate: bool


def shot_draw(args, recipe, train, val, shots, boxes: dict | None = None, attention=None) -> ShotDraw:
    """One draw's inputs, checked: too few images for k, a missing or misshapen mask, object cells without the
    validation images' masks (files' headers read, no pixels)."""
    from ..data.images import ImageSequence
    from ..data.masks import MissingMaskError, dataset_box_masks, dataset_masks
    from . import CLIError

    split, train_set, val_set = shot_sets(args, recipe, train, val, shots)
    masks = None
    if args.masks:  # every missing mask named before any work
        masks = dataset_masks(train_set, args.masks)
    elif boxes is not None:
        masks = dataset_box_masks(train_set, boxes)
    elif attention is not None:  # read off the base once fit has loaded it (images x prompts x times UNet calls)
        masks = attention
    validation = val_masks = None
    if val_set is not None and len(val_set):  # none when all train
        # auto chooses the scoring window on them; the shortcut check says which break the shots' accident (given
        # masks, on their backgrounds: the validation images' own boxes, or their masks where the folder has all)
        validation = (ImageSequence(val_set), val_set.label_names())
        if boxes is not None:
            val_masks = dataset_box_masks(val_set, boxes)
        elif attention is not None:
            val_masks = attention
        elif args.masks:
            try:  # a mask of the wrong size or unreadable stops the fit, as the shots' do
                val_masks = dataset_masks(val_set, args.masks)
            except MissingMaskError:
                val_masks = None  # the fit's record and warning say the validation images could not be read
    calibrate = args.calibrate and validation is not None and recipe.score.weighting != "auto"  # auto's pass sets it
    if calibrate and recipe.score.cells == "object" and val_masks is None:
        raise CLIError("score.cells: object needs the validation images' masks to fit the temperature on them, but "
                       "they have none: pass --masks DIR holding theirs too, --box-masks or --attention-masks WORD, "
                       "or --no-calibrate")
    return ShotDraw(split, train_set, val_set, masks, validation, val_masks, calibrate)


def _fit_one(args, recipe, draw: ShotDraw, out: Path, attention=None) -> None:
    from ..classifier import DiTiFewShotClassifier
    from ..coarse import fired
    from ..data.images import ImageSequence
    from ..distributed import is_main
    from ..errors import DitiWarning
    from ..validation import fit_work

    split, train_set, val_set, masks = draw.split, draw.train_set, draw.val_set, draw.masks
    validation, val_masks, calibrate = draw.validation, draw.val_masks, draw.calibrate
    clf = DiTiFewShotClassifier(
        model=recipe.model, recipe=recipe, steps=args.steps, rank=args.rank, random_state=args.seed,
        device=args.device, dtype=args.dtype, attention=args.attention, progress=not args.no_progress,
        validation_budget=args.validation_budget,
    )
    print(f"fitting {len(train_set.classnames)} classes x {len(train_set)} images on {recipe.model} "
          f"(recipe {recipe.name}) -> {out}")
    clf.fit(ImageSequence(train_set), train_set.label_names(), validation=validation, masks=masks,
            validation_masks=val_masks, output_dir=out, resume=args.resume)
    if calibrate:
        per_class = "min(k, 4)" if args.val_per_class is None else f"up to {args.val_per_class}"
        where = f"the k-shot split's, {per_class} per class" if split is not None else "the data set's validation split"
        temperature_masks = val_masks if recipe.score.cells == "object" else None
        if temperature_masks is not None and attention is not None:  # read by fit already, kept beside the adapters
            from ..attention_masks import resolve_masks

            temperature_masks = resolve_masks(attention, clf.backbone_, ImageSequence(val_set),
                                              path=out / "attention-masks-validation.pt", resume=True)[0]
        clf.fit_temperature(ImageSequence(val_set), val_set.label_names(), max_calls=clf.validation_budget_calls(),
                            source=f"validation: {len(val_set)} images ({where})", masks=temperature_masks)
        spent = clf.calibration_.get("unet_calls", 0)
        clf.fit_summary_["validation"].update(unet_calls=spent, share_of_fit=round(
            spent / fit_work(clf.fit_summary_["unet_samples"]), 4))
    breaks = (clf.fit_summary_.get("coarse_shortcut") or {}).get("validation")
    if breaks and val_set is not None:  # the images by their ids in the data set (as split.json names them)
        breaks["breaking_ids"] = [val_set.ids[i] for i in breaks["breaking"]]  # in the manifest too
    if is_main():  # before the manifest (a resumed fit skips a fitted set), never at the fit's expense
        if split is not None:  # with the set it drew (a fit refused or killed before leaves an old set's split)
            split.save(out / "split.json")
        picture = out / "coarse_shortcut.png"
        picture.unlink(missing_ok=True)  # an earlier fit's, with --overwrite
        if fired(clf.fit_summary_["coarse_shortcut"]):
            try:
                draw_coarse_shortcut(clf.fit_summary_["coarse_shortcut"], train_set, val_set, picture)
            except Exception as error:  # a picture must not cost the fitted adapters
                warnings.warn(f"coarse_shortcut.png was not drawn ({type(error).__name__}: {error}); the fit's "
                              "figures are in the summary line", DitiWarning, stacklevel=2)
        if attention is not None:
            try:
                draw_attention_masks(out / "attention-masks.pt", train_set, out / "attention_masks.png")
            except Exception as error:
                warnings.warn(f"attention_masks.png was not drawn ({type(error).__name__}: {error})", DitiWarning,
                              stacklevel=2)
    clf.save_pretrained(out, export_diffusers=args.export_diffusers, export_peft=args.export_peft)
    if is_main():
        summary = {"out": str(out), "classes": len(clf.classes_), "shots": clf.shots_, **clf.fit_summary_,
                   "final_loss": sum(clf.loss_curve_[-20:]) / max(1, len(clf.loss_curve_[-20:])),
                   "temperature": clf.temperature_, "calibration": clf.calibration_["source"]}
        if clf.score_choice_:
            keys = ("name", "rule", "log_likelihood", "candidates", "source", "unet_calls")
            summary["score_choice"] = {k: clf.score_choice_[k] for k in keys if k in clf.score_choice_}
        print(json.dumps(summary))


def draw_coarse_shortcut(report: dict, train_set, val_set, path: Path, size: int = 128) -> list[tuple]:
    """``coarse_shortcut.png``: shots the check read, blurred as it blurs them, and the validation images that
    break the accident (diti_sd.plotting.plot_coarse_shortcut), at ``size`` pixels a side; only the images shown
    are decoded. Returns the picture's rows."""
    from ..data.images import ImageSequence
    from ..plotting import first_of_each, plot_coarse_shortcut, shortcut_rows
    from ..preprocessing import uint8_pixels

    labels = train_set.label_names()
    val_labels = val_set.label_names() if val_set is not None else []
    breaking = (report.get("validation") or {}).get("breaking", [])
    rows = shortcut_rows(labels, [val_labels[i] for i in breaking])
    shots = first_of_each(labels, rows, 6)
    breaking = [breaking[j] for j in first_of_each([val_labels[i] for i in breaking], rows, 3)]
    images, val_images = ImageSequence(train_set), ImageSequence(val_set) if breaking else None
    return plot_coarse_shortcut(uint8_pixels([images[i] for i in shots], size), [labels[i] for i in shots], report,
                                path, uint8_pixels([val_images[i] for i in breaking], size) if breaking else None,
                                [val_labels[i] for i in breaking], n_classes=len(set(labels)))


def draw_attention_masks(kept: Path, train_set, path: Path, size: int = 128, per_class: int = 2) -> int:
    """``attention_masks.png``: the first ``per_class`` shots of up to 8 classes with the masks the fit read off the
    base (kept in ``kept``), to look at before trusting them."""
    import torch

    from ..data.images import ImageSequence
    from ..plotting import first_of_each, plot_masks
    from ..preprocessing import mask_pixels, uint8_pixels

    masks = torch.load(kept)["masks"]
    labels = train_set.label_names()
    if len(masks) != len(labels):  # a fit that held shots out read them for the rest only
        return 0
    shown = first_of_each(labels, sorted(set(labels))[:8], per_class)
    images = ImageSequence(train_set)
    pixels = uint8_pixels([images[i] for i in shown], size)
    return plot_masks(pixels, mask_pixels([masks[i] for i in shown], size)[:, 0], [labels[i] for i in shown], path,
                      "the masks read off the base's attention (outside them dimmed): the swap keeps what is lit")
