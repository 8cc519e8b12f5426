"""Which dimensions of z belong to which time-step range, and the cumulative mask that enforces it.

The k subsets partition [0, T) into ranges; subset i holds the dimensions that G may read once t has
reached the start of range i. Small t sees only the first subsets, so whatever is needed to undo a
little noise (fine detail) must be written there; coarse attributes, needed only once t is large, go
to later subsets. Which ranges and how many dimensions: :func:`~diti_sd.encoder.subsets.subset_plan`, the
reference's construction.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .subsets import subset_plan


class SubsetLayout:
    def __init__(self, stages: list[list[int]], subsets: int, num_train_timesteps: int = 1000,
                 k_per_stage: list[int] | None = None):
        self.range_starts, self.sizes = subset_plan(stages, subsets, num_train_timesteps, k_per_stage)
        self.stages = [[int(e), int(d)] for e, d in stages]
        self.num_train_timesteps = num_train_timesteps
        self.z_dim = sum(self.sizes)
        offsets = [0]
        for size in self.sizes:
            offsets.append(offsets[-1] + size)
        self.offsets = offsets
        # the time-step from which each dimension is visible
        self.dim_start = torch.tensor(
            [start for start, size in zip(self.range_starts, self.sizes) for _ in range(size)], dtype=torch.long
        )
        range_ends = self.range_starts[1:] + [num_train_timesteps]
        self.dim_end = torch.tensor([end for end, size in zip(range_ends, self.sizes) for _ in range(size)],
                                    dtype=torch.long)

    @property
    def k(self) -> int:
        return len(self.sizes)

    def mask(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) time-steps -> (B, z_dim) 0/1 mask: the dimensions of every subset whose range starts <= t."""
        return (t.view(-1, 1).long() >= self.dim_start.to(t.device).view(1, -1)).float()

    def current(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) time-steps -> (B, z_dim) bool: the dimensions of the one subset whose range holds t."""
        t = t.view(-1, 1).long()
        return (t >= self.dim_start.to(t.device).view(1, -1)) & (t < self.dim_end.to(t.device).view(1, -1))

    def subset_slice(self, i: int) -> slice:
        if not 0 <= i < self.k:
            raise IndexError(f"subset {i} does not exist; this encoder has subsets 0..{self.k - 1}")
        return slice(self.offsets[i], self.offsets[i + 1])

    def dims_of(self, subsets) -> torch.Tensor:
        """Boolean (z_dim,) selector of the given subset indices."""
        keep = torch.zeros(self.z_dim, dtype=torch.bool)
        for i in subsets:
            keep[self.subset_slice(i)] = True
        return keep

    def subset_range(self, i: int) -> tuple[int, int]:
        end = self.range_starts[i + 1] if i + 1 < self.k else self.num_train_timesteps
        return self.range_starts[i], end

    def describe(self) -> list[dict]:
        return [{"subset": i, "t": list(self.subset_range(i)), "dims": [self.offsets[i], self.offsets[i + 1]]}
                for i in range(self.k)]


def parse_subsets(text: str, k: int) -> list[int]:
    """``"4-6"`` -> [4, 5, 6]; ``"0,3,8-9"`` -> [0, 3, 8, 9]; indices are 0-based and checked against k."""
    chosen: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ConfigError(f"cannot read subsets {text!r}; write e.g. 4-6 or 0,3,8-9") from None
        if not 0 <= first <= last < k:
            raise ConfigError(f"subsets {part!r} out of range: this encoder has subsets 0..{k - 1}")
        chosen += range(first, last + 1)
    if not chosen:
        raise ConfigError(f"no subsets in {text!r}; write e.g. 4-6")
    return sorted(set(chosen))

