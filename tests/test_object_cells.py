"""``score.cells: object``: each image's error taken over its object's latent cells (ours; opt-in)."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from helpers import square_shots
from torchvision.utils import save_image

from diti_sd import DiTiFewShotClassifier, hub
from diti_sd.attention_masks import AttentionMasks
from diti_sd.cli import main
from diti_sd.data.masks import MaskError
from diti_sd.errors import CoarseShortcutWarning, ConfigError, DitiWarning
from diti_sd.lora.layer import NoAdapters
from diti_sd.recipes import RecipeError, load_recipe
from diti_sd.scoring import batch_errors, batch_residuals, validation_pass
from diti_sd.scoring.cells import cell_weights, object_cells
from diti_sd.validation import plan_validation

OBJECT = {"score.cells": "object"}


def _fit(model, overrides=OBJECT, auto_refit=False, **kw):
    X, masks, y = square_shots(6)
    clf = DiTiFewShotClassifier(model=str(model), recipe="tiny", steps=2, progress=False, overrides=overrides,
                                auto_refit=auto_refit, validation_budget=None)  # a two-step fit's budget: no pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (CoarseShortcutWarning, DitiWarning))
        clf.fit(X, y, **kw)
    return clf, X, masks, y


def test_each_latent_cell_is_weighted_by_its_share_of_object_pixels():
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[:, :20] = True  # columns 0-19: latent columns 0 and 1 whole, half of column 2 (pixels 16-19 of 16-23)
    cells = object_cells([mask], 64, 8)
    assert cells.shape == (1, 1, 8, 8)
    assert torch.equal(cells[0, 0, :, :2], torch.ones(8, 2)) and torch.equal(cells[0, 0, :, 3:], torch.zeros(8, 5))
    torch.testing.assert_close(cells[0, 0, :, 2], torch.full((8,), 0.5))
    # a mask of another size is resized and centre-cropped as its image is for scoring
    wide = torch.zeros(64, 128, dtype=torch.bool)
    wide[:, 32:52] = True  # after the centre crop: columns 0-19 again
    torch.testing.assert_close(object_cells([wide], 64, 8), cells)


def test_the_error_under_object_cells_is_the_residuals_mean_weighted_by_the_cells(tiny_backbone):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, *tiny_backbone.latent_shape, generator=g)
    contexts = tiny_backbone.encode_prompts(["a photo", "a photo of a pattern"])
    t, noise = torch.tensor([50, 400]), torch.randn(2, *tiny_backbone.latent_shape, generator=g)
    ii, cc, pp = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), torch.tensor([1, 0, 1])
    cells = torch.rand(2, 1, *tiny_backbone.latent_shape[1:], generator=g)
    args = (tiny_backbone, NoAdapters(), latents, contexts, t, noise, ii, cc, pp, 1.0)
    with torch.no_grad():
        residual = batch_residuals(*args)
        weighted = batch_errors(*args, cells)
        whole = batch_errors(*args)
        uniform = batch_errors(*args, torch.full_like(cells, 0.3))
    w = cells[ii]
    expected = (residual.pow(2) * w).sum((1, 2, 3)) / (w.sum((1, 2, 3)) * residual.shape[1])
    np.testing.assert_allclose(weighted, expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(uniform, whole, rtol=1e-5)  # the same weight everywhere: the plain mean
    assert not np.allclose(weighted, whole, rtol=1e-3)


def test_the_recipe_value_rejects_what_it_does_not_know():
    assert load_recipe("synthetic").score.cells == "all"  # the reference's (pinned in test_reference_parity.py)
    with pytest.raises(RecipeError, match="cells"):
        load_recipe("tiny", ["score.cells=background"])


def test_predict_scores_the_masks_cells_and_refuses_images_without_masks(tiny_model_dir, tmp_path):
    clf, X, masks, y = _fit(tiny_model_dir)
    with pytest.raises(ConfigError, match=r"score.cells: object.*no masks; pass each image's object mask"):
        clf.predict(X)
    for exact in (True, False):  # the temperature's pass, as a test pass or a validation pass, names its own fix
        with pytest.raises(ConfigError, match=r"but the temperature got no masks; pass these images' masks"):
            clf.fit_temperature(X, y, exact=exact)
    with pytest.raises(MaskError, match="the temperature got 5 masks for 6 images"):
        clf.fit_temperature(X, y, exact=True, masks=masks[:5])
    with pytest.raises(MaskError, match="predict got 5 masks for 6 images"):
        clf.predict(X, masks=masks[:5])
    with pytest.raises(MaskError, match="1 of 6 masks keep no pixel"):
        clf.predict(X, masks=[torch.zeros_like(masks[0]), *masks[1:]])
    result = clf.score_images(X, masks=masks)
    assert result.errors.shape == (6, 3) and np.isfinite(result.errors).all()
    # full masks weigh every cell alike: the errors of the reference's whole-image scoring
    full = clf.score_images(X, masks=[torch.ones_like(m) for m in masks])
    whole = dataclasses.replace(clf.recipe_, score=dataclasses.replace(clf.recipe_.score, cells="all"))
    clf.recipe_, kept = whole, clf.recipe_
    np.testing.assert_allclose(full.errors, clf.score_images(X).errors, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"predict got masks, but this classifier scores whole images"):
        clf.predict(X, masks=masks)
    clf.recipe_ = kept
    assert not np.allclose(result.errors, full.errors, rtol=1e-3)  # the squares' cells alone score otherwise
    # an analysis through dense_errors would score whole images: it asks for the weights
    with pytest.raises(ConfigError, match=r"dense_errors\(\.\.\., cells=\.\.\.\)"):
        clf.dense_errors(clf.encode(X), torch.tensor([10]), torch.zeros(1, 4, 8, 8))
    # the scored chunks are kept by their masks too: other masks are scored again, the same ones read back
    cache = tmp_path / "scores"
    first = clf.score_images(X, masks=masks, cache_dir=cache)
    np.testing.assert_array_equal(first.errors, result.errors)
    clf.score_images(X, masks=[torch.ones_like(m) for m in masks], cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    np.testing.assert_array_equal(clf.score_images(X, masks=masks, cache_dir=cache).errors, result.errors)


def test_masks_are_checked_against_every_image_and_read_off_the_base_at_their_place(tiny_backbone):
    X, masks, _ = square_shots(4)
    # a process's share: weights for its rows, but every mask checked, and an error names the image by its place
    full = cell_weights("object", masks, X, tiny_backbone)
    torch.testing.assert_close(cell_weights("object", masks, X, tiny_backbone, rows=[1, 3]), full[[1, 3]])
    with pytest.raises(MaskError, match=r"1 of 4 masks keep no pixel .*first: mask 3"):
        cell_weights("object", [*masks[:3], torch.zeros_like(masks[3])], X, tiny_backbone, rows=[0, 2])
    with pytest.raises(MaskError, match="mask 3 is"):
        cell_weights("object", [*masks[:3], masks[3][:, :40]], X, tiny_backbone, rows=[0, 1])
    # masks read off the base: each image's noise is that of its place in the whole list, whichever share reads it
    spec = AttentionMasks("pattern", ["a photo of a {}"], times=(300,), shrink=False)
    whole = spec(tiny_backbone, X)
    assert all(torch.equal(a, b) for a, b in zip(spec(tiny_backbone, X[2:], indices=[2, 3]), whole[2:]))
    torch.testing.assert_close(cell_weights("object", spec, X, tiny_backbone, rows=[2, 3]),
                               object_cells(whole[2:], 64, 8))


def test_attention_masks_are_read_for_the_images_predict_scores(tiny_model_dir, monkeypatch, tmp_path):
    clf, X, masks, _ = _fit(tiny_model_dir)
    read = []
    spec = AttentionMasks("pattern", ["a photo of a {}"], times=(300,))

    def recorded(self, backbone, images, progress=False, indices=None):
        read.append(len(images))
        return list(masks[: len(images)])

    monkeypatch.setattr(AttentionMasks, "__call__", recorded)
    read_off = clf.score_images(X[:4], masks=spec).errors
    np.testing.assert_array_equal(read_off, clf.score_images(X[:4], masks=masks[:4]).errors)
    assert read == [4]
    # with a cache folder they are kept beside the scored chunks: a rerun (a resumed predict) reads them back
    first = clf.score_images(X[:4], masks=spec, cache_dir=tmp_path)
    again = clf.score_images(X[:4], masks=spec, cache_dir=tmp_path)
    assert read == [4, 4] and (tmp_path / "attention-masks-0.pt").is_file()
    np.testing.assert_array_equal(first.errors, again.errors)


def test_the_fits_validation_pass_weighs_the_cells_and_needs_the_masks(tiny_model_dir, monkeypatch):
    X, masks, y = square_shots(6)
    with pytest.raises(ConfigError, match="the calibration share holds shots out of the fit to score, but fit got no"):
        _fit(tiny_model_dir, calibration=0.34)
    with pytest.raises(ConfigError, match="fit scores the validation images, but got no validation_masks"):
        _fit(tiny_model_dir, {**OBJECT, "score.weighting": "auto"}, validation=(X, y))
    seen = []
    real = validation_pass.validation_errors

    def spy(*args, cells=None, **kw):
        seen.append(cells)
        return real(*args, cells=cells, **kw)

    monkeypatch.setattr(validation_pass, "validation_errors", spy)
    clf, *_ = _fit(tiny_model_dir, {**OBJECT, "score.weighting": "auto"}, validation=(X, y), validation_masks=masks)
    assert len(seen) == 1 and seen[0].shape == (6, 1, 8, 8)
    torch.testing.assert_close(seen[0], object_cells(masks, 64, 8))
    assert clf.score_choice_["unet_calls"] > 0
    seen.clear()
    clf, *_ = _fit(tiny_model_dir, calibration=0.34, masks=masks)  # the held-out shots' own masks
    assert len(seen) == 1 and clf.calibration_["images"] == 3
    plan = plan_validation(y, sorted(set(y)), auto=False, calibration=0.34, min_shots=1, seed=0)
    held = list(plan.held_out)
    torch.testing.assert_close(seen[0], object_cells([masks[i] for i in held], 64, 8))
    seen.clear()
    # auto's probe (one shot a class held out of a first fit) is scored on its own shots' masks
    _fit(tiny_model_dir, {**OBJECT, "score.weighting": "auto"}, masks=masks, auto_refit=True)
    probe = list(plan_validation(y, sorted(set(y)), auto=True, auto_refit=True, min_shots=1, seed=0).probe)
    assert len(seen) == 1 and torch.equal(seen[0], object_cells([masks[i] for i in probe], 64, 8))
    with pytest.raises(ConfigError, match="auto's probe holds one shot per class out of the fit to score"):
        _fit(tiny_model_dir, {**OBJECT, "score.weighting": "auto"}, auto_refit=True)
    seen.clear()
    clf, *_ = _fit(tiny_model_dir, {}, calibration=0.34)  # the reference's whole images: no weights, no masks
    assert seen == [None]
    # validation images that nothing scores (no auto, no swap comparison) need no masks
    _fit(tiny_model_dir, validation=(X, y))


def test_diti_sd_predict_reads_a_mask_folder_for_object_cells(tiny_model_dir, tmp_path, capsys, monkeypatch):
    clf, X, masks, y = _fit(tiny_model_dir)
    clf.save_pretrained(tmp_path / "set")
    images, folder = tmp_path / "photos", tmp_path / "masks"
    for i, (image, mask) in enumerate(zip(X[:3], masks[:3])):
        (images / "a").mkdir(parents=True, exist_ok=True)
        (folder / "a").mkdir(parents=True, exist_ok=True)
        save_image(image, images / "a" / f"{i}.png")
        save_image(mask.float()[None], folder / "a" / f"{i}.png")
    (images / "a" / "1.png").write_bytes(b"not an image")  # skipped: the masks after it stay with their images
    argv = ["predict", "--adapters", str(tmp_path / "set"), str(images), "--no-progress"]
    assert main(argv) == 2
    assert "scores each image's object cells (score.cells: object): pass --masks DIR" in capsys.readouterr().err
    assert main([*argv, "--masks", str(folder), "--out", str(tmp_path / "p.csv")]) == 0
    rows = [r.split(",") for r in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    proba = clf.predict_proba([images / "a" / f"{i}.png" for i in (0, 2)],
                              masks=[folder / "a" / f"{i}.png" for i in (0, 2)])
    assert rows[1][-1] != "" and [float(rows[i][2]) for i in (0, 2)] == pytest.approx(proba.max(1), abs=1e-4)
    (folder / "a" / "2.png").unlink()
    assert main([*argv, "--masks", str(folder)]) == 2
    assert "1 of 3 images have no mask" in capsys.readouterr().err
    whole, *_ = _fit(tiny_model_dir, {})
    whole.save_pretrained(tmp_path / "whole")
    assert main(["predict", "--adapters", str(tmp_path / "whole"), str(images), "--masks", str(folder),
                 "--no-progress"]) == 2
    assert "--masks is read only by adapters fitted with score.cells: object" in capsys.readouterr().err
    # a mask of another size than its image, or unreadable, is named with its image before the model loads
    save_image(masks[2].float()[None, :, :40], folder / "a" / "2.png")
    monkeypatch.setattr(DiTiFewShotClassifier, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("loaded")))
    assert main([*argv, "--masks", str(folder)]) == 2
    height, width = masks[2].shape
    assert (f"1 of 2 masks are not their image file's size (e.g. {folder / 'a' / '2.png'} is 40x{height} but "
            f"{images / 'a' / '2.png'} is {width}x{height})") in capsys.readouterr().err
    save_image(torch.zeros(1, height, width), folder / "a" / "2.png")
    assert main([*argv, "--masks", str(folder)]) == 2
    assert f"mask {folder / 'a' / '2.png'} keeps no pixel" in capsys.readouterr().err
    (folder / "a" / "2.png").write_bytes(b"not a mask")
    assert main([*argv, "--masks", str(folder)]) == 2
    assert f"(the mask of {images / 'a' / '2.png'})" in capsys.readouterr().err
    # a Hub id's saved recipe is read from its download, before the model loads
    monkeypatch.setattr(hub, "snapshot_download", lambda repo_id, revision=None: str(tmp_path / "set"))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--adapters", "someone/object-set", str(images), "--no-progress"]) == 2
    assert "someone/object-set scores each image's object cells" in capsys.readouterr().err


def test_diti_sd_fit_refuses_to_calibrate_on_validation_images_without_masks(tiny_model_dir, tmp_path, capsys,
                                                                              monkeypatch):
    X, masks, y = square_shots(6)
    root, folder = tmp_path / "data", tmp_path / "masks"
    for i, (image, mask, label) in enumerate(zip(X, masks, y)):
        split = "train" if i < 4 else "val"
        (root / split / label).mkdir(parents=True, exist_ok=True)
        save_image(image, root / split / label / f"{i}.png")
        if split == "train":  # the validation images have none
            (folder / label).mkdir(parents=True, exist_ok=True)
            save_image(mask.float()[None], folder / label / f"{i}.png")
    monkeypatch.setattr(DiTiFewShotClassifier, "fit", lambda *a, **k: pytest.fail("fitted"))
    argv = ["fit", "--dataset", "tiny", "--data-root", str(root), "--model", str(tiny_model_dir), "--steps", "1",
            "--out", str(tmp_path / "out"), "--no-progress", "--masks", str(folder), "--set", "score.cells=object"]
    assert main(argv) == 2
    assert "score.cells: object needs the validation images' masks to fit the temperature" in capsys.readouterr().err
    # a validation image's mask of another size is an error, not the same as having none
    for i, (mask, label) in enumerate(zip(masks[4:], y[4:]), start=4):
        (folder / label).mkdir(parents=True, exist_ok=True)
        save_image(mask.float()[None, :, :40], folder / label / f"{i}.png")
    assert main(argv) == 2
    assert "2 of 2 masks are not their image file's size" in capsys.readouterr().err


def test_diti_sd_eval_refuses_object_cells_before_any_work(tmp_path):
    from diti_sd.evaluation.config import EvalConfig
    from diti_sd.evaluation.harness import Evaluation

    with pytest.raises(ConfigError, match="diti-sd eval scores whole images"):
        Evaluation(EvalConfig(dataset="tiny", data_root=str(tmp_path), report=str(tmp_path / "r"), shots=[1],
                              seeds=[1], overrides=["score.cells=object"]))
