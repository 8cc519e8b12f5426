"""Options and helpers shared by the subcommands."""

from __future__ import annotations


def add_runtime_arguments(parser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                        help="base model precision (default: fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "xformers"])
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
