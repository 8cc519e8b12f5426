"""``diti-sd train-base``: train the tiny base model of the synthetic domain (the one the package ships)."""

from __future__ import annotations

import json


def add_arguments(parser):
    parser.add_argument("--recipe", default=None, help="base-model recipe YAML (default: recipes/base/tiny-base.yaml)")
    parser.add_argument("--out", required=True, help="folder to write (diffusers layout)")
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    from ..pretrain import load_base_recipe, train_base_model
    from ..recipes import RECIPE_DIR

    recipe = load_base_recipe(args.recipe or RECIPE_DIR / "base" / "tiny-base.yaml")
    print(json.dumps(train_base_model(recipe, args.out, progress=not args.no_progress)))
    return 0
