"""Bad input to the commands other than ``fit`` is one line naming the fix, before the work it would have cost:
the device, paths that cannot be written, numbers the model cannot take, keys a recipe does not have."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from diti_sd.cli import main


def _refused(argv, capsys) -> str:
    """The one line a refused command printed (exit 2, a usage error or a DitiError; no traceback)."""
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own refusal
        code = exit_info.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err, err
    return err[-1]


@pytest.fixture()
def never_loaded(monkeypatch):
    """Loading an adapter set, an encoder or a base model fails the test: the refusal had to come first."""
    from diti_sd import DiTiFewShotClassifier
    from diti_sd.encoder import DiTiEncoder

    def loaded(*args, **kwargs):
        pytest.fail("a model was loaded before the refusal")

    for cls in (DiTiFewShotClassifier, DiTiEncoder):
        monkeypatch.setattr(cls, "from_pretrained", loaded)
    for where in ("diti_sd.backbone.load_backbone", "diti_sd.classifier.load_backbone"):
        monkeypatch.setattr(where, loaded)


@pytest.mark.parametrize("command", [["train-base", "--out", "m"], ["predict", "--adapters", "a", "x.png"],
                                     ["encoder", "train-ddpm", "--dataset", "granular", "--out", "d"]])
def test_a_device_torch_does_not_name_is_refused_while_parsing(command, capsys):
    line = _refused([*command, "--device", "cuda-1"], capsys)
    assert "argument --device: expected a device such as cpu, cuda, cuda:1 or mps, got 'cuda-1'" in line


def test_a_gpu_this_machine_lacks_is_said_before_anything_loads(monkeypatch):
    from diti_sd.backbone import BackboneError, resolve_device

    with pytest.raises(BackboneError, match="device 'gpu0' is not one torch knows; pass cpu"):
        resolve_device("gpu0")  # the shape of a name, which parsing lets through
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackboneError, match="no CUDA GPU that torch can use; pass cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(BackboneError, match=r"has 2 CUDA GPU\(s\), cuda:0 to cuda:1; pass one of them"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "1")  # a bare cuda under a launcher: this process's GPU
    assert resolve_device("cuda") == torch.device("cuda", 1)


def test_outputs_that_cannot_be_written_are_refused_before_the_work(tmp_path, capsys, never_loaded):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [  # (argv, what the line says)
        (["sample", "--adapters", "a", "--out", str(folder)], f"--out {folder} is a folder; pass the file to write"),
        (["sample", "--adapters", "a", "--out", f"{a_file}/g.png"], f"{a_file} is a file, not a folder"),
        (["predict", "--adapters", "a", str(image), "--out", f"{a_file}/p.csv"], f"{a_file} is a file, not a folder"),
        (["predict", "--adapters", "a", str(image), "--cache-dir", str(a_file)],
         f"--cache-dir {a_file} is a file; pass a folder"),
        (["eval", "--dataset", "tiny", "--data-root", str(folder), "--out", str(a_file)], f"--out {a_file} is a file"),
        (["eval", "--dataset", "tiny", "--data-root", str(folder), "--out", str(folder / "r"), "--adapters-dir",
          str(a_file)], f"--adapters-dir {a_file} is a file"),
        (["fit", "--dataset", "tiny", "--data-root", str(folder), "--out", f"{a_file}/set"],
         f"{a_file} is a file, not a folder"),
        (["train-base", "--out", f"{a_file}/m"], f"{a_file} is a file, not a folder"),
        (["encoder", "fit", "--dataset", "granular", "--ddpm", str(folder), "--out", str(a_file)],
         f"--out {a_file} is a file"),
        (["encoder", "probe", "--encoder", str(folder), "--out", str(a_file)], f"--out {a_file} is a file"),
        (["encoder", "edit", "--encoder", str(folder), "--images", str(image), str(image), "--subsets", "0",
          "--out", str(folder)], f"--out {folder} is a folder; pass the file to write, e.g. {folder}/edit.png"),
    ]
    for argv, said in cases:
        assert said in _refused(argv, capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt", "x.png"]  # nothing made


def test_sample_refuses_what_it_would_fail_on_after_loading(tmp_path, capsys, never_loaded):
    out = str(tmp_path / "g.png")
    assert "--classes names no class" in _refused(["sample", "--adapters", "a", "--classes", "--out", out], capsys)
    line = _refused(["sample", "--adapters", "a", "--steps", "5000", "--out", out], capsys)
    assert "--steps 5000: DDIM takes at most the 1000 time-steps" in line
    line = _refused(["sample", "--adapters", "a", "--guidance", "nan", "--out", out], capsys)
    assert "argument --guidance: expected a finite number, got 'nan'" in line


def test_predict_with_no_readable_image_stops_before_the_model_loads(tmp_path, capsys, never_loaded):
    adapters = tmp_path / "set"
    adapters.mkdir()
    (adapters / "manifest.json").write_text(json.dumps({"classes": []}))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    line = _refused(["predict", "--adapters", str(adapters), str(tmp_path / "missing.png"), str(bad)], capsys)
    assert "none of the 2 images could be read (e.g." in line and line.endswith("check the paths")


def test_base_recipes_refuse_unknown_domain_keys_and_odd_latent_factors(tmp_path, capsys):
    recipe = tmp_path / "base.yaml"
    for text, said in [("domain: {n_clases: 5}\n", "unknown key(s) ['n_clases'] in recipe.domain"),
                       ("domain: {size: 32}\n", "recipe.domain.size: the images' side is the recipe's resolution"),
                       ("resolution: 16\nlatent_factor: 3\n", "latent_factor 3 must be a power of two (each")]:
        recipe.write_text(text)
        assert said in _refused(["train-base", "--recipe", str(recipe), "--out", str(tmp_path / "m")], capsys)
    assert not (tmp_path / "m").exists()
    line = _refused(["tiny-model", "--out", str(tmp_path / "t"), "--resolution", "60"], capsys)
    assert "resolution 60 must be a multiple of the latent factor 8; pass e.g. 64" in line


def test_one_cycle_takes_a_ten_step_run_and_leaves_other_lengths_as_torch_schedules_them():
    from diti_sd.training.optim import one_cycle

    def rates(schedule_of, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        schedule, seen = schedule_of(opt, steps), []
        for _ in range(steps):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return seen

    ten = rates(lambda o, n: one_cycle(o, 1.0, n), 10)
    assert ten[0] < max(ten) > ten[-1] and max(ten) > 0.9  # rises to about the peak, then anneals
    for steps in (3, 11, 200):
        assert rates(lambda o, n: one_cycle(o, 1.0, n), steps) == \
            rates(lambda o, n: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=n, pct_start=0.1), steps)


def test_encoder_commands_check_shapes_images_subsets_and_data_before_loading(tmp_path, capsys, never_loaded):
    from diti_sd.encoder import load_encoder_recipe

    line = _refused(["encoder", "train-ddpm", "--dataset", "granular", "--channels", "10,12", "--out",
                     str(tmp_path / "d")], capsys)
    assert "--channels 10,12: every level's channels must be a multiple of 5" in line
    line = _refused(["encoder", "train-ddpm", "--dataset", "granular", "--size", "15", "--out", str(tmp_path / "d")],
                    capsys)
    assert "--size 15: 2 levels halve the side 1 time(s), so it must be a multiple of 2" in line
    # a saved encoder's manifest and recipe, without the weights: whatever is refused was refused before loading
    encoder = tmp_path / "enc"
    encoder.mkdir()
    (encoder / "encoder.json").write_text(json.dumps({"subsets": [{"subset": 0}, {"subset": 1}]}))
    (encoder / "recipe.yaml").write_text(yaml.safe_dump(load_encoder_recipe("celeba64").to_dict()))
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(image)
    edit = ["encoder", "edit", "--encoder", str(encoder), "--out", str(tmp_path / "e.png")]
    assert "subsets '5' out of range: this encoder has subsets 0..1" in \
        _refused([*edit, "--images", str(image), str(image), "--subsets", "5"], capsys)
    (tmp_path / "notes.txt").write_text("x")
    assert "cannot read image" in _refused([*edit, "--images", str(image), str(tmp_path / "notes.txt"),
                                            "--subsets", "1"], capsys)
    line = _refused(["encoder", "probe", "--encoder", str(encoder)], capsys)
    assert "the 'celeba' data set needs --data-root" in line


def test_encoder_fit_keeps_a_fitted_encoder_unless_told(tmp_path, capsys, never_loaded, monkeypatch):
    monkeypatch.setattr("diti_sd.encoder.load_ddpm", lambda *a, **k: pytest.fail("the DDPM was loaded"))
    out = tmp_path / "enc"
    out.mkdir()
    (out / "encoder.json").write_text("{}")  # a finished fit's manifest, no checkpoint
    argv = ["encoder", "fit", "--dataset", "granular", "--ddpm", "d", "--out", str(out)]
    assert "already holds a fitted encoder; pass --overwrite to fit it again" in _refused(argv, capsys)
    assert main([*argv, "--resume"]) == 0  # nothing to continue: said, and nothing trained
    assert "--resume continues only an interrupted fit" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["encoder.json"]


def test_every_error_of_the_package_is_a_diti_error_with_a_built_in_base():
    # scikit-learn's practice: a caller catches DitiError for all of them, or the built-in kind it expects
    import importlib
    import pkgutil

    import diti_sd
    from diti_sd.errors import DitiError

    for module in pkgutil.walk_packages(diti_sd.__path__, "diti_sd."):
        if not module.name.endswith("__main__"):  # that one runs the command line
            importlib.import_module(module.name)
    seen, todo = set(), [DitiError]
    while todo:
        for cls in todo.pop().__subclasses__():
            seen.add(cls)
            todo.append(cls)
    assert len(seen) >= 15
    bare = [cls.__qualname__ for cls in seen if not any(
        base.__module__ == "builtins" and base not in (Exception, BaseException, object) for base in cls.__mro__)]
    assert not bare, bare


def test_encoder_flags_the_command_would_not_read_are_refused(tmp_path, capsys, never_loaded):
    edit = ["encoder", "edit", "--encoder", str(tmp_path), "--images", "a.png", "b.png", "--out",
            str(tmp_path / "e.png")]
    assert "--strengths is read only with --attribute" in _refused([*edit, "--subsets", "1", "--strengths=-2,2"],
                                                                   capsys)
    assert "--frames is read only when --subsets swaps" in _refused([*edit, "--attribute", "smiling", "--frames", "3"],
                                                                    capsys)
    line = _refused(["encoder", "fit", "--dataset", "granular", "--data-root", str(tmp_path), "--ddpm", "d", "--out",
                     str(tmp_path / "enc")], capsys)
    assert "the granular data set is drawn, not read: --data-root" in line
