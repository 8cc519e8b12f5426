"""``diti-sd predict``: classify images (files or folders) with a fitted adapter set."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

from ..files import atomic_write

EXAMPLE = """example:
  diti-sd predict --adapters adapters/fgvc-16shot photos/ --top-k 5 --out predictions.csv"""


def add_arguments(parser):
    from .common import add_attention_mask_arguments, add_runtime_arguments, positive_int

    parser.add_argument("--adapters", required=True, help="adapter set folder written by `diti-sd fit`")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--top-k", type=positive_int, default=1, help="also list the k most likely classes")
    parser.add_argument("--out", default=None, help="write a CSV with one row per image")
    parser.add_argument("--model", default=None, help="where the base model is now, if it moved")
    parser.add_argument("--compile", action="store_true", help="score with a torch.compile'd UNet")
    parser.add_argument("--cache-dir", default=None,
                        help="write each scored chunk of images here; a rerun after an interruption continues "
                             "(default with --out: OUT.scores/, removed once the CSV is written)")
    parser.add_argument("--chunk-size", type=positive_int, default=64,
                        help="images per cached chunk: what an interruption can lose at most (default 64)")
    masks = parser.add_mutually_exclusive_group()
    masks.add_argument("--masks", default=None, metavar="DIR",
                       help="for adapters fitted with score.cells: object, each image's object mask: named by the "
                            "image's path under the folder given (its file name for a file), with any image suffix "
                            "(photos/Boeing/0001.jpg given as photos/ -> DIR/Boeing/0001.png), the object bright, the "
                            "size of the image file")
    add_attention_mask_arguments(parser, masks, "images")
    # the name is checked when the command runs (check_preparation), first, with one line naming the choices
    parser.add_argument("--prepare", default="auto", metavar="NAME",
                        help="process each image as a data set's reference preprocessing did before scoring it: "
                             "auto (default): as the fit recorded for its images, else as the adapters' data set's "
                             "archive images are read (isic2019, duke, veri: TiF's processing, tif-isic / tif-duke / "
                             "tif-veri), else none; "
                             "none for images processed so already; or a preparation by name")
    add_runtime_arguments(parser)


def expand_with_ids(items: list[str]) -> list[tuple[Path, str]]:
    """Each image of the given files and folders, with the id its mask is found by (``--masks``): its path under
    the folder given, or its file name."""
    from ..data.images import list_images

    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out.extend((image, image.relative_to(path).as_posix()) for image in list_images(path))
        else:
            out.append((path, path.name))
    return out


def saved_recipe(folder) -> dict | None:
    """The adapter set's saved recipe as written, read before the model loads; None where the file cannot be read
    (``from_pretrained`` then says what is wrong with the set)."""
    import yaml

    try:
        data = yaml.safe_load((Path(folder) / "recipe.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _section(data: dict | None, name: str) -> dict:
    """A section of a saved recipe as a dict ({} where it is missing or malformed: ``from_pretrained`` says so)."""
    section = (data or {}).get(name)
    return section if isinstance(section, dict) else {}


def scored_cells(folder) -> str | None:
    """``score.cells`` of the adapter set's saved recipe ("all" where the file says nothing: sets fitted before the
    key existed); None where it cannot be read."""
    data = saved_recipe(folder)
    return None if data is None else str(_section(data, "score").get("cells", "all"))


def check_preparation(asked: str) -> None:
    """One line where ``--prepare`` names no preparation."""
    from ..image_preparation import PREPARE
    from . import CLIError

    if asked not in ("auto", "none", *PREPARE):
        raise CLIError(f"--prepare {asked!r} is no preparation; choose auto, none or one of {', '.join(PREPARE)}")


def recorded_preparation(folder) -> str | None:
    """The preparation the fit recorded for its images (manifest ``fit.image_preparation``: "" for none); None where
    it recorded none (images given already read, sets fitted before it was recorded) or the file cannot be read."""
    from ..image_preparation import PREPARE
    from .common import saved_manifest

    fit = saved_manifest(folder).get("fit")
    value = fit.get("image_preparation") if isinstance(fit, dict) else None
    return value if isinstance(value, str) and (value == "" or value in PREPARE) else None


def preparation(folder, asked: str) -> str:
    """The preparation ``--prepare`` names ("" for none); auto: the one the fit recorded for its images, else the one
    the readers give the fitted data set's archive images (nothing for other data sets, or where the recipe cannot
    be read). A fit on TiF's processed folders takes the latter too: new images may be raw archive images, and
    the archive's preparation leaves processed ones nearly as they are (their geometry is its output)."""
    from ..image_preparation import ARCHIVE_PREPARATION, AS_PROCESSED

    check_preparation(asked)
    if asked != "auto":
        return "" if asked == "none" else asked
    recorded = recorded_preparation(folder)
    if recorded is not None and recorded != AS_PROCESSED:
        return recorded
    return ARCHIVE_PREPARATION.get(str(_section(saved_recipe(folder), "dataset").get("kind", "")), "")


def check_masks_given(cells: str | None, args) -> None:
    """One line where the masks given and the set's ``score.cells`` disagree (nothing to say while unknown)."""
    from . import CLIError

    given = bool(args.masks) or bool(args.attention_masks)
    if cells == "object" and not given:
        raise CLIError(f"{args.adapters} scores each image's object cells (score.cells: object): pass --masks DIR or "
                       "--attention-masks WORD")
    if cells == "all" and given:
        flag = "--masks" if args.masks else "--attention-masks"
        raise CLIError(f"{flag} is read only by adapters fitted with score.cells: object; {args.adapters} scores "
                       "whole images: leave it out")


def check_mask_files(files: list, paths: list, prepare: str = "") -> None:
    """Each mask file readable, its image file's size (:func:`~diti_sd.data.masks.check_file_sizes`) and keeping
    some pixel once framed as its image is (``prepare``: the images' preparation, whose geometry the masks take
    too): one line naming both, before the model loads."""
    from ..data.masks import MaskError, check_file_sizes, load_mask
    from . import CLIError

    try:
        check_file_sizes(files, paths)
    except MaskError as err:
        raise CLIError(str(err)) from None
    for file, path in zip(files, paths):
        try:
            mask = load_mask(file, prepare=prepare)
        except MaskError as err:
            raise CLIError(f"{err} (the mask of {path})") from None
        if not bool(mask.any()):
            raise CLIError(f"mask {file} keeps no pixel (the object bright), so {path} has nothing to be scored on; "
                           "check the mask")


def _cache_dir(args) -> str | None:
    """Where scored chunks go: --cache-dir, else beside --out, else nowhere."""
    return args.cache_dir or (f"{args.out}.scores" if args.out else None)


def resume_hint(args) -> str:
    cache = _cache_dir(args)
    if cache is None:
        return "nothing was kept: pass --out (or --cache-dir) so that a rerun continues from the scored images"
    return f"rerun the same command: the images already scored (in {cache}/) are not scored again"


def run(args):
    import numpy as np

    from ..classifier import DiTiFewShotClassifier
    from ..data.images import ImageReadError, load_image
    from ..data.masks import MaskSequence, find_masks
    from ..hub import resolve_adapter_set
    from ..metrics import softmax
    from . import CLIError
    from .common import attention_masks_from, check_out_file, check_out_folder, saved_manifest

    check_preparation(args.prepare)  # before anything is read or downloaded
    if args.out:  # the CSV is written after every image is scored
        check_out_file(args.out, example="predictions.csv")
    if args.cache_dir:
        check_out_folder(args.cache_dir, "--cache-dir")
    attention = attention_masks_from(args)
    folder = resolve_adapter_set(args.adapters)  # a Hub id downloads the set alone, not the base model
    cells = scored_cells(folder)
    check_masks_given(cells, args)
    prepare = preparation(folder, args.prepare)
    if prepare and args.prepare == "auto":
        how = "the fit recorded for its own images" if recorded_preparation(folder) == prepare else \
            "the adapters' data set's archive images are read"
        print(f"each image processed as {prepare} before scoring, as {how}; --prepare none reads them as they are",
              file=sys.stderr)
    inputs = expand_with_ids(args.images)
    paths = [path for path, _ in inputs]
    if not paths:
        raise CLIError("no images found in the given paths; pass image files (.jpg, .png, ...) or folders holding them")
    # every image's mask file found before any image is read; each checked against its image before the model loads
    mask_files = find_masks(args.masks, [i for _, i in inputs], "images") if args.masks else None
    rows, good, images = [], [], []
    for path in paths:
        try:
            images.append(load_image(path, prepare=prepare))
            good.append(len(rows))
            rows.append({"path": str(path), "error": ""})
        except ImageReadError as err:
            rows.append({"path": str(path), "error": str(err)})
            print(f"skipping {path}: {err}", file=sys.stderr)
    if not images and saved_manifest(folder):  # nothing to score: said before the model loads (a folder that is
        # no adapter set is said first, by the load)
        raise CLIError(f"none of the {len(rows)} images could be read (e.g. {rows[0]['path']}: {rows[0]['error']}); "
                       "check the paths")
    if mask_files is not None:
        check_mask_files([mask_files[i] for i in good], [paths[i] for i in good], prepare)
    clf = DiTiFewShotClassifier.from_pretrained(folder, model=args.model, device=args.device, dtype=args.dtype,
                                                attention=args.attention, compile=args.compile,
                                                progress=not args.no_progress)
    cache_dir = _cache_dir(args)
    if images:
        if cells is None:
            cells = clf.recipe_.score.cells
            check_masks_given(cells, args)
        masks = attention if mask_files is None else MaskSequence([mask_files[i] for i in good], prepare=prepare)
        # check_masks_given let masks through only for a set that scores object cells
        result = clf.score_images(images, chunk=args.chunk_size, cache_dir=cache_dir, masks=masks)
        proba = softmax(result.logits, clf.temperature_)
        k = max(1, min(args.top_k, len(clf.classes_)))
        for row_index, p, calls in zip(good, proba, result.unet_calls):
            order = np.argsort(-p, kind="stable")[:k]
            rows[row_index].update(
                prediction=str(clf.classes_[order[0]]), probability=f"{p[order[0]]:.4f}",
                top_k=";".join(f"{clf.classes_[j]}:{p[j]:.4f}" for j in order), unet_calls=int(calls),
            )
    from ..distributed import is_main

    if not is_main():  # `accelerate launch`: every process scored its share; the first one reports
        return 0 if images else 1
    fields = ["path", "prediction", "probability", "top_k", "unet_calls", "error"]
    for row in rows:
        label = row.get("prediction") or "ERROR"
        extra = row.get("top_k", "") if args.top_k > 1 else row.get("probability", "")
        print(f"{row['path']}\t{label}\t{extra or row['error']}")
    if args.out:
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: row.get(k, "") for k in fields})

        atomic_write(args.out, write)
        if not args.cache_dir and cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return 0 if images else 1
