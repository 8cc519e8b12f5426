"""Options shared by the subcommands, so that a flag means the same thing everywhere."""

from __future__ import annotations

import argparse


def add_runtime_arguments(parser, *, precision: bool = True, workers: bool = False, device: str | None = None) -> None:
    """``--device`` and ``--no-progress`` for every command that computes; ``--dtype`` and ``--attention``
    where a Stable Diffusion base runs (``precision``); ``--num-workers`` where images are decoded in a
    DataLoader (``workers``). ``device`` is the default (None: cuda if available)."""
    default = "cuda if available" if device is None else device
    parser.add_argument("--device", default=device, help=f"cpu, cuda, cuda:1 ... (default: {default})")
    if precision:
        parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                            help="base model precision (default: fp32 on CPU, bf16 on GPU)")
        parser.add_argument("--attention", default="sdpa", choices=["sdpa", "xformers"])
    if workers:
        parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def int_list(text: str) -> list[int]:
    """``1,2,4`` -> [1, 2, 4] (for --shots and --seeds)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values
