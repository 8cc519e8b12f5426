import os

import pytest
import torch
from helpers import color_images

# two cores: `make test` runs two xdist workers with one torch thread each; alone, both threads. The commands
# the tests start in subprocesses, whose results are compared bit for bit with in-process runs, get the same
# count whatever OMP_NUM_THREADS the suite was started with (a thread count changes float reductions)
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_backbone():
    from diti_sd.testing.tiny import build_tiny_backbone

    return build_tiny_backbone(seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_backbone):
    return tiny_backbone.save_pretrained(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def fake_fgvc(tmp_path_factory):
    from fakes import make_fake_fgvc

    return make_fake_fgvc(tmp_path_factory.mktemp("fgvc"), per_split=2)


@pytest.fixture(scope="session")
def color_model_dir(tmp_path_factory):
    """A tiny SD whose UNet was trained (150 steps) to denoise the colour domain under 'a photo'."""
    from diti_sd.benchmarks.synthetic.base_model import train_unet
    from diti_sd.testing.tiny import build_tiny_backbone

    backbone = build_tiny_backbone(seed=0)
    images, _ = color_images(60, seed=100)
    train_unet(backbone, torch.stack(images) * 2 - 1, "a photo", steps=150, batch_size=16, lr=2e-3, progress=False)
    return backbone.save_pretrained(tmp_path_factory.mktemp("color-sd"))


@pytest.fixture()
def swaps(monkeypatch):
    """Every (shot, kept pixels) the training loop's swap is called with."""
    from diti_sd.training import loop
    from diti_sd.training.coarse_swap import coarse_swap

    calls = []

    def recording(pixels, donor, sigma, keep=None, background="coarse"):
        calls.append((pixels.clone(), None if keep is None else keep.clone()))
        return coarse_swap(pixels, donor, sigma, keep, background)

    monkeypatch.setattr(loop, "coarse_swap", recording)
    return calls


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """An image folder of 9 flat-colour 32-px images, 3 classes (``train/<class>/<i>.png``), for the commands'
    kill-and-resume tests."""
    from torchvision.utils import save_image

    root = tmp_path_factory.mktemp("color-folder")
    images, labels = color_images(9, seed=7, size=32)
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        save_image(image, root / "train" / label / f"{i}.png")
    return root
