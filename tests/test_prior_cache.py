"""The prior-preservation images a fit samples from its base are kept as PNGs in its output folder: a rerun reads
them back bit for bit, and only a fit that would sample the very same images reads them (another base, prompt,
sampler or seed samples its own)."""

import shutil

import numpy as np
import torch
from helpers import color_images
from PIL import Image

from diti_sd import DiTiFewShotClassifier
from diti_sd.recipes import load_recipe
from diti_sd.testing.tiny import build_tiny_backbone
from diti_sd.training.prior import IDENTITY, prior_pixels


def tiny_clf(model, **kw):
    return DiTiFewShotClassifier(model=str(model), recipe="tiny", progress=False, **kw)


def test_a_rerun_that_reads_the_cached_prior_images_fits_the_same_adapters(tiny_model_dir, tmp_path):
    # a fit killed before its first checkpoint reruns from the prior PNGs the first run wrote: they must
    # hold the very pixels the first run trained on (torchvision's save_image rounded a few differently)
    X, y = color_images(6, seed=7)
    first = tiny_clf(tiny_model_dir).fit(X, y, output_dir=tmp_path).adapters_.lora_state_dict()
    first = {k: v.clone() for k, v in first.items()}
    shutil.rmtree(tmp_path / "checkpoint", ignore_errors=True)
    assert len(list((tmp_path / "prior").glob("*.png"))) == 4
    rerun = tiny_clf(tiny_model_dir).fit(X, y, output_dir=tmp_path).adapters_.lora_state_dict()
    assert all(torch.equal(first[k], rerun[k]) for k in first)



def test_cached_prior_images_are_read_only_by_a_fit_that_would_sample_the_same(tiny_backbone, tmp_path):
    recipe = load_recipe("tiny", ["fit.prior_images=2", "fit.prior_sample_steps=2"])
    cache = tmp_path / "prior"

    def sampled(backbone, recipe, seed=0, cache_dir=cache):
        return prior_pixels(backbone, recipe, cache_dir=cache_dir, seed=seed, progress=False)

    def blacken():  # a cache that is read, not sampled again, gives this
        Image.new("RGB", (32, 32)).save(cache / "0000.png")

    first = sampled(tiny_backbone, recipe)
    blacken()
    assert sampled(tiny_backbone, recipe)[0].sum() == 0  # the same fit reads its cache
    assert sampled(tiny_backbone, recipe, seed=np.int64(0))[0].sum() == 0  # a NumPy seed is the same seed
    other_base = build_tiny_backbone(seed=1)
    for backbone, other, seed in ((tiny_backbone, load_recipe(recipe, ["fit.prior_sample_steps=3"]), 0),
                                  (tiny_backbone, load_recipe(recipe, ["fit.prior_guidance=5.0"]), 0),
                                  (tiny_backbone, load_recipe(recipe, ["prompt.generic=a photo of a thing"]), 0),
                                  (tiny_backbone, recipe, 1), (other_base, recipe, 0)):
        fresh = sampled(backbone, other, seed, cache_dir=None)
        assert not torch.equal(fresh, first)
        blacken()
        assert torch.equal(sampled(backbone, other, seed), fresh)  # sampled again, not read
        assert torch.equal(sampled(backbone, other, seed), fresh)  # and then read, as written
    # a cache written before what it was sampled from was kept beside it is sampled again
    first = sampled(tiny_backbone, recipe)
    (cache / IDENTITY).unlink()
    blacken()
    assert torch.equal(sampled(tiny_backbone, recipe), first)
