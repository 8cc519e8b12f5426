"""The package as a user installs it: a regular (non-editable) wheel carries its recipes and assets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "diti_sd", source / "diti_sd", ignore=shutil.ignore_patterns("__pycache__"))
    # without build isolation, so that it runs offline: the environment's setuptools builds it
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True)
    (path,) = out.glob("diti_sd-*.whl")
    return path


def test_wheel_carries_every_recipe_and_the_shipped_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = list((ROOT / "diti_sd" / "recipes" / "configs").rglob("*.yaml"))
    assert len(recipes) > 10
    for recipe in recipes:
        assert recipe.relative_to(ROOT).as_posix() in names
    for asset in (ROOT / "diti_sd" / "assets").rglob("*"):
        if asset.is_file():
            assert asset.relative_to(ROOT).as_posix() in names


def test_installed_wheel_finds_its_recipes_away_from_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import diti_sd, diti_sd.recipes as r; from diti_sd.encoder import available_encoder_recipes; "
            "print(diti_sd.__file__); print(r.RECIPE_DIR); print(r.load_recipe('fgvc-aircraft').fit.lr); "
            "print(','.join(r.available_recipes())); print(','.join(available_encoder_recipes())); "
            "import importlib.metadata as m; print(m.version('diti-sd'), diti_sd.__version__)")
    lines = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                           check=True, capture_output=True, text=True).stdout.splitlines()
    assert lines[0].startswith(str(target)) and lines[1].startswith(str(target))
    assert float(lines[2]) > 0
    assert "synthetic" in lines[3].split(",") and "fgvc-aircraft" in lines[3].split(",")
    assert lines[4].split(",") == sorted(p.stem for p in (ROOT / "recipes" / "encoder").glob("*.yaml"))
    # pip, the wheel's name and the manifests all read the one version (diti_sd/version.py)
    installed, package = lines[5].split()
    assert installed == package and installed != "0.0.0" and wheel.name.startswith(f"diti_sd-{package}-")


def test_the_checkouts_recipes_folder_is_the_packages_own():
    # one copy: the top-level recipes/ a user of a checkout edits is the package data the wheel ships
    assert (ROOT / "recipes").is_symlink()
    assert (ROOT / "recipes").resolve() == (ROOT / "diti_sd" / "recipes" / "configs").resolve()
