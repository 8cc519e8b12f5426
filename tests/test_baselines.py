import json

import numpy as np
import pytest
import torch
from fakes import make_fake_fgvc
from helpers import TINY_CLIP

from diti_sd import baselines as bl
from diti_sd.cli import main
from diti_sd.data import load_fgvc_aircraft
from diti_sd.data.images import ImageSequence
from diti_sd.evaluate import EvalConfig, Evaluation
from diti_sd.recipes import load_recipe


@pytest.fixture(scope="module")
def clip_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip-test.json"
    path.write_text(json.dumps(TINY_CLIP))
    return path


@pytest.fixture(scope="module")
def small_fgvc(tmp_path_factory):
    return make_fake_fgvc(tmp_path_factory.mktemp("fgvc5"), per_split=3, n_classes=5, seed=3)


@pytest.fixture(scope="module")
def eval_recipe(tmp_path_factory):
    recipe = load_recipe("tiny", {"dataset.kind": "fgvc-aircraft", "prompt.token": "hta",
                                  "prompt.template": "a photo of a {token} {name}, a type of aircraft."})
    path = tmp_path_factory.mktemp("recipe") / "tiny-fgvc.yaml"
    path.write_text(recipe.to_yaml())
    return path


def test_zero_shot_and_tip_adapter_match_the_formulas(clip_config, small_fgvc):
    torch.manual_seed(0)
    clip = bl.load_openclip(str(clip_config), None, "cpu")
    train = load_fgvc_aircraft(small_fgvc, "train")
    test = load_fgvc_aircraft(small_fgvc, "test")
    f_test = bl.image_features(clip, ImageSequence(test))
    assert torch.allclose(f_test.norm(dim=1), torch.ones(len(test)), atol=1e-5)
    templates = load_recipe("fgvc-aircraft").baselines.zeroshot_templates
    weights = bl.text_classifier(clip, train.classnames, templates)
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
    passes = [bl.image_features(clip, ImageSequence(train), bl.augmented_transform(clip), normalize=False)
              for _ in range(3)]
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


def test_tip_adapter_f_keeps_the_best_validation_epoch(clip_config, small_fgvc):
    clip = bl.load_openclip(str(clip_config), None, "cpu")
    train, val = load_fgvc_aircraft(small_fgvc, "train"), load_fgvc_aircraft(small_fgvc, "val")
    passes = [bl.image_features(clip, ImageSequence(train), bl.augmented_transform(clip)) for _ in range(2)]
    keys, values = bl.cache_model(passes, np.array(train.labels), 5)
    text = bl.text_classifier(clip, train.classnames, load_recipe("tiny").baselines.tip_templates)
    val_f = bl.image_features(clip, ImageSequence(val))
    trained, epoch, acc = bl.train_tip_adapter_f(passes, np.array(train.labels), keys, values, text, val_f,
                                                 np.array(val.labels), alpha=5.0, beta=1.0, epochs=5)
    assert 1 <= epoch <= 5 and not torch.equal(trained, keys)
    recomputed = bl.tip_logits(val_f, trained, values, bl.zero_shot_logits(val_f, text), 5.0, 1.0)
    assert float((recomputed.argmax(1) == torch.tensor(val.labels)).float().mean()) == pytest.approx(acc)


def test_hyperparameters_never_see_test_labels(clip_config, small_fgvc, eval_recipe, tmp_path):
    def run(report, scramble):
        cfg = EvalConfig(dataset=str(eval_recipe), data_root=str(small_fgvc), report=str(report), shots=[2],
                         seeds=[1], methods=["tip-adapter", "tip-adapter-f"], clip_model=str(clip_config),
                         clip_pretrained=None, aug_passes=2, device="cpu", progress=False)
        evaluation = Evaluation(cfg)
        if scramble:
            rng = np.random.default_rng(0)
            evaluation.test.labels = [int(v) for v in rng.permutation(evaluation.test.labels)]
        return {r["method"]: r for r in evaluation.run()["runs"]}

    honest, scrambled = run(tmp_path / "a", False), run(tmp_path / "b", True)
    for method in ("tip-adapter", "tip-adapter-f"):
        for key in ("alpha", "beta", "val_accuracy"):
            assert honest[method][key] == scrambled[method][key], (method, key)
    assert honest["tip-adapter-f"]["epoch"] == scrambled["tip-adapter-f"]["epoch"]


def test_eval_end_to_end_writes_the_report_and_skips_finished_runs(clip_config, small_fgvc, eval_recipe,
                                                                   tiny_model_dir, tmp_path, capsys):
    report = tmp_path / "report"
    argv = ["eval", "--dataset", str(eval_recipe), "--data-root", str(small_fgvc), "--model", str(tiny_model_dir),
            "--shots", "1,2", "--seeds", "1", "--out", str(report), "--clip-model", str(clip_config),
            "--clip-pretrained", "none", "--aug-passes", "2", "--no-progress",
            "--methods", "diti,openclip-zeroshot,tip-adapter,tip-adapter-f,diti+tip-adapter"]
    assert main(argv) == 0
    for name in ("results.json", "README.md", "accuracy_vs_shots.png", "reliability.png", "splits/1shot-seed1.json"):
        assert (report / name).is_file(), name
    results = json.loads((report / "results.json").read_text())
    # every method's probabilities: a temperature from the split's validation draw, then NLL and ECE on test
    assert set(results["calibration"]) == set(results["results"])
    for c in results["calibration"].values():
        assert c["shots"] == 2 and sum(c["bins"]["count"]) == results["runs"][0]["n_test"]
        assert c["nll"]["mean"] <= c["nll_at_1"]["mean"] + 0.05 and 0 <= c["ece"]["mean"] <= 1
    assert "## Probabilities" in (report / "README.md").read_text()
    assert set(results["results"]) == {"diti", "openclip-zeroshot", "tip-adapter", "tip-adapter-f", "diti+tip-adapter"}
    assert results["cost"]["diti"]["unet_calls_per_image"] == 5 * 2 + 2 * 2
    assert len(list((report / "adapters").glob("*-2shot-seed1/manifest.json"))) == 1
    card = next((report / "adapters").glob("*-2shot-seed1/README.md")).read_text()  # the model card shows the run
    score = [r for r in results["runs"] if r["method"] == "diti" and r["shots"] == 2][0]["score"]
    assert "## Evaluation" in card and f"**{score:.4f}**" in card
    assert "| diti |" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in (report / "runs").glob("*.json")}
    assert len(stamps) == 10
    assert main(argv) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (report / "runs").glob("*.json")}


def test_prefiltered_diti_scores_only_the_prefilters_top_k(clip_config, small_fgvc, eval_recipe, tiny_model_dir,
                                                            tmp_path):
    cfg = EvalConfig(dataset=str(eval_recipe), data_root=str(small_fgvc), report=str(tmp_path / "r"), shots=[1],
                     seeds=[1], methods=["diti", "diti-auto", "openclip-zeroshot"], model=str(tiny_model_dir),
                     overrides=["score.prefilter_k=2", "score.auto_pairs=6"], clip_model=str(clip_config),
                     clip_pretrained=None, aug_passes=2, prefilter="openclip-zeroshot", device="cpu", progress=False)
    Evaluation(cfg).run()
    runs = tmp_path / "r" / "runs"
    diti = json.loads(next(runs.glob("diti@openclip-zeroshot-top2-1shot-seed1-*.json")).read_text())
    auto = json.loads(next((tmp_path / "r" / "runs").glob("diti-auto@*-1shot-seed1-*.json")).read_text())
    # diti-auto: the same adapters, the window chosen on the split's validation draw over the prefilter's
    # top 2 classes per image (6 t each), its cost a share of the test pass
    n_cal = auto["score_choice"]["images"]
    assert "score_choice" not in diti and auto["score_choice"]["unet_calls"] == n_cal * 2 * 6
    assert auto["score_choice"]["source"].startswith("the split's validation draw")
    assert auto["cost"]["auto_share_of_test_pass"] == pytest.approx(
        n_cal * 2 * 6 / (auto["cost"]["unet_calls_per_image"] * auto["n_test"]), abs=1e-4)
    assert "## Scoring window chosen on validation" in (tmp_path / "r" / "README.md").read_text()
    clip = json.loads(next((tmp_path / "r" / "runs").glob("openclip-zeroshot-1shot-seed1-*.json")).read_text())
    # rounds [[2, 2], [4, 1]] over 2 candidates instead of 5 classes
    assert diti["cost"]["unet_calls_per_image"] == 2 * 2 + 2 * 2
    clip_logits = Evaluation(cfg)  # recompute the zero-shot top-2 independently
    feats = bl.image_features(clip_logits.clip(), ImageSequence(clip_logits.test))
    top2 = np.argsort(-bl.zero_shot_logits(feats, clip_logits.text_weights()).numpy(), 1)[:, :2]
    assert all(p in row for p, row in zip(diti["predictions"], top2))
    expected = np.argsort(-bl.zero_shot_logits(feats, clip_logits.text_weights()).numpy(), 1)[:, 0]
    assert clip["predictions"] == expected.tolist()


def test_tip_adapter_searches_the_references_grid(clip_config, small_fgvc):
    # TiF inference/methods/utils.py search_hp: [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]
    beta_list = [i * (30 - 0.1) / 200 + 0.1 for i in range(200)]
    assert bl.search_grid(30, 200) == beta_list and bl.search_grid(30, 200)[-1] < 30
    clip = bl.load_openclip(str(clip_config), None, "cpu")
    train, val = load_fgvc_aircraft(small_fgvc, "train"), load_fgvc_aircraft(small_fgvc, "val")
    keys, values = bl.cache_model([bl.image_features(clip, ImageSequence(train))], np.array(train.labels), 5)
    val_f = bl.image_features(clip, ImageSequence(val))
    text = bl.text_classifier(clip, train.classnames, ["a photo of a {}."])
    alpha, beta, acc = bl.search_alpha_beta(val_f, np.array(val.labels), keys, values,
                                            bl.zero_shot_logits(val_f, text), (30, 30), (200, 20))
    assert beta in beta_list and alpha in bl.search_grid(30, 20)


def test_validation_protocol_templates_and_run_keys(clip_config, small_fgvc, eval_recipe, tmp_path):
    def evaluation(protocol, overrides=()):
        cfg = EvalConfig(dataset=str(eval_recipe), data_root=str(small_fgvc), report=str(tmp_path / "r"),
                         shots=[2], seeds=[1], methods=["tip-adapter"], clip_model=str(clip_config),
                         clip_pretrained=None, aug_passes=2, device="cpu", progress=False, val_protocol=protocol,
                         overrides=list(overrides))
        return Evaluation(cfg)

    coop = evaluation("coop").run()
    full = evaluation("full").run()
    assert coop["runs"][0]["n_val"] == 2 * 5 and full["runs"][0]["n_val"] == 3 * 5  # all 15 val images
    assert "full official validation split" in (tmp_path / "r" / "README.md").read_text()
    assert len(list((tmp_path / "r" / "runs").glob("tip-adapter-2shot-seed1-*.json"))) == 2
    # a setting that changes the images (the banner crop) is a new run on new features, never a stale one
    cropped = evaluation("coop", ["dataset.crop_banner=true"])
    assert cropped.run_key("tip-adapter") != evaluation("coop").run_key("tip-adapter")
    cropped.run()
    assert len(list((tmp_path / "r" / "runs").glob("tip-adapter-2shot-seed1-*.json"))) == 3
    # Tip-Adapter's classifier uses the recipe's tip templates, zero-shot its own
    e = evaluation("coop", ['baselines.tip_templates=["a {} aircraft."]'])
    assert torch.allclose(e.text_weights("tip"), bl.text_classifier(e.clip(), e.test.classnames, ["a {} aircraft."]))
    assert not torch.allclose(e.text_weights("tip"), e.text_weights("zeroshot"))
    with pytest.raises(ValueError, match="validation protocol"):
        evaluation("test")


def test_the_recipes_validation_protocol_is_the_default_and_the_flag_overrides_it(small_fgvc, eval_recipe, tmp_path):
    def protocol(flag, overrides=()):
        cfg = EvalConfig(dataset=str(eval_recipe), data_root=str(small_fgvc), report=str(tmp_path / "r"),
                         methods=["tip-adapter"], val_protocol=flag, overrides=list(overrides), progress=False)
        return Evaluation(cfg).cfg.val_protocol

    assert protocol(None) == "coop"
    assert protocol(None, ["baselines.val_protocol=full"]) == "full"
    assert protocol("coop", ["baselines.val_protocol=full"]) == "coop"
    # the published FGVC-Aircraft and ISIC rows searched on the whole validation split
    assert [load_recipe(n).baselines.val_protocol for n in ("fgvc-aircraft", "isic2019", "duke")] == \
        ["full", "full", "coop"]


def test_sd_zeroshot_scores_the_base_with_the_data_sets_template(small_fgvc, eval_recipe, tiny_model_dir, tmp_path):
    from diti_sd.backbone import load_backbone
    from diti_sd.lora import NoAdapters
    from diti_sd.preprocessing import uint8_pixels
    from diti_sd.scoring import score_latents

    cfg = EvalConfig(dataset=str(eval_recipe), data_root=str(small_fgvc), report=str(tmp_path / "r"), shots=[1, 2],
                     seeds=[1], methods=["sd-zeroshot"], model=str(tiny_model_dir), device="cpu", progress=False)
    evaluation = Evaluation(cfg)
    evaluation.run()
    runs = {r["shots"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json"))}
    assert runs[1]["predictions"] == runs[2]["predictions"]  # no shots involved: scored once
    assert runs[1]["prompt"] == "a photo of a {}."  # the recipe's (tiny's) data-set template
    assert runs[1]["cost"]["unet_calls_per_image"] == 5 * 2 + 2 * 2  # the recipe's rounds over 5 classes
    # the same numbers computed directly: the base model, one prompt per class, uniform weights
    backbone = load_backbone(str(tiny_model_dir), device="cpu", resolution=64)
    prompts = [f"a photo of a {name}." for name in evaluation.test.classnames]
    latents = backbone.encode_batches(uint8_pixels(ImageSequence(evaluation.test), backbone.resolution))
    score = load_recipe(str(eval_recipe), {"score.weighting": "uniform"}).score
    direct = score_latents(backbone, NoAdapters(), latents, backbone.encode_prompts(prompts), score)
    assert runs[1]["predictions"] == direct.predictions.tolist()


def test_split_dir_trains_every_method_on_tifs_images(clip_config, small_fgvc, eval_recipe, tmp_path):
    from fakes import write_tif_split

    from diti_sd.data.kshot import KShotSplit
    from diti_sd.errors import MissingFileError

    train = load_fgvc_aircraft(small_fgvc, "train")
    folder = tmp_path / "splits"
    folder.mkdir()
    # the last image of each class, which a CoOp draw need not pick
    chosen = [(train.classnames[c], [i for i, v in zip(train.ids, train.labels) if v == c][-1], c) for c in range(5)]
    write_tif_split(folder / "train_1_1.data", chosen)

    def evaluation(seeds):
        return Evaluation(EvalConfig(dataset=str(eval_recipe), data_root=str(small_fgvc), report=str(tmp_path / "r"),
                                     shots=[1], seeds=seeds, methods=["tip-adapter"], clip_model=str(clip_config),
                                     clip_pretrained=None, aug_passes=2, split_dir=str(folder), device="cpu",
                                     progress=False))

    with pytest.raises(MissingFileError, match="train_1_2.data"):  # checked before any work
        evaluation([1, 2])
    evaluation([1]).run()
    saved = KShotSplit.load(tmp_path / "r" / "splits" / "1shot-seed1.json")
    assert saved.train_ids == [image_id for _, image_id, _ in chosen]
