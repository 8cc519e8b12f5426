"""Box annotations as masks: FGVC-Aircraft's ``images_box.txt`` (``diti-sd fit --box-masks``), any data set's boxes
(``dataset_box_masks``), and the benchmark's box-masked fits (ours)."""

import json

import numpy as np
import pytest
import torch
from fakes import make_fake_fgvc
from PIL import Image

from diti_sd.benchmarks.synthetic.data import object_masks
from diti_sd.cli import main
from diti_sd.data import (
    ArchiveError,
    ImageSequence,
    LabeledImages,
    dataset_box_masks,
    load_fgvc_aircraft,
    load_fgvc_boxes,
)
from diti_sd.data.masks import MaskError, bounding_box, box_mask, check_masks
from diti_sd.errors import ConfigError


def test_the_archives_boxes_are_read_one_based_with_both_corners_inside(tmp_path):
    root = make_fake_fgvc(tmp_path, per_split=1, n_classes=2)
    path = root / "fgvc-aircraft-2013b" / "data" / "images_box.txt"
    path.write_text("0034309 1 1 4 3\n\n1234567 10 20 10 20\n")
    boxes = load_fgvc_boxes(root)
    assert boxes == {"0034309": (0, 0, 4, 3), "1234567": (9, 19, 10, 20)}
    assert box_mask((6, 5), boxes["0034309"]).sum() == 12  # 4 columns x 3 rows, the corners included
    path.write_text("0034309 1 1 4\n")
    with pytest.raises(ArchiveError, match=r"images_box.txt:1: expected '<id> xmin ymin xmax ymax'"):
        load_fgvc_boxes(root)
    path.write_text("0034309 5 1 4 3\n")
    with pytest.raises(ArchiveError, match="ends before it starts"):
        load_fgvc_boxes(root)
    for bad in ("0034309 1 1 4.5 3\n", "0034309 1 1 inf 3\n"):
        path.write_text(bad)
        with pytest.raises(ArchiveError, match="in whole pixels"):
            load_fgvc_boxes(root)
    path.write_text("0034309 1 1 4 3\n0034309 2 2 5 5\n")
    with pytest.raises(ArchiveError, match=r"images_box.txt:2: a second box for 0034309"):
        load_fgvc_boxes(root)
    path.unlink()
    with pytest.raises(ArchiveError, match="has no images_box.txt"):
        load_fgvc_boxes(root)


def test_a_box_is_the_tightest_around_its_mask_and_draws_back_clipped():
    mask = torch.zeros(10, 12, dtype=torch.bool)
    mask[2:5, 3:9] = True
    mask[6, 4] = True
    assert bounding_box(mask) == (3, 2, 9, 7)
    drawn = box_mask((12, 10), bounding_box(mask))
    assert drawn.sum() == 6 * 5 and not (mask & ~drawn).any()
    assert bounding_box(torch.zeros(3, 3, dtype=torch.bool)) is None
    assert box_mask((4, 4), (-2, 2, 9, 9)).sum() == 4 * 2  # what lies outside the image is dropped


def test_box_masks_take_the_data_sets_banner_crop_and_name_every_missing_box(tmp_path):
    for i in range(2):
        Image.new("RGB", (20, 30)).save(tmp_path / f"{i}.jpg")
    data = LabeledImages([tmp_path / "0.jpg", tmp_path / "1.jpg"], [0, 1], ["a", "b"], ["0", "1"], crop_bottom=4)
    masks = check_masks(dataset_box_masks(data, {"0": (2, 20, 10, 30), "1": (0, 0, 5, 5)}), ImageSequence(data))
    assert tuple(masks[0].shape) == (26, 20)  # the file's frame, then the banner crop, as the image
    assert masks[0].sum() == 8 * 6 and masks[1].sum() == 25  # rows 20-25 of the box survive the crop
    with pytest.raises(MaskError, match=r"1 of 2 shots have no box \(e.g. '1'\)"):
        dataset_box_masks(data, {"0": (0, 0, 5, 5)})
    # a box beside the image, or only in the banner the data set crops: counted in one line, before any work
    with pytest.raises(MaskError, match=r"2 of 2 boxes hold no pixel of their image as read \(e.g. '0'"):
        dataset_box_masks(data, {"0": (2, 27, 5, 30), "1": (25, 0, 30, 5)})
    assert dataset_box_masks(data, {"0": (2, 25, 5, 30), "1": (0, 0, 5, 5)})[0].sum() == 3  # its row 25 survives


def test_fit_box_masks_keeps_each_shots_own_archive_box(tmp_path, tiny_model_dir, capsys, swaps, monkeypatch):
    from diti_sd import DiTiFewShotClassifier

    given, fit = {}, DiTiFewShotClassifier.fit
    monkeypatch.setattr(DiTiFewShotClassifier, "fit", lambda self, *a, **kw: given.update(kw) or fit(self, *a, **kw))
    root = make_fake_fgvc(tmp_path / "data", per_split=2, n_classes=3, seed=3, box_objects=True)
    fast = ["--set", "fit.steps=1", "--set", "fit.prior_images=2", "--set", "fit.prior_sample_steps=2",
            "--set", "score.rounds=[[2,2],[4,1]]", "--set", "fit.coarse_swap=1"]
    argv = ["fit", "--dataset", "fgvc-aircraft", "--data-root", str(root), "--model", str(tiny_model_dir),
            "--shots", "2", "--out", str(tmp_path / "out"), "--no-progress", "--box-masks", *fast]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["masks"]["images"] == 6 and summary["masks"]["read_by_swap"]
    # each swapped shot keeps its own light box (its object here), wherever the crop and shift put it: the
    # kept pixels and the light ones agree but at the box's edge, where resizing and thresholding differ
    assert swaps and all(keep is not None for _, keep in swaps)
    for pixels, keep in swaps:
        light = pixels.float().mean(0) >= 127.5
        assert (keep[0] & light).sum() >= 0.9 * max(keep[0].sum(), light.sum())
    assert len({keep.numpy().tobytes() for _, keep in swaps}) > 1
    # the validation images get their own boxes, for the shortcut check to read their backgrounds with
    assert len(given["validation_masks"]) == len(given["validation"][0]) > 0
    assert all(m.any() and not m.all() for m in given["validation_masks"])


def test_a_bad_box_in_any_shot_draw_stops_the_fit_before_any_work(tmp_path, tiny_model_dir, capsys):
    root = make_fake_fgvc(tmp_path / "data", per_split=2, n_classes=3, seed=3)
    path = root / "fgvc-aircraft-2013b" / "data" / "images_box.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].split()[0] + " 1 39 5 40", *lines[1:]]) + "\n")  # all in the banner row
    argv = ["fit", "--dataset", "fgvc-aircraft", "--data-root", str(root), "--model", str(tiny_model_dir),
            "--shots", "1,2", "--out", str(tmp_path / "out"), "--no-progress", "--box-masks",
            "--set", "dataset.crop_banner=true", "--set", "fit.coarse_swap=1"]
    assert main(argv) == 2
    assert "1 of 6 boxes hold no pixel of their image as read" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # neither the 1-shot nor the 2-shot fit began


def test_a_missing_or_misshapen_mask_in_any_shot_draw_stops_the_fit_before_any_work(tmp_path, tiny_model_dir,
                                                                                      capsys):
    # --shots 1,2: a mask that only the 2-shot draw reads is checked before the 1-shot fit begins
    from diti_sd.data import load_configured_split, make_kshot_split
    from diti_sd.recipes import load_recipe

    root = make_fake_fgvc(tmp_path / "data", per_split=2, n_classes=3, seed=3)
    dataset = load_recipe("fgvc-aircraft").dataset
    train = load_configured_split(dataset, root, dataset.train_split)
    val = load_configured_split(dataset, root, dataset.val_split)
    draws = {k: set(make_kshot_split(train, val, k, 1, dataset="fgvc-aircraft").select(train, "train").ids)
             for k in (1, 2)}
    only_later = sorted(draws[2] - draws[1])[0]
    masks = tmp_path / "masks"
    masks.mkdir()
    for image, i in zip(train.images, train.ids):
        with Image.open(image) as im:
            Image.new("L", im.size, 255).save(masks / f"{i}.png")
    argv = ["fit", "--dataset", "fgvc-aircraft", "--data-root", str(root), "--model", str(tiny_model_dir),
            "--shots", "1,2", "--seed", "1", "--out", str(tmp_path / "out"), "--no-progress", "--masks", str(masks),
            "--set", "fit.coarse_swap=1"]
    Image.new("L", (10, 10), 255).save(masks / f"{only_later}.png")
    assert main(argv) == 2
    assert f"1 of 6 masks are not their image file's size (e.g. {masks / only_later}.png is 10x10" in \
        capsys.readouterr().err
    (masks / f"{only_later}.png").unlink()
    assert main(argv) == 2
    assert f"1 of 6 shots have no mask under {masks} (e.g. {only_later!r}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # neither the 1-shot nor the 2-shot fit began
    # the validation images' masks too: one of another size that only the 2-shot draw's validation reads
    with Image.open(train.images[train.ids.index(only_later)]) as im:
        Image.new("L", im.size, 255).save(masks / f"{only_later}.png")
    val_draws = {k: set(make_kshot_split(train, val, k, 1, dataset="fgvc-aircraft").select(val, "val").ids)
                 for k in (1, 2)}
    for image, i in zip(val.images, val.ids):
        with Image.open(image) as im:
            Image.new("L", im.size if i not in val_draws[2] - val_draws[1] else (10, 10), 255).save(masks / f"{i}.png")
    assert main(argv) == 2
    assert "masks are not their image file's size (e.g. " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_box_masks_are_refused_where_there_are_no_boxes_to_read(tmp_path, capsys):
    argv = ["fit", "--dataset", "image-folder", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
            "--box-masks"]
    assert main(argv) == 2 and "--box-masks reads FGVC-Aircraft's images_box.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one or the other, as argparse refuses
        main([*argv, "--masks", str(tmp_path)])
    assert "not allowed with argument --box-masks" in capsys.readouterr().err


def test_the_fake_archives_boxes_hold_its_objects(tmp_path):
    # the fake's boxes are where its light objects are, so the CLI test above can tell a box from another
    root = make_fake_fgvc(tmp_path, per_split=1, n_classes=2, box_objects=True)
    data, boxes = load_fgvc_aircraft(root, "train"), load_fgvc_boxes(root)
    for path, image_id in zip(data.images, data.ids):
        light = np.asarray(Image.open(path).convert("L")) > 127
        assert bounding_box(torch.from_numpy(light)) == boxes[image_id]


def test_the_benchmark_fits_on_its_objects_boxes(monkeypatch):
    from diti_sd.benchmarks.synthetic import streams
    from diti_sd.recipes import load_recipe

    given = {}
    monkeypatch.setattr(streams.DiTiFewShotClassifier, "fit",
                        lambda self, X, y, masks=None, **kw: given.setdefault("masks", masks) and self)
    recipe = load_recipe("synthetic", ["fit.coarse_swap=1.0"])
    run = streams.SyntheticSeed.for_recipe(recipe, 11, 2)
    run.fit(recipe, masks=True, mask_kind="box")
    objects = object_masks(run.spec, "train", 2, 11)  # the shots' own objects, from the generator
    assert [bounding_box(m) for m in given["masks"]] == [bounding_box(m) for m in objects]
    assert all(m.sum() == (b[2] - b[0]) * (b[3] - b[1]) for m, b in zip(given["masks"], map(bounding_box, objects)))
    assert any(m.sum() > o.sum() for m, o in zip(given["masks"], objects))  # the box takes in background
    with pytest.raises(ConfigError, match="unknown mask kind"):
        run.fit(recipe, masks=True, mask_kind="ellipse")
    with pytest.raises(ConfigError, match="shrinks some of the shots' objects to nothing"):
        run.fit(recipe, masks=True, mask_rim=-8, mask_kind="box")
