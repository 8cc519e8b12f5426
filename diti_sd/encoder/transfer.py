"""What the shift network reads from each stage's subsets: counterfactual swaps scored by a probe.

A linear probe on z says what z *holds*, and an untrained conv net's z already holds a lot. This asks what
G *uses*: for two images i and j that differ in an attribute, sample with DDIM from one x_T under z_i and
under z_i with one stage's dimensions taken from z_j, re-encode both samples and read the attribute with the
probe fitted on all of z. The transfer of a stage is how far the swap moves the probe's probability of the
attribute towards j's value, averaged over pairs: 0 when G ignores what the stage says about the attribute,
1 when the samples flip from i's value to j's with full confidence (a weak probe keeps it lower).

Sampling from a fresh x_T rather than inverting i keeps x_T from carrying the attribute itself: a DDIM
inversion holds the whole image, so its decodes change little whatever z says.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..preprocessing import uint8_to_float
from ..seeding import torch_generator
from .attributed import AttributedDataset
from .edit import ddim_decode
from .probe import probe_scores


def _pairs(column: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` index pairs (i, j) with column[i] != column[j], half of them each way round."""
    neg, pos = np.flatnonzero(column == 0), np.flatnonzero(column == 1)
    n = min(n, len(neg), len(pos))
    a, b = rng.choice(neg, n, replace=False), rng.choice(pos, n, replace=False)
    flip = np.arange(n) % 2 == 1
    return np.where(flip, b, a), np.where(flip, a, b)


@torch.no_grad()
def subset_transfer(model, data, probe, groups: list[tuple[str, list[int]]], pairs: int = 16, steps: int = 50,
                    seed: int = 0, progress: bool = False) -> dict[str, list[float]]:
    """Transfer per attribute (columns of ``data.attributes``) for each named group of subsets, plus
    ``all of z`` (every dimension swapped). ``probe`` is a probe on all of z (``fit_probe``'s result).
    ``progress``: a bar over the attributes (each decodes its pairs once per group, and once unswapped)."""
    y = data.require_attributes("the transfer measure")
    rng = np.random.default_rng(seed)
    dataset = AttributedDataset.from_config(data, model.image_size, model.recipe.data)
    device = model.device
    groups = [*groups, ("all of z", list(range(model.layout.k)))]
    results: dict[str, list[float]] = {name: [] for name, _ in groups}
    for col in tqdm(range(y.shape[1]), desc="subset transfer", unit="attribute", disable=not progress, leave=False):
        i, j = _pairs(y[:, col], pairs, rng)
        if len(i) == 0:
            for name in results:
                results[name].append(float("nan"))
            continue
        x_i = uint8_to_float(torch.stack([dataset[k] for k in i.tolist()]).to(device))
        x_j = uint8_to_float(torch.stack([dataset[k] for k in j.tolist()]).to(device))
        z_i, z_j = model.encode(x_i), model.encode(x_j)

        def logit(z, col=col):
            return probe_scores(probe, z.float().cpu())[:, col]

        toward_j = torch.as_tensor(y[j, col] - y[i, col], dtype=torch.float32)  # +1 or -1 per pair
        generator = torch_generator(seed, col)
        x_T = torch.randn(x_i.shape, generator=generator).to(device)
        base = logit(model.encode(ddim_decode(model, x_T, z_i, steps))).sigmoid()
        for name, members in groups:
            keep = model.layout.dims_of(members).to(device)
            swapped = ddim_decode(model, x_T, torch.where(keep, z_j, z_i), steps)
            moved = (logit(model.encode(swapped)).sigmoid() - base) * toward_j
            results[name].append(float(moved.mean()))
    return results
