import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import FGVC_VARIANTS, make_fake_fgvc
from PIL import Image

from diti_sd.data import (
    ArchiveError,
    ImageReadError,
    KShotSplit,
    LabeledImages,
    TooFewImagesError,
    load_configured_split,
    load_fgvc_aircraft,
    load_hf_dataset,
    load_image_folder,
    make_kshot_split,
)
from diti_sd.data.images import load_image
from diti_sd.errors import ConfigError, MissingFileError


def test_fgvc_reader_follows_the_official_files(fake_fgvc):
    data_dir = fake_fgvc / "fgvc-aircraft-2013b" / "data"
    for split in ("train", "val", "test"):
        data = load_fgvc_aircraft(fake_fgvc, split)
        lines = (data_dir / f"images_variant_{split}.txt").read_text().split("\n")
        lines = [line for line in lines if line]
        assert data.classnames == FGVC_VARIANTS and len(data) == len(lines) == 200
        for image_id, label, path, line in zip(data.ids, data.labels, data.images, lines):
            expected_id, expected_name = line.split(" ", 1)
            assert image_id == expected_id and data.classnames[label] == expected_name
            assert path == data_dir / "images" / f"{expected_id}.jpg"
    assert "F-16A/B" in data.classnames and "Embraer Legacy 600" in data.classnames
    # the same archive passed three ways
    for root in (fake_fgvc / "fgvc-aircraft-2013b", data_dir):
        assert load_fgvc_aircraft(root, "val").ids == load_fgvc_aircraft(fake_fgvc, "val").ids
    family = load_fgvc_aircraft(fake_fgvc, "train", level="family")
    assert family.classnames == (data_dir / "families.txt").read_text().split("\n")[:-1]
    assert family.classnames[family.labels[0]] == "707" and len(family.classnames) < 100


def test_banner_crop_is_off_by_default(fake_fgvc):
    full, cropped = load_fgvc_aircraft(fake_fgvc, "test"), load_fgvc_aircraft(fake_fgvc, "test", crop_banner=True)
    assert full.load(0).size == (48, 40) and cropped.load(0).size == (48, 20)


def test_missing_archive_files_are_named(tmp_path):
    root = make_fake_fgvc(tmp_path / "a", per_split=1, n_classes=3)
    data_dir = root / "fgvc-aircraft-2013b" / "data"
    (data_dir / "variants.txt").unlink()
    with pytest.raises(ArchiveError, match="missing variants.txt"):
        load_fgvc_aircraft(root, "train")
    with pytest.raises(ArchiveError, match="no FGVC-Aircraft archive"):
        load_fgvc_aircraft(tmp_path / "nowhere", "train")
    root = make_fake_fgvc(tmp_path / "b", per_split=1, n_classes=3)
    first = (root / "fgvc-aircraft-2013b/data/images_variant_test.txt").read_text().split()[0]
    (root / f"fgvc-aircraft-2013b/data/images/{first}.jpg").unlink()
    with pytest.raises(ArchiveError, match=f"missing from .*first: {first}.jpg"):
        load_fgvc_aircraft(root, "test")


def test_unreadable_image_is_named(tmp_path):
    root = make_fake_fgvc(tmp_path, per_split=1, n_classes=2, corrupt=1)
    data = load_fgvc_aircraft(root, "train")
    with pytest.raises(ImageReadError, match=f"cannot read image .*{data.ids[0]}.jpg"):
        data.load(0)


def test_kshot_split_counts_and_determinism(fake_fgvc):
    train, val = load_fgvc_aircraft(fake_fgvc, "train"), load_fgvc_aircraft(fake_fgvc, "val")
    split = make_kshot_split(train, val, shots=2, seed=1, dataset="fgvc")
    assert len(split.train_ids) == 200 and len(split.val_ids) == 200
    chosen = split.select(train, "train")
    assert sorted(chosen.labels) == sorted(list(range(100)) * 2)
    assert make_kshot_split(train, val, 2, 1).train_ids == split.train_ids
    one = make_kshot_split(train, val, 1, 1)
    assert one.train_ids != make_kshot_split(train, val, 1, 2).train_ids
    assert len(one.val_ids) == 100  # min(k, 4) per class
    more = make_kshot_split(train, val, 1, 1, val_per_class=2)
    assert len(more.val_ids) == 200 and more.train_ids == one.train_ids
    with pytest.raises(TooFewImagesError, match="smaller --val-per-class"):
        make_kshot_split(train, val, 1, 1, val_per_class=3)  # the fake val split has 2 per class


def test_kshot_split_is_the_same_in_another_process(fake_fgvc, tmp_path):
    train = load_fgvc_aircraft(fake_fgvc, "train")
    here = make_kshot_split(train, None, 1, 3).train_ids
    code = (
        "import sys; from diti_sd.data import load_fgvc_aircraft, make_kshot_split;"
        "t = load_fgvc_aircraft(sys.argv[1], 'train'); print(' '.join(make_kshot_split(t, None, 1, 3).train_ids))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(fake_fgvc)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == here


def test_split_saves_and_reloads(fake_fgvc, tmp_path):
    train, val = load_fgvc_aircraft(fake_fgvc, "train"), load_fgvc_aircraft(fake_fgvc, "val")
    split = make_kshot_split(train, val, 1, 2, dataset="fgvc-aircraft")
    loaded = KShotSplit.load(split.save(tmp_path / "splits" / "1shot-seed2.json"))
    assert loaded == split
    assert loaded.select(val, "val").ids == split.val_ids


def test_too_few_images_names_the_class():
    data = LabeledImages(["a", "b", "c"], [0, 0, 1], ["wide", "narrow"])
    with pytest.raises(TooFewImagesError, match=r"'narrow' \(1\).*fewer shots"):
        make_kshot_split(data, None, 2, 1)


def test_image_folder_and_hf_datasets(tmp_path):
    for name in ("cardinal", "blue jay"):
        (tmp_path / "birds" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "birds" / name / f"{i}.png")
    data = load_image_folder(tmp_path / "birds")
    assert data.classnames == ["blue jay", "cardinal"] and data.labels == [0, 0, 0, 1, 1, 1]
    assert data.load(4).size == (8, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty")

    import datasets

    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["cat", "dog"])})
    ds = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (8, 8)) for _ in range(4)], "y": [1, 0, 1, 1]}, features=features
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "hf"))
    loaded = load_hf_dataset(tmp_path / "hf", "train", image_column="img", label_column="y")
    assert loaded.classnames == ["cat", "dog"] and loaded.labels == [1, 0, 1, 1]
    assert loaded.load(0).size == (8, 8)
    with pytest.raises(KeyError, match="no column 'image'"):
        load_hf_dataset(tmp_path / "hf", "train", label_column="y")


def test_image_folder_recipe_reads_root_val_beside_root_train(tmp_path):
    from diti_sd.recipes import load_recipe

    assert load_recipe("image-folder").dataset.val_split is None  # by default cut from the train pool
    ds = load_recipe("image-folder", ["dataset.val_split=val"]).dataset

    def folder(*parts):
        (tmp_path.joinpath(*parts)).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path.joinpath(*parts, "0.png"))

    for split in ("train", "val"):
        for name in ("cardinal", "blue jay"):
            folder("split", split, name)
    val = load_configured_split(ds, tmp_path / "split", ds.val_split)
    assert val is not None and val.classnames == ["blue jay", "cardinal"] and val.ids[0].startswith("blue jay")
    # root/<class>/ with a class called "val" while val/ is asked for as the split: said, not guessed
    for name in ("val", "cardinal"):
        folder("flat", name)
    with pytest.raises(ConfigError, match="lay the folder out as train/<class>/ and val/<class>/"):
        load_configured_split(ds, tmp_path / "flat", ds.val_split)
    assert load_configured_split(ds, tmp_path / "flat", ds.train_split).classnames == ["cardinal", "val"]
    assert load_configured_split(load_recipe("image-folder").dataset, tmp_path / "flat", None) is None


def test_fgvc_reader_accepts_the_coop_layout(tmp_path):
    official = load_fgvc_aircraft(make_fake_fgvc(tmp_path / "a", per_split=1, n_classes=4, seed=5), "train")
    root = make_fake_fgvc(tmp_path / "b", per_split=1, n_classes=4, seed=5, layout="coop")
    coop = load_fgvc_aircraft(root, "train")
    assert coop.ids == official.ids and coop.labels == official.labels and coop.classnames == official.classnames
    assert coop.images[0] == root / "fgvc_aircraft" / "images" / f"{coop.ids[0]}.jpg"
    with pytest.raises(ArchiveError, match="families.txt"):
        load_fgvc_aircraft(root, "train", level="family")


def test_tif_split_files_select_their_images_from_data_root(tmp_path):
    from fakes import write_tif_split

    from diti_sd.data import load_split

    root = make_fake_fgvc(tmp_path / "fgvc", per_split=3, n_classes=4, seed=6, layout="coop")
    train, val = load_fgvc_aircraft(root, "train"), load_fgvc_aircraft(root, "val")
    chosen = [(train.classnames[c], train.ids[3 * c + 1], c) for c in range(4)]
    split = load_split(write_tif_split(tmp_path / "train_1_2.data", chosen), train, val, dataset="fgvc")
    assert split.train_ids == [image_id for _, image_id, _ in chosen] and split.shots == 1 and split.seed == 2
    assert [train.classnames[v] for v in split.select(train).labels] == train.classnames
    assert len(split.val_ids) == 4 and set(split.val_ids) <= set(val.ids)

    wrong_class = [(train.classnames[1], train.ids[0], 1)]
    with pytest.raises(ValueError, match="another data set"):
        load_split(write_tif_split(tmp_path / "train_1_1.data", wrong_class), train, val)
    absent = [(train.classnames[0], "9999999", 0)]
    with pytest.raises(ValueError, match="not in the data set's train split"):
        load_split(write_tif_split(tmp_path / "train_1_3.data", absent), train, val)


def test_isic_reader_splits_each_class_and_reads_the_processed_layout(tmp_path):
    from fakes import make_fake_isic

    from diti_sd.data import load_isic2019
    from diti_sd.data.isic import CLASSNAMES

    root = make_fake_isic(tmp_path / "isic")
    parts = {s: load_isic2019(root, s) for s in ("train", "val", "test")}
    assert parts["train"].classnames == CLASSNAMES
    ids = [set(p.ids) for p in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and sum(map(len, ids)) == 64
    # per class int(10 %) validation and int(50 %) test: Melanoma's 12 images -> 1 / 6 / 5
    assert [p.labels.count(0) for p in parts.values()] == [5, 1, 6]
    assert load_isic2019(root, "test").ids == parts["test"].ids  # deterministic
    # TiF's processed folders: isic2019/<split>/<label>_<Name>/<n>.jpg, their split kept
    for label, name in enumerate(CLASSNAMES):
        sub = tmp_path / "tif" / "isic2019" / "test" / f"{label}_{name.replace(' ', '_')}"
        sub.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(sub / "0.jpg")
    processed = load_isic2019(tmp_path / "tif", "test")
    assert processed.labels == list(range(8)) and processed.ids[7] == "7/0"
    # TiF's files are its processing's output already: read as they are, not cropped or re-encoded again
    assert processed.prepare == "tif-processed" and np.array_equal(np.asarray(processed.load(7)),
                                                      np.asarray(Image.open(sub / "0.jpg").convert("RGB")))
    assert parts["train"].prepare == "tif-isic"
    (root / "ISIC_2019_Training_GroundTruth.csv").unlink()
    with pytest.raises(ArchiveError, match="GroundTruth.csv"):
        load_isic2019(root, "train")


def test_reid_readers_make_identities_classes(tmp_path):
    from fakes import make_fake_reid

    from diti_sd.data import load_duke, load_veri

    # Duke: identities with >= 16 gallery images, the ones with most queries (ties by id)
    gallery = {1: 16, 2: 16, 3: 16, 4: 3, 5: 16}
    query = {1: 1, 2: 3, 3: 2, 4: 9, 5: 2}
    root = make_fake_reid(tmp_path / "d", "duke", gallery, query)
    train = load_duke(root, "train", n_classes=3)
    assert train.classnames == ["person 2", "person 3", "person 5"] and len(train) == 48
    test = load_duke(root, "test", n_classes=3)
    assert test.classnames == train.classnames and [test.labels.count(c) for c in range(3)] == [3, 2, 2]
    image = train.load(0)
    assert image.size[0] == image.size[1]  # cropped to 1:2.5, padded square with black
    assert image.getpixel((0, image.size[1] // 2)) == (0, 0, 0)
    with pytest.raises(ArchiveError, match="identities"):
        load_duke(root, "train", n_classes=5)

    v = make_fake_reid(tmp_path / "v", "veri", {6: 2, 13: 3}, {6: 1, 13: 2})
    gallery_set, queries = load_veri(v, "train"), load_veri(v, "test")
    assert gallery_set.classnames == ["car 6", "car 13"] and len(gallery_set) == 5 and queries.labels == [0, 1, 1]
    assert queries.load(0).size == (50, 50)
    assert train.prepare == "tif-duke" and gallery_set.prepare == "tif-veri"

    # TiF's processed folders (process_duke.py / process_veri.py write duke/ and veri/, every image a padded square):
    # read as they are, not cropped, padded or re-encoded a second time
    for data, top, subs in ((train, "duke", ("bounding_box_test", "query")), (gallery_set, "veri",
                                                                              ("image_test", "image_query"))):
        source = Path(data.images[0]).parent.parent
        for sub in subs:
            (tmp_path / "tif" / top / sub).mkdir(parents=True)
            for path in (source / sub).glob("*.jpg"):
                shaped = load_image(path, prepare=data.prepare, geometry_only=True)
                shaped.save(tmp_path / "tif" / top / sub / path.name)
    processed_duke = load_duke(tmp_path / "tif", "train", n_classes=3)
    processed_veri = load_veri(tmp_path / "tif", "train")
    for processed, data in ((processed_duke, train), (processed_veri, gallery_set)):
        assert processed.prepare == "tif-processed" and processed.classnames == data.classnames
        on_disk = Image.open(processed.images[0]).convert("RGB")
        assert np.array_equal(np.asarray(processed.load(0)), np.asarray(on_disk))
    with pytest.raises(ArchiveError, match="VeRi-776"):
        load_veri(tmp_path / "d", "train")


def test_the_fit_knows_which_preparation_its_images_were_read_with(tmp_path):
    # a data set's view says its own; image files are read as they are; images already read could be anything
    from diti_sd.data.images import ImageSequence, LabeledImages, read_preparation

    Image.new("RGB", (4, 6)).save(tmp_path / "a.png")
    view = ImageSequence(LabeledImages([tmp_path / "a.png"], [0], ["a"], prepare="tif-duke"))
    assert read_preparation(view) == "tif-duke" and read_preparation(ImageSequence(view.data.subset([]))) == "tif-duke"
    assert read_preparation([tmp_path / "a.png", str(tmp_path / "a.png")]) == ""
    assert read_preparation([Image.new("RGB", (4, 6))]) is None and read_preparation([tmp_path / "a.png", None]) is None


def test_refusals_of_a_users_folders_and_splits_name_the_fix(tmp_path):
    import argparse
    import json

    from diti_sd.cli.common import seed_list

    with pytest.raises(MissingFileError, match="does not exist; pass the folder that holds one sub-folder"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "birds" / "wren").mkdir(parents=True)
    with pytest.raises(MissingFileError, match="holds no images .*; add its images or remove the folder"):
        load_image_folder(tmp_path / "birds")
    with pytest.raises(argparse.ArgumentTypeError, match="runs backwards; write it as 11-20"):
        seed_list("20-11")
    (tmp_path / "old.json").write_text(json.dumps({"format_version": 0}))
    with pytest.raises(ConfigError, match="sample the split again"):
        KShotSplit.load(tmp_path / "old.json")
