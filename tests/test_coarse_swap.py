"""fit.coarse_swap: the shot's fine detail kept, its coarse content drawn from a prior image (ours)."""

from types import SimpleNamespace

import pytest
import torch
from helpers import record_fit

from diti_sd.coarse import gaussian_blur
from diti_sd.preprocessing import to_uint8, uint8_to_float
from diti_sd.recipes import FitConfig, LoraConfig, RecipeError, load_recipe
from diti_sd.training.coarse_swap import coarse_swap
from diti_sd.training.loop import FitData
from diti_sd.training.signature import fit_signature


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


def test_without_the_swap_a_fit_draws_and_resumes_as_before_the_option_existed():
    # figures taken at 36c2fa9, the commit before fit.coarse_swap: each step's encoded pixels (their sums) under
    # random crops and the jitter, whose later draws would move if the swap drew anything while off
    _, _, encoded, _, _ = record_fit({"crop": "random", "brightness": 0.2, "contrast": 0.1}, steps=4)
    sums = [[round(float(x.double().sum()), 3) for x in batch] for batch in encoded]
    assert sums == [[1156.687, 1325.611], [-1135.002, -1302.599], [-598.445, 1947.429], [-1972.579, 1589.932]]
    # and a fit's resume signature: a checkpoint written before the option existed still resumes
    data = FitData([[torch.zeros(3, 8, 8, dtype=torch.uint8)]], ["a hta"], "a photo",
                   torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    adapters = SimpleNamespace(config=LoraConfig(rank=2))
    assert fit_signature(FitConfig(), 10, 1, [0], data, adapters, None) == "20dc3ce9c73bbf27"
    assert fit_signature(FitConfig(coarse_swap=0.5), 10, 1, [0], data, adapters, None) != "20dc3ce9c73bbf27"


def test_coarse_swap_needs_prior_images_and_a_rate_in_range():
    with pytest.raises(RecipeError, match="coarse_swap.*prior"):
        load_recipe("synthetic", ["fit.coarse_swap=0.5", "fit.prior=false"])
    with pytest.raises(RecipeError, match="coarse_swap"):
        load_recipe("synthetic", ["fit.coarse_swap=1.5"])


def test_the_blur_scales_with_the_shorter_side_of_a_non_square_shot():
    g = torch.Generator().manual_seed(0)
    shot = (torch.rand(3, 32, 64, generator=g) * 255).to(torch.uint8)
    donor = (torch.rand(3, 16, 16, generator=g) * 255).to(torch.uint8)
    out = coarse_swap(shot, donor, 0.125)
    x = shot.float()[None]
    d = torch.nn.functional.interpolate(donor.float()[None], size=(32, 64), mode="bilinear", align_corners=False)
    expected = (x - gaussian_blur(x, 4.0) + gaussian_blur(d, 4.0)).round().clamp(0, 255).to(torch.uint8)[0]
    assert torch.equal(out, expected)  # sigma 4 px: 1/8 of 32, the shorter side
