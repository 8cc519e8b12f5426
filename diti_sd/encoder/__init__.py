"""The unconditional DiTi encoder: z split into subsets tied to time-step ranges (faces: CelebA, FFHQ).

Names are imported from their modules on first use, so that the CLI reads encoder recipes without
loading torch.
"""

import importlib

_WHERE = {
    "EncoderError": "config", "EncoderRecipe": "config", "available_encoder_recipes": "config",
    "load_encoder_recipe": "config", "DDPM": "ddpm", "load_ddpm": "ddpm", "ddim_decode": "edit",
    "ddim_invert": "edit", "interpolate_subsets": "edit", "move_along": "edit", "save_grid": "edit",
    "SubsetLayout": "layout", "parse_subsets": "layout", "DiTiEncoder": "model",
    "average_precision": "probe", "extract_features": "probe", "fit_linear_probe": "probe", "fit_probe": "probe",
    "probe_by_subsets": "probe", "attribute_direction": "report", "run_probe": "report",
    "fit_encoder": "train", "subset_transfer": "transfer",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
