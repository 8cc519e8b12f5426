"""Which time-steps and dimensions each subset of z gets, as the DiTi reference builds them (pure Python: a recipe
is checked with it before torch is imported).

As ``trainer/diti_trainer.py`` of the reference (``_build_model`` and ``get_mask_end_dim``) has it: t belongs
to subset ``int(t / (T / k))`` (k equal ranges, whatever the stages), or, with ``k_per_stage``, to
``int(t / end_s * k_s + k_0 + ... + k_{s-1})`` inside stage s (the stage's *end*, not its length: the
reference's formula). A subset belongs to the stage that holds its first time-step; a stage's n subsets take
``int(dims / n)`` of its dimensions each, its last subset the remainder.
"""

from __future__ import annotations

from ..errors import ConfigError


def subset_index(ends: list[int], subsets: int, num_train_timesteps: int,
                 k_per_stage: list[int] | None = None) -> list[int]:
    """The subset of every time-step 0..T-1, as the reference's ``t_to_idx``."""
    if k_per_stage is None:
        return [int(float(t) / (float(num_train_timesteps) / subsets)) for t in range(num_train_timesteps)]
    index, stage, before = [], 0, 0
    for t in range(num_train_timesteps):
        if t == ends[stage]:
            before += k_per_stage[stage]
            stage += 1
        index.append(int(float(t) / float(ends[stage]) * float(k_per_stage[stage]) + before))
    return index


def subset_plan(stages: list[list[int]], subsets: int, num_train_timesteps: int = 1000,
                k_per_stage: list[int] | None = None) -> tuple[list[int], list[int]]:
    """Each subset's first time-step and its number of dimensions; a clear error where the stages, subsets and
    time-steps do not make a layout (the reference would fail or silently drop dimensions there)."""
    ends = [int(end) for end, _ in stages]
    dims = [int(d) for _, d in stages]
    if not stages or ends != sorted(ends) or len(set(ends)) != len(ends) or ends[0] <= 0:
        raise ConfigError(f"stages must have strictly increasing, positive end time-steps; got {ends}")
    if ends[-1] != num_train_timesteps:
        raise ConfigError(
            f"the last stage must end at the DDPM's {num_train_timesteps} time-steps, not {ends[-1]}; "
            "set layout.stages to match the model"
        )
    if any(d <= 0 for d in dims):
        raise ConfigError(f"every stage needs at least one dimension; got {dims}")
    if k_per_stage is not None and (len(k_per_stage) != len(stages) or sum(k_per_stage) != subsets):
        raise ConfigError(f"k_per_stage {k_per_stage} must give each of the {len(stages)} stages its subsets, "
                          f"{subsets} in all")
    index = subset_index(ends, subsets, num_train_timesteps, k_per_stage)
    if index[0] != 0 or index[-1] != subsets - 1 or any(b - a not in (0, 1) for a, b in zip(index, index[1:])):
        raise ConfigError(f"{subsets} subsets over {num_train_timesteps} time-steps leave some subset without "
                          "a time-step; use fewer subsets")
    range_starts = [index.index(i) for i in range(subsets)]
    stage_of = [next(s for s, end in enumerate(ends) if end > start) for start in range_starts]
    counts = [stage_of.count(s) for s in range(len(stages))]
    empty = [s for s, c in enumerate(counts) if c == 0]
    if empty:  # the reference would fold its dimensions into the next stage's first subset, silently
        raise ConfigError(f"no subset starts in stage {empty[0]} (t up to {ends[empty[0]]}); use more subsets, "
                          "set layout.k_per_stage, or merge the stage into the next")
    cumulative = [sum(dims[:s]) for s in range(len(dims) + 1)]
    subset_ends = []
    for i, s in enumerate(stage_of):
        first = stage_of.index(s)
        last = first + counts[s] - 1
        share = dims[s] // counts[s]
        subset_ends.append(cumulative[s + 1] if i == last else cumulative[s] + share * (i - first + 1))
    sizes = [b - a for a, b in zip([0] + subset_ends[:-1], subset_ends)]  # dimensions per subset
    if min(sizes) <= 0:
        s = stage_of[sizes.index(min(sizes))]
        raise ConfigError(f"stage {s} (t up to {ends[s]}) has {counts[s]} subsets but only {dims[s]} dimensions; "
                          "use fewer subsets or more dimensions there")
    return range_starts, sizes
