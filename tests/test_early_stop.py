import pytest
import torch
from helpers import color_images

from diti_sd import DiTiFewShotClassifier
from diti_sd.errors import ConfigError
from diti_sd.preprocessing import uint8_pixels
from diti_sd.training.early_stop import HeldOutStop, checks, split_held_out

# 12 images: 3 classes x 4 shots, 6 steps in the tiny recipe (one iteration per step), a checkpoint every 3;
# with a check every 2 steps the checks come after steps 2, 4 and 6
ES = {"fit.early_stop_every": 2, "fit.early_stop_pairs": 4}


def tiny_clf(model, over=None):
    return DiTiFewShotClassifier(model=str(model), recipe="tiny", progress=False, overrides={**ES, **(over or {})})


def scripted_errors(by_class):
    """HeldOutStop.errors replaced by fixed errors per class and check (the k-th check reads entry k)."""
    def errors(self, scales=None):
        return {c: by_class[c][len(self.history[c])] for c in self.classes}
    return errors


def test_checks_and_held_out_split_are_fixed_by_the_seed():
    assert checks(6, 2) == [2, 4, 6] and checks(7, 3) == [3, 6, 7]
    images = [torch.arange(4 * 3).view(4, 3, 1, 1) + 100 * c for c in range(3)]
    kept, held = split_held_out(images, seed=7)
    again = split_held_out(images, seed=7)[1]
    for c in range(3):
        assert kept[c].shape[0] == 3 and torch.equal(held[c], again[c])
        assert not any(torch.equal(held[c], k) for k in kept[c])  # the held-out image is not trained on
        assert sorted(torch.cat([kept[c], held[c][None]])[:, 0, 0, 0].tolist()) == images[c][:, 0, 0, 0].tolist()


# one group of 3 classes per iteration, UNet LoRA only; and one class per iteration (3 groups, 18
# iterations) with text-encoder LoRAs too
@pytest.mark.parametrize("setting", [{}, {"fit.batch_size": 2, "lora.text_rank": 2}])
def test_each_class_keeps_its_adapter_of_the_lowest_held_out_error(tiny_model_dir, monkeypatch, setting):
    X, y = color_images(12, seed=5)
    # class 0 is best after step 2, class 1 after step 4, class 2 at the end
    monkeypatch.setattr(HeldOutStop, "errors", scripted_errors({0: [1.0, 2.0, 3.0], 1: [2.0, 1.0, 3.0],
                                                                2: [3.0, 2.0, 1.0]}))
    clf = tiny_clf(tiny_model_dir, setting).fit(X, y)
    assert clf.fit_summary_["stopped_at"] == [2, 4, 6]
    assert clf.fit_summary_["held_out_error"] == [1.0, 1.0, 1.0]
    assert clf.fit_summary_["early_stop_unet_samples"] == 3 * 4 * 3  # checks x pairs x classes
    stopped = clf.adapters_.lora_state_dict()
    for c, steps in ((0, 2), (1, 4), (2, 6)):
        short = tiny_clf(tiny_model_dir, {**setting, "fit.steps": steps}).fit(X, y).adapters_.lora_state_dict()
        for key, value in stopped.items():
            assert torch.allclose(value[c], short[key][c], atol=1e-6), (c, key)
    # stopping early is not a no-op: class 0 after 2 steps differs from class 0 after 6
    monkeypatch.setattr(HeldOutStop, "errors", scripted_errors({c: [3.0, 2.0, 1.0] for c in range(3)}))
    full = tiny_clf(tiny_model_dir, setting).fit(X, y).adapters_.lora_state_dict()
    for part in ("unet.", "text_encoder.") if setting else ("unet.",):
        assert max(float((stopped[k][0] - full[k][0]).abs().max()) for k in stopped if k.startswith(part)) > 1e-4


def test_held_out_errors_are_read_with_each_class_own_adapter(tiny_model_dir):
    X, y = color_images(12, seed=5)
    clf = tiny_clf(tiny_model_dir, {"lora.text_rank": 2}).fit(X, y)
    assert all(s in (2, 4, 6) for s in clf.fit_summary_["stopped_at"])
    every = uint8_pixels(X, 64)
    pixels = [every[c::3] for c in range(3)]  # the classifier's per-class images, in order
    held = split_held_out(pixels, seed=clf.random_state)[1]
    recipe = clf.resolved_recipe()
    stop = HeldOutStop(clf.backbone_, clf.adapters_, held, clf.prompts_, recipe.fit, clf.random_state, [0, 1, 2])
    before = stop.errors()
    assert before == pytest.approx(dict(enumerate(clf.fit_summary_["held_out_error"])), rel=1e-4)
    # the errors are the adapters': all scales at 0 (no adapter) give others
    assert stop.errors((0.0, 0.0)) != pytest.approx(before, rel=1e-4)
    # each class's error reads its own UNet and text adapters, and no other class's
    state = clf.adapters_.lora_state_dict()
    for part in ("unet.", "text_encoder."):
        changed = {k: v.clone() for k, v in state.items()}
        for k in changed:
            if k.startswith(part) and k.endswith("lora_B"):
                changed[k][1] = 0
        clf.adapters_.load_lora_state_dict(changed)
        after = stop.errors()
        clf.adapters_.load_lora_state_dict(state)
        assert after[0] == pytest.approx(before[0], rel=1e-6) and after[2] == pytest.approx(before[2], rel=1e-6)
        assert after[1] != pytest.approx(before[1], rel=1e-4), part


def test_an_interrupted_early_stopped_fit_resumes_to_the_same_adapters(tiny_model_dir, tmp_path, monkeypatch):
    X, y = color_images(12, seed=5)
    # every class is best at the first check, which only the checkpoint (after step 3) remembers on resume
    monkeypatch.setattr(HeldOutStop, "errors", scripted_errors({c: [1.0, 2.0, 3.0] for c in range(3)}))
    full = tiny_clf(tiny_model_dir).fit(X, y, output_dir=tmp_path / "a")

    def stop_at_five(iteration, loss):
        if iteration == 5:
            raise KeyboardInterrupt

    clf = tiny_clf(tiny_model_dir)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y, output_dir=tmp_path / "b", callback=stop_at_five)
    resumed = clf.fit(X, y, output_dir=tmp_path / "b", resume=True)
    assert resumed.fit_summary_["resumed_from"] == 3
    assert resumed.fit_summary_["stopped_at"] == full.fit_summary_["stopped_at"] == [2, 2, 2]
    expected = full.adapters_.lora_state_dict()
    for key, value in resumed.adapters_.lora_state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key


def test_too_few_shots_to_hold_one_out_are_refused_before_any_work(tiny_model_dir):
    X, y = color_images(4, seed=5)  # class c0 has 2 images, c1 and c2 one each
    with pytest.raises(ConfigError, match="fewer than 2 images.*turn fit.early_stop_every off"):
        tiny_clf(tiny_model_dir).fit(X, y)
