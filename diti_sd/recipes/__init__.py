"""Recipes: every number a run uses, from YAML files shipped as package data (``configs/``, linked as
the top-level ``recipes/`` of a checkout), loaded into dataclasses that reject unknown keys and values.

``load_recipe("fgvc-aircraft", ["fit.lr=5e-5"])`` reads a registered recipe (or a YAML path) and applies
dotted overrides; every value is checked there, once, before any model or data is read.
"""

from ..constraints import RecipeError
from ..lora.config import LoraConfig
from .loading import RECIPE_DIR, apply_overrides, available_recipes, from_dict, load_recipe, load_registered
from .schema import (
    DATASET_KINDS,
    T_STEPS,
    WEIGHTINGS,
    BaselineConfig,
    DatasetConfig,
    FitConfig,
    PromptConfig,
    Recipe,
    RecipeMixin,
    ScoreConfig,
)

__all__ = [
    "DATASET_KINDS", "RECIPE_DIR", "T_STEPS", "WEIGHTINGS", "BaselineConfig", "DatasetConfig", "FitConfig",
    "LoraConfig", "PromptConfig", "Recipe", "RecipeError", "RecipeMixin", "ScoreConfig", "apply_overrides",
    "available_recipes", "from_dict", "load_recipe", "load_registered",
]
