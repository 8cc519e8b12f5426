"""``diti-sd encoder fit | probe | edit | train-ddpm``: the unconditional DiTi encoder for face data sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import (
    add_runtime_arguments,
    check_model_out,
    check_out_file,
    check_out_folder,
    float_list,
    non_negative_int,
    positive_int,
    positive_int_list,
)

RAW = argparse.RawDescriptionHelpFormatter

EXAMPLE = """examples:
  diti-sd encoder fit --dataset celeba64 --data-root ~/data/celeba --ddpm PATH_OR_HUB_ID --out encoders/celeba64
  diti-sd encoder probe --encoder encoders/celeba64 --data-root ~/data/celeba
  diti-sd encoder edit --encoder encoders/celeba64 --images a.png b.png --subsets 4-6 --out edits.png
  diti-sd encoder train-ddpm --dataset granular --steps 600 --channels 16,32 --out ddpm/"""


def add_arguments(parser):
    sub = parser.add_subparsers(dest="encoder_command", metavar="ACTION", required=True)

    fit = sub.add_parser("fit", help="train an encoder against a frozen DDPM",
                         epilog="example:\n  " + EXAMPLE.splitlines()[1].strip(), formatter_class=RAW)
    _data_arguments(fit, required=True)
    fit.add_argument("--ddpm", required=True, help="DDPM: local DDPMPipeline folder or hub id")
    fit.add_argument("--out", required=True, help="folder for the encoder (and its checkpoint while training)")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a recipe value, e.g. --set train.checkpoint_every=5000 (changing one of the "
                          "reference's values, e.g. the batch, leaves its set-up)")
    fit.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the recipe's)")
    fit.add_argument("--resume", action="store_true", help="continue an interrupted fit in --out")
    fit.add_argument("--overwrite", action="store_true",
                     help="fit afresh over an encoder, or an interrupted fit, already in --out")
    add_runtime_arguments(fit, precision=False, workers=True)

    probe = sub.add_parser("probe", help="linear probes on z: AP per attribute, overall and per time-step stage",
                           epilog="example:\n  " + EXAMPLE.splitlines()[2].strip(), formatter_class=RAW)
    probe.add_argument("--encoder", required=True, help="folder written by `encoder fit`")
    _data_arguments(probe, required=False)
    probe.add_argument("--ddpm", default=None, help="the DDPM, if not where the encoder recorded it")
    probe.add_argument("--out", default=None, help="report folder (default: ENCODER/probe)")
    probe.add_argument("--max-train", type=positive_int, default=None, help="at most this many probe-train images")
    probe.add_argument("--max-test", type=positive_int, default=None,
                       help="at most this many test images (and validation images, for the reference's probe)")
    probe.add_argument("--method", choices=["reference", "lbfgs"], default=None,
                       help="the probe: the DiTi reference's (Adam, mirrored images, best epoch on validation "
                            "images) or a full-batch L-BFGS fit (no validation split); default: the recipe's")
    probe.add_argument("--transfer-pairs", type=non_negative_int, default=None,
                       help="test pairs per attribute for the counterfactual swaps (0: skip; default: the recipe's)")
    add_runtime_arguments(probe, precision=False, workers=True)

    edit = sub.add_parser("edit", help="counterfactual image grids: swap subsets or move along an attribute",
                          epilog="example:\n  " + EXAMPLE.splitlines()[3].strip(), formatter_class=RAW)
    edit.add_argument("--encoder", required=True)
    edit.add_argument("--images", nargs="+", required=True,
                      help="with --subsets: pairs a b [a b ...]; with --attribute: the images to edit")
    edit.add_argument("--subsets", default=None, help="subset indices to change, e.g. 4-6 or 0,2,8-9")
    edit.add_argument("--attribute", default=None,
                      help="move z along this attribute's linear classifier (fitted on --data-root's train split)")
    edit.add_argument("--strengths", type=float_list, default=None,
                      help="with --attribute: logit changes along it (default: -6,-3,0,3,6)")
    edit.add_argument("--frames", type=positive_int, default=None,
                      help="with --subsets alone: interpolation steps between a and b (default: 5)")
    edit.add_argument("--ddim-steps", type=positive_int, default=100)
    _data_arguments(edit, required=False)
    edit.add_argument("--max-train", type=positive_int, default=5000, help="images for the attribute classifier")
    edit.add_argument("--ddpm", default=None)
    edit.add_argument("--out", required=True, help="PNG to write")
    add_runtime_arguments(edit, precision=False, workers=True)

    ddpm = sub.add_parser("train-ddpm", help="train a small unconditional DDPM (smoke runs; no hub access)",
                          epilog="example:\n  " + EXAMPLE.splitlines()[4].strip(), formatter_class=RAW)
    _data_arguments(ddpm, required=True)
    ddpm.add_argument("--out", required=True)
    ddpm.add_argument("--size", type=positive_int, default=16)
    ddpm.add_argument("--channels", type=positive_int_list, default="32,64")
    ddpm.add_argument("--steps", type=positive_int, default=1000)
    ddpm.add_argument("--batch-size", type=positive_int, default=32)
    add_runtime_arguments(ddpm, precision=False, workers=False)


def _data_arguments(parser, required: bool):
    from ..encoder.config import available_encoder_recipes

    known = ", ".join(available_encoder_recipes())
    parser.add_argument(
        "--dataset", required=required, default=None,
        help=f"an encoder recipe ({known}) or a recipe YAML path; its data section names the data set "
             "(celeba, folder for FFHQ or any images with an optional attributes.csv, hf, granular)"
        + ("" if required else "; default: the encoder's own recipe"),
    )
    parser.add_argument("--data-root", default=None, help="the data set's folder (hub id for hf; none for granular)")
    if required:  # fit and train-ddpm read training images; probe and edit have --max-train / --max-test
        parser.add_argument("--max-images", type=positive_int, default=None,
                            help="use at most this many training images")


def _device(name):
    from ..backbone import resolve_device

    return resolve_device(name)  # a device this machine lacks: one line


def _saved_subsets(folder) -> int | None:
    """How many subsets the encoder saved in ``folder`` has, read from its manifest; None where it cannot be read
    (loading the encoder then says why)."""
    from ..encoder.model import MANIFEST

    try:
        return len(json.loads((Path(folder) / MANIFEST).read_text())["subsets"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _data_config(args, recipe):
    """The data section to read: the encoder's own (``recipe``), or that of the recipe named by --dataset."""
    from ..encoder import load_encoder_recipe

    return load_encoder_recipe(args.dataset).data if args.dataset else recipe.data


def resume_hint(args) -> str:
    if args.encoder_command == "fit":
        return f"rerun the same command with --resume to continue from the checkpoint in {args.out}"
    return "this action keeps nothing of an interrupted run: rerun it to start again"


def run(args):
    return {"fit": _fit, "probe": _probe, "edit": _edit, "train-ddpm": _train_ddpm}[args.encoder_command](args)


def _fit(args):
    from ..distributed import is_main
    from ..encoder import DiTiEncoder, fit_encoder, load_ddpm, load_encoder_recipe
    from ..encoder.data import check_root, load_attributed
    from ..encoder.model import MANIFEST
    from ..encoder.train import check_batch_split
    from ..work_folders import CHECKPOINT, foreign_checkpoint
    from . import CLIError

    recipe = load_encoder_recipe(args.dataset, args.overrides)
    check_batch_split(recipe.train)  # before the DDPM loads
    check_root(recipe.data.kind, args.data_root)
    check_out_folder(args.out)
    out = Path(args.out)
    # a checkpoint a kill left beside its place is put back first; another command's is neither resumed nor replaced
    if owner := foreign_checkpoint(out, "encoder"):
        raise CLIError(f"{out / CHECKPOINT} is {owner} checkpoint, not an encoder fit's; choose another --out for "
                       "the encoder")
    if (out / MANIFEST).is_file() and not (out / CHECKPOINT / "state.json").is_file():  # a finished fit
        if args.resume:
            print(f"{out} already holds a fitted encoder; --resume continues only an interrupted fit")
            return 0
        if not args.overwrite:
            raise CLIError(f"{out} already holds a fitted encoder; pass --overwrite to fit it again, or another --out")

    def load(size: int):  # the size is the built-in toy's image side (the DDPM's); other data sets ignore it
        return load_attributed(recipe.data.kind, args.data_root, recipe.data.train_split, recipe.data.image_column,
                               args.max_images, size)

    # a user's data set is found and listed before the DDPM loads; the built-in toy is drawn at the DDPM's size
    data = None if recipe.data.kind == "granular" else load(0)
    device = _device(args.device)
    ddpm = load_ddpm(args.ddpm, device)
    model = DiTiEncoder(recipe, ddpm).to(device)
    data = data if data is not None else load(model.image_size)
    summary = fit_encoder(model, data, args.out, steps=args.steps, resume=args.resume,
                          num_workers=args.num_workers, progress=not args.no_progress,
                          overwrite=args.overwrite and not args.resume)
    if is_main():
        print(json.dumps({"out": str(args.out), **summary}))
    return 0


def _probe(args):
    from ..encoder import DiTiEncoder, load_encoder_recipe, run_probe
    from ..encoder.data import check_root, load_attributed
    from ..encoder.model import RECIPE
    from . import CLIError

    check_out_folder(args.out or Path(args.encoder) / "probe")  # the report is written after every probe
    saved = Path(args.encoder) / RECIPE
    if saved.is_file():  # the probe's settings read before the encoder and its DDPM load (else the load says why)
        recipe = load_encoder_recipe(saved)
        data = _data_config(args, recipe)
        if (args.method or recipe.probe.method) == "reference" and data.val_split is None:
            raise CLIError("probe.method reference needs validation images: give the data a val_split, or "
                           "pass --method lbfgs")
        check_root(data.kind, args.data_root)
    model = DiTiEncoder.from_pretrained(args.encoder, ddpm=args.ddpm, device=_device(args.device))
    cfg, data = model.recipe, _data_config(args, model.recipe)
    train = load_attributed(data.kind, args.data_root, cfg.probe.train_split or data.train_split, data.image_column,
                            args.max_train or cfg.probe.max_train, model.image_size)
    test = load_attributed(data.kind, args.data_root, data.test_split, data.image_column,
                           args.max_test or cfg.probe.max_test, model.image_size)
    if args.method is not None:
        cfg.probe.method = args.method
    val = None
    if cfg.probe.method == "reference":  # the reference's probe keeps the epoch of best validation AP
        val = load_attributed(data.kind, args.data_root, data.val_split, data.image_column,
                              args.max_test or cfg.probe.max_test, model.image_size)
    if args.transfer_pairs is not None:
        cfg.probe.transfer_pairs = args.transfer_pairs
    out = Path(args.out or Path(args.encoder) / "probe")
    report = run_probe(model, train, test, out, num_workers=args.num_workers, progress=not args.no_progress,
                       val=val)
    print(f"mean AP {report['mean_ap']:.4f} over {len(report['attributes'])} attributes; report in {out}")
    return 0


def _edit(args):
    import torch

    from ..data.images import load_image
    from ..encoder import DiTiEncoder, attribute_direction, interpolate_subsets, move_along, save_grid
    from ..encoder.attributed import AttributedDataset, AttributedImages
    from ..encoder.data import load_attributed
    from ..encoder.layout import parse_subsets
    from ..preprocessing import uint8_to_float
    from . import CLIError

    if args.subsets is None and args.attribute is None:
        raise CLIError("pass --subsets (swap subsets between image pairs) or --attribute (move along it)")
    if args.attribute is None and args.strengths is not None:
        raise CLIError("--strengths is read only with --attribute (moving along it); --subsets alone interpolates "
                       "between pairs: set --frames instead")
    if args.attribute is not None and args.frames is not None:
        raise CLIError("--frames is read only when --subsets swaps between pairs; with --attribute set --strengths")
    frames, strengths = args.frames or 5, args.strengths or [-6.0, -3.0, 0.0, 3.0, 6.0]
    files = [Path(p) for p in args.images]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:  # before the encoder and its DDPM load
        raise CLIError(f"{len(missing)} of the images given are no files (e.g. {missing[0]}); check the paths")
    if args.attribute is None and len(files) % 2:
        raise CLIError(f"--subsets swaps between pairs: pass an even number of images, got {len(files)}")
    check_out_file(args.out, example="edit.png")  # the grid is written after every DDIM pass
    # what can be read before the encoder and its DDPM load: the images, the subsets against the saved layout
    for path in files:
        load_image(path)
    k = _saved_subsets(args.encoder)
    if args.subsets and k is not None:
        parse_subsets(args.subsets, k)
    device = _device(args.device)
    model = DiTiEncoder.from_pretrained(args.encoder, ddpm=args.ddpm, device=device)
    pixels = AttributedDataset.from_config(AttributedImages(files, None, [], [str(p) for p in files]),
                                           model.image_size, model.recipe.data)
    x = uint8_to_float(torch.stack([pixels[i] for i in range(len(files))])).to(device)
    subsets = parse_subsets(args.subsets, model.layout.k) if args.subsets else None
    if args.attribute is None:
        grid = interpolate_subsets(model, x[0::2], x[1::2], subsets, frames, args.ddim_steps,
                                   progress=not args.no_progress)
        columns = frames + 2
    else:
        data = _data_config(args, model.recipe)
        train = load_attributed(data.kind, args.data_root, data.train_split, data.image_column, args.max_train,
                                model.image_size)
        direction = attribute_direction(model, train, args.attribute, num_workers=args.num_workers,
                                        progress=not args.no_progress)
        grid = move_along(model, x, direction, strengths, subsets, args.ddim_steps, progress=not args.no_progress)
        columns = len(strengths) + 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_grid(grid, columns, args.out)
    print(f"wrote {args.out} ({len(grid) // columns} rows x {columns} columns)")
    return 0


def _train_ddpm(args):
    import torch

    from ..encoder import load_encoder_recipe
    from ..encoder.attributed import AttributedDataset
    from ..encoder.data import load_attributed
    from ..encoder.ddpm import build_ddpm, check_ddpm_shape, save_ddpm, train_ddpm
    from ..files import atomic_folder

    check_model_out(args.out)  # the trained DDPM replaces the folder whole, after the training
    check_ddpm_shape(args.size, args.channels)  # before the images are read
    device = _device(args.device)
    data_cfg = load_encoder_recipe(args.dataset).data
    data = load_attributed(data_cfg.kind, args.data_root, data_cfg.train_split, data_cfg.image_column,
                           args.max_images, args.size)
    dataset = AttributedDataset.from_config(data, args.size, data_cfg)
    pixels = torch.stack([dataset[i] for i in range(len(dataset))])
    ddpm = build_ddpm(args.size, tuple(args.channels))
    ddpm.unet.to(device)
    losses = train_ddpm(ddpm, pixels, args.steps, args.batch_size, progress=not args.no_progress)
    atomic_folder(args.out, lambda tmp: save_ddpm(ddpm, tmp))  # a killed save leaves no half model
    final = sum(losses[-50:]) / len(losses[-50:])
    print(json.dumps({"out": str(args.out), "images": len(pixels), "final_loss": final}))
    return 0
