"""Adapter sets where users of diffusers, peft and the Hugging Face Hub expect them."""

import json

import pytest
import torch
from helpers import color_images

from diti_sd import DiTiFewShotClassifier


@pytest.fixture(scope="module")
def fitted(tiny_model_dir):
    X, y = color_images(6, seed=9)
    return DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", overrides={"lora.text_rank": 2},
                                 progress=False).fit(X, y)


def test_stacked_adapters_compute_what_peft_loras_compute(fitted, tiny_model_dir, tmp_path):
    # peft is the reference LoRA: each exported class, loaded by PeftModel onto a fresh base, and one
    # mixed batch routed per sample (adapter_names) equal the stacked layers' output for that class
    from peft import PeftModel

    from diti_sd.backbone import load_backbone

    folders = fitted.export_peft(tmp_path / "peft")
    assert [f.name for f in folders] == ["000-c0", "001-c1", "002-c2"]
    config = json.loads((folders[1] / "unet" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 8 and len(config["target_modules"]) == len(
        fitted.adapters_.unet_names)
    base = load_backbone(str(tiny_model_dir), device="cpu")
    unet = PeftModel.from_pretrained(base.unet, str(folders[0] / "unet"), adapter_name="c0")
    text = PeftModel.from_pretrained(base.text_encoder, str(folders[0] / "text_encoder"), adapter_name="c0")
    for c in (1, 2):
        unet.load_adapter(str(folders[c] / "unet"), adapter_name=f"c{c}")
        text.load_adapter(str(folders[c] / "text_encoder"), adapter_name=f"c{c}")
    names = ["c0", "c1", "c2"]
    ids = fitted.backbone_.tokenize(fitted.prompts_)
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100, 400, 700])
    with torch.no_grad(), fitted.adapters_.use(unet_index=[0, 1, 2], text_index=[0, 1, 2]):
        ours_ctx = fitted.backbone_.text_encoder(ids)[0]
        ours = fitted.backbone_.unet(latents, t, encoder_hidden_states=ours_ctx).sample
    with torch.no_grad():
        theirs_ctx = text(input_ids=ids, adapter_names=names)[0]
        theirs = unet(latents, t, encoder_hidden_states=theirs_ctx, adapter_names=names).sample
    torch.testing.assert_close(theirs_ctx, ours_ctx, rtol=0, atol=1e-5)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    # and the adapters matter: the base alone computes something else
    with torch.no_grad(), unet.disable_adapter():
        assert not torch.allclose(unet(latents, t, encoder_hidden_states=theirs_ctx).sample, ours, atol=1e-3)


def test_an_adapter_set_travels_as_a_hub_model_repository(fitted, tiny_model_dir, tmp_path, monkeypatch):
    import diti_sd.hub as hub

    saved = fitted.save_pretrained(tmp_path / "set")
    from huggingface_hub import ModelCard

    card = ModelCard.load(saved / "README.md")
    assert card.data.library_name == "diti-sd" and card.data.pipeline_tag == "image-classification"
    assert card.data.base_model == fitted.recipe_.model and card.data.license == "other"
    assert card.data.datasets == ["image-folder"] and not card.data.eval_results
    assert fitted.base_fingerprint_ in card.text and "`c0`, `c1`, `c2`" in card.text and "| seed | 0 |" in card.text
    assert 'weight_name="000-c0.safetensors"' in card.text  # how diffusers loads one class of the folder
    # what diti-sd eval measured becomes the card's model-index
    hub.write_model_card(saved, evaluation={"dataset": "colours", "n_test": 6, "metric": "accuracy",
                                            "score": 0.5, "unet_calls_per_image": 12})
    result = ModelCard.load(saved / "README.md").data.eval_results[0]
    assert (result.task_type, result.dataset_name, result.metric_type, result.metric_value) == (
        "image-classification", "colours", "accuracy", 0.5)

    # from_pretrained takes a repository id: the download function is replaced by a local snapshot
    asked = []

    def fake_download(repo_id, revision=None):
        asked.append((repo_id, revision))
        return str(saved)

    monkeypatch.setattr(hub, "snapshot_download", fake_download)
    again = DiTiFewShotClassifier.from_pretrained("someone/diti-colors", model=str(tiny_model_dir), revision="v1",
                                                  progress=False)
    assert asked == [("someone/diti-colors", "v1")]
    assert again.classes_.tolist() == fitted.classes_.tolist()
    X, _ = color_images(2, seed=3)
    assert (again.predict(X) == fitted.predict(X)).all()
    with pytest.raises(ValueError, match="neither a folder here nor a Hub repository"):
        monkeypatch.setattr(hub, "snapshot_download", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
        DiTiFewShotClassifier.from_pretrained("someone/missing", progress=False)

    # push_to_hub: the saved folder, card included, goes to a model repository
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private, exist_ok, repo_type):
            calls["create"] = (repo_id, private, exist_ok, repo_type)
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
            calls["files"] = sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    url = fitted.push_to_hub("me/diti-colors", private=True, token="t")
    assert url == "https://huggingface.co/me/diti-colors"
    assert calls["create"] == ("me/diti-colors", True, True, "model") and calls["token"] == "t"
    assert calls["files"] == ["README.md", "adapters.safetensors", "manifest.json", "recipe.yaml"]
