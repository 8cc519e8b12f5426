"""``fit.mask_loss``: each shot's loss taken over its own object alone."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import square_shots

from diti_sd import DiTiFewShotClassifier
from diti_sd.errors import CoarseShortcutWarning, DitiWarning
from diti_sd.preprocessing import mask_pixels


def test_the_masked_loss_averages_over_the_object_alone():
    from diti_sd.training.mask_loss import masked_mean
    squared = torch.rand(3, 4, 4, 4, requires_grad=True)
    half = torch.zeros(1, 8, 8, dtype=torch.bool)
    half[:, :, :4] = True  # the left half of the image: the left two latent columns
    empty = torch.zeros(1, 8, 8, dtype=torch.bool)
    out = masked_mean(squared, [half, None, empty], 2)
    plain, got = squared.detach(), out.detach()
    assert float(got[0]) == pytest.approx(float(plain[0, :, :, :2].mean()))
    assert float(got[1]) == pytest.approx(float(plain[1].mean()))
    assert float(got[2]) == 0  # a crop that missed the object teaches nothing
    out.sum().backward()
    assert squared.grad[0, :, :, 2:].abs().sum() == 0 and squared.grad[0, :, :, :2].abs().min() > 0
    assert squared.grad[2].abs().sum() == 0 and squared.grad[1].abs().min() > 0
    # a latent cell half on the object counts half
    edge = torch.zeros(1, 8, 8, dtype=torch.bool)
    edge[:, :, :3] = True
    w = torch.tensor([1.0, 0.5, 0.0, 0.0])
    expected = (plain[0] * w).sum() / (w.sum() * 4 * 4)
    assert float(masked_mean(plain, [edge], 2)[0]) == pytest.approx(float(expected))
    # an odd-sized whole image: the autoencoder drops its last row and column, and so does the mask
    odd = torch.zeros(1, 9, 9, dtype=torch.bool)
    odd[:, 6:8, :] = True  # latent row 3 exactly
    odd[:, 8, :] = True  # the dropped row: no latent cell
    assert float(masked_mean(plain[:1], [odd], 2)[0]) == pytest.approx(float(plain[0, :, 3].mean()))


@pytest.fixture()
def losses(monkeypatch):
    """Every list of masks the training loop takes its loss over (``fit.mask_loss``)."""
    from diti_sd.training import loop
    from diti_sd.training.mask_loss import masked_mean

    calls = []

    def recording(squared, masks, factor):
        calls.append([None if m is None else m.clone() for m in masks])
        return masked_mean(squared, masks, factor)

    monkeypatch.setattr(loop, "masked_mean", recording)
    return calls


def test_fit_with_the_masked_loss_takes_each_shots_loss_over_its_own_object(tiny_model_dir, losses, swaps):
    X, masks, y = square_shots(6)

    def fit(mask_loss, **kw):
        clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False,
                                    overrides={"fit.mask_loss": mask_loss})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CoarseShortcutWarning)
            return clf.fit(X, y, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("error", DitiWarning)  # masks the loss reads are not "only the shortcut check"
        clf = fit(True, masks=masks)
    assert losses and not swaps  # the loss reads them; no swap is made
    # each class's pair of rows: its shot, over that shot's own mask, then its prior image, over the whole image
    assert clf.recipe_.fit.prior and all(call[1::2] == [None] * (len(call) // 2) for call in losses)
    own = {m.numpy().tobytes() for m in mask_pixels(masks, 64)}
    instance = [m for call in losses for m in call[0::2]]
    assert all(m is not None and m.numpy().tobytes() in own for m in instance)
    assert len({m.numpy().tobytes() for m in instance}) > 1
    record = clf.fit_summary_["masks"]
    assert record["read_by_loss"] and not record["read_by_swap"]
    state = clf.adapters_.lora_state_dict()
    with pytest.warns(DitiWarning, match="change only the shortcut check"):
        other = fit(False, masks=masks).adapters_.lora_state_dict()
    assert any(not torch.equal(state[k], other[k]) for k in state)  # the masked loss changed what was learnt
    losses.clear()
    with pytest.warns(DitiWarning, match="fit got no masks"):
        unmasked = fit(True).adapters_.lora_state_dict()
    plain = fit(False).adapters_.lora_state_dict()
    assert not losses and all(torch.equal(unmasked[k], plain[k]) for k in plain)  # without masks: as if off
