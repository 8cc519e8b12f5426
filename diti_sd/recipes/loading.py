"""Recipes from YAML: a registered name, a path, or a recipe object, then dotted overrides.

A recipe file may ``inherit: NAME`` another registered recipe of its folder (sections merge key by key);
``from_dict`` builds the dataclasses, rejecting unknown keys and checking every value's type, then its
allowed values (:func:`diti_sd.constraints.validate`), before any model or data is read.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

import yaml

from ..constraints import RecipeError, validate
from .schema import Recipe

# the YAML files shipped with the package (the top-level recipes/ of a checkout links here)
RECIPE_DIR = Path(__file__).parent / "configs"


def from_dict(cls, data: dict | None, where: str = "recipe"):
    """Build a dataclass from a dict, recursing into nested dataclasses; unknown keys are errors."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"unknown key(s) {unknown} in {where}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = _check_type(value, hint, f"{where}.{name}")
    obj = cls(**kwargs)
    validate(obj, where)
    return obj


def _check_type(value, hint, where):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except RecipeError as err:
                errors.append(str(err))
        raise RecipeError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[]") for v in value] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return {_check_type(k, args[0], where): _check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"{where}: expected a number, got {value!r}") from None
    if hint is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise RecipeError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def available_recipes() -> list[str]:
    """Registered recipe names; files starting with ``_`` are shared parts that recipes inherit."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def load_recipe(name_or_path: str | os.PathLike | Recipe, overrides: dict | list[str] | None = None) -> Recipe:
    """A registered recipe name (``fgvc-aircraft``), a YAML path, or a Recipe; then dotted overrides."""
    return load_registered(Recipe, RECIPE_DIR, name_or_path, overrides, "recipe")


def load_registered(cls, registry: Path, name_or_path, overrides=None, what: str = "recipe"):
    """A recipe dataclass ``cls`` from a name registered in ``registry``, a YAML path or an instance."""
    if isinstance(name_or_path, cls):
        data = name_or_path.to_dict()
    else:
        data = _read_yaml(registry, name_or_path, what)
    return from_dict(cls, apply_overrides(data, overrides))


def _read_yaml(registry: Path, name_or_path, what: str, seen: tuple = ()) -> dict:
    """A recipe file as a dict; ``inherit: NAME`` merges it over the registered recipe NAME."""
    path = Path(name_or_path)
    if not path.suffix:
        path = registry / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in registry.glob("*.yaml") if not p.stem.startswith("_")))
        raise RecipeError(f"no {what} {str(name_or_path)!r}; registered: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    if parent is not None:
        if parent in seen:
            raise RecipeError(f"{path}: recipes inherit in a circle ({' -> '.join((*seen, parent))})")
        base = _read_yaml(registry, parent, what, (*seen, str(parent)))
        base.pop("name", None)
        data = _merge(base, data)
    data.setdefault("name", path.stem)
    return data


def _merge(base: dict, top: dict) -> dict:
    """Sections merge key by key; a value inside a section (a shots table too) replaces the base's whole."""
    out = dict(base)
    for key, value in top.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_overrides(data: dict, overrides: dict | list[str] | None) -> dict:
    """Set dotted ``section.key`` overrides in a nested recipe dict (in place; returned for chaining)."""
    for key, value in _parse_overrides(overrides).items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def _parse_overrides(overrides) -> dict:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like section.key=value, e.g. fit.lr=1e-4")
        parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return parsed
