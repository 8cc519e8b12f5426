"""``diti-sd eval``: every method on the same splits, choices on validation, cost beside accuracy."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from fakes import make_fake_fgvc
from helpers import TINY_CLIP, make_tiny_dinov2

from diti_sd import baselines as bl
from diti_sd.cli import main
from diti_sd.data import load_fgvc_aircraft
from diti_sd.data.images import ImageSequence
from diti_sd.errors import DitiWarning
from diti_sd.evaluation import harness
from diti_sd.evaluation.config import EvalConfig
from diti_sd.evaluation.harness import Evaluation
from diti_sd.recipes import load_recipe

CLIP = "tiny-clip-test/random"


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


def config(eval_recipe, small_fgvc, clip_config, report, **kw):
    return EvalConfig(**{"dataset": str(eval_recipe), "data_root": str(small_fgvc), "report": str(report),
                         "shots": [2], "seeds": [1], "clip_model": str(clip_config), "clip_pretrained": None,
                         "aug_passes": 2, "device": "cpu", "progress": False, **kw})


def test_choices_never_see_test_labels(clip_config, small_fgvc, eval_recipe, tmp_path):
    def run(report, scramble):
        evaluation = Evaluation(config(eval_recipe, small_fgvc, clip_config, report,
                                       methods=["tip-adapter", "tip-adapter-f", "probe"],
                                       overrides=["baselines.tipf_epochs=3", "baselines.tipf_epoch=best"]))
        if scramble:
            rng = np.random.default_rng(0)
            evaluation.test.labels = [int(v) for v in rng.permutation(evaluation.test.labels)]
        return {r["method"]: r for r in evaluation.run()["runs"]}

    honest, scrambled = run(tmp_path / "a", False), run(tmp_path / "b", True)
    for method, keys in (("tip-adapter", ("alpha", "beta", "val_score")),
                         ("tip-adapter-f", ("alpha", "beta", "val_score", "epoch", "epoch_val_score")),
                         ("probe", ("C", "val_score", "candidates"))):
        for key in keys:
            assert honest[f"{method} [{CLIP}]"][key] == scrambled[f"{method} [{CLIP}]"][key], (method, key)
    assert honest[f"tip-adapter-f [{CLIP}]"]["epoch_rule"] == "best"


def test_eval_end_to_end_writes_the_report_and_skips_finished_runs(clip_config, small_fgvc, eval_recipe,
                                                                   tiny_model_dir, tmp_path, capsys):
    report = tmp_path / "report"
    argv = ["eval", "--dataset", str(eval_recipe), "--data-root", str(small_fgvc), "--model", str(tiny_model_dir),
            "--shots", "1,2", "--seeds", "1", "--out", str(report), "--clip-model", str(clip_config),
            "--clip-pretrained", "none", "--aug-passes", "2", "--no-progress", "--set", "baselines.tipf_epochs=3",
            "--methods", "diti,openclip-zeroshot,tip-adapter,tip-adapter-f,diti+tip-adapter"]
    assert main(argv) == 0
    for name in ("results.json", "README.md", "accuracy_vs_shots.png", "accuracy_vs_cost.png", "reliability.png",
                 "splits/1shot-seed1.json"):
        assert (report / name).is_file(), name
    results = json.loads((report / "results.json").read_text())
    # every method's probabilities: a temperature from the split's validation draw, then NLL and ECE on test
    assert set(results["calibration"]) == set(results["results"])
    for c in results["calibration"].values():
        assert c["shots"] == 2 and sum(c["bins"]["count"]) == results["runs"][0]["n_test"]
        assert c["nll"]["mean"] <= c["nll_at_1"]["mean"] + 0.05 and 0 <= c["ece"]["mean"] <= 1
    text = (report / "README.md").read_text()
    assert "## Probabilities" in text and "## Accuracy against cost" in text
    assert set(results["results"]) == {"diti", f"openclip-zeroshot [{CLIP}]", f"tip-adapter [{CLIP}]",
                                       f"tip-adapter-f [{CLIP}]", f"diti+tip-adapter [{CLIP}]"}
    assert results["cost"]["diti"]["unet_calls_per_image"] == 5 * 2 + 2 * 2
    assert results["cost"][f"tip-adapter [{CLIP}]"]["forwards_per_image"] == 1
    assert results["cost"][f"diti+tip-adapter [{CLIP}]"]["forwards_per_image"] == 5 * 2 + 2 * 2 + 1
    assert sorted(results["pareto"]["front"]) == ["1", "2"] and results["pareto"]["cost"] == "forwards_per_image"
    # TiF's Tip-Adapter-F: the last epoch
    assert all(r["epoch"] == 3 for r in results["runs"] if r["method"].startswith("tip-adapter-f"))
    folders = list((report / "adapters").glob("*-2shot-seed1-*/manifest.json"))
    assert len(folders) == 1
    card = (folders[0].parent / "README.md").read_text()  # the model card shows the run
    score = [r for r in results["runs"] if r["method"] == "diti" and r["shots"] == 2][0]["score"]
    assert "## Evaluation" in card and f"**{score:.4f}**" in card
    assert "| diti |" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in (report / "runs").glob("*.json")}
    assert len(stamps) == 10
    assert main(argv) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (report / "runs").glob("*.json")}


def test_a_run_with_other_fit_settings_fits_its_own_adapters(clip_config, small_fgvc, eval_recipe, tiny_model_dir,
                                                              tmp_path):
    def run(lr):
        cfg = config(eval_recipe, small_fgvc, clip_config, tmp_path / f"r{lr}", methods=["diti"],
                     model=str(tiny_model_dir), adapters_dir=str(tmp_path / "adapters"), overrides=[f"fit.lr={lr}"])
        return Evaluation(cfg).run()["runs"][0]

    first, second = run(1e-3), run(3e-2)
    assert first["adapters"] != second["adapters"]  # not the first run's adapters under the second's name
    sets = tmp_path / "adapters"
    assert load_recipe(sets / first["adapters"] / "recipe.yaml").fit.lr == 1e-3
    assert load_recipe(sets / second["adapters"] / "recipe.yaml").fit.lr == 3e-2
    assert run(1e-3)["adapters"] == first["adapters"]  # the same settings reuse their set
    # a set whose saved settings are not the run's (copied by hand) is refused, not scored as if they were
    shutil.copy(sets / first["adapters"] / "recipe.yaml", sets / second["adapters"] / "recipe.yaml")
    cfg = config(eval_recipe, small_fgvc, clip_config, tmp_path / "again", methods=["diti"], model=str(tiny_model_dir),
                 adapters_dir=str(tmp_path / "adapters"), overrides=["fit.lr=3e-2"])
    with pytest.raises(ValueError, match="fitted with other fit settings"):
        Evaluation(cfg).run()


def test_a_set_fitted_with_an_auto_blur_is_reused_at_the_number_it_resolved(clip_config, small_fgvc, eval_recipe,
                                                                            tiny_model_dir, tmp_path):
    def run():
        cfg = config(eval_recipe, small_fgvc, clip_config, tmp_path / "r", methods=["diti"], model=str(tiny_model_dir),
                     adapters_dir=str(tmp_path / "adapters"), overrides=["fit.coarse_sigma=auto"])
        return Evaluation(cfg).run()["runs"][0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DitiWarning)  # the tiny autoencoder's reading is at an edge
        first = run()
        saved = load_recipe(tmp_path / "adapters" / first["adapters"] / "recipe.yaml")
        assert isinstance(saved.fit.coarse_sigma, float)
        shutil.rmtree(tmp_path / "r")  # the report's cached scores: the second run reads the saved set again
        assert run()["score"] == first["score"]


def test_prefiltered_diti_scores_only_the_prefilters_top_k(clip_config, small_fgvc, eval_recipe, tiny_model_dir,
                                                            tmp_path):
    cfg = config(eval_recipe, small_fgvc, clip_config, tmp_path / "r", shots=[1],
                 methods=["diti", "diti-auto", "openclip-zeroshot"], model=str(tiny_model_dir),
                 overrides=["score.prefilter_k=2", "score.auto_pairs=6"], prefilter="openclip-zeroshot")
    Evaluation(cfg).run()
    runs = tmp_path / "r" / "runs"
    diti = json.loads(next(runs.glob("diti@openclip-zeroshot-top2-1shot-seed1-*.json")).read_text())
    auto = json.loads(next(runs.glob("diti-auto@*-1shot-seed1-*.json")).read_text())
    # diti-auto: the same adapters, the window chosen on the split's validation draw over the prefilter's
    # top 2 classes per image (6 t each), its cost a share of the test pass
    n_cal = auto["score_choice"]["images"]
    assert "score_choice" not in diti and auto["score_choice"]["unet_calls"] == n_cal * 2 * 6
    assert auto["score_choice"]["source"].startswith("the split's validation draw")
    assert auto["cost"]["auto_share_of_test_pass"] == pytest.approx(
        n_cal * 2 * 6 / (auto["cost"]["unet_calls_per_image"] * auto["n_test"]), abs=1e-4)
    assert "## Scoring window chosen on validation" in (tmp_path / "r" / "README.md").read_text()
    clip = json.loads(next(runs.glob("openclip-zeroshot*1shot-seed1-*.json")).read_text())
    # rounds [[2, 2], [4, 1]] over 2 candidates instead of 5 classes, and one encoder forward
    assert diti["cost"] == {"unet_calls_per_image": 2 * 2 + 2 * 2, "encoder_forwards_per_image": 1}
    again = Evaluation(cfg)  # recompute the zero-shot top-2 independently
    encoder = again.encoders[0].encoder
    feats = bl.image_features(encoder, ImageSequence(again.test))
    text = encoder.text_classifier(again.test.classnames, load_recipe(str(eval_recipe)).baselines.zeroshot_templates)
    order = np.argsort(-bl.zero_shot_logits(feats, text).numpy(), 1)
    assert all(p in row for p, row in zip(diti["predictions"], order[:, :2]))
    assert clip["predictions"] == order[:, 0].tolist()
    # the prefilter's recall from its own logits: the share of test images whose class is in its top k
    rank = (order == np.array(again.test.labels)[:, None]).argmax(1)
    assert diti["prefilter"]["recall"] == {str(k): float((rank < k).mean()) for k in (1, 2)}


def test_probe_prefilter_and_ensemble_on_several_encoders(clip_config, small_fgvc, eval_recipe, tiny_model_dir,
                                                          tmp_path, capsys):
    dinov2 = make_tiny_dinov2(tmp_path / "dinov2")
    report = tmp_path / "report"
    argv = ["eval", "--dataset", str(eval_recipe), "--data-root", str(small_fgvc), "--model", str(tiny_model_dir),
            "--shots", "2", "--seeds", "1", "--out", str(report), "--clip-model", str(clip_config),
            "--clip-pretrained", "none", "--encoder", f"dinov2:{dinov2}", "--no-progress",
            "--methods", "probe,diti,diti+probe,openclip-zeroshot", "--prefilter", "probe",
            "--set", "score.prefilter_k=3"]
    assert main(argv) == 0
    results = json.loads((report / "results.json").read_text())
    names = set(results["results"])
    # the probe on both encoders, zero-shot only where there is a text tower, the ensemble on the first
    assert names == {f"probe [{CLIP}]", "probe [dinov2]", f"openclip-zeroshot [{CLIP}]", "diti@probe-top3",
                     f"diti+probe@probe-top3 [{CLIP}]"}
    runs = {r["method"]: r for r in results["runs"]}
    assert runs["diti@probe-top3"]["prefilter"]["k"] == 3
    assert set(runs["diti@probe-top3"]["prefilter"]["recall"]) == {"1", "2", "3"}
    assert "## Prefilter: probe" in (report / "README.md").read_text()
    assert results["prefilter"][f"probe [{CLIP}]"]["2"]["k"] == 3
    ensemble = runs[f"diti+probe@probe-top3 [{CLIP}]"]
    assert 0 <= ensemble["weight"] <= 5 and ensemble["partner"] == "probe"
    # the front: nothing on it is matched or beaten on both accuracy and cost by another method
    front, cost = results["pareto"]["front"]["2"], results["cost"]
    for m in front:
        a = results["results"][m]["2"]["mean"]
        assert not any(cost[o]["forwards_per_image"] <= cost[m]["forwards_per_image"]
                       and results["results"][o]["2"]["mean"] > a for o in names if o != m)
    assert (report / "accuracy_vs_cost.png").stat().st_size > 0


def test_validation_protocol_templates_and_run_keys(clip_config, small_fgvc, eval_recipe, tmp_path, monkeypatch):
    def evaluation(protocol, overrides=()):
        return Evaluation(config(eval_recipe, small_fgvc, clip_config, tmp_path / "r", methods=["tip-adapter"],
                                 val_protocol=protocol, overrides=list(overrides)))

    coop = evaluation("coop").run()
    full = evaluation("full").run()
    assert coop["runs"][0]["n_val"] == 2 * 5 and full["runs"][0]["n_val"] == 3 * 5  # all 15 val images
    assert "full official validation split" in (tmp_path / "r" / "README.md").read_text()
    assert len(list((tmp_path / "r" / "runs").glob("tip-adapter*-2shot-seed1-*.json"))) == 2
    # a setting that changes the images (the banner crop) is a new run on new features, never a stale one
    cropped = evaluation("coop", ["dataset.crop_banner=true"])
    assert cropped.run_key("tip-adapter") != evaluation("coop").run_key("tip-adapter")
    cropped.run()
    assert len(list((tmp_path / "r" / "runs").glob("tip-adapter*-2shot-seed1-*.json"))) == 3
    # so does a data set's preparation of its images (TiF's processing of ISIC, Duke, VeRi): runs and adapter sets
    plain = evaluation("coop")
    keys, folder = {m: plain.run_key(m) for m in ("tip-adapter", "diti", "sd-zeroshot")}, plain.diffusion.folder(2, 1)
    read = harness.load_configured_split

    def prepared(*args):
        data = read(*args)
        if data is not None:
            data.prepare = "tif-duke"
        return data

    monkeypatch.setattr(harness, "load_configured_split", prepared)
    processed = evaluation("coop")
    assert processed.diffusion.pixels == "tif-duke" and processed.diffusion.folder(2, 1) != folder
    assert all(processed.run_key(m) != key for m, key in keys.items())
    # Tip-Adapter's classifier uses the recipe's tip templates, zero-shot its own
    e = evaluation("coop", ['baselines.tip_templates=["a {} aircraft."]']).encoders[0]
    assert torch.allclose(e.text_weights("tip"), e.encoder.text_classifier(e.classnames, ["a {} aircraft."]))
    assert not torch.allclose(e.text_weights("tip"), e.text_weights("zeroshot"))
    with pytest.raises(ValueError, match="validation protocol"):
        evaluation("test")
    with pytest.raises(ValueError, match="openclip:MODEL"):
        Evaluation(config(eval_recipe, small_fgvc, clip_config, tmp_path / "r", encoders=["clip:x"]))
    with pytest.raises(ValueError, match="knows no model 'ViT-H-41'"):  # misspelt: said before the first fit
        Evaluation(config(eval_recipe, small_fgvc, clip_config, tmp_path / "r", encoders=["openclip:ViT-H-41"]))


def test_the_recipes_validation_protocol_is_the_default_and_the_flag_overrides_it(small_fgvc, eval_recipe, tmp_path):
    def protocol(flag, overrides=()):
        cfg = EvalConfig(dataset=str(eval_recipe), data_root=str(small_fgvc), report=str(tmp_path / "r"), shots=[2],
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

    from diti_sd.data.kshot import KShotSplit, TooFewImagesError
    from diti_sd.errors import ConfigError, MissingFileError

    train = load_fgvc_aircraft(small_fgvc, "train")
    folder = tmp_path / "splits"
    folder.mkdir()
    # the last image of each class, which a CoOp draw need not pick
    chosen = [(train.classnames[c], [i for i, v in zip(train.ids, train.labels) if v == c][-1], c) for c in range(5)]
    write_tif_split(folder / "train_1_1.data", chosen)

    def evaluation(seeds):
        return Evaluation(config(eval_recipe, small_fgvc, clip_config, tmp_path / "r", shots=[1], seeds=seeds,
                                 methods=["tip-adapter"], split_dir=str(folder)))

    with pytest.raises(MissingFileError, match="train_1_2.data"):  # checked before any work
        evaluation([1, 2])
    # a file that is not what its name says, and a draw the data cannot give, stop the run before its first job
    write_tif_split(folder / "train_2_1.data", chosen)
    with pytest.raises(ConfigError, match="train_2_1.data holds 1 images per class, not 2"):
        Evaluation(config(eval_recipe, small_fgvc, clip_config, tmp_path / "r", shots=[1, 2], seeds=[1],
                          methods=["tip-adapter"], split_dir=str(folder)))
    with pytest.raises(TooFewImagesError, match="fewer than 9 train images"):
        Evaluation(config(eval_recipe, small_fgvc, clip_config, tmp_path / "r", shots=[1, 9], methods=["tip-adapter"]))
    (folder / "train_2_1.data").unlink()
    evaluation([1]).run()
    saved = KShotSplit.load(tmp_path / "r" / "splits" / "1shot-seed1.json")
    assert saved.train_ids == [image_id for _, image_id, _ in chosen]


def test_a_report_folder_is_reused_only_on_its_data_and_its_bases_weights(clip_config, small_fgvc, eval_recipe,
                                                                         tiny_model_dir, tmp_path):
    from diti_sd.errors import ConfigError

    model, data = tmp_path / "base", tmp_path / "data"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(small_fgvc, data)
    methods = ["diti", "openclip-zeroshot"]  # a DiTi-SD method keeps adapter sets: their folder is recorded too
    cfg = config(eval_recipe, data, clip_config, tmp_path / "report", model=str(model), methods=methods)
    Evaluation(cfg)
    Evaluation(cfg)  # the same images, labels and weights: its runs are read back
    # a test label mended in place: the runs made before it would be read back as they are
    labels = next(data.rglob("images_variant_test.txt"))
    lines = labels.read_text().splitlines()
    (first_id, first), (last_id, last) = lines[0].split(" ", 1), lines[-1].split(" ", 1)
    labels.write_text("\n".join([f"{first_id} {last}", *lines[1:-1], f"{last_id} {first}"]) + "\n")
    with pytest.raises(ConfigError, match="other images or labels"):
        Evaluation(cfg)
    # nor by another report that shares its adapter sets (named by settings, not by data)
    with pytest.raises(ConfigError, match="report/adapters holds work made on other images"):
        Evaluation(config(eval_recipe, data, clip_config, tmp_path / "second", model=str(model),
                          methods=["diti", "openclip-zeroshot"], adapters_dir=str(tmp_path / "report" / "adapters")))
    labels.write_text("\n".join(lines) + "\n")
    # the base trained again where it was: its name is the same, its weights are not
    weights = next(model.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ConfigError, match="other weights in"):
        Evaluation(cfg)
    Evaluation(config(eval_recipe, data, clip_config, tmp_path / "another report", model=str(model),
                      methods=["diti", "openclip-zeroshot"]))  # another --out starts its own record
