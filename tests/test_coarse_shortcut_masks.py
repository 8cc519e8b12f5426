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


def test_a_cell_beyond_the_blurs_reach_of_any_background_takes_the_images_mean_background():
    # an object over the right three quarters, top to bottom: its far cells are more than 3 sigma from any
    # background, where the cut Gaussian gives no weight at all
    image = torch.full((1, 3, 128, 128), 0.3)
    objects = torch.zeros(1, 1, 128, 128, dtype=torch.bool)
    objects[..., 32:] = True
    image[:, :, :, 32:] = 0.9
    features = coarse_features(as_uint8(list(image)), 0.125, objects=objects)
    assert torch.allclose(features, torch.full_like(features, 0.3), atol=0.01)


def test_shots_whose_masks_keep_everything_are_left_out_of_the_check():
    images, masks, labels = object_shots(12, background_follows=True, object_follows=False)
    masks[:3] = True
    report = coarse_shortcut(as_uint8(images), labels, objects=masks)
    assert report["images"] == 21 and report["without_background"] == 3 and report["accuracy"] == 1.0


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


def test_validation_images_without_masks_are_not_read_for_the_backgrounds_accident(tiny_model_dir):
    # their whole blur would be judged on the objects' coarse content; the record says they were not read, the
    # warning says only the user can tell, and the premise decides
    images, masks, labels = object_shots(6, background_follows=True, object_follows=False, size=64)
    val_images, _, val_labels = object_shots(2, background_follows=False, object_follows=False, size=64, seed=1)
    y, y_val = [f"c{label}" for label in labels], [f"c{label}" for label in val_labels]
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=1, progress=False,
                                overrides={"fit.mask_loss": True})
    with pytest.warns(CoarseShortcutWarning, match="come without masks, so which of them break it cannot be read"):
        clf.fit(images, y, masks=list(masks[:, 0]), validation=(val_images, y_val))
    assert clf.fit_summary_["coarse_shortcut"]["validation"] == {"images": 4, "breaking": [], "without_masks": True}
    clf.set_params(overrides={"fit.mask_loss": True, "fit.coarse_swap_auto": True, "fit.coarse_swap_premise": True})
    clf.fit(images, y, masks=list(masks[:, 0]), validation=(val_images, y_val))
    choice = clf.fit_summary_["coarse_swap_choice"]
    assert choice["chosen"] == "swap" and "come without masks" in choice["why"] and clf.recipe_.fit.coarse_swap == 1
    assert "the shots' backgrounds name their class" in choice["why"]


def test_validation_images_with_their_masks_are_read_on_their_backgrounds(tiny_model_dir):
    # a review's case: large objects of varying colour hide the backgrounds in the whole blur, so read whole, none
    # of the images that carry another class's background was found; read with their masks, they are
    images, masks, labels = object_shots(6, background_follows=True, object_follows=False, size=64)
    val_images, val_masks, val_labels = object_shots(4, background_follows=True, object_follows=False, size=64, seed=2)
    y = [f"c{label}" for label in labels]
    y_val = [f"c{1 - label}" if i < 4 else f"c{label}" for i, label in enumerate(val_labels)]  # 4 break it
    clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=1, progress=False,
                                overrides={"fit.mask_loss": True})
    with pytest.warns(CoarseShortcutWarning, match="4 of your 8 validation images break it"):
        clf.fit(images, y, masks=list(masks[:, 0]), validation=(val_images, y_val),
                validation_masks=list(val_masks[:, 0]))
    assert clf.fit_summary_["coarse_shortcut"]["validation"] == {"images": 8, "breaking": [0, 1, 2, 3]}
