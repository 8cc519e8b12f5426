"""Which dimensions of z belong to which time-step range, and the cumulative mask that enforces it.

The k subsets partition [0, T) into ranges; subset i holds the dimensions that G may read once t has
reached the start of range i. Small t sees only the first subsets, so whatever is needed to undo a
little noise (fine detail) must be written there; coarse attributes, needed only once t is large, go
to later subsets. Stages (from the recipe) give each part of [0, T) its share of dimensions; the k
subsets are shared out over the stages in proportion to their length (largest remainder, at least
one each), and a stage's ranges and dimensions are split as evenly as possible among its subsets.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


class SubsetLayout:
    def __init__(self, stages: list[list[int]], subsets: int, num_train_timesteps: int = 1000):
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
        if subsets < len(stages):
            raise ConfigError(f"{subsets} subsets cannot cover {len(stages)} stages; use at least {len(stages)}")
        starts = [0] + ends[:-1]
        lengths = [e - s for s, e in zip(starts, ends)]
        counts = _largest_remainder([subsets * n / num_train_timesteps for n in lengths], subsets)
        for i, (c, d) in enumerate(zip(counts, dims)):
            if c > d:  # a subset without dimensions would be an empty range; give the surplus away
                raise ConfigError(
                    f"stage {i} (t {starts[i]}..{ends[i]}) gets {c} subsets but only {d} dimensions; "
                    "use fewer subsets or more dimensions there"
                )
            if c > lengths[i]:
                raise ConfigError(f"stage {i} is {lengths[i]} time-steps long; it cannot hold {c} subsets")
        self.range_starts: list[int] = []  # first time-step of each subset's range
        self.sizes: list[int] = []  # dimensions per subset
        for start, length, c, d in zip(starts, lengths, counts, dims):
            self.range_starts += [start + (length * j) // c for j in range(c)]
            self.sizes += [d // c + (1 if j < d % c else 0) for j in range(c)]
        self.stages = [[e, d] for e, d in zip(ends, dims)]
        self.num_train_timesteps = num_train_timesteps
        self.z_dim = sum(self.sizes)
        offsets = [0]
        for s in self.sizes:
            offsets.append(offsets[-1] + s)
        self.offsets = offsets
        # the time-step from which each dimension is visible
        self.dim_start = torch.tensor(
            [start for start, size in zip(self.range_starts, self.sizes) for _ in range(size)], dtype=torch.long
        )
        ends = self.range_starts[1:] + [num_train_timesteps]
        self.dim_end = torch.tensor([end for end, size in zip(ends, self.sizes) for _ in range(size)], dtype=torch.long)

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


def _largest_remainder(shares: list[float], total: int) -> list[int]:
    counts = [max(1, int(s)) for s in shares]
    order = sorted(range(len(shares)), key=lambda i: shares[i] - int(shares[i]), reverse=True)
    i = 0
    while sum(counts) < total:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > total:  # the at-least-one floor overshot: take from the largest
        j = max(range(len(counts)), key=lambda i: counts[i])
        counts[j] -= 1
    return counts
