"""A bad setting is refused when the recipe loads, before any work, whichever way it came in: a
``--set`` override, a YAML file, an estimator parameter or a saved adapter set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import color_images
from sklearn.model_selection import GridSearchCV
from torchvision.utils import save_image

from diti_sd import DiTiFewShotClassifier
from diti_sd.cli import main
from diti_sd.encoder import load_encoder_recipe
from diti_sd.encoder.config import available_encoder_recipes
from diti_sd.recipes import RecipeError, available_recipes, load_recipe

# (override on the tiny recipe, what the one-line error must say)
BAD = [
    ("score.weighting=bogus",
     "recipe.score.weighting = 'bogus' is not allowed: it must be one of uniform, exp, tif, auto"),
    ("fit.lr=-1", "recipe.fit.lr = -1.0 is not allowed: it must be > 0"),
    ("score.t_min=1200", "recipe.score.t_min = 1200 is not allowed: it must be >= 0 and <= 999"),
    ("score.t_min=300", "recipe.score.t_min = 300, recipe.score.t_max = 300 is not allowed"),
    ("lora.rank=0", "recipe.lora.rank = 0 is not allowed: it must be >= 1"),
    ("lora.text_rank=-2", "recipe.lora.text_rank = -2 is not allowed: it must be >= 0"),
    ("score.rounds=[[2,2],[4,2]]", "the last stage keeping 1"),
    ("score.rounds=[[4,1],[2,1]]", "grid sizes increasing"),
    ("score.rounds=[[2,1],[400,1]]", "stages that fit the window score.t_min..t_max (0..300), its largest grid "
     "being 400 time-steps; set them with the window, e.g. --set 'score.rounds=[[2,1],[300,1]]'"),
    ("fit.crop=square", "recipe.fit.crop = 'square' is not allowed: it must be one of center, random"),
    ("fit.mixed_precision=fp8", "it must be one of no, fp16, bf16"),
    ("lora.init=xavier", "recipe.lora.init = 'xavier' is not allowed: it must be one of normal, kaiming"),
    ("lora.filter_by_shots={1: all-3}", "none or <down|mirror|all>-<0|1|2>"),
    ("fit.steps_by_shots={0: 5}", "recipe.fit.steps_by_shots = {0: 5} is not allowed"),
    ("fit.steps=0", "recipe.fit.steps = 0 is not allowed: it must be null or >= 1"),
    ("fit.batch_size=0", "recipe.fit.batch_size = 0 is not allowed"),
    ("fit.dropout=1", "recipe.fit.dropout = 1.0 is not allowed: it must be >= 0 and < 1"),
    ("fit.brightness=1.5", "recipe.fit.brightness = 1.5 is not allowed: it must be >= 0 and <= 1"),
    ("prompt.template=a {nam} photo", "only placeholders are {token}, {name}"),
    ("prompt.template=a photo of {name}", "a text holding {token}"),
    ("dataset.metric=f2", "it must be one of accuracy, macro-f1"),
    ("dataset.kind=imagenet", "recipe.dataset.kind = 'imagenet' is not allowed"),
    ("score.prefilter_k=0", "recipe.score.prefilter_k = 0 is not allowed: it must be null or >= 1"),
    ("resolution=60", "recipe.resolution = 60 is not allowed: it must be a multiple of 8"),
    ("fit.lr=fast", "recipe.fit.lr: expected a number, got 'fast'"),
]


def _key_value(override: str):
    key, _, raw = override.partition("=")
    return key, yaml.safe_load(raw)


@pytest.mark.parametrize("override,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(override, message, tmp_path, capsys):
    # the command line, before the data or the base model is read (the data root does not even exist)
    assert main(["fit", "--dataset", "tiny", "--data-root", str(tmp_path / "absent"), "--set", override,
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    # a YAML file
    key, value = _key_value(override)
    data: dict = {"inherit": "tiny"}
    node = data
    *sections, last = key.split(".")
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="is not allowed|expected"):
        load_recipe(path)
    # an estimator parameter: set_params stores it (scikit-learn's contract), the recipe check says no
    with pytest.raises(RecipeError) as info:
        DiTiFewShotClassifier(recipe="tiny").set_params(overrides={key: value}).resolved_recipe()
    assert message.replace("recipe.", "") in str(info.value).replace("recipe.", "")


def test_training_dropout_with_gradient_checkpointing_is_refused():
    # the recomputed forward pass would draw other masks than the loss was taken with
    with pytest.raises(RecipeError, match="fit.dropout = 0.1 is not allowed with recipe.fit.gradient_checkpointing"):
        load_recipe("tiny", ["fit.dropout=0.1", "fit.gradient_checkpointing=true"])
    assert load_recipe("tiny", ["fit.dropout=0.1"]).fit.dropout == 0.1


def test_every_shipped_recipe_passes_its_own_checks():
    for name in available_recipes():
        load_recipe(name)
    for name in available_encoder_recipes():
        load_encoder_recipe(name)


def test_estimator_parameters_are_checked_before_any_model_loads(monkeypatch):
    import diti_sd.classifier as classifier

    def no_model(*args, **kwargs):
        raise AssertionError("the base model was loaded for a bad setting")

    monkeypatch.setattr(classifier, "load_backbone", no_model)
    X, y = color_images(6, seed=1)
    with pytest.raises(RecipeError, match="recipe.lora.rank = 0"):
        DiTiFewShotClassifier(recipe="tiny", rank=0).fit(X, y)
    with pytest.raises(RecipeError, match="recipe.score.t_max = 1200"):
        DiTiFewShotClassifier(recipe="tiny").set_params(score_window=(0, 1200)).fit(X, y)
    with pytest.raises(ValueError, match="score_window must be a \\(t_min, t_max\\) pair"):
        DiTiFewShotClassifier(recipe="tiny", score_window=(0,)).fit(X, y)
    # a grid's bad candidate fails in its own fit, before its model loads (set_params only stores)
    grid = GridSearchCV(DiTiFewShotClassifier(recipe="tiny"), {"rank": [0]}, cv=2, error_score="raise")
    with pytest.raises(RecipeError, match="recipe.lora.rank = 0"):
        grid.fit(X, y)


def test_the_cli_refuses_a_bad_value_before_torch_is_imported(tmp_path):
    code = ("import sys; from diti_sd.cli import main; "
            f"rc = main(['fit', '--dataset', 'tiny', '--data-root', {str(tmp_path)!r}, '--set', 'lora.rank=0', "
            f"'--out', {str(tmp_path / 'o')!r}]); "
            "sys.exit(10 if 'torch' in sys.modules else rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "diti-sd: error: recipe.lora.rank = 0 is not allowed: it must be >= 1"


@pytest.mark.parametrize("argv,message", [
    (["fit", "--shots", "0"], "argument --shots: expected an integer >= 1, got '0'"),
    (["fit", "--shots", "1,-2"], "argument --shots: expected an integer >= 1, got '-2'"),
    (["fit", "--shots", "1,,2"], "argument --shots: expected a comma-separated list"),
    (["fit", "--steps", "0"], "argument --steps: expected an integer >= 1"),
    (["eval", "--shots", "x"], "argument --shots: expected an integer >= 1, got 'x'"),
    (["eval", "--seeds", "1,a"], "argument --seeds: expected an integer, got 'a'"),
    (["eval", "--methods", "diti,clip"],
     "argument --methods: unknown 'clip'; choose from diti, diti-auto, sd-zeroshot, openclip-zeroshot"),
    (["demo", "--seeds", ""], "argument --seeds: expected a comma-separated list"),
    (["demo", "--test-per-class", "0"], "argument --test-per-class: expected an integer >= 1"),
    (["encoder", "edit", "--strengths", "1,x"], "argument --strengths: expected a number, got 'x'"),
    (["encoder", "train-ddpm", "--channels", "16,0"], "argument --channels: expected an integer >= 1, got '0'"),
    (["predict", "--top-k", "0"], "argument --top-k: expected an integer >= 1, got '0'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_list_or_count_flag_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err


def test_a_damaged_or_bad_recipe_in_a_saved_adapter_set_is_refused(tiny_model_dir, tmp_path, capsys):
    X, y = color_images(6, seed=2)
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False,
                                overrides={"fit.prior_images": 2, "fit.prior_sample_steps": 2})
    clf.fit(X, y).save_pretrained(tmp_path / "good")
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "good", bad)
    recipe = yaml.safe_load((bad / "recipe.yaml").read_text())
    recipe["score"]["weighting"] = "bogus"
    (bad / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=f"{bad}/recipe.yaml.score.weighting = 'bogus' is not allowed"):
        DiTiFewShotClassifier.from_pretrained(bad)
    (bad / "manifest.json").write_text((tmp_path / "good" / "manifest.json").read_text()[:-40])
    save_image(X[0], tmp_path / "x.png")
    assert main(["predict", "--adapters", str(bad), str(tmp_path / "x.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "manifest.json is damaged" in err and "\n" not in err
    json.loads((tmp_path / "good" / "manifest.json").read_text())  # the good copy is untouched


def test_no_progress_silences_the_libraries_bars_for_that_run_only(tiny_model_dir, tmp_path, capsys):
    images, labels = color_images(6, seed=3, size=32)
    for i, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        save_image(image, tmp_path / "data" / label / f"{i}.png")
    argv = ["fit", "--dataset", "tiny", "--data-root", str(tmp_path / "data"), "--model", str(tiny_model_dir),
            "--steps", "1", "--set", "fit.prior=false", "--set", "resolution=32", "--overwrite"]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert "Loading weights" not in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "Loading weights" in capsys.readouterr().err  # the libraries' bars are back for the next run


@pytest.mark.parametrize("argv,hint", [
    (["fit", "--dataset", "tiny", "--data-root", "d", "--out", "o"], "rerun the same command with --resume"),
    (["predict", "--adapters", "a", "x.png", "--out", "p.csv"], "images already scored (in p.csv.scores/)"),
    (["predict", "--adapters", "a", "x.png"], "nothing was kept: pass --out (or --cache-dir)"),
    (["eval", "--dataset", "tiny", "--data-root", "d", "--out", "r"], "finished runs in r/runs/"),
    (["train-base", "--out", "m"], "rerun the same command with --resume to continue from the last checkpoint in m"),
    (["train-base", "--out", "m", "--checkpoint-every", "0"], "rerun it to start again, with --checkpoint-every"),
    (["sample", "--adapters", "a", "--out", "s.png"], "keeps nothing of an interrupted run"),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_ctrl_c_names_the_way_on_that_exists_for_the_command(argv, hint, monkeypatch, capsys):
    import importlib

    module = importlib.import_module(f"diti_sd.cli.{argv[0].replace('-', '_')}")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", interrupted)
    assert main(argv) == 130
    assert hint in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--val-per-class", "2"],
                                   ["--shots", "2", "--split", "s.json", "--val-per-class", "2"]],
                         ids=["without --shots", "with --split"])
def test_val_per_class_without_a_sampled_split_is_refused(extra, tmp_path, capsys):
    argv = ["fit", "--dataset", "tiny", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    assert "--val-per-class sizes the validation part of a sampled k-shot split" in capsys.readouterr().err


def test_the_override_example_loads_on_every_shipped_recipe():
    from pathlib import Path

    from diti_sd.cli.fit import SET_EXAMPLE

    assert f"`{SET_EXAMPLE}`" in (Path(__file__).parents[1] / "README.md").read_text()
    overrides = SET_EXAMPLE.replace("--set ", "").split()
    for name in available_recipes():
        assert load_recipe(name, overrides).score.t_max == 500
