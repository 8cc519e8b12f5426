"""The unconditional DiTi encoder: z split into subsets tied to time-step ranges (faces: CelebA, FFHQ)."""

from .config import EncoderError, EncoderRecipe, available_encoder_recipes, load_encoder_recipe
from .ddpm import DDPM, load_ddpm
from .edit import ddim_decode, ddim_invert, interpolate_subsets, move_along, save_grid
from .layout import SubsetLayout, parse_subsets
from .model import DiTiEncoder
from .probe import average_precision, extract_features, fit_linear_probe, probe_ap, probe_by_subsets
from .report import attribute_direction, run_probe
from .train import fit_encoder
from .transfer import subset_transfer

__all__ = [
    "DDPM", "DiTiEncoder", "EncoderError", "EncoderRecipe", "SubsetLayout", "attribute_direction",
    "available_encoder_recipes", "average_precision", "ddim_decode", "ddim_invert", "extract_features",
    "fit_encoder", "fit_linear_probe", "interpolate_subsets", "load_ddpm", "load_encoder_recipe",
    "move_along", "parse_subsets", "probe_ap", "probe_by_subsets", "run_probe", "save_grid", "subset_transfer",
]
