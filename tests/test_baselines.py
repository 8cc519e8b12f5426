"""The frozen-encoder rivals: encoders, zero-shot, Tip-Adapter(-F) and the linear probe, as formulas."""

import json

import numpy as np
import pytest
import torch
from fakes import make_fake_fgvc
from helpers import TINY_CLIP, TINY_SIGMOID, make_tiny_dinov2

from diti_sd import baselines as bl
from diti_sd.data import load_fgvc_aircraft
from diti_sd.data.images import ImageSequence
from diti_sd.recipes import load_recipe


@pytest.fixture(scope="module")
def clip_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip-test.json"
    path.write_text(json.dumps(TINY_CLIP))
    return path


@pytest.fixture(scope="module")
def sigmoid_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("sigmoid") / "tiny-sigmoid-test.json"
    path.write_text(json.dumps(TINY_SIGMOID))
    return path


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory):
    return make_tiny_dinov2(tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="module")
def small_fgvc(tmp_path_factory):
    return make_fake_fgvc(tmp_path_factory.mktemp("fgvc5"), per_split=3, n_classes=5, seed=3)


def test_zero_shot_and_tip_adapter_match_the_formulas(clip_config, small_fgvc):
    clip = bl.load_encoder(f"openclip:{clip_config}", "cpu")
    assert clip.label == "tiny-clip-test/random" and not clip.sigmoid
    train = load_fgvc_aircraft(small_fgvc, "train")
    test = load_fgvc_aircraft(small_fgvc, "test")
    f_test = bl.image_features(clip, ImageSequence(test))
    assert torch.allclose(f_test.norm(dim=1), torch.ones(len(test)), atol=1e-5)
    templates = load_recipe("fgvc-aircraft").baselines.zeroshot_templates
    weights = clip.text_classifier(train.classnames, templates)
    # independent zero-shot computation, one class and one template at a time
    with torch.no_grad():
        for c, name in enumerate(train.classnames):
            per_template = []
            for template in templates:
                e = clip.model.encode_text(clip.tokenizer([template.format(name)]))[0]
                per_template.append(e / e.norm())
            w = torch.stack(per_template).mean(0)
            assert torch.allclose(weights[c], w / w.norm(), atol=1e-5)
    clip_logits = bl.zero_shot_logits(f_test, weights)
    assert torch.allclose(clip_logits[3, 2], 100 * f_test[3] @ weights[2], atol=1e-4)

    # the reference's cache keys: the raw features' mean over the passes, then normalised
    passes = [bl.image_features(clip, ImageSequence(train), clip.augmented(), normalize=False) for _ in range(3)]
    assert not torch.allclose(passes[0], passes[1])  # the augmentation is random
    assert not torch.allclose(passes[0].norm(dim=1), torch.ones(len(train)))  # not normalised per pass
    keys, values = bl.cache_model(passes, np.array(train.labels), 5)
    logits = bl.tip_logits(f_test, keys, values, clip_logits, alpha=2.5, beta=5.0)
    for i in range(len(test)):
        for c in range(5):
            expected = float(clip_logits[i, c])
            for j in range(len(train)):
                key = sum(p[j] for p in passes) / 3
                key = key / key.norm()
                if train.labels[j] == c:
                    expected += 2.5 * float(torch.exp(-5.0 * (1 - f_test[i] @ key)))
            assert abs(float(logits[i, c]) - expected) < 1e-3


def test_a_sigmoid_towers_zero_shot_logits_use_its_own_scale_and_bias(sigmoid_config, small_fgvc):
    # SigLIP's code: logits = exp(logit_scale) * f @ t + logit_bias, each a sigmoid logit of its own
    tower = bl.load_encoder(f"openclip:{sigmoid_config}", "cpu")
    assert tower.sigmoid and tower.logit_bias == pytest.approx(-10.0)
    assert tower.logit_scale == pytest.approx(tower.model.logit_scale.exp().item())
    test = load_fgvc_aircraft(small_fgvc, "test")
    f = bl.image_features(tower, ImageSequence(test))
    w = tower.text_classifier(test.classnames, ["a photo of a {}."])
    logits = bl.zero_shot_logits(f, w, tower.logit_scale, tower.logit_bias)
    assert torch.allclose(logits, tower.logit_scale * f @ w.T - 10.0, atol=1e-5)


def test_dinov2_features_at_its_own_resolution_and_no_text_tower(dinov2_dir, small_fgvc):
    tower = bl.load_encoder(f"dinov2:{dinov2_dir}", "cpu")
    assert tower.image_size == 32 and not tower.has_text
    test = load_fgvc_aircraft(small_fgvc, "test")
    feats = bl.image_features(tower, ImageSequence(test), normalize=False)
    # the class token beside the mean patch token, as DINOv2's linear evaluation reads them
    assert feats.shape == (len(test), 2 * 32)
    with torch.no_grad():
        out = tower.model(pixel_values=torch.stack([tower.preprocess(test.load(0))]))
    assert torch.allclose(feats[0, :32], out.pooler_output[0], atol=1e-5)
    with pytest.raises(ValueError, match="no text tower"):
        tower.text_classifier(test.classnames, ["a photo of a {}."])
    with pytest.raises(ValueError, match="openclip:MODEL"):
        bl.parse_spec("clip:ViT-B-32")


def test_a_misspelt_encoder_is_named_without_loading_it(clip_config, tmp_path):
    # diti-sd eval checks every encoder this way before its first fit: a typo no longer waits for the first load
    for spec in ("openclip:ViT-H-14:laion2b_s32b_b79k", "openclip:ViT-SO400M-14-SigLIP-384:webli", "openclip:ViT-B-32",
                 f"openclip:{clip_config}", f"openclip:ViT-B-32:{clip_config}", "dinov2:facebook/dinov2-giant",
                 f"dinov2:{tmp_path}", "openclip:ViT-B/32:OpenAI", "openclip:ViT-H-14:LAION2B-S32B-B79K"):
        bl.check_spec(spec)
    for spec, said in (("openclip:ViT-H-41:laion2b_s32b_b79k", "knows no model 'ViT-H-41'; e.g. ViT-H-14"),
                       ("openclip:ViT-H-14:laion2b", "has no weights 'laion2b' and no such file here; its tags: "),
                       (f"openclip:{tmp_path / 'x.json'}", "no OpenCLIP model config at"),
                       ("dinov2:dinov2-giant", "is no folder here and no Hub id")):
        with pytest.raises(ValueError, match=said):
            bl.check_spec(spec)


def test_features_are_cached_by_everything_that_changes_them(clip_config, small_fgvc, tmp_path, monkeypatch):
    clip = bl.load_encoder(f"openclip:{clip_config}", "cpu")
    test = load_fgvc_aircraft(small_fgvc, "test")
    calls = []
    real = type(clip).encode
    monkeypatch.setattr(type(clip), "encode", lambda self, batch: calls.append(len(batch)) or real(self, batch))
    cache = bl.FeatureCache(tmp_path, clip)
    first = cache.get(ImageSequence(test), test.ids, "test")
    assert calls == [len(test)]
    again = bl.FeatureCache(tmp_path, clip).get(ImageSequence(test), test.ids, "test")  # a new run: from disk
    assert torch.equal(first, again) and calls == [len(test)]
    bl.FeatureCache(tmp_path, clip).get(ImageSequence(test), test.ids, "test", variant="crop_bottom=20")
    assert len(calls) == 2  # other pixels: computed again


def test_tip_adapter_f_keeps_tifs_last_epoch_or_the_best_on_validation(clip_config, small_fgvc):
    clip = bl.load_encoder(f"openclip:{clip_config}", "cpu")
    train, val = load_fgvc_aircraft(small_fgvc, "train"), load_fgvc_aircraft(small_fgvc, "val")
    passes = [bl.image_features(clip, ImageSequence(train), clip.augmented()) for _ in range(5)]
    keys, values = bl.cache_model(passes[:2], np.array(train.labels), 5)
    text = clip.text_classifier(train.classnames, load_recipe("tiny").baselines.tip_templates)
    val_f = bl.image_features(clip, ImageSequence(val))

    def train_f(keep):
        return bl.train_tip_adapter_f(passes, np.array(train.labels), keys, values,
                                      lambda f: bl.zero_shot_logits(f, text), val_f, np.array(val.labels),
                                      bl.zero_shot_logits(val_f, text), alpha=5.0, beta=1.0, epochs=5, keep=keep)

    last, last_epoch, last_score = train_f("last")
    best, best_epoch, best_score = train_f("best")
    assert last_epoch == 5 and 1 <= best_epoch <= 5 and best_score >= last_score
    assert not torch.equal(last, keys)
    recomputed = bl.tip_logits(val_f, best, values, bl.zero_shot_logits(val_f, text), 5.0, 1.0)
    assert float((recomputed.argmax(1) == torch.tensor(val.labels)).float().mean()) == pytest.approx(best_score)


def test_tip_adapter_searches_the_references_grid(clip_config, small_fgvc):
    from diti_sd.baselines.tip_adapter import search_grid

    # TiF inference/methods/utils.py search_hp: [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]
    beta_list = [i * (30 - 0.1) / 200 + 0.1 for i in range(200)]
    assert search_grid(30, 200) == beta_list and search_grid(30, 200)[-1] < 30
    clip = bl.load_encoder(f"openclip:{clip_config}", "cpu")
    train, val = load_fgvc_aircraft(small_fgvc, "train"), load_fgvc_aircraft(small_fgvc, "val")
    keys, values = bl.cache_model([bl.image_features(clip, ImageSequence(train))], np.array(train.labels), 5)
    val_f = bl.image_features(clip, ImageSequence(val))
    text = clip.text_classifier(train.classnames, ["a photo of a {}."])
    alpha, beta, acc = bl.search_alpha_beta(val_f, np.array(val.labels), keys, values,
                                            bl.zero_shot_logits(val_f, text), (30, 30), (200, 20))
    assert beta in beta_list and alpha in search_grid(30, 20)


def test_the_probes_regularisation_is_chosen_on_validation():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    labels = np.repeat(np.arange(4), 6)
    x = torch.tensor(centres[labels] + 0.8 * rng.normal(size=(24, 16)), dtype=torch.float32)
    xv = torch.tensor(centres[labels] + 0.8 * rng.normal(size=(24, 16)), dtype=torch.float32)
    probe = bl.fit_probe(x, labels, xv, labels, grid=(0.01, 1.0, 100.0))
    assert probe.C in (0.01, 1.0, 100.0) and set(probe.scores) == {"0.01", "1.0", "100.0"}
    best = max(probe.scores.values(), key=lambda v: (v[0], -v[1]))
    assert (probe.val_score, probe.val_nll) == best
    # the model is scikit-learn's on L2-normalised features, trained on the train images alone
    expected = LogisticRegression(C=probe.C, max_iter=1000).fit(
        torch.nn.functional.normalize(x, dim=-1).numpy(), labels)
    assert np.allclose(probe.logits(xv), expected.predict_log_proba(torch.nn.functional.normalize(xv, dim=-1).numpy()),
                       atol=1e-6)
    # the choice follows the validation labels it is given
    flipped = bl.fit_probe(x, labels, xv, (labels + 1) % 4, grid=(0.01, 1.0, 100.0))
    assert flipped.scores != probe.scores
