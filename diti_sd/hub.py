"""Adapter sets as Hugging Face Hub model repositories: a model card written with every save, a Hub
repository id accepted wherever a folder is (downloaded once into the Hub's cache), and upload."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .adapter_set import MANIFEST, RECIPE, AdapterSetError
from .files import atomic_write
from .lora.export import class_slug

CARD = "README.md"
EVALUATION = "evaluation.json"  # what `diti-sd eval` measured with this adapter set, if it made it
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


# the licences of the base models users name most; an adapter set is a derivative of its base
BASE_LICENSES = {
    "stabilityai/stable-diffusion-2-base": "openrail++", "stabilityai/stable-diffusion-2": "openrail++",
    "stabilityai/stable-diffusion-2-1-base": "openrail++", "stabilityai/stable-diffusion-2-1": "openrail++",
    "runwayml/stable-diffusion-v1-5": "creativeml-openrail-m", "CompVis/stable-diffusion-v1-4": "creativeml-openrail-m",
}
METRIC_TYPES = {"accuracy": "accuracy", "macro-f1": "f1"}


def card_data(manifest: dict, recipe: dict, evaluation: dict | None = None):
    """The card's metadata (``huggingface_hub.ModelCardData``): library, base model and its licence, the task,
    the data set, and a ``model-index`` with what ``diti-sd eval`` measured."""
    from huggingface_hub import EvalResult, ModelCardData

    base = manifest["base_model"]
    name = recipe.get("name", "custom")
    kind = recipe.get("dataset", {}).get("kind", name)
    license_id = BASE_LICENSES.get(base, "apache-2.0" if base.startswith("builtin:") else "other")
    results = None
    if evaluation:
        metric = evaluation.get("metric", "accuracy")
        results = [EvalResult(task_type="image-classification", dataset_type=kind, dataset_name=evaluation["dataset"],
                              dataset_split="test", metric_type=METRIC_TYPES.get(metric, metric),
                              metric_value=float(evaluation["score"]), metric_name=metric)]
    return ModelCardData(library_name="diti-sd", base_model=None if base.startswith("builtin:") else base,
                         license=license_id, pipeline_tag="image-classification", datasets=[kind],
                         tags=["diti-sd", "few-shot-classification", "lora", "stable-diffusion"],
                         model_name=f"diti-sd-{name}-{manifest.get('shots')}shot", eval_results=results)


def model_card(manifest: dict, recipe: dict, evaluation: dict | None = None):
    """A Hub model card (``huggingface_hub.ModelCard``) from an adapter set's manifest and recipe."""
    from huggingface_hub import ModelCard

    classes = [c["name"] for c in manifest["classes"]]
    fit, score, lora = recipe.get("fit", {}), recipe.get("score", {}), manifest.get("lora", {})
    shown = ", ".join(f"`{c}`" for c in classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
    first = classes[0] if classes else "class"
    lines = [
        f"# DiTi-SD adapters: {recipe.get('name', 'custom')}, {len(classes)} classes, {manifest.get('shots')} shots",
        "",
        f"Per-class LoRA adapters and prompts on **{manifest['base_model']}** (base fingerprint "
        f"`{manifest['base_fingerprint']}`: another base model is refused), fitted by "
        f"diti-sd {manifest.get('diti_sd_version', '')}. A test image is classified by "
        "which class's adapter denoises it best.",
        "",
        "```python",
        "from diti_sd import DiTiFewShotClassifier",
        "clf = DiTiFewShotClassifier.from_pretrained(\"<this repository or folder>\")",
        "clf.predict(images)",
        "```",
        "",
        "With `diti-sd fit --export-diffusers` each class is also a diffusers LoRA file; the folder holds one",
        "file per class, so name the one to load:",
        "",
        "```python",
        f"pipe.load_lora_weights(\"<folder>/diffusers\", weight_name=\"{class_slug(0, first)}.safetensors\")",
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| classes | {shown} |",
        f"| shots (fewest images of a class) / images fitted | {manifest.get('shots')} / {manifest.get('n_train')} |",
        f"| seed | {manifest.get('random_state')} |",
        f"| recipe | `{recipe.get('name', 'custom')}` (resolved in `recipe.yaml`) |",
        f"| LoRA | rank {lora.get('rank')}, text rank {lora.get('text_rank')}, blocks `{lora.get('block_filter')}`, "
        f"{lora.get('unet_modules')} UNet + {lora.get('text_modules')} text-encoder modules |",
        f"| training | {manifest.get('fit', {}).get('iterations')} iterations, lr {fit.get('lr')}, t in "
        f"[{fit.get('t_min')}, {fit.get('t_max')}), crop `{fit.get('crop')}` |",
        f"| scoring | t in {_scoring_window(manifest, score)}, stages {score.get('rounds')}, weighting "
        f"`{score.get('weighting')}`, LoRA scale {score.get('unet_scale')} / {score.get('text_scale')} |",
        f"| probabilities | softmax at temperature {manifest.get('temperature'):.3g} (calibration: "
        f"{manifest.get('calibration', {}).get('source', 'none')}) |",
        "",
    ]
    if evaluation:
        lines += ["## Evaluation", "",
                  f"`diti-sd eval` on {evaluation.get('dataset')}, {evaluation.get('n_test')} test images: "
                  f"{evaluation.get('metric')} **{evaluation.get('score'):.4f}** "
                  f"({evaluation.get('unet_calls_per_image')} UNet calls per image).", ""]
    data = card_data(manifest, recipe, evaluation)
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines))


def _scoring_window(manifest: dict, score: dict) -> str:
    """The window a test pass scores; with weighting auto, what was chosen and on what."""
    choice = manifest.get("score_choice")
    if not choice:
        return f"[{score.get('t_min')}, {score.get('t_max')})"
    rivals = ", ".join(f"{k} {v:.3f}" for k, v in choice.get("candidates", {}).items())
    return (f"[{choice['t_min']}, {choice['t_max']}) weighted `{choice['weighting']}`, chosen as **{choice['name']}** "
            f"on {choice.get('source')} by the true class's log-likelihood ({choice.get('metric') or 'metric'}: "
            f"{rivals or 'no candidates scored'}; {choice.get('unet_calls')} UNet calls)")


def write_model_card(path: str | os.PathLike, recipe: dict | None = None, evaluation: dict | None = None) -> Path:
    """(Re)write ``README.md`` of the adapter set at ``path`` (``recipe``: its resolved recipe, read from
    its ``recipe.yaml`` when None); ``evaluation`` is kept in ``evaluation.json`` so that a later save
    keeps the figures."""
    import yaml

    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    if recipe is None:
        recipe = yaml.safe_load((path / RECIPE).read_text()) if (path / RECIPE).is_file() else {}
    if evaluation is not None:
        atomic_write(path / EVALUATION, lambda tmp: tmp.write_text(json.dumps(evaluation, indent=2)))
    elif (path / EVALUATION).is_file():
        evaluation = json.loads((path / EVALUATION).read_text())
    card = model_card(manifest, recipe, evaluation)
    return atomic_write(path / CARD, lambda tmp: card.save(tmp))


def snapshot_download(repo_id: str, revision: str | None = None) -> str:
    from huggingface_hub import snapshot_download as download

    return download(repo_id=repo_id, revision=revision)


def resolve_adapter_set(path_or_repo: str | os.PathLike, revision: str | None = None) -> Path:
    """A local adapter-set folder as it is; a Hub repository id (``owner/name``) downloaded (once; the
    Hub's cache keeps it) and returned as its local snapshot folder."""
    path = Path(path_or_repo)
    if path.exists() or not _REPO_ID.fullmatch(str(path_or_repo)):
        return path
    try:
        return Path(snapshot_download(str(path_or_repo), revision))
    except Exception as err:  # offline, unknown repository, no access
        raise AdapterSetError(
            f"{path_or_repo} is neither a folder here nor a Hub repository that could be downloaded "
            f"({type(err).__name__}: {err}); check the name, your network, or `hf auth login`"
        ) from None


def push_adapter_set(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None,
                     commit_message: str = "Upload DiTi-SD adapter set") -> str:
    """Create ``repo_id`` (a model repository) if needed and upload the adapter-set folder; returns its URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message)
    return str(url)
