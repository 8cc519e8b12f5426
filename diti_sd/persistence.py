"""Saving, loading and exporting a fitted ``DiTiFewShotClassifier`` (its persistence half).

An adapter set on disk is ``manifest.json`` (what was learned beside the weights), ``adapters.safetensors``
and the resolved ``recipe.yaml``; ``from_pretrained`` refuses a base model the set was not fitted on.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import yaml

from .adapter_set import AdapterSetError, Manifest, read_adapter_set, write_adapter_set
from .base_identity import same_weights, weights_probe
from .distributed import barrier, is_main
from .errors import ConfigError
from .hub import push_adapter_set, resolve_adapter_set, write_model_card
from .lora.layer import ClassAdapters, NoAdapters
from .recipes import Recipe, from_dict
from .version import __version__
from .work_folders import remove_working_folders


class PersistenceMixin:
    """``save_pretrained``, ``from_pretrained``, the diffusers / peft exports and ``push_to_hub``."""

    def save_pretrained(self, path: str | os.PathLike, export_diffusers: bool = False,
                        export_peft: bool = False) -> Path:
        self._check_fitted()
        if isinstance(self.adapters_, NoAdapters):
            raise ConfigError("a zero-shot classifier has no adapters to save; it is its base model and prompts")
        recipe = self.recipe_
        kinds = {type(c).__name__ for c in self.classes_.tolist()}
        manifest = Manifest(
            diti_sd_version=__version__,
            base_model=recipe.model,
            base_fingerprint=self.base_fingerprint_,
            base_probe=weights_probe(self.backbone_),
            prediction_type=self.backbone_.prediction_type,
            resolution=self.backbone_.resolution,
            label_type="int" if kinds == {"int"} else "str",
            classes=[{"name": str(c), "prompt": p, "token": t}
                     for c, p, t in zip(self.classes_.tolist(), self.prompts_, self.tokens_)],
            generic_prompt=recipe.prompt.generic,
            lora={**asdict(recipe.lora), "block_filter": self.adapters_.block_filter,
                  "unet_modules": len(self.adapters_.unet_names), "text_modules": len(self.adapters_.text_names)},
            train_window=[recipe.fit.t_min, recipe.fit.t_max],
            score_window=[self.scoring_config().t_min, self.scoring_config().t_max],
            score_choice=self.score_choice_,
            shots=self.shots_,
            n_train=self.n_train_,
            tif_d=self.tif_d_,
            random_state=self.random_state,
            temperature=self.temperature_,
            calibration=self.calibration_,
            fit={**self.fit_summary_, "loss_curve": [round(float(v), 6) for v in self.loss_curve_]},
        )
        if is_main():
            write_adapter_set(path, manifest, self.adapters_.lora_state_dict(), recipe.to_yaml())
            write_model_card(path, recipe.to_dict())
            if export_diffusers:
                self.export_diffusers(Path(path) / "diffusers")
            if export_peft:
                self.export_peft(Path(path) / "peft")
            fit_dir = getattr(self, "_fit_dir", None)
            if fit_dir is not None and fit_dir == Path(path).resolve():
                remove_working_folders(path)  # last: a save cut short leaves the fit to resume without training
        barrier()
        return Path(path)

    def export_diffusers(self, folder: str | os.PathLike) -> list[Path]:
        """Each class as a LoRA file that ``StableDiffusionPipeline.load_lora_weights`` accepts."""
        from .lora.export import export_diffusers

        self._check_fitted()
        return export_diffusers(self.adapters_, self.classes_.tolist(), self.prompts_, self.recipe_.model, folder)

    def export_peft(self, folder: str | os.PathLike) -> list[Path]:
        """Each class as peft adapter folders (``<class>/unet/``, ``<class>/text_encoder/``) that
        ``PeftModel.from_pretrained`` loads onto the base model's UNet and text encoder."""
        from .lora.export import export_peft

        self._check_fitted()
        return export_peft(self.adapters_, self.classes_.tolist(), self.prompts_, self.recipe_.model, folder)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload DiTi-SD adapter set") -> str:
        """Save this adapter set (with its model card) to a Hub model repository; returns its URL."""
        import tempfile

        self._check_fitted()
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "adapters")
            return push_adapter_set(folder, repo_id, private=private, token=token, commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, model=None, *, revision=None, device=None, dtype=None,
                        attention="sdpa", compile=False, progress=True):
        """Load an adapter set from a folder or a Hub repository id (``owner/name``, downloaded once into
        the Hub's cache; ``revision`` picks a branch, tag or commit); ``model`` points at the base model if
        it moved (it must be the same one)."""
        path = resolve_adapter_set(path, revision)
        manifest, weights, recipe_yaml = read_adapter_set(path)
        try:
            data = yaml.safe_load(recipe_yaml) if recipe_yaml else {}
        except yaml.YAMLError as err:
            raise AdapterSetError(f"{path}/recipe.yaml is not valid YAML ({err}); refit or restore the file") from None
        recipe = from_dict(Recipe, data, where=f"{path}/recipe.yaml")
        if model is not None:
            recipe.model = str(model)
        clf = cls(model=None, recipe=recipe, random_state=manifest.random_state, device=device,
                  dtype=dtype, attention=attention, compile=compile, progress=progress)
        backbone = clf._load_backbone(recipe)
        fingerprint = backbone.fingerprint()
        # the same base read in another precision (fitted in fp16 on a GPU, read in fp32 here) passes too
        if fingerprint != manifest.base_fingerprint and not same_weights(weights_probe(backbone), manifest.base_probe):
            raise AdapterSetError(
                f"adapter set {path} was fitted on base model {manifest.base_model!r} (fingerprint "
                f"{manifest.base_fingerprint}), but {recipe.model!r} has fingerprint {fingerprint}; "
                "pass the base model it was fitted on" + ("" if manifest.base_probe else
                                                            " (this set, saved before the base's probe was kept, is "
                                                            "known in the precision it was fitted in alone: load it "
                                                            "with that dtype)")
            )
        adapters = ClassAdapters(backbone, len(manifest.classes), recipe.lora,
                                 block_filter=manifest.lora.get("block_filter"))
        adapters.load_lora_state_dict(weights)
        if recipe.score.weighting == "auto" and not manifest.score_choice:
            raise AdapterSetError(f"{path}: its recipe scores with weighting auto, but the manifest holds no "
                                  "chosen window; refit, or call choose_scoring(X_val, y_val) after loading")
        fit_summary = {k: v for k, v in manifest.fit.items() if k != "loss_curve"}
        return clf._set_fitted(backbone, adapters, manifest.labels(), [c["prompt"] for c in manifest.classes],
                               [c["token"] for c in manifest.classes], recipe, shots=manifest.shots,
                               n_train=manifest.n_train, fit_summary=fit_summary,
                               loss_curve=manifest.fit.get("loss_curve", []), temperature=manifest.temperature,
                               calibration=manifest.calibration, tif_d=manifest.tif_d,
                               score_choice=manifest.score_choice)
