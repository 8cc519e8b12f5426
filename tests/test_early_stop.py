import pytest
import torch
from helpers import color_images

from diti_sd import DiTiFewShotClassifier
from diti_sd.errors import ConfigError
from diti_sd.training.early_stop import HeldOutStop, checks, split_held_out

# 12 images: 3 classes x 4 shots, 6 steps in the tiny recipe (one iteration per step), a checkpoint every 3;
# with a check every 2 steps the checks come after steps 2, 4 and 6
ES = {"fit.early_stop_every": 2, "fit.early_stop_pairs": 4}


def tiny_clf(model, over=None):
    return DiTiFewShotClassifier(model=str(model), recipe="tiny", progress=False, overrides={**ES, **(over or {})})


def scripted_errors(by_class):
    """HeldOutStop.errors replaced by fixed errors per class and check (the k-th check reads entry k)."""
    def errors(self, scales):
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


def test_each_class_keeps_its_adapter_of_the_lowest_held_out_error(tiny_model_dir, monkeypatch):
    X, y = color_images(12, seed=5)
    # class 0 is best after step 2, class 1 after step 4, class 2 at the end
    monkeypatch.setattr(HeldOutStop, "errors", scripted_errors({0: [1.0, 2.0, 3.0], 1: [2.0, 1.0, 3.0],
                                                                2: [3.0, 2.0, 1.0]}))
    clf = tiny_clf(tiny_model_dir).fit(X, y)
    assert clf.fit_summary_["stopped_at"] == [2, 4, 6]
    assert clf.fit_summary_["held_out_error"] == [1.0, 1.0, 1.0]
    assert clf.fit_summary_["early_stop_unet_samples"] == 3 * 4 * 3  # checks x pairs x classes
    stopped = clf.adapters_.lora_state_dict()
    for c, steps in ((0, 2), (1, 4), (2, 6)):
        short = tiny_clf(tiny_model_dir, {"fit.steps": steps}).fit(X, y).adapters_.lora_state_dict()
        for key, value in stopped.items():
            assert torch.allclose(value[c], short[key][c], atol=1e-6), (c, key)
    # stopping early is not a no-op: class 0 after 2 steps differs from class 0 after 6
    monkeypatch.setattr(HeldOutStop, "errors", scripted_errors({c: [3.0, 2.0, 1.0] for c in range(3)}))
    full = tiny_clf(tiny_model_dir).fit(X, y).adapters_.lora_state_dict()
    assert max(float((stopped[k][0] - full[k][0]).abs().max()) for k in stopped) > 1e-4


def test_held_out_errors_are_read_with_the_adapter_on(tiny_model_dir):
    X, y = color_images(12, seed=5)
    clf = tiny_clf(tiny_model_dir, {"lora.text_rank": 2}).fit(X, y)
    errors = clf.fit_summary_["held_out_error"]
    assert len(errors) == 3 and all(e > 0 for e in errors)
    assert all(s in (2, 4, 6) for s in clf.fit_summary_["stopped_at"])


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
