"""``diti-sd train-base``: train the tiny base model of the synthetic domain (as the two the package ships were)."""

from __future__ import annotations

import json

from .common import add_runtime_arguments, check_model_out

EXAMPLE = """example:
  diti-sd train-base --recipe recipes/base/tiny-base.yaml --out diti_sd/assets/tiny-base"""


def add_arguments(parser):
    parser.add_argument("--recipe", default=None, help="base-model recipe YAML (default: recipes/base/tiny-base.yaml)")
    parser.add_argument("--out", required=True, help="folder to write (diffusers layout)")
    # the shipped model was trained on a CPU; another device trains a numerically different one
    add_runtime_arguments(parser, precision=False, device="cpu")


def resume_hint(args) -> str:
    return f"train-base does not resume: rerun it to start again (a model already in {args.out} is intact)"


def run(args):
    from ..benchmarks.synthetic.base_model import load_base_recipe, train_base_model
    from ..recipes import RECIPE_DIR

    recipe = load_base_recipe(args.recipe or RECIPE_DIR / "base" / "tiny-base.yaml")
    check_model_out(args.out)  # the trained model replaces the folder whole
    print(json.dumps(train_base_model(recipe, args.out, device=args.device, progress=not args.no_progress)))
    return 0
