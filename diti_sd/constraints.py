"""What each recipe value accepts, declared next to its dataclass (scikit-learn's parameter-constraints
style), and the check that reads those declarations.

A recipe dataclass lists, in ``CONSTRAINTS``, each field's allowed values: an :class:`Interval`, an
:class:`Options` set, a :class:`Pattern`, ``None`` (the field may be null), or :class:`Each` /
:class:`Table` for lists and shots tables; a field may name several, of which one must hold. Rules that
join fields (``t_min < t_max``) live in the dataclass's ``check(where)``. :func:`validate` runs both
when a recipe is built, so a bad value fails before the base model is loaded: from a YAML file, a
``--set`` override, an estimator parameter or a saved adapter set alike.

The types are checked before this, by ``recipes.from_dict`` against the fields' annotations.
"""

from __future__ import annotations

import json
import math
import re

from .errors import DitiError


class RecipeError(DitiError, ValueError):
    """A recipe file, override or value is malformed."""


class Interval:
    """Numbers between ``low`` and ``high`` (None: unbounded), ends included unless ``closed`` says not."""

    def __init__(self, low=None, high=None, closed: str = "both"):
        self.low, self.high, self.closed = low, high, closed

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        return not (self.high is not None
                    and (value > self.high or (value == self.high and self.closed in ("left", "neither"))))

    def __str__(self) -> str:
        left = ">=" if self.closed in ("both", "left") else ">"
        right = "<=" if self.closed in ("both", "right") else "<"
        if self.high is None:
            return f"{left} {self.low}"
        if self.low is None:
            return f"{right} {self.high}"
        return f"{left} {self.low} and {right} {self.high}"


T_STEPS = 1000  # the training time-steps of every Stable Diffusion and DDPM scheduler this package loads
POSITIVE = Interval(0, None, closed="neither")
PRECISIONS = ("no", "fp16", "bf16")


class Options:
    """One of a fixed set of values."""

    def __init__(self, *values):
        self.values = values

    def __contains__(self, value) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)


class Pattern:
    """A string matching a regular expression; ``text`` says in words what it accepts."""

    def __init__(self, regex: str, text: str):
        self.regex, self.text = re.compile(regex), text

    def __contains__(self, value) -> bool:
        return isinstance(value, str) and bool(self.regex.fullmatch(value))

    def __str__(self) -> str:
        return self.text


NAME = Pattern(r"\S(.*\S)?", "a non-empty name")


class Each:
    """A list whose every element meets ``constraint``; ``min_len`` elements at least."""

    def __init__(self, constraint, min_len: int = 0):
        self.constraint, self.min_len = constraint, min_len

    def __str__(self) -> str:
        size = f"at least {self.min_len} " if self.min_len else ""
        return f"a list of {size}values each {self.constraint}"


class Table:
    """A shots table ``{k: value}``: keys >= 1, values meeting ``constraint``; at least one entry
    unless ``empty``."""

    def __init__(self, constraint, empty: bool = False):
        self.constraint, self.empty = constraint, empty

    def __str__(self) -> str:
        return f"a table {{shots >= 1: value {self.constraint}}}" + ("" if self.empty else " with at least one entry")


def _holds(value, constraint) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, Each):
        return (isinstance(value, list) and len(value) >= constraint.min_len
                and all(_holds(v, constraint.constraint) for v in value))
    if isinstance(constraint, Table):
        return (isinstance(value, dict) and (bool(value) or constraint.empty)
                and all(k in Interval(1) and _holds(v, constraint.constraint) for k, v in value.items()))
    return value in constraint


def fail(where: str, value, allowed: str) -> None:
    """One line naming the key, the value and what is allowed."""
    raise RecipeError(f"{where} = {value!r} is not allowed: it must be {allowed}")


def validate(obj, where: str) -> None:
    """Check ``obj``'s fields against its class's ``CONSTRAINTS``, then its ``check(where)``."""
    for name, allowed in getattr(type(obj), "CONSTRAINTS", {}).items():
        options = allowed if isinstance(allowed, list) else [allowed]
        value = getattr(obj, name)
        if not any(_holds(value, c) for c in options):
            fail(f"{where}.{name}", value, " or ".join("null" if c is None else str(c) for c in options))
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)


def check_window(where: str, t_min: int, t_max: int, steps: int = T_STEPS) -> None:
    """A time-step window [t_min, t_max) inside [0, steps) that holds at least one t."""
    if not 0 <= t_min < t_max <= steps:
        raise RecipeError(f"{where}.t_min = {t_min}, {where}.t_max = {t_max} is not allowed: the window "
                          f"[t_min, t_max) must satisfy 0 <= t_min < t_max <= {steps}")


def check_rounds(where: str, rounds, t_min: int = 0, t_max: int = T_STEPS, last_keep_one: bool = True) -> None:
    """Pruning stages ``[grid size, classes kept]``: grids grow, keeps do not, the largest grid fits in
    the window, and (``last_keep_one``) the last stage keeps the one class that is the prediction."""
    text = (f"a non-empty list of [grid size, classes kept] pairs, grid sizes increasing and at most the "
            f"window's width ({t_max - t_min}), classes kept >= 1 and not increasing"
            + (", the last stage keeping 1" if last_keep_one else ""))
    ok = isinstance(rounds, list) and bool(rounds) and all(
        isinstance(r, (list, tuple)) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
        for r in rounds)
    if ok:
        sizes, keeps = [r[0] for r in rounds], [r[1] for r in rounds]
        ok = (sizes[0] >= 1 and all(a < b for a, b in zip(sizes, sizes[1:]))
              and keeps[-1] >= 1 and all(a >= b for a, b in zip(keeps, keeps[1:]))
              and (keeps[-1] == 1 or not last_keep_one))
        width = t_max - t_min
        if ok and sizes[-1] > width:
            # most often a narrower window set while the recipe's stages kept their width: say so, with stages
            # that fit
            fitted = json.dumps([[s, k] for s, k in rounds if s < width] + [[width, keeps[-1]]], separators=(",", ":"))
            key = where.removeprefix("recipe.")
            fail(f"{where}.rounds", rounds, f"stages that fit the window {key}.t_min..t_max ({t_min}..{t_max}), "
                 f"its largest grid being {sizes[-1]} time-steps; set them with the window, e.g. "
                 f"--set '{key}.rounds={fitted}'")
    if not ok:
        fail(f"{where}.rounds", rounds, text)
