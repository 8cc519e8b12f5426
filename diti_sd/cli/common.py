"""Options shared by the subcommands, so that a flag means the same thing everywhere."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from ..errors import DitiError


class CLIError(DitiError, ValueError):
    """A problem with the command line itself (a ValueError, as scikit-learn's errors keep a built-in base)."""


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported on one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_runtime_arguments(parser, *, precision: bool = True, workers: bool = False, device: str | None = None) -> None:
    """``--device`` and ``--no-progress`` for every command that computes; ``--dtype`` and ``--attention``
    where a Stable Diffusion base runs (``precision``); ``--num-workers`` where images are decoded in a
    DataLoader (``workers``). ``device`` is the default (None: cuda if available)."""
    default = "cuda if available" if device is None else device
    parser.add_argument("--device", default=device, type=device_name,
                        help=f"cpu, cuda, cuda:1 ... (default: {default})")
    if precision:
        parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                            help="base model precision (default: fp32 on CPU; on a GPU the recipe's gpu_dtype)")
        parser.add_argument("--attention", default="sdpa", choices=["sdpa", "xformers"])
    if workers:
        parser.add_argument("--num-workers", type=non_negative_int, default=0,
                            help="DataLoader workers decoding images")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide progress bars, the libraries' (weights loading, downloads) too")


def add_attention_mask_arguments(parser, group, images: str) -> None:
    """``--attention-masks WORD`` (in ``group``, beside the other ways to give masks) and the options of its
    reading; ``images``: which images it reads, for its cost."""
    group.add_argument("--attention-masks", default=None, metavar="WORD",
                       help="read each image's mask off the base model: where its cross-attention puts WORD, a word "
                            f"naming the object (e.g. aircraft), in --mask-prompt; no masks needed; costs {images} x "
                            "prompts x 5 UNet calls (docs/method.md, 'Masks')")
    parser.add_argument("--mask-prompt", action="append", default=None, metavar="TEMPLATE",
                        help="with --attention-masks: a prompt with {} for the word (repeatable; default "
                             "'a photo of a {}.'); the maps of several are summed")
    parser.add_argument("--mask-upscale", type=int, default=None, metavar="N",
                        help="with --attention-masks: read the maps at N times the model's resolution (1 to 4; finer "
                             "cells against the object; at least N x N times the work, self-attention more)")
    parser.add_argument("--no-mask-shrink", action="store_true",
                        help="with --attention-masks: keep the masks as read, not shrunk by half a latent cell")


def check_model_out(out, working: tuple[str, ...] = ()) -> None:
    """One line, before any work, where ``--out`` holds something other than a model folder: a written model is swapped
    in whole (``files.atomic_folder``: a killed run leaves the old folder or the new one), which would drop the rest.
    ``working``: the names of the command's own work folders (its checkpoint), which the model's swap takes away."""
    check_out_folder(out)  # a file, or a path under one
    path = Path(out)
    if path.is_dir() and any(p.name not in working for p in path.iterdir()) \
            and not (path / "model_index.json").is_file():
        raise CLIError(f"--out {out} holds something other than a model folder, which writing the model would "
                       "replace whole; pass a new or empty folder, or a model folder to overwrite")


def saved_manifest(folder) -> dict:
    """An adapter set's ``manifest.json`` as written, read before torch or the model loads, for checks of the user's
    input against it; {} where it cannot be read (loading the set then says what is wrong with it)."""
    import json

    from ..work_folders import MANIFEST

    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def attention_masks_from(args, seed: int = 0):
    """The :class:`~diti_sd.attention_masks.AttentionMasks` that :func:`add_attention_mask_arguments`' options ask
    for, or None; an option of the reading without ``--attention-masks`` stops with one line."""
    upscale_given = args.mask_upscale is not None
    if (args.mask_prompt or upscale_given or args.no_mask_shrink) and not args.attention_masks:
        flag = "--mask-prompt" if args.mask_prompt else "--mask-upscale" if upscale_given else "--no-mask-shrink"
        raise CLIError(f"{flag} is read only with --attention-masks WORD: pass the word that names the object")
    if not args.attention_masks:
        return None
    from ..attention_masks import AttentionMasks

    return AttentionMasks(args.attention_masks, *([args.mask_prompt] if args.mask_prompt else []), seed=seed,
                          upscale=args.mask_upscale if upscale_given else 1, shrink=not args.no_mask_shrink)


def _number(text: str, kind, minimum, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def device_name(text: str) -> str:
    """The shape of a device name (cpu, cuda, cuda:1, mps, a backend's own), read at parsing; whether torch knows it
    and this machine has it is asked where torch loads (:func:`diti_sd.backbone.resolve_device`)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda, cuda:1 or mps, got {text!r}")
    return text


def _blocked(path) -> Path | None:
    """The nearest existing folder above ``path`` when that is a file instead (nothing can be written there)."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_out_file(path, flag: str = "--out", example: str = "out.png") -> None:
    """One line, before any work, where the file ``path`` cannot be written: it is a folder, or a file stands where
    a folder of its path should be (else the error would come after the work, at the write)."""
    if Path(path).is_dir():
        raise CLIError(f"{flag} {path} is a folder; pass the file to write, e.g. {Path(path) / example}")
    blocked = _blocked(path)
    if blocked is not None:
        raise CLIError(f"{flag} {path} cannot be written: {blocked} is a file, not a folder; pass another path")


def check_out_folder(path, flag: str = "--out") -> None:
    """One line, before any work, where the folder ``path`` cannot be made: it is a file, or lies under one."""
    if Path(path).exists() and not Path(path).is_dir():
        raise CLIError(f"{flag} {path} is a file; pass a folder (a new one is made)")
    blocked = _blocked(path)
    if blocked is not None:
        raise CLIError(f"{flag} {path} cannot be made: {blocked} is a file, not a folder; pass another path")


def finite_float(text: str) -> float:
    value = _number(text, float, None, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, "an integer >= 0")


def _list(text: str, parse, example: str) -> list:
    items = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list such as {example}, got {text!r}")
    try:
        return [parse(v) for v in items]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} in the list {text!r} (e.g. {example})") from None


def budget_share(text: str) -> float | None:
    """A share in (0, 1] of some work (``0.2``), or ``none`` for no limit."""
    if text.strip().lower() == "none":
        return None
    value = _number(text, float, None, "a share in (0, 1], or none")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], or none, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """``1,2,4`` -> [1, 2, 4] (for --seeds)."""
    return _list(text, lambda v: _number(v, int, None, "an integer"), "1,2,3")


def seed_list(text: str) -> list[int]:
    """``11-20`` or ``1,2,5-8`` -> the seeds, ranges inclusive (for the benchmarks' --seeds)."""
    def parse(item: str) -> list[int]:
        lo, dash, hi = item.partition("-")
        first = _number(lo, int, None, "an integer")
        last = _number(hi, int, None, "an integer") if dash else first
        if last < first:
            raise argparse.ArgumentTypeError(f"the range {item!r} runs backwards; write it as {last}-{first}")
        return list(range(first, last + 1))

    return [s for part in _list(text, parse, "11-20 or 1,2,5-8") for s in part]


def positive_int_list(text: str) -> list[int]:
    """``1,2,4`` -> [1, 2, 4], each >= 1 (for --shots)."""
    return _list(text, positive_int, "1,2,4")


def float_list(text: str) -> list[float]:
    """``-3,0,3`` -> [-3.0, 0.0, 3.0]."""
    return _list(text, lambda v: _number(v, float, None, "a number"), "-3,0,3")


def choice_list(choices):
    """A parser of ``a,b`` whose every item is one of ``choices``."""

    def parse(text: str) -> list[str]:
        def one(v):
            if v not in choices:
                raise argparse.ArgumentTypeError(f"unknown {v!r}; choose from {', '.join(choices)}")
            return v

        return _list(text, one, ",".join(choices[:2]))

    return parse
