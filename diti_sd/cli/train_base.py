"""``diti-sd train-base``: train the tiny base model of the synthetic domain (as the two the package ships were)."""

from __future__ import annotations

import json

from . import CLIError
from .common import add_runtime_arguments, check_model_out, non_negative_int

EXAMPLE = """example:
  diti-sd train-base --recipe recipes/base/tiny-base.yaml --out diti_sd/assets/tiny-base"""


def add_arguments(parser):
    parser.add_argument("--recipe", default=None, help="base-model recipe YAML (default: recipes/base/tiny-base.yaml)")
    parser.add_argument("--out", required=True, help="folder to write (diffusers layout)")
    parser.add_argument("--checkpoint-every", type=non_negative_int, default=200,
                        help="steps between checkpoints in OUT/checkpoint (0: none; default: 200)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/checkpoint")
    # the shipped model was trained on a CPU; another device trains a numerically different one
    add_runtime_arguments(parser, precision=False, device="cpu")


def resume_hint(args) -> str:
    if not args.checkpoint_every:
        return f"rerun it to start again, with --checkpoint-every to resume later (a model already in {args.out} is " \
               "intact)"
    return f"rerun the same command with --resume to continue from the last checkpoint in {args.out}"


def run(args):
    from pathlib import Path

    from ..benchmarks.synthetic.base_checkpoint import interrupted_at
    from ..files import recover_folder
    from ..work_folders import CHECKPOINT

    # a run killed inside a folder's swap (the model's, a checkpoint's) left it beside its place, or a half
    # temporary: put back or cleared first, so that what is asked below reads the folder as the run left it
    recover_folder(args.out)
    recover_folder(Path(args.out) / CHECKPOINT)
    at = interrupted_at(args.out)
    # the trained model replaces the folder whole: only its own checkpoint may stand beside a model there
    check_model_out(args.out, working=(CHECKPOINT,) if at else ())
    if at and not args.resume:
        raise CLIError(f"{args.out} holds an interrupted train-base (stopped at {at}); pass --resume to continue it, "
                       f"or delete {args.out}/{CHECKPOINT} to start again")
    from ..benchmarks.synthetic.base_model import load_base_recipe, train_base_model
    from ..recipes import RECIPE_DIR

    recipe = load_base_recipe(args.recipe or RECIPE_DIR / "base" / "tiny-base.yaml")
    print(json.dumps(train_base_model(recipe, args.out, device=args.device, progress=not args.no_progress,
                                      checkpoint_every=args.checkpoint_every, resume=args.resume)))
    return 0
