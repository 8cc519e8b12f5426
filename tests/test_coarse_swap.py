"""fit.coarse_swap: the shot's fine detail kept, its coarse content drawn from a prior image (ours)."""

import pytest
import torch
from helpers import record_fit

from diti_sd.preprocessing import to_uint8, uint8_to_float
from diti_sd.recipes import RecipeError, load_recipe
from diti_sd.training.coarse_swap import coarse_swap, gaussian_blur


def _striped(background, size=32):
    """A flat background with a +-20 grey-level stripe of period 4 on its centre square."""
    image = torch.tensor(background, dtype=torch.float32).view(3, 1, 1).repeat(1, size, size)
    stripes = torch.where(torch.arange(size) % 4 < 2, 20.0, -20.0).view(1, size, 1)
    image[:, 8:24, 8:24] += stripes[:, 8:24]
    return image.round().clamp(0, 255).to(torch.uint8)


def test_coarse_swap_keeps_fine_detail_and_takes_the_donors_colour():
    red, blue = _striped((200, 60, 50)), _striped((50, 70, 200))
    donor = torch.tensor((50, 70, 200), dtype=torch.uint8).view(3, 1, 1).repeat(1, 32, 32)  # flat blue
    out = coarse_swap(red, donor, 0.125)
    # the corner takes the donor's colour, far from the shot's
    assert (out[:, 0, 0].float() - donor[:, 0, 0].float()).abs().max() <= 2
    # the stripes survive: the swapped shot's fine detail is the blue striped image's, not flattened
    def fine(x):
        return x.float() - gaussian_blur(x.float()[None], 4.0)[0]

    assert torch.allclose(fine(out)[:, 8:24, 8:24], fine(blue)[:, 8:24, 8:24], atol=3)
    assert fine(out)[:, 8:24, 8:24].abs().mean() > 10


def test_coarse_swap_resizes_a_donor_of_another_shape():
    out = coarse_swap(_striped((200, 60, 50), size=32), torch.full((3, 16, 24), 90, dtype=torch.uint8), 0.125)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_blur_is_a_normalised_low_pass():
    flat = torch.full((1, 3, 20, 20), 7.0)
    assert torch.allclose(gaussian_blur(flat, 3.0), flat)
    noise = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    assert gaussian_blur(noise, 2.0).std() < 0.5 * noise.std()


def test_training_swaps_instances_at_the_set_rate_and_leaves_priors():
    square, prior, encoded, _, _ = record_fit({"coarse_swap": 0.5}, steps=12, width=64)
    swapped = kept = 0
    for batch in encoded:
        assert any(torch.equal(batch[1], p) for p in prior)  # the prior image as it is
        if torch.equal(batch[0], square):
            kept += 1
        else:  # one of the two prior images gave it its coarse content
            assert any(torch.equal(batch[0], uint8_to_float(coarse_swap(to_uint8(square), to_uint8(p), 0.125)))
                       for p in prior)
            swapped += 1
    assert swapped and kept


def test_coarse_swap_off_keeps_the_random_stream():
    # a configuration without the swap draws exactly what it drew before the swap existed
    _, _, plain, _, _ = record_fit({"crop": "random"}, steps=4)
    _, _, off, _, _ = record_fit({"crop": "random", "coarse_swap": 0.0}, steps=4)
    assert len(plain) == 4 and all(torch.equal(a, b) for a, b in zip(plain, off))


def test_coarse_swap_needs_prior_images_and_a_rate_in_range():
    with pytest.raises(RecipeError, match="coarse_swap.*prior"):
        load_recipe("synthetic", ["fit.coarse_swap=0.5", "fit.prior=false"])
    with pytest.raises(RecipeError, match="coarse_swap"):
        load_recipe("synthetic", ["fit.coarse_swap=1.5"])
