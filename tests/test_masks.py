"""Object masks: what the coarse swap keeps of a shot (``fit(masks=...)``, ``diti-sd fit --masks``; ours)."""

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import eval_script, record_fit, square_shots
from PIL import Image
from torchvision.utils import save_image

from diti_sd import DiTiFewShotClassifier
from diti_sd.benchmarks.synthetic.data import SyntheticSpec, make_split, object_masks
from diti_sd.cli import main
from diti_sd.data import ImageSequence, LabeledImages, dataset_masks
from diti_sd.data.masks import (
    MaskError,
    MaskSequence,
    check_file_sizes,
    check_masks,
    find_masks,
    grow_mask,
    load_mask,
)
from diti_sd.errors import CoarseShortcutWarning, DitiWarning
from diti_sd.preprocessing import mask_pixels, to_uint8, uint8_pixels
from diti_sd.recipes import FitConfig, LoraConfig
from diti_sd.training.coarse_swap import coarse_swap
from diti_sd.training.loop import FitData
from diti_sd.training.signature import fit_signature


def _swapped_outside(out, original, keep):
    """Whether ``out`` is ``original`` on ``keep`` and differs from it on most of the rest (swapped there)."""
    same = (out == original).all(0, keepdim=True)
    return bool(same[keep].all()) and float(same[~keep].float().mean()) < 0.2


def test_the_swap_keeps_the_masked_pixels_and_swaps_the_rest():
    g = torch.Generator().manual_seed(0)
    shot = (torch.rand(3, 32, 32, generator=g) * 255).to(torch.uint8)
    donor = torch.full((3, 32, 32), 250, dtype=torch.uint8)
    keep = torch.zeros(1, 32, 32, dtype=torch.bool)
    keep[:, 8:20, 4:30] = True
    out = coarse_swap(shot, donor, 0.125, keep)
    assert _swapped_outside(out, shot, keep)
    assert torch.equal(out[:, ~keep[0]], coarse_swap(shot, donor, 0.125)[:, ~keep[0]])  # the plain swap there


def test_the_mask_follows_the_random_crop_and_the_shift():
    # the left 40 columns of a 64 x 96 shot are the object: every step's window (random crop, then a shift of up to
    # 8 pixels, wrapping) keeps exactly the pixels that came from them and swaps the rest
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[..., :40] = True
    wide, _, encoded, _, _ = record_fit({"coarse_swap": 1.0, "crop": "random", "shift": 8, "shift_step": 4},
                                        steps=8, mask=mask)
    image, moves = to_uint8(wide), 0
    for batch in encoded:
        out = to_uint8(batch[0])
        found = []
        for left in range(96 - 64 + 1):
            for dy in range(-8, 9, 4):
                for dx in range(-8, 9, 4):
                    window = torch.roll(image[..., left:left + 64], (dy, dx), (-2, -1))
                    keep = torch.roll(mask[..., left:left + 64], (dy, dx), (-2, -1))
                    if _swapped_outside(out, window, keep):
                        found.append((left, dy, dx))
        assert found, "no crop and shift of the shot keeps exactly its masked pixels"
        moves += found[0] != (0, 0, 0)
    assert moves  # the windows moved: the mask followed them


def test_masks_that_keep_nothing_give_the_plain_swap_and_its_draws():
    args = ({"coarse_swap": 1.0, "crop": "random", "shift": 4, "shift_step": 4},)
    _, _, plain, _, _ = record_fit(*args, steps=4)
    _, _, masked, _, _ = record_fit(*args, steps=4, mask=torch.zeros(1, 64, 96, dtype=torch.bool))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, masked))


def test_masks_change_the_resume_signature_only_where_the_swap_or_the_loss_reads_them():
    pixels = [[torch.zeros(3, 8, 8, dtype=torch.uint8)]]
    prior = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    adapters = SimpleNamespace(config=LoraConfig(rank=2))
    keep = torch.zeros(1, 8, 8, dtype=torch.bool)
    other = keep.clone()
    other[..., 2:4, 2:4] = True

    def signature(cfg, masks):
        return fit_signature(cfg, 10, 1, [0], FitData(pixels, ["a hta"], "a photo", prior, masks), adapters, None)

    assert signature(FitConfig(), [[keep]]) == signature(FitConfig(), None)
    swap = FitConfig(coarse_swap=1.0)
    assert len({signature(swap, None), signature(swap, [[keep]]), signature(swap, [[other]])}) == 3
    masked = FitConfig(mask_loss=True)
    assert len({signature(FitConfig(), None), signature(masked, [[keep]]), signature(masked, [[other]])}) == 3
    assert signature(masked, None) == signature(FitConfig(), None)  # without masks the masked loss does nothing


def _blob(height, width, seed):
    """A random blob mask (H, W): smoothed noise above its median, no straight edge to hide an offset."""
    noise = torch.rand(1, 1, height // 4 + 1, width // 4 + 1, generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return smooth > smooth.median()


@pytest.mark.parametrize("crop", [True, False])
def test_a_mask_is_resized_and_cropped_exactly_as_its_image(crop):
    # the mask drawn as an image (object white): after the image's own transform, its bright pixels are the
    # mask's, pixel for pixel; an odd size puts the centre crop at an offset a one-pixel slip would show
    mask = _blob(45, 80, seed=1)
    image = mask.float().expand(3, -1, -1)
    pixels = uint8_pixels([image], 32, crop=crop)[0]
    resized = mask_pixels([mask], 32, crop=crop)[0]
    assert resized.shape == (1, *pixels.shape[-2:])
    assert torch.equal(resized[0], pixels[0] >= 128)


def test_a_mask_of_another_size_or_count_is_one_clear_error_before_the_model_loads(tmp_path):
    image = torch.zeros(3, 48, 80)
    with pytest.raises(MaskError, match="mask 0 is 48x80 but its image is 80x48"):
        check_masks([torch.zeros(80, 48, dtype=torch.bool)], [image])
    with pytest.raises(MaskError, match="2 masks for 1 images"):
        check_masks([np.zeros((48, 80))] * 2, [image])
    with pytest.raises(MaskError, match=r"\(H, W\)"):
        load_mask(np.zeros((48, 80, 3)))
    # through fit: the mask's error, not the missing model's, so nothing was loaded first
    clf = DiTiFewShotClassifier(model=str(tmp_path / "no-model"), recipe="tiny", overrides={"fit.coarse_swap": 1.0})
    with pytest.raises(MaskError, match="mask 1 is"):
        clf.fit([image, image], ["a", "b"], masks=[torch.zeros(48, 80), torch.zeros(40, 80)])


def test_masks_load_from_files_images_and_arrays_in_the_images_frame(tmp_path):
    array = np.zeros((30, 20), dtype=np.uint8)
    array[5:10] = 255
    Image.fromarray(array).save(tmp_path / "m.png")
    expected = torch.from_numpy(array > 127)
    assert torch.equal(load_mask(tmp_path / "m.png"), expected)
    assert torch.equal(load_mask(Image.fromarray(array)), expected)
    assert torch.equal(load_mask(array), expected)
    assert torch.equal(load_mask(array // 255), expected)  # 0/1 labels, as a segmenter's uint8 output
    assert torch.equal(load_mask(torch.from_numpy(array).float() / 255), expected)
    assert torch.equal(load_mask(expected), expected)
    # a cut-out with transparency (its opaque pixels) and a palette PNG (its non-zero indices)
    rgba = np.zeros((30, 20, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = 90, array
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    assert torch.equal(load_mask(tmp_path / "cut.png"), expected)
    palette = Image.fromarray(array // 255, "L").convert("P")
    palette.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    palette.save(tmp_path / "p.png")
    assert torch.equal(load_mask(tmp_path / "p.png"), expected)
    Image.fromarray(array // 255).save(tmp_path / "labels.png")  # a grey PNG of 0/1 labels
    assert torch.equal(load_mask(tmp_path / "labels.png"), expected)
    Image.fromarray(np.dstack([array] * 3 + [np.full_like(array, 255)]), "RGBA").save(tmp_path / "opaque.png")
    assert torch.equal(load_mask(tmp_path / "opaque.png"), expected)  # an alpha that never varies: the grey
    # a data set's banner crop applies to its masks as to its images
    assert torch.equal(MaskSequence([tmp_path / "m.png"], crop_bottom=4)[0], expected[:26])
    assert len(check_masks(np.stack([array, array]), [torch.zeros(3, 30, 20)] * 2)) == 2  # (n, H, W): n masks
    with pytest.raises(MaskError, match="cannot read mask"):
        (tmp_path / "bad.png").write_bytes(b"not a png")
        load_mask(tmp_path / "bad.png")


def test_masks_are_found_by_the_shots_ids_and_every_missing_one_is_named(tmp_path):
    (tmp_path / "red").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "red" / "0.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "red" / "0.jpg")  # the image itself, beside its mask
    Image.new("L", (4, 4)).save(tmp_path / "red" / "1.PNG")
    assert find_masks(tmp_path, ["red/0.jpg", "red/1.jpg"]) == [tmp_path / "red" / "0.png", tmp_path / "red" / "1.PNG"]
    with pytest.raises(MaskError, match=r"2 of 3 shots have no mask .*'red/2.jpg'"):
        find_masks(tmp_path, ["red/0.jpg", "red/2.jpg", "blue/2.jpg"])


def test_a_data_sets_masks_are_read_with_its_banner_crop(tmp_path):
    # an archive that crops a banner off its images: mask files the size of the image files fit once read with
    # the data set's crop, and the error for plain paths names the way
    for i in range(2):
        Image.new("RGB", (20, 30)).save(tmp_path / f"{i}.jpg")
        Image.fromarray(np.repeat([[0], [255]], 15, axis=0).astype(np.uint8).repeat(20, 1)).save(tmp_path / f"m{i}.png")
    data = LabeledImages([tmp_path / "0.jpg", tmp_path / "1.jpg"], [0, 1], ["a", "b"], ["m0", "m1"], crop_bottom=4)
    masks = dataset_masks(data, tmp_path)
    assert tuple(check_masks(masks, ImageSequence(data))[0].shape) == (26, 20)
    with pytest.raises(MaskError, match="dataset_masks"):
        check_masks([tmp_path / "m0.png", tmp_path / "m1.png"], ImageSequence(data))


def test_a_data_sets_mask_files_are_checked_at_their_files_sizes_before_its_preparation(tmp_path):
    # ISIC's preparation resizes and crops every image to one size: a mask file of another size than its image
    # would pass once both were prepared, so the files are compared first, and one line names the first of them
    for i, size in enumerate([(40, 30), (36, 30)]):
        Image.new("RGB", size).save(tmp_path / f"{i}.jpg")
        Image.new("L", (40, 30), 255).save(tmp_path / f"m{i}.png")
    data = LabeledImages([tmp_path / "0.jpg", tmp_path / "1.jpg"], [0, 1], ["a", "b"], ["m0", "m1"],
                         prepare="tif-isic")
    prepared = MaskSequence([tmp_path / "m0.png", tmp_path / "m1.png"], prepare="tif-isic")
    with pytest.warns(DitiWarning, match="2 keep everything"):  # what fit alone would see: one size
        assert tuple(check_masks(prepared, ImageSequence(data))[1].shape) == (512, 512)
    with pytest.raises(MaskError, match=rf"1 of 2 masks are not .* \(e\.g\. {tmp_path / 'm1.png'} is 40x30 but "
                                        rf"{tmp_path / '1.jpg'} is 36x30\)"):
        dataset_masks(data, tmp_path)
    Image.new("L", (36, 30), 255).save(tmp_path / "m1.png")
    assert len(dataset_masks(data, tmp_path)) == 2
    (tmp_path / "m1.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match=r"cannot read mask .*m1.png \(the mask of .*1.jpg\)"):
        dataset_masks(data, tmp_path)
    (tmp_path / "1.jpg").write_bytes(b"not a jpeg")  # an image its own loader names (ImageReadError) is left to it
    check_file_sizes([tmp_path / "m0.png", tmp_path / "m1.png"], data.images)


def _kept_its_own_object(calls):
    """Each swapped shot's kept pixels are exactly its own light square (the mask of that shot, not another's,
    aligned with it), and the shots differ."""
    assert calls and all(keep is not None for _, keep in calls)
    assert all(torch.equal(keep[0], pixels.float().mean(0) >= 127.5) for pixels, keep in calls)
    assert len({keep.numpy().tobytes() for _, keep in calls}) > 1


def test_fit_with_masks_swaps_outside_each_shots_own_object_and_records_them(tiny_model_dir, swaps):
    X, masks, y = square_shots(6)

    def fit(overrides, **kw):
        clf = DiTiFewShotClassifier(model=str(tiny_model_dir), recipe="tiny", steps=2, progress=False,
                                    overrides=overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CoarseShortcutWarning)
            return clf.fit(X, y, **kw)

    clf = fit({"fit.coarse_swap": 1.0}, masks=masks)
    _kept_its_own_object(swaps)
    record = clf.fit_summary_["masks"]
    assert record["images"] == 6 and record["read_by_swap"]
    assert record["object_share"] == pytest.approx(float(mask_pixels(masks, 64).float().mean()), abs=1e-4)
    with pytest.warns(DitiWarning, match="read in training only by the coarse swap"):
        fit({}, masks=masks)
    with pytest.warns(DitiWarning, match="1 keep nothing"):
        fit({"fit.coarse_swap": 1.0}, masks=[torch.zeros_like(masks[0]), *masks[1:]])
    with pytest.raises(MaskError, match="5 masks for 6 images"):
        fit({"fit.coarse_swap": 1.0}, masks=masks[:5])


def test_fit_reads_a_mask_folder_named_as_the_shots(tmp_path, tiny_model_dir, capsys, swaps):
    images, masks, labels = square_shots(6)
    root, folder = tmp_path / "data", tmp_path / "masks"
    for i, (image, mask, label) in enumerate(zip(images, masks, labels)):
        for where, picture in ((root / "train", image), (folder, mask.float()[None])):
            (where / label).mkdir(parents=True, exist_ok=True)
            save_image(picture, where / label / f"{i}.png")
    argv = ["fit", "--dataset", "tiny", "--data-root", str(root), "--model", str(tiny_model_dir), "--steps", "1",
            "--out", str(tmp_path / "out"), "--no-progress", "--masks", str(folder), "--set", "fit.coarse_swap=1"]
    assert main(argv) == 0
    _kept_its_own_object(swaps)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["masks"]["images"] == 6 and summary["masks"]["read_by_swap"]
    (folder / labels[0] / "0.png").unlink()
    assert main([*argv, "--overwrite"]) == 2
    assert "1 of 6 shots have no mask" in capsys.readouterr().err


def test_the_generators_masks_are_its_objects():
    spec = SyntheticSpec(size=32)
    data = make_split(spec, "train", 2, 7)
    for image, mask in zip(data.images, object_masks(spec, "train", 2, 7)):
        assert torch.equal(mask, (image != image[:, :1, :1]).any(0))


def test_a_grown_mask_takes_in_a_rim_and_a_shrunk_one_loses_the_edge():
    mask = object_masks(SyntheticSpec(size=32), "train", 1, 7)[0]
    assert torch.equal(grow_mask(mask, 0), mask)
    grown, shrunk = grow_mask(mask, 1), grow_mask(mask, -1)
    # grown: every pixel within one step (chessboard) of the object; shrunk: the object less its edge pixels
    near = torch.nn.functional.max_pool2d(mask.float()[None, None], 3, 1, 1)[0, 0] > 0
    assert torch.equal(grown, near) and (grown & ~mask).any()
    edge = mask & (torch.nn.functional.max_pool2d((~mask).float()[None, None], 3, 1, 1)[0, 0] > 0)
    assert torch.equal(shrunk, mask & ~edge) and edge.any()
    assert grow_mask(mask, 2).sum() > grown.sum() and grow_mask(mask, -2).sum() < shrunk.sum()


def test_the_benchmark_fits_on_its_grown_masks_and_caches_them_apart(tmp_path, monkeypatch):
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
    from diti_sd.recipes import load_recipe
    recipe = load_recipe("synthetic")
    run = SyntheticSeed.for_recipe(recipe, 7, 2)
    given = {}
    monkeypatch.setattr(DiTiFewShotClassifier, "fit", lambda self, X, y, **kw: given.update(kw) or self)
    run.fit(recipe, masks=True, mask_rim=1)
    assert len(given["masks"]) == len(run.train_masks)
    assert all(torch.equal(g, grow_mask(m, 1)) for g, m in zip(given["masks"], run.train_masks))
    # tune_synthetic: a rim is a cache key of its own; the exact masks keep the key they had
    import importlib.util
    from pathlib import Path
    path = Path(__file__).parents[1] / "eval" / "tune_synthetic.py"
    spec = importlib.util.spec_from_file_location("tune_synthetic", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    rims = []

    def one_seed(*args):
        rims.append(args[12:15:2])  # _one_seed's mask_rim and mask_kind
        names = [*tune.WINDOWS, "tif"]
        return {part: {tune.window_name(w): [1.0] for w in names} for part in tune.PARTS}

    monkeypatch.setattr(tune, "_one_seed", one_seed)
    for rim, kind in ((0, "object"), (1, "object"), (0, "object"), (1, "object"), (-1, "object"), (0, "box")):
        tune.evaluate([], [7], 2, 1, cache=tmp_path, masks=True, mask_rim=rim, mask_kind=kind)
    # each fitted once, then read from its own cache file (boxes too)
    assert rims == [(0, "object"), (1, "object"), (-1, "object"), (0, "box")]
    keys = sorted(json.loads(p.read_text())["key"] for p in tmp_path.rglob("*.json"))
    assert sum('"rim"' in k for k in keys) == 2 and sum('"box"' in k for k in keys) == 1


def test_each_background_detail_kind_is_fitted_once_under_its_own_key(tmp_path, monkeypatch):
    tune = eval_script("tune_synthetic")
    details = []

    def one_seed(*args):
        details.append(args[13::2])  # _one_seed's background_detail and background_detail_kind
        names = [*tune.WINDOWS, "tif"]
        return {part: {tune.window_name(w): [1.0] for w in names} for part in tune.PARTS}

    monkeypatch.setattr(tune, "_one_seed", one_seed)
    for kind in ("thin", "class", "thin", "class"):
        tune.evaluate([], [7], 2, 1, cache=tmp_path, background_detail=0.1, background_detail_kind=kind)
    assert details == [(0.1, "thin"), (0.1, "class")]
    keys = sorted(json.loads(p.read_text())["key"] for p in tmp_path.rglob("*.json"))
    assert len(keys) == 2 and sum('"kind": "class"' in k for k in keys) == 1  # the thin key as before: no kind


def test_a_mask_meeting_the_border_is_not_shrunk_from_that_side():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:3, :4] = True  # a 3 x 4 object in the top-left corner, clipped by the image there
    shrunk = grow_mask(mask, -1)
    expected = torch.zeros_like(mask)
    expected[:2, :3] = True  # its inner edges (row 2, column 3) go; the border sides stay
    assert torch.equal(shrunk, expected)
