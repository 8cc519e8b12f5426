import csv
import json
import re

import pytest
from helpers import color_images
from torchvision.utils import save_image

from diti_sd.cli import main


@pytest.fixture()
def image_folder(tmp_path):
    images, labels = color_images(12, seed=11)
    for i, (image, label) in enumerate(zip(images, labels)):
        name = {"c0": "red", "c1": "green", "c2": "blue"}[label]
        split = "test" if i >= 9 else "train"
        (tmp_path / "birds" / split / name).mkdir(parents=True, exist_ok=True)
        save_image(image, tmp_path / "birds" / split / name / f"{i}.png")
    return tmp_path / "birds"


def test_help_lists_the_subcommands(capsys):
    from diti_sd.cli import SUBCOMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    listed = re.findall(r"^ {4}(\S+)(?: {2,}\S.*)?$", out, flags=re.M)  # each subcommand's name, then its help
    assert listed == list(SUBCOMMANDS) == ["fit", "predict", "sample", "eval", "demo", "train-base", "encoder",
                                           "tiny-model"]


def test_version(capsys):
    from diti_sd import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"diti-sd {__version__}"


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [["fit"], ["predict"], ["sample"], ["eval"], ["demo"], ["train-base"],
                                     ["tiny-model"], ["encoder", "fit"], ["encoder", "probe"], ["encoder", "edit"],
                                     ["encoder", "train-ddpm"]])
def test_every_command_shows_an_example_and_speaks_one_grammar(command, capsys):
    out = _help(command, capsys)
    assert re.search(rf"^examples?:\n(  .*\n)*  diti-sd {' '.join(command)} ", out, flags=re.M), out
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out.split("example")[0]))
    assert not flags & {"--output", "--report"}  # every output is --out
    if command != ["tiny-model"]:  # everything that computes takes --device
        assert "--device" in flags
    if "--dataset" in flags:  # always a recipe, never a data kind
        entry = re.search(r"^  --dataset .*?(?=^  -|^\S)", out, flags=re.M | re.S).group(0)
        assert "recipe" in entry, entry


def test_fit_then_predict_from_the_command_line(image_folder, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "adapters"
    argv = ["fit", "--dataset", "tiny", "--data-root", str(image_folder), "--model", str(tiny_model_dir),
            "--shots", "2", "--seed", "1", "--out", str(out), "--no-progress", "--export-diffusers", "--export-peft",
            "--validation-budget", "none"]
    assert main(argv) == 0
    assert (out / "manifest.json").is_file() and (out / "split.json").is_file() and (out / "README.md").is_file()
    assert len(list((out / "diffusers").glob("*.safetensors"))) == 3
    assert len(list((out / "peft").glob("*/unet/adapter_model.safetensors"))) == 3
    # calibrated by default on the split's validation images
    calibration = json.loads((out / "manifest.json").read_text())["calibration"]
    n_val = len(json.loads((out / "split.json").read_text())["val_ids"])
    assert calibration["source"].startswith(f"validation: {n_val} images") and calibration["images"] == n_val > 0
    assert len(list((out / "prior").glob("*.png"))) == 4
    # the summary says whether the shots' blur names their class (two shots a class cannot show it)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["coarse_shortcut"]["images"] == 6 and summary["coarse_shortcut"]["p_value"] > 0.01
    # refuses to overwrite a finished set by accident
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\x00\x01 not an image")
    csv_path = tmp_path / "preds.csv"
    code = main(["predict", "--adapters", str(out), str(image_folder / "test"), str(bad), "--top-k", "2",
                 "--out", str(csv_path), "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 4
    broken = [r for r in rows if r["path"] == str(bad)]
    assert broken and "cannot read image" in broken[0]["error"] and not broken[0]["prediction"]
    good = [r for r in rows if r["path"] != str(bad)]
    assert all(r["prediction"] in {"red", "green", "blue"} and len(r["top_k"].split(";")) == 2 for r in good)
    assert all(int(r["unet_calls"]) == 3 * 2 + 2 * 2 for r in good)  # rounds [[2, 2], [4, 1]] with 3 classes
    assert not (tmp_path / "preds.csv.scores").exists()  # the chunks of a finished pass are cleaned up
    # with --cache-dir the scored chunks stay, and a second pass reads them: the same predictions
    kept = tmp_path / "kept"
    again = tmp_path / "again.csv"
    for _ in range(2):
        assert main(["predict", "--adapters", str(out), str(image_folder / "test"), "--out", str(again),
                     "--cache-dir", str(kept), "--top-k", "2", "--no-progress"]) == 0
        assert len(list(kept.glob("*.npz"))) == 1
    assert [r["top_k"] for r in csv.DictReader(open(again))] == [r["top_k"] for r in good]


def test_the_packages_warnings_print_as_one_line_and_the_libraries_as_python_shows_them(tmp_path, monkeypatch,
                                                                                         capsys):
    import warnings

    from diti_sd.cli import tiny_model
    from diti_sd.errors import CoarseShortcutWarning

    def run(args):
        warnings.warn("the shots' blur alone names their class", CoarseShortcutWarning, stacklevel=2)
        warnings.warn("a library's", FutureWarning, stacklevel=2)

    monkeypatch.setattr(tiny_model, "run", run)
    with pytest.warns(FutureWarning, match="a library's"):  # passed on to Python's display, here pytest's record
        assert main(["tiny-model", "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert err == "diti-sd: warning: the shots' blur alone names their class\n"


def test_fit_with_auto_chooses_the_window_on_the_splits_validation_images(image_folder, tiny_model_dir, tmp_path,
                                                                         capsys):
    out = tmp_path / "auto"
    # 1 shot: CoOp would keep 1 validation image per class; --val-per-class 2 keeps the 2 left of 3
    assert main(["fit", "--dataset", "tiny", "--data-root", str(image_folder), "--model", str(tiny_model_dir),
                 "--shots", "1", "--val-per-class", "2", "--steps", "1", "--set", "score.weighting=auto",
                 "--set", "score.auto_pairs=6", "--out", str(out), "--no-progress", "--validation-budget", "none"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    choice = manifest["score_choice"]
    assert len(json.loads((out / "split.json").read_text())["val_ids"]) == 2 * 3
    assert not (out / "coarse_shortcut.png").exists()  # one shot a class: the check has nothing to read
    assert choice["source"] == "validation images (6)" and choice["unet_calls"] == 6 * 3 * 6
    # one pass: the temperature comes from auto's own UNet calls, replayed under its choice
    assert manifest["calibration"]["source"] == "validation images (6): auto's pass, replayed under its choice"
    assert manifest["calibration"]["unet_calls"] == choice["unet_calls"]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["score_choice"]["name"] == choice["name"]
    assert summary["validation"]["unet_calls"] == 6 * 3 * 6 and summary["validation"]["share_of_fit"] > 0


def test_fit_tells_whether_the_validation_images_can_see_the_shots_accident(tmp_path, tiny_model_dir, capsys,
                                                                           monkeypatch):
    import diti_sd.plotting

    drawn = []
    plot = diti_sd.plotting.plot_coarse_shortcut
    monkeypatch.setattr(diti_sd.plotting, "plot_coarse_shortcut", lambda *a, **k: drawn.append(a) or plot(*a, **k))
    images, labels = color_images(15, seed=12)  # class c: a flat colour in the shots and in the validation images
    for i, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / "flat" / "train" / label).mkdir(parents=True, exist_ok=True)
        save_image(image, tmp_path / "flat" / "train" / label / f"{i}.png")
    out = tmp_path / "adapters"
    assert main(["fit", "--dataset", "tiny", "--data-root", str(tmp_path / "flat"), "--model", str(tiny_model_dir),
                 "--shots", "3", "--val-per-class", "2", "--steps", "1", "--out", str(out), "--no-progress",
                 "--validation-budget", "none"]) == 0
    captured = capsys.readouterr()
    # a recipe without auto still hands the split's validation images to the fit, for the check to read
    assert "diti-sd: warning: the shots' blur alone points to their class" in captured.err
    assert "none of your 6 validation images breaks it" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["coarse_shortcut"]["validation"] == {"images": 6, "breaking": [], "breaking_ids": []}
    assert summary["calibration"].startswith("validation: 6 images")  # the temperature still set on them
    # the same split with one validation image painted another class's colour: named by its id in the data set
    val_ids = json.loads((out / "split.json").read_text())["val_ids"]
    painted = next(i for i in val_ids if not i.startswith("c0"))
    save_image(images[0], tmp_path / "flat" / "train" / painted)  # image 0 is class c0's colour
    assert main(["fit", "--dataset", "tiny", "--data-root", str(tmp_path / "flat"), "--model", str(tiny_model_dir),
                 "--split", str(out / "split.json"), "--steps", "1", "--out", str(tmp_path / "again"),
                 "--no-progress", "--validation-budget", "none"]) == 0
    captured = capsys.readouterr()
    assert "1 of your 6 validation images break it" in captured.err
    breaks = json.loads(captured.out.strip().splitlines()[-1])["coarse_shortcut"]["validation"]
    assert breaks["breaking_ids"] == [painted] and len(breaks["breaking"]) == 1
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest["fit"]["coarse_shortcut"]["validation"]["breaking_ids"] == [painted]  # kept beside the weights
    # the picture a user judges the accident by: the shots' blur per class, then the breaking image beside them
    assert (out / "coarse_shortcut.png").is_file() and (tmp_path / "again" / "coarse_shortcut.png").is_file()
    (shots, names, _, path, none, _), (_, _, _, _, painted_pixels, painted_labels) = drawn
    assert path == out / "coarse_shortcut.png" and sorted(set(names)) == ["c0", "c1", "c2"] and none is None
    assert shots.shape[-1] == 128 and len(shots) == 9  # only the shots shown are decoded, at 128 pixels
    assert painted_labels == [painted.split("/")[0]] and painted_pixels[0].float().mean((1, 2)).argmax() == 0  # red
    # refitted over with shots whose colour says nothing of their class: the check is silent, the picture gone
    for i, image in enumerate(images):
        (tmp_path / "mixed" / "train" / f"c{i // 3 % 3}").mkdir(parents=True, exist_ok=True)
        save_image(image, tmp_path / "mixed" / "train" / f"c{i // 3 % 3}" / f"{i}.png")
    assert main(["fit", "--dataset", "tiny", "--data-root", str(tmp_path / "mixed"), "--model", str(tiny_model_dir),
                 "--shots", "3", "--val-per-class", "2", "--steps", "1", "--out", str(tmp_path / "again"),
                 "--overwrite", "--no-progress", "--validation-budget", "none"]) == 0
    assert len(drawn) == 2 and not (tmp_path / "again" / "coarse_shortcut.png").exists()


def test_fit_with_several_shots_refuses_a_draw_the_data_cannot_give_before_the_first_fit(image_folder, tmp_path,
                                                                                         monkeypatch, capsys):
    # three images a class: the 4-shot draw cannot be made, which is said before the 1-shot fit, not after it
    from diti_sd import DiTiFewShotClassifier

    monkeypatch.setattr(DiTiFewShotClassifier, "fit", lambda *a, **k: pytest.fail("fitted"))
    out = tmp_path / "sets"
    assert main(["fit", "--dataset", "tiny", "--data-root", str(image_folder), "--shots", "1,4", "--out", str(out),
                 "--no-progress"]) == 2
    assert "fewer than 4 train images" in capsys.readouterr().err and not out.exists()


def test_fit_with_several_shots_writes_one_set_each_and_resume_keeps_finished_ones(image_folder, tiny_model_dir,
                                                                                  tmp_path, capsys):
    out = tmp_path / "sets"
    argv = ["fit", "--dataset", "tiny", "--data-root", str(image_folder), "--model", str(tiny_model_dir),
            "--shots", "1,2", "--steps", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    for k in (1, 2):
        manifest = json.loads((out / f"{k}shot" / "manifest.json").read_text())
        assert manifest["shots"] == k and manifest["n_train"] == 3 * k
        assert len(json.loads((out / f"{k}shot" / "split.json").read_text())["train_ids"]) == 3 * k
    # an interrupted multi-shot run: the finished set stays as it is, the missing one is fitted
    finished = (out / "1shot" / "adapters.safetensors").stat().st_mtime_ns
    (out / "2shot" / "manifest.json").unlink()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert "already fitted" in capsys.readouterr().out
    assert (out / "1shot" / "adapters.safetensors").stat().st_mtime_ns == finished
    assert (out / "2shot" / "manifest.json").is_file()


def test_model_writers_swap_a_model_folder_in_whole_and_refuse_any_other_folder(tmp_path, capsys):
    from diti_sd.backbone import load_backbone

    out = tmp_path / "m"
    assert main(["tiny-model", "--out", str(out)]) == 0
    first = load_backbone(str(out), device="cpu").fingerprint()
    assert main(["tiny-model", "--out", str(out), "--seed", "1"]) == 0  # a model folder: replaced whole
    assert load_backbone(str(out), device="cpu").fingerprint() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or old folder left beside it
    # a folder of other things would be replaced whole with the model: refused before any training
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    for command in (["tiny-model"], ["train-base"], ["encoder", "train-ddpm", "--dataset", "granular"]):
        assert main([*command, "--out", str(tmp_path / "photos")]) == 2
        assert "holds something other than a model folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["a.jpg"]


def test_sample_writes_a_grid(image_folder, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "adapters"
    assert main(["fit", "--dataset", "tiny", "--data-root", str(image_folder), "--model", str(tiny_model_dir),
                 "--out", str(out), "--no-progress", "--steps", "2"]) == 0
    grid = tmp_path / "grid.png"
    assert main(["sample", "--adapters", str(out), "--classes", "red", "blue", "--n", "2", "--steps", "3",
                 "--out", str(grid), "--no-progress"]) == 0
    from PIL import Image

    assert Image.open(grid).size == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)
    # a class the set does not hold: one line naming those it does, before the base model loads
    from diti_sd import DiTiFewShotClassifier

    monkeypatch.setattr(DiTiFewShotClassifier, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    assert main(["sample", "--adapters", str(out), "--classes", "red", "purple", "--out", str(grid)]) == 2
    assert "unknown classes ['purple']; the set's classes: blue, green, red" in capsys.readouterr().err
    # integer labels are read as sampling reads them ("03" is class 3)
    from diti_sd.cli import CLIError
    from diti_sd.cli.sample import check_classes

    (tmp_path / "ints").mkdir()
    (tmp_path / "ints" / "manifest.json").write_text(json.dumps({"label_type": "int", "classes": [
        {"name": "0"}, {"name": "3"}]}))
    check_classes(tmp_path / "ints", ["03", "0"])
    for asked in (["4"], ["x"]):
        with pytest.raises(CLIError, match=r"the set's classes \(integer labels\): 0, 3"):
            check_classes(tmp_path / "ints", asked)


def test_cli_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["predict", "--adapters", str(tmp_path), str(tmp_path / "x.png"), "--no-progress"]) == 2
    assert "not an adapter set" in capsys.readouterr().err
    assert main(["fit", "--dataset", "nope", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no recipe 'nope'" in capsys.readouterr().err
    assert main(["fit", "--dataset", "synthetic", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "diti-sd demo" in capsys.readouterr().err


def test_the_reference_recipe_runs_end_to_end_on_a_fake_archive(tiny_model_dir, tmp_path, capsys):
    # fgvc-aircraft as published (whole images, jitter, posterior draws, tif weight, text dropout, filters),
    # with lengths and stages cut so that it runs in seconds on the tiny model
    from fakes import make_fake_fgvc

    root = make_fake_fgvc(tmp_path / "data", per_split=2, n_classes=4, seed=2)
    out = tmp_path / "adapters"
    fast = ["--set", "fit.steps=2", "--set", "fit.prior_images=2", "--set", "fit.prior_sample_steps=2",
            "--set", "score.rounds=[[2,2],[4,1]]"]
    assert main(["fit", "--dataset", "fgvc-aircraft", "--data-root", str(root), "--model", str(tiny_model_dir),
                 "--shots", "1", "--out", str(out), "--no-progress", *fast]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lora"]["block_filter"] == "all-2" and manifest["tif_d"] > 0
    assert manifest["classes"][0]["prompt"] == "a photo of a hta 707-320, a type of aircraft."
    capsys.readouterr()
    images = root / "fgvc-aircraft-2013b" / "data" / "images"
    assert main(["predict", "--adapters", str(out), str(next(images.glob("*.jpg"))), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("\t") == 2


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    from diti_sd.adapter_set import AdapterSetError
    from diti_sd.cli import predict
    from diti_sd.errors import DitiError

    argv = ["predict", "--adapters", str(tmp_path), str(tmp_path / "x.png"), "--no-progress"]
    assert main(argv) == 2 and "not an adapter set" in capsys.readouterr().err
    with pytest.raises(AdapterSetError):  # --debug: the traceback of a user error too
        main(["--debug", *argv])
    assert issubclass(AdapterSetError, DitiError) and issubclass(AdapterSetError, ValueError)

    def bug(args):
        raise ValueError("an internal mistake, not the user's")

    monkeypatch.setattr(predict, "run", bug)
    with pytest.raises(ValueError, match="internal mistake"):
        main(argv)


def test_predict_prepares_each_image_as_the_adapters_data_set_was(tmp_path, monkeypatch, capsys):
    # a set fitted on Duke's archive learned TiF's crop, pad and JPEG: predict gives its images the same by default
    from PIL import Image

    from diti_sd import classifier
    from diti_sd.cli import predict
    from diti_sd.data import images as images_module

    fitted = {}
    for kind in ("duke", "image-folder"):
        fitted[kind] = tmp_path / kind
        fitted[kind].mkdir()
        (fitted[kind] / "recipe.yaml").write_text(f"dataset: {{kind: {kind}}}\n")
    assert predict.preparation(fitted["duke"], "auto") == "tif-duke"
    assert predict.preparation(fitted["image-folder"], "auto") == ""
    assert predict.preparation(fitted["duke"], "none") == "" and predict.preparation(fitted["duke"], "pad-square")
    # what the fit recorded for its images comes first (a set fitted in Python on image files read them as they
    # are, whatever its recipe's data set); a value that names no preparation is not trusted
    for recorded, expected in (("", ""), ("pad-square", "pad-square"), ("jpeg", "tif-duke"), (None, "tif-duke"),
                               ("tif-processed", "tif-duke"), (["a list"], "tif-duke")):
        (fitted["duke"] / "manifest.json").write_text(json.dumps({"fit": {"image_preparation": recorded}}))
        assert predict.preparation(fitted["duke"], "auto") == expected
    (fitted["duke"] / "manifest.json").unlink()
    Image.new("RGB", (24, 60), (200, 30, 30)).save(tmp_path / "query.jpg")
    seen, read = [], images_module.load_image

    def recording(source, *args, prepare="", **kwargs):
        image = read(source, *args, prepare=prepare, **kwargs)
        seen.append((prepare, image.size))
        return image

    class Loaded(Exception):
        pass

    def loaded(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(images_module, "load_image", recording)
    monkeypatch.setattr(classifier.DiTiFewShotClassifier, "from_pretrained", loaded)
    for flag, expected in (([], ("tif-duke", (60, 60))), (["--prepare", "none"], ("", (24, 60)))):
        seen.clear()
        with pytest.raises(Loaded):  # the images are read before the model loads
            main(["predict", "--adapters", str(fitted["duke"]), str(tmp_path / "query.jpg"), "--no-progress", *flag])
        assert seen == [expected]
        assert ("processed as tif-duke" in capsys.readouterr().err) is (not flag)
    # a folder as --out: the CSV would be written after every image is scored
    seen.clear()
    query = str(tmp_path / "query.jpg")
    assert main(["predict", "--adapters", str(fitted["duke"]), query, "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder; pass the file to write, e.g." in capsys.readouterr().err and seen == []
    # a name that is no preparation: one line, before any image is read
    seen.clear()
    assert main(["predict", "--adapters", str(fitted["duke"]), str(tmp_path / "query.jpg"), "--prepare", "jpeg"]) == 2
    assert "--prepare 'jpeg' is no preparation" in capsys.readouterr().err and not seen
    # a saved recipe whose sections are not mappings prepares nothing here (loading the set says what is wrong)
    (fitted["image-folder"] / "recipe.yaml").write_text("dataset: x\nscore: y\n")
    assert predict.preparation(fitted["image-folder"], "auto") == "" and predict.scored_cells(fitted["image-folder"])
    # masks are checked at their files' sizes (Duke's crop and pad would give a mask too wide the image's square),
    # then framed as the images are
    (fitted["duke"] / "recipe.yaml").write_text("dataset: {kind: duke}\nscore: {cells: object}\n")
    masks = tmp_path / "masks"
    masks.mkdir()
    for size, refused in (((30, 60), True), ((24, 60), False)):
        Image.new("L", size, 255).save(masks / "query.png")
        seen.clear()
        argv = ["predict", "--adapters", str(fitted["duke"]), str(tmp_path / "query.jpg"), "--masks", str(masks)]
        if refused:
            assert main(argv) == 2
            assert f"query.png is 30x60 but {tmp_path / 'query.jpg'} is 24x60" in capsys.readouterr().err
        else:
            with pytest.raises(Loaded):
                main(argv)
