
import numpy as np
import pytest
import torch
from helpers import color_images
from safetensors import safe_open
from safetensors.torch import load_file
from torchvision.utils import save_image

from diti_sd import DiTiFewShotClassifier
from diti_sd.adapter_set import AdapterSetError
from diti_sd.cli import predict
from diti_sd.data import ImageReadError, ImageSequence, LabeledImages
from diti_sd.errors import ConfigError
from diti_sd.lora import StackedLoRALinear
from diti_sd.testing.tiny import build_tiny_backbone


def tiny_clf(model, **kw):
    kw.setdefault("progress", False)
    return DiTiFewShotClassifier(model=str(model), recipe="tiny", **kw)


def test_fitting_helps_on_a_learnable_task(color_model_dir):
    X, y = color_images(12, seed=1)
    X_test, y_test = color_images(30, seed=2)
    # this toy's class signal lies at t < 250 (per-t accuracy is at chance from t = 500 on, and the
    # errors at small t are 20x larger, so a uniform mean over [0, 1000) hangs on the few small t drawn)
    clf = tiny_clf(color_model_dir, steps=100, score_window=(0, 250), overrides={"score.rounds": [[16, 1]]})
    assert clf.fit(X, y) is clf
    accuracy = clf.score(X_test, y_test)
    print(f"accuracy after fit: {accuracy:.3f} (chance 0.333)")
    assert accuracy >= 0.6
    proba = clf.predict_proba(X_test[:5])
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1)
    assert list(clf.classes_) == ["c0", "c1", "c2"]
    assert (clf.classes_[proba.argmax(1)] == clf.predict(X_test[:5])).all()


def test_save_load_gives_identical_predictions_and_refit_forgets(tiny_model_dir, tmp_path):
    X, y = color_images(6, seed=3)
    clf = tiny_clf(tiny_model_dir).fit(X, y)
    logits = clf.decision_function(X)
    path = clf.save_pretrained(tmp_path / "set")
    loaded = DiTiFewShotClassifier.from_pretrained(path, progress=False)
    assert list(loaded.classes_) == list(clf.classes_) and loaded.prompts_ == clf.prompts_
    assert np.allclose(loaded.decision_function(X), logits, atol=1e-6)
    assert (loaded.predict(X) == clf.predict(X)).all()

    # a second fit on other classes replaces the adapters instead of stacking on them
    clf.fit(X[:4], ["a", "b", "a", "b"])
    assert list(clf.classes_) == ["a", "b"]
    unet = clf.backbone_.unet
    layers = [m for m in unet.modules() if isinstance(m, StackedLoRALinear)]
    assert len(layers) == len(clf.adapters_.unet_names)
    assert all(not isinstance(m.base, StackedLoRALinear) and m.num_classes == 2 for m in layers)


def test_the_fit_records_how_its_images_were_read_and_diti_sd_predict_reads_new_ones_so(tiny_model_dir, tmp_path):
    # a recipe of Duke's: the archive's preparation is what predict falls back on where the fit cannot tell
    X, y = color_images(4, seed=3)
    files = []
    for i, image in enumerate(X):
        files.append(tmp_path / f"{i}.png")
        save_image(image, files[-1])
    labels = sorted(set(y))
    view = ImageSequence(LabeledImages(files, [labels.index(v) for v in y], labels, prepare="pad-square"))
    # images already read: unknown; image files: read as they are; a data set's view: its own preparation
    for name, images, recorded, expected in (("read", X, None, "tif-duke"), ("files", files, "", ""),
                                             ("view", view, "pad-square", "pad-square")):
        clf = tiny_clf(tiny_model_dir, steps=1, overrides={"dataset.kind": "duke"}).fit(images, y)
        assert clf.fit_summary_["image_preparation"] == recorded
        path = clf.save_pretrained(tmp_path / name)
        assert DiTiFewShotClassifier.from_pretrained(path, progress=False).fit_summary_["image_preparation"] == recorded
        assert predict.preparation(path, "auto") == expected


def test_a_refit_loads_the_base_again_only_when_the_parameters_ask_for_another(tiny_model_dir):
    X, y = color_images(6, seed=4)
    clf = tiny_clf(tiny_model_dir, steps=1).fit(X, y)
    first = clf.backbone_
    assert clf.fit(X, y).backbone_ is first  # the same parameters: the base already loaded
    clf.set_params(overrides={"resolution": 32})
    assert clf.fit(X, y).backbone_ is not first and clf.backbone_.resolution == 32
    for seed in (None, 1.5, True):  # refused before the base loads, in one line
        with pytest.raises(ConfigError, match="random_state must be an integer seed"):
            tiny_clf("no/such-model", random_state=seed).fit(X, y)


def test_fit_is_deterministic_and_independent_of_batch_grouping(tiny_model_dir):
    X, y = color_images(6, seed=4)
    one = tiny_clf(tiny_model_dir, overrides={"fit.batch_size": 8}).fit(X, y).adapters_.lora_state_dict()
    again = tiny_clf(tiny_model_dir, overrides={"fit.batch_size": 8}).fit(X, y).adapters_.lora_state_dict()
    per_class = tiny_clf(tiny_model_dir, overrides={"fit.batch_size": 2}).fit(X, y).adapters_.lora_state_dict()
    for key in one:
        assert torch.equal(one[key], again[key])
    # float rounding differs with the batch shape, and Adam can blow a rounding difference in a near-zero
    # gradient up to a visible step on a few weights (up to 2.4e-4 measured); a grouping bug would move
    # most weights by about the learning rate (3e-3)
    diff = torch.cat([(one[k] - per_class[k]).abs().flatten() for k in one])
    assert float((diff > 1e-5).float().mean()) < 1e-3 and float(diff.max()) < 1e-3
    assert any(v.abs().sum() > 0 for k, v in one.items() if k.endswith("lora_B"))


def test_interrupted_fit_resumes_to_the_same_adapters(tiny_model_dir, tmp_path):
    X, y = color_images(12, seed=5)  # 4 shots: 6 steps in the tiny recipe, a checkpoint every 3
    unbroken = tiny_clf(tiny_model_dir).fit(X, y, output_dir=tmp_path / "a")
    full = unbroken.adapters_.lora_state_dict()

    def stop_at_five(iteration, loss):
        if iteration == 5:
            raise KeyboardInterrupt

    clf = tiny_clf(tiny_model_dir)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y, output_dir=tmp_path / "b", callback=stop_at_five)
    assert (tmp_path / "b" / "checkpoint" / "state.json").is_file()
    resumed = clf.fit(X, y, output_dir=tmp_path / "b", resume=True)
    assert resumed.fit_summary_["resumed_from"] == 3
    for key, value in resumed.adapters_.lora_state_dict().items():
        assert torch.allclose(value, full[key], atol=1e-6), key
    # the losses before the checkpoint are kept in it
    assert len(resumed.loss_curve_) == len(unbroken.loss_curve_)
    assert np.allclose(resumed.loss_curve_, unbroken.loss_curve_, rtol=1e-6)
    assert (tmp_path / "b" / "checkpoint").exists()  # the trained adapters, until the set is saved there
    resumed.save_pretrained(tmp_path / "b")
    assert not (tmp_path / "b" / "checkpoint").exists()

    # a checkpoint from other settings is refused, not silently mixed in
    with pytest.raises(KeyboardInterrupt):
        tiny_clf(tiny_model_dir).fit(X, y, output_dir=tmp_path / "c", callback=stop_at_five)
    with pytest.raises(ValueError, match="made by a fit with other"):
        tiny_clf(tiny_model_dir, rank=2).fit(X, y, output_dir=tmp_path / "c", resume=True)


def test_adapter_set_from_another_base_model_is_refused(tiny_model_dir, tmp_path):
    X, y = color_images(4, seed=6)
    path = tiny_clf(tiny_model_dir).fit(X, y).save_pretrained(tmp_path / "set")
    other = build_tiny_backbone(seed=7).save_pretrained(tmp_path / "other-base")
    with pytest.raises(AdapterSetError, match="fitted on base model .* has fingerprint"):
        DiTiFewShotClassifier.from_pretrained(path, model=other, progress=False)
    (path / "adapters.safetensors").write_bytes(b"truncated")
    with pytest.raises(AdapterSetError, match="does not match its manifest"):
        DiTiFewShotClassifier.from_pretrained(path, progress=False)
    with pytest.raises(AdapterSetError, match="not an adapter set"):
        DiTiFewShotClassifier.from_pretrained(tmp_path, progress=False)


@pytest.mark.parametrize(
    "X, y, error, message",
    [
        ([], [], ValueError, "no images"),
        ([torch.rand(3, 8, 8)] * 2, ["a"], ValueError, "2 images but 1 labels"),
        ([torch.rand(3, 8, 8)] * 2, ["a", "a"], ValueError, "at least two classes"),
        (["/no/such/image.png", torch.rand(3, 8, 8)], ["a", "b"], ImageReadError, "image file not found"),
    ],
)
def test_bad_fit_input_is_explained(tiny_model_dir, X, y, error, message):
    with pytest.raises(error, match=message):
        tiny_clf(tiny_model_dir).fit(X, y)


def test_estimator_contract_and_errors(tiny_model_dir):
    clf = tiny_clf(tiny_model_dir, rank=2)
    assert clf.get_params()["rank"] == 2 and not hasattr(clf, "classes_")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted"):  # scikit-learn's except clauses catch ours
        clf.predict([torch.rand(3, 64, 64)])
    clf.set_params(rank=4)
    with pytest.raises(ValueError, match="(?i)invalid parameter"):
        clf.set_params(nope=1)
    X, y = color_images(4, seed=8)
    clf.fit(X, y)
    with pytest.raises(ValueError, match="not among the fitted classes"):
        clf.score(X[:1], ["zebra"])
    with pytest.raises(ValueError, match="unknown classes"):
        clf.sample(["zebra"])


def test_zero_shot_scores_with_diffusion_classifiers_weighting_by_default(tiny_model_dir):
    # the default recipe (image-folder) scores with TiF's weight, which needs train images
    clf = DiTiFewShotClassifier.zero_shot(["red", "blue"], "a photo of a {} object.", model=str(tiny_model_dir),
                                          overrides={"score.rounds": [[2, 1]]}, progress=False)
    assert clf.recipe_.score.weighting == "uniform" and list(clf.classes_) == ["red", "blue"]
    X, _ = color_images(2, seed=3)
    proba = clf.predict_proba(X)
    assert proba.shape == (2, 2) and np.allclose(proba.sum(1), 1)
    with pytest.raises(ConfigError, match="needs train images"):
        DiTiFewShotClassifier.zero_shot(["red", "blue"], "a {}", model=str(tiny_model_dir),
                                        overrides={"score.weighting": "tif"}, progress=False)


def test_exported_class_loads_into_a_diffusers_pipeline(tiny_model_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    X, y = color_images(6, seed=9)
    clf = tiny_clf(tiny_model_dir, overrides={"lora.text_rank": 2}).fit(X, y)
    files = clf.export_diffusers(tmp_path / "export")
    assert [f.name for f in files] == ["000-c0.safetensors", "001-c1.safetensors", "002-c2.safetensors"]
    assert any(k.startswith("text_encoder.") for k in load_file(str(files[1])))

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def generate():
        return pipe("a photo", num_inference_steps=3, guidance_scale=2.0, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    before = generate()
    latents = torch.randn(1, 4, 8, 8)
    t = torch.tensor([400])
    ids = clf.backbone_.tokenize([clf.prompts_[1]])
    # a folder (or Hub repository) holding one file per class: weight_name picks the class
    pipe.load_lora_weights(str(tmp_path / "export"), weight_name=files[1].name, adapter_name="c")
    after = generate()
    assert not np.allclose(before, after)
    # the pipeline with the exported file computes what the class adapter computes
    with torch.no_grad(), clf.adapters_.use(unet_index=[1], text_index=[1]):
        ours_ctx = clf.backbone_.text_encoder(ids)[0]
        ours = clf.backbone_.unet(latents, t, encoder_hidden_states=ours_ctx).sample
    with torch.no_grad():
        theirs_ctx = pipe.text_encoder(ids)[0]
        theirs = pipe.unet(latents, t, encoder_hidden_states=theirs_ctx).sample
    assert torch.allclose(ours_ctx, theirs_ctx, atol=1e-5)
    assert torch.allclose(ours, theirs, atol=1e-4)
    # the recipe's test-time scales, one per component, as the README sets them
    pipe.set_adapters("c", adapter_weights={"unet": 0.6, "text_encoder": 0.7})
    with torch.no_grad(), clf.adapters_.use(unet_index=[1], text_index=[1], unet_scale=0.6, text_scale=0.7):
        ours_ctx = clf.backbone_.text_encoder(ids)[0]
        ours_scaled = clf.backbone_.unet(latents, t, encoder_hidden_states=ours_ctx).sample
    with torch.no_grad():
        theirs_ctx = pipe.text_encoder(ids)[0]
        theirs = pipe.unet(latents, t, encoder_hidden_states=theirs_ctx).sample
    assert torch.allclose(ours_ctx, theirs_ctx, atol=1e-5) and torch.allclose(ours_scaled, theirs, atol=1e-4)
    assert not torch.allclose(ours_scaled, ours, atol=1e-4)
    assert safe_open(str(files[1]), "pt").metadata()["prompt"] == clf.prompts_[1]


def test_gradient_checkpointing_changes_nothing_but_memory(tiny_model_dir):
    X, y = color_images(6, seed=4)
    over = {"lora.text_rank": 2, "fit.brightness": 0.2, "fit.contrast": 0.1}
    plain = tiny_clf(tiny_model_dir, overrides=over).fit(X, y).adapters_.lora_state_dict()
    ckpt = tiny_clf(tiny_model_dir, overrides={**over, "fit.gradient_checkpointing": True}).fit(X, y)
    state = ckpt.adapters_.lora_state_dict()
    for key in plain:
        assert torch.allclose(plain[key], state[key], atol=1e-6), key
    assert any(v.abs().sum() > 0 for k, v in state.items() if k.startswith("text_encoder.") and k.endswith("lora_B"))
    assert not ckpt.backbone_.unet.is_gradient_checkpointing


def test_training_dropout_is_seeded_per_step_and_resumes_to_the_same_adapters(tiny_model_dir, tmp_path):
    X, y = color_images(12, seed=5)
    over = {"lora.text_rank": 2, "fit.dropout": 0.3}
    plain = tiny_clf(tiny_model_dir, overrides={"lora.text_rank": 2}).fit(X, y).adapters_.lora_state_dict()
    full = tiny_clf(tiny_model_dir, overrides=over).fit(X, y, output_dir=tmp_path / "a").adapters_.lora_state_dict()
    # the masks change what is learnt (a dropout left off would not move a weight)
    assert max(float((full[k] - plain[k]).abs().max()) for k in full) > 1e-4

    def stop_at_five(iteration, loss):
        if iteration == 5:
            raise KeyboardInterrupt

    clf = tiny_clf(tiny_model_dir, overrides=over)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y, output_dir=tmp_path / "b", callback=stop_at_five)
    resumed = clf.fit(X, y, output_dir=tmp_path / "b", resume=True)
    assert resumed.fit_summary_["resumed_from"] == 3
    for key, value in resumed.adapters_.lora_state_dict().items():
        assert torch.allclose(value, full[key], atol=1e-6), key


@pytest.mark.slow  # torch.compile takes about two minutes on this CPU
def test_compiled_scoring_gives_the_same_scores(tiny_model_dir):
    X, y = color_images(6, seed=12)
    clf = tiny_clf(tiny_model_dir).fit(X, y)
    eager = clf.decision_function(X)
    clf.set_params(compile=True)
    assert np.allclose(clf.decision_function(X), eager, atol=1e-4)
    assert clf.backbone_.compiled_unet is not None


def test_an_interrupted_scoring_pass_continues_with_the_same_numbers(tiny_model_dir, tmp_path, monkeypatch):
    import diti_sd.classifier as facade

    X, y = color_images(6, seed=3)
    clf = tiny_clf(tiny_model_dir).fit(X, y)
    uninterrupted = clf.score_images(X, chunk=2)
    real, calls = facade.score_latents, []

    def interrupted_after_one_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(facade, "score_latents", interrupted_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        clf.score_images(X, chunk=2, cache_dir=tmp_path / "scores")
    assert len(list((tmp_path / "scores").glob("*.npz"))) == 1
    calls.clear()
    monkeypatch.setattr(facade, "score_latents", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = clf.score_images(X, chunk=2, cache_dir=tmp_path / "scores")
    assert len(calls) == 2  # the finished chunk is read back, the other two are scored
    for field in ("errors", "logits", "unet_calls"):
        assert np.array_equal(getattr(resumed, field), getattr(uninterrupted, field), equal_nan=True), field
    # other adapters (a fit with another seed) never read these chunks
    calls.clear()
    other = tiny_clf(tiny_model_dir, random_state=7).fit(X, y)
    other.score_images(X, chunk=2, cache_dir=tmp_path / "scores")
    assert len(calls) == 3


def test_mixed_precision_is_for_gpus_and_fits_follow_each_other(tiny_model_dir):
    # a recipe's fp16/bf16 applies on a GPU; on a CPU the fit runs in fp32, whatever ran before it in the
    # process (accelerate's process-wide state used to refuse the second precision)
    X, y = color_images(6, seed=5)
    weights = [tiny_clf(tiny_model_dir, overrides={"fit.mixed_precision": mp}).fit(X, y).adapters_.lora_state_dict()
               for mp in ("no", "fp16", "bf16")]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]) and torch.equal(weights[0][key], weights[2][key])
    with pytest.raises(ValueError, match="mixed_precision"):
        tiny_clf(tiny_model_dir, overrides={"fit.mixed_precision": "fp8"}).fit(X, y)


def test_pruned_classes_rank_below_the_survivors_by_their_own_errors():
    from diti_sd.metrics import softmax
    from diti_sd.scoring import rank_logits

    # class 0 survives; class 3 was dropped after round 1; classes 1, 2, 4 after round 0, two of them
    # with lower mean errors (over fewer t) than the survivor's
    errors = np.array([[0.5, 0.1, 0.2, 0.3, 0.9]])
    logits = rank_logits(errors, np.array([[-1, 0, 0, 1, 0]]), 2)
    assert np.argsort(-logits[0]).tolist() == [0, 3, 1, 2, 4]
    p = softmax(logits)[0]
    assert (p > 0).all() and len(set(p.round(12).tolist())) == 5  # no zeros, no ties
    # within the round-0 group, the gaps of the errors are kept (0.1 between 1 and 2, 0.7 between 2 and 4)
    assert (logits[0, 1] - logits[0, 2]) / (logits[0, 2] - logits[0, 4]) == pytest.approx(0.1 / 0.7)


def test_calibration_holds_out_a_share_of_the_shots_and_travels_with_the_set(tiny_model_dir, tmp_path):
    X, y = color_images(12, seed=5)  # 4 images per class
    with pytest.raises(ValueError, match="share of each class's images"):
        tiny_clf(tiny_model_dir).fit(X, y, calibration=1.5)
    with pytest.raises(ValueError, match="leaves fewer than 4 to fit on"):
        tiny_clf(tiny_model_dir, overrides={"fit.min_shots": 4}).fit(X, y, calibration=0.25)
    clf = tiny_clf(tiny_model_dir, validation_budget=None).fit(X, y, calibration=0.25)
    assert clf.n_train_ == 9 and clf.shots_ == 3  # one image of each class held out
    assert clf.calibration_["source"].startswith("held-out share 0.25 of the shots")
    assert clf.calibration_["images"] == 3 and clf.calibration_["unet_calls"] == 3 * 3 * 24
    assert clf.calibration_["nll"] <= clf.calibration_["nll_at_1"]
    again = DiTiFewShotClassifier.from_pretrained(clf.save_pretrained(tmp_path / "set"), progress=False)
    assert again.temperature_ == clf.temperature_ and again.calibration_ == clf.calibration_
    assert tiny_clf(tiny_model_dir).fit(X, y).calibration_ == {"source": "none"}


def test_the_fp16_loss_scale_travels_with_the_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    # a GPU fit in fp16 scales its loss, and the scale changes as it trains: a resumed fit must continue from
    # the interrupted fit's scale, not from the initial one. On a CPU, with fp16 loss scaling switched on:
    import diti_sd.training.loop as loop
    from diti_sd.training.precision import MixedPrecision

    made = []

    class Scaled(MixedPrecision):
        def __init__(self, mixed, device_type):
            super().__init__("no", device_type)
            self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
            made.append(self)

    monkeypatch.setattr(loop, "MixedPrecision", Scaled)
    X, y = color_images(12, seed=5)
    unbroken = tiny_clf(tiny_model_dir).fit(X, y, output_dir=tmp_path / "a")
    full = unbroken.adapters_.lora_state_dict()
    scales = []
    real = loop.save_checkpoint

    def save_then_stop(folder, checkpoint):
        scales.append(checkpoint.helpers["scaler"]["scale"])
        real(folder, checkpoint)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        tiny_clf(tiny_model_dir).fit(X, y, output_dir=tmp_path / "b")
    monkeypatch.setattr(loop, "save_checkpoint", real)
    assert scales == [2.0**13]  # grown once a step for three steps: the state differs from a fresh scaler's
    assert torch.load(tmp_path / "b" / "checkpoint" / "scaler.pt")["scale"] == 2.0**13
    resumed = tiny_clf(tiny_model_dir).fit(X, y, output_dir=tmp_path / "b", resume=True)
    assert resumed.fit_summary_["resumed_from"] == 3
    # six steps in all, the scale doubling at each: the resumed fit ends where the uninterrupted one did
    assert made[0].scaler.get_scale() == made[-1].scaler.get_scale() == 2.0**16
    for key, value in resumed.adapters_.lora_state_dict().items():
        assert torch.equal(value, full[key]), key
