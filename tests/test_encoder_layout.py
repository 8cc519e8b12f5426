"""The DiTi encoder's subset layout: which dimensions of z G may read at each time-step, as the reference builds it."""

import numpy as np
import pytest
import torch

from diti_sd.encoder import SubsetLayout, parse_subsets


@pytest.mark.parametrize(
    "stages, subsets, k_per_stage, z_dim, visible",
    [
        # the reference's CelebA layout: 64 equal ranges; t = 0 sees the first subset, t = 999 all of z
        ([[50, 10], [100, 25], [300, 327], [500, 100], [1000, 50]], 64, None, 512,
         {0: 2, 49: 10, 50: 10, 99: 35, 100: 35, 299: 362, 300: 362, 499: 462, 500: 463, 999: 512}),
        ([[600, 2], [1000, 14]], 2, [1, 1], 16, {0: 2, 599: 2, 600: 16, 999: 16}),  # the granular recipe's
        ([[500, 4], [1000, 4]], 4, None, 8, {0: 2, 249: 2, 250: 4, 500: 6, 750: 8}),
    ],
)
def test_subset_layout_masks_cumulatively(stages, subsets, k_per_stage, z_dim, visible):
    layout = SubsetLayout(stages, subsets, k_per_stage=k_per_stage)
    assert (layout.k, layout.z_dim) == (subsets, z_dim)
    counts = layout.mask(torch.tensor(list(visible))).sum(1).tolist()
    assert counts == [float(v) for v in visible.values()]
    # a dimension once visible stays visible as t grows
    masks = layout.mask(torch.arange(1000))
    assert bool((masks[1:] >= masks[:-1]).all())


def _reference_masks(stages, dims, k, n_timesteps=1000, k_per_stage=None):
    """A transcription of the DiTi reference's mask construction (yue-zhongqi/diti, trainer/diti_trainer.py:
    ``_build_model``'s ``t_to_idx``, ``masks`` and ``k_masks``, and ``get_mask_end_dim``), loop for loop."""
    t_to_idx = [0] * n_timesteps
    if k_per_stage:
        current, sum_indices = 0, 0
        for t in range(n_timesteps):
            if t == stages[current]:
                sum_indices += k_per_stage[current]
                current += 1
            t_to_idx[t] = int(float(t) / float(stages[current]) * float(k_per_stage[current]) + sum_indices)
    else:
        for t in range(n_timesteps):
            t_to_idx[t] = int(float(t) / (float(n_timesteps) / k))

    def end_dim(idx):
        if idx < 0:
            return 0
        accum = np.zeros(len(stages))
        for i in range(k):
            start_t = t_to_idx.index(i)
            accum[int(np.argmax(np.array(stages) > start_t)):] += 1
        start_t = t_to_idx.index(idx)
        stage = int(np.argmax(np.array(stages) > start_t))
        blocks = accum[stage] - accum[stage - 1] if stage > 0 else accum[stage]
        if int(accum[stage]) == idx + 1:
            return sum(dims[: stage + 1])
        before = idx - int(accum[stage - 1]) if stage > 0 else idx
        return sum(dims[:stage]) + int(float(dims[stage]) / float(blocks)) * (before + 1)

    masks, k_masks = torch.zeros(k, sum(dims)), torch.zeros(k, sum(dims))
    for i in range(k):
        masks[i, : end_dim(i)] = 1
        k_masks[i, end_dim(i - 1): end_dim(i)] = 1
    index = torch.tensor(t_to_idx)
    return masks[index], k_masks[index].bool()


@pytest.mark.parametrize("stages, dims, k, k_per_stage", [
    ([50, 100, 300, 500, 1000], [10, 25, 327, 100, 50], 64, None),  # config/celeba64/diti64.yml
    ([100, 300, 1000], [20, 30, 14], 7, [2, 2, 3]),  # k_per_stage: the stage's end in the formula
    ([600, 1000], [2, 14], 2, [1, 1]),
])
def test_subset_layout_is_the_references_mask_at_every_t(stages, dims, k, k_per_stage):
    layout = SubsetLayout([[s, d] for s, d in zip(stages, dims)], k, k_per_stage=k_per_stage)
    masks, current = _reference_masks(stages, dims, k, k_per_stage=k_per_stage)
    t = torch.arange(1000)
    assert torch.equal(layout.mask(t), masks)  # what G may read at t
    assert torch.equal(layout.current(t), current)  # the subset whose range holds t (stop_grad's live part)


@pytest.mark.parametrize(
    "stages, subsets, k_per_stage, message",
    [
        ([[300, 4], [100, 4], [1000, 8]], 3, None, "increasing"),
        ([[100, 4], [900, 4]], 2, None, "must end"),
        ([[100, 1], [1000, 8]], 20, None, "dimensions"),
        ([[100, 4], [300, 2], [1000, 12]], 3, None, "no subset starts in stage 1"),
        ([[100, 4], [1000, 4]], 3, [1, 1], "k_per_stage"),
        # the reference's formula skips subset 2 here (and its mask code then fails on it)
        ([[100, 20], [300, 30], [1000, 14]], 9, [2, 3, 4], "without a time-step"),
    ],
)
def test_subset_layout_rejects_bad_stages(stages, subsets, k_per_stage, message):
    with pytest.raises(ValueError, match=message):
        SubsetLayout(stages, subsets, k_per_stage=k_per_stage)


def test_parse_subsets():
    assert parse_subsets("4-6", 10) == [4, 5, 6]
    assert parse_subsets("0, 3,8-9", 10) == [0, 3, 8, 9]
    with pytest.raises(ValueError, match="0..9"):
        parse_subsets("8-12", 10)
    with pytest.raises(ValueError, match="cannot read"):
        parse_subsets("a-b", 10)
