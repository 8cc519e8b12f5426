"""The reference's pruning stages: which time-steps each stage evaluates, which classes it keeps, and
what that costs in UNet calls.

``score.rounds`` are the reference's (Diffusion Classifier's) stages ``[grid size, classes kept]``: stage
r evaluates an even grid of that many t over the window, minus the t already evaluated, then keeps the
best classes by their mean error over every t so far. A :class:`Schedule` is checked once, when it is
made (the recipe's ``score`` section makes one when it loads); everything downstream takes it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..constraints import T_STEPS, check_rounds, check_window
from ..timesteps import even_grid, grid_subset


@dataclass(frozen=True)
class Schedule:
    """Pruning stages ``rounds`` ((grid size, classes kept), ...) over the window [t_min, t_max)."""

    rounds: tuple[tuple[int, int], ...]
    t_min: int = 0
    t_max: int = T_STEPS

    def __post_init__(self):
        rounds = [list(r) if isinstance(r, (list, tuple)) else r for r in self.rounds] \
            if isinstance(self.rounds, (list, tuple)) else self.rounds
        check_window("score", self.t_min, self.t_max, T_STEPS)
        check_rounds("score", rounds, self.t_min, self.t_max)
        object.__setattr__(self, "rounds", tuple((int(size), int(keep)) for size, keep in rounds))

    @classmethod
    def of(cls, score) -> Schedule:
        """The schedule of a recipe's ``score`` section (a ``ScoreConfig``)."""
        return cls(score.rounds, score.t_min, score.t_max)

    @property
    def keeps(self) -> list[int]:
        return [keep for _, keep in self.rounds]

    @cached_property
    def stages(self) -> list[list[int]]:
        """The new t each stage evaluates, as the reference selects them.

        With L = t_max - t_min and m the largest grid size, the base grid is t_min + (L // m // 2) +
        i (L // m), i < m; a stage of size n takes every (m // n)-th point of it, starting at (m // n // 2),
        and drops the t earlier stages evaluated. For [0, 1000) and sizes 20/50/100/500 the stages add
        20/50/80/350 t (20, 70, 150 and 500 in all).
        """
        base = even_grid(max(size for size, _ in self.rounds), self.t_min, self.t_max)
        seen, out = set(), []
        for size, _ in self.rounds:
            new = [base[i] for i in grid_subset(len(base), size) if base[i] not in seen]
            seen.update(new)
            out.append(new)
        return out

    @property
    def timesteps(self) -> list[int]:
        """Every t the schedule can evaluate, in the order its stages add them."""
        return [t for stage in self.stages for t in stage]

    def budget(self, n_classes: int) -> int:
        """UNet evaluations per image that the stages cost for ``n_classes`` candidates."""
        total, alive = 0, n_classes
        for new, keep in zip(self.stages, self.keeps):
            total += alive * len(new)
            alive = min(alive, keep)
        return total

    def within(self, t_min: int, t_max: int) -> Schedule:
        """These stages inside another window: a grid wider than the window is cut to its width (a t
        cannot be evaluated twice); stages left with equal grids merge into the later one."""
        out: list[list[int]] = []
        for size, keep in self.rounds:
            size = min(size, t_max - t_min)
            if out and out[-1][0] >= size:
                out[-1][1] = keep
            else:
                out.append([size, keep])
        return Schedule(tuple(tuple(r) for r in out), t_min, t_max)


def prune(alive: np.ndarray, mean: np.ndarray, keep: int) -> np.ndarray:
    """Keep, per image, the ``keep`` live classes of lowest ``mean`` error (a stable sort: ties keep the
    class order). ``alive`` (n, C) is updated in place; returns the classes dropped now."""
    dropped = np.zeros(alive.shape, bool)
    for i in range(len(alive)):
        live = np.flatnonzero(alive[i])
        if len(live) > keep:
            dropped[i, live[np.argsort(mean[i, live], kind="stable")][keep:]] = True
    alive &= ~dropped
    return dropped
