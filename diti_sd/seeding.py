"""One home for the package's random streams: a generator is derived from a seed and integer keys.

Every draw that must not depend on how work is batched, sharded or resumed (class c's s-th training
step, the noise at time-step t, validation image i's pairs) takes its own generator, seeded by
:func:`derive_seed` from the run's seed and the keys that name the draw, so it is the same whichever
other draws happen before it. The keys fold in as ``x = x * prime + key`` with alternating primes
(1,000,003, then 1,000,033), reduced below 2^63 - 1. A stream that could meet another on the same keys
adds a key of its own (see :data:`VALIDATION_PAIRS`).

Data sets keep the generators of the protocols they reproduce (CoOp's k-shot draw is Python's
``random.Random(seed)``), so that a split is the published one.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError

PRIMES = (1_000_003, 1_000_033)
MODULUS = 2**63 - 1

# keys that keep streams apart where their other keys could coincide
VALIDATION_PAIRS = 1
TEST_PAIRS = 2
TRAIN_DROPOUT = 3
EARLY_STOP = 4
COARSE_SHORTCUT = 5


def derive_seed(seed: int, *keys: int) -> int:
    """The seed of the draw named by ``keys`` under ``seed``: ((seed p0 + k0) p1 + k1) p0 + ... mod 2^63 - 1."""
    x = int(seed)
    for i, key in enumerate(keys):
        x = x * PRIMES[i % 2] + int(key)
    return x % MODULUS


def check_seed(value, name: str = "random_state") -> int:
    """An integer seed (numpy's too), or a ConfigError: a run repeats only from one."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer seed (fits repeat from it); got {value!r}")
    return int(value)


def torch_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for the draw named by ``keys`` (drawn on the CPU: one stream everywhere)."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def numpy_rng(seed: int, *keys: int) -> np.random.Generator:
    """A numpy generator from ``seed`` and ``keys`` (numpy's SeedSequence mixes them; without keys it is
    ``default_rng(seed)``)."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])
