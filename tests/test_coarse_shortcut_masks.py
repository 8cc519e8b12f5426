"""The shortcut check given object masks: it reads the shots' backgrounds alone (ours)."""

import warnings

import numpy as np
import pytest
import torch

from diti_sd import DiTiFewShotClassifier
from diti_sd.coarse import SHORTCUT_P, coarse_features, coarse_shortcut
from diti_sd.errors import CoarseShortcutWarning


def object_shots(n_per_class: int, background_follows: bool, object_follows: bool, seed: int = 0, size: int = 32):
    """Two classes of images with a large square object (0.6 of the side, anywhere) and its masks. The background
    is grey at 0.47 for class 0 and 0.53 for class 1 where ``background_follows``, else either at random; the
    object is red for class 0 and blue for class 1 where ``object_follows``, else a random colour, whose spread
    hides the backgrounds' small difference in the blur of the whole image."""
    rng = np.random.default_rng(seed)
    images, masks, labels = [], [], []
    for i in range(2 * n_per_class):
        label = i % 2
        grey = (0.47, 0.53)[label if background_follows else int(rng.integers(2))]
        image = torch.full((3, size, size), grey)
        colour = ((0.9, 0.1, 0.1), (0.1, 0.1, 0.9))[label] if object_follows else tuple(rng.uniform(0, 1, 3))
        side = round(0.6 * size)
        top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
        mask = torch.zeros(1, size, size, dtype=torch.bool)
        mask[:, top:top + side, left:left + side] = True
        image[:, mask[0]] = torch.tensor(colour, dtype=torch.float32)[:, None]
        images.append(image)
        masks.append(mask)
        labels.append(label)
    return images, torch.stack(masks), labels


def as_uint8(images):
    return (torch.stack(images) * 255).round().to(torch.uint8)


def test_the_backgrounds_alone_show_an_accident_the_objects_hide():
    images, masks, labels = object_shots(12, background_follows=True, object_follows=False)
    whole = coarse_shortcut(as_uint8(images), labels)
    background = coarse_shortcut(as_uint8(images), labels, objects=masks)
    assert whole["p_value"] > SHORTCUT_P and "background_only" not in whole
    assert background["p_value"] <= SHORTCUT_P and background["accuracy"] == 1.0 and background["background_only"]


def test_an_objects_own_coarse_content_is_not_read_as_an_accident_given_masks():
    images, masks, labels = object_shots(12, background_follows=False, object_follows=True)
    assert coarse_shortcut(as_uint8(images), labels)["p_value"] <= SHORTCUT_P  # the whole blur: the object's colour
    assert coarse_shortcut(as_uint8(images), labels, objects=masks)["p_value"] > SHORTCUT_P


def test_a_cell_inside_the_object_takes_the_background_around_it():
    images, masks, _ = object_shots(1, background_follows=True, object_follows=True)
    features = coarse_features(as_uint8(images), 0.125, objects=masks)
    assert torch.allclose(features[0], torch.full_like(features[0], 0.47), atol=0.01)  # class 0's grey everywhere
    # a mask that keeps everything leaves no background: the plain blur
    full = torch.ones_like(masks)
    assert torch.equal(coarse_features(as_uint8(images), 0.125, objects=full), coarse_features(as_uint8(images), 0.125))


def test_a_fit_given_masks_checks_the_backgrounds_and_says_so(tiny_model_dir):
    images, masks, labels = object_shots(6, background_follows=True, object_follows=False, size=64)
    y = [f"c{label}" for label in labels]
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=1, progress=False,
                                overrides={"fit.mask_loss": True})
    with pytest.warns(CoarseShortcutWarning, match=r"backgrounds \(outside their masks\) alone point to their class"):
        clf.fit(images, y, masks=list(masks[:, 0]))
    assert clf.fit_summary_["coarse_shortcut"]["background_only"]
    with warnings.catch_warnings():  # the same shots without masks: the objects hide it, no warning
        warnings.simplefilter("error", CoarseShortcutWarning)
        warnings.filterwarnings("ignore", "fit.mask_loss takes")
        clf.fit(images, y)
    assert "background_only" not in clf.fit_summary_["coarse_shortcut"]
