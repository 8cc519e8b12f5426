"""CoOp's few-shot protocol (KaiyangZhou/CoOp and its Dassl.pytorch), pinned against transcriptions of its draw;
docs/reference-parity.md, "CoOp and Diffusion Classifier"."""

import random
from collections import defaultdict

import numpy as np
import pytest
from fakes import make_fake_fgvc, write_tif_split

from diti_sd.data import load_fgvc_aircraft, load_split, make_kshot_split


def _dassl_fewshot(labels: list[int], num_shots: int) -> list[int]:
    """dassl/data/datasets/base_dataset.py, generate_fewshot_dataset with repeat=False, on the module's global
    random stream (seeded by set_random_seed(cfg.SEED) before the data set is built)."""
    tracker = defaultdict(list)  # split_dataset_by_label: labels in the order they first appear
    for i, label in enumerate(labels):
        tracker[label].append(i)
    dataset = []
    for _, items in tracker.items():
        dataset.extend(random.sample(items, num_shots) if len(items) >= num_shots else items)
    return dataset


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    """A fake FGVC whose list files are not grouped by class (the order Dassl's draw depends on)."""
    root = make_fake_fgvc(tmp_path_factory.mktemp("coop") / "fgvc", per_split=6, n_classes=5, seed=3, layout="coop")
    train, val = load_fgvc_aircraft(root, "train"), load_fgvc_aircraft(root, "val")
    order = random.Random(0).sample(range(len(train)), len(train))
    return train.subset(order), val.subset(random.Random(1).sample(range(len(val)), len(val)))


@pytest.mark.parametrize("shots, seed", [(1, 1), (2, 2), (4, 3), (6, 1)])
def test_kshot_split_is_coops_draw(shuffled, shots, seed):
    train, val = shuffled
    assert train.labels[:5] != sorted(train.labels[:5])  # not in class order
    random.seed(seed)  # CoOp's fgvc_aircraft.py: train shots, then min(k, 4) validation images, one stream
    coop_train = [train.ids[i] for i in _dassl_fewshot(train.labels, shots)]
    coop_val = [val.ids[i] for i in _dassl_fewshot(val.labels, min(shots, 4))]
    split = make_kshot_split(train, val, shots, seed)
    assert split.train_ids == coop_train and split.val_ids == coop_val


def test_tif_split_files_get_coops_validation_images_for_their_seed(shuffled, tmp_path):
    train, val = shuffled
    coop = make_kshot_split(train, val, 2, 3)
    chosen = train.subset([train.ids.index(i) for i in coop.train_ids])
    entries = [(train.classnames[label], image_id, label) for image_id, label in zip(chosen.ids, chosen.labels)]
    split = load_split(write_tif_split(tmp_path / "train_2_3.data", entries), train, val, dataset="fgvc")
    assert split.train_ids == coop.train_ids and split.val_ids == coop.val_ids


def test_seeds_default_to_coops_1_2_3():
    import argparse

    from diti_sd.cli import eval as eval_cli
    from diti_sd.cli import fit as fit_cli

    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    assert parser.parse_args(["--dataset", "fgvc-aircraft", "--data-root", "x", "--out", "o"]).seeds == [1, 2, 3]
    parser = argparse.ArgumentParser()
    fit_cli.add_arguments(parser)
    assert parser.parse_args(["--dataset", "fgvc-aircraft", "--data-root", "x", "--out", "o"]).seed == 1


def test_a_short_class_gives_all_it_has_without_drawing_as_dassls(shuffled):
    from diti_sd.data.kshot import sample_per_class

    _, val = shuffled
    short = val.subset([i for i, label in enumerate(val.labels) if label != 2 or i % 3 == 0])  # class 2: 2 left
    assert short.labels.count(2) < 4
    random.seed(5)
    expected = _dassl_fewshot(short.labels, 4)
    assert sample_per_class(short, 4, random.Random(5), at_most=True) == expected


def test_the_eval_reports_spread_over_seeds_is_coops_np_std():
    # CoOp's parse_test_res.py prints mean +- np.std over the seeds' accuracies: ddof 0, not the sample sd
    from diti_sd.evaluation.report import seed_summary

    row = seed_summary([0.5, 0.6, 0.9])
    assert row["n"] == 3 and row["mean"] == pytest.approx(2 / 3)
    assert row["std"] == pytest.approx(np.sqrt(((0.5 - 2 / 3) ** 2 + (0.6 - 2 / 3) ** 2 + (0.9 - 2 / 3) ** 2) / 3))
    assert row["std"] != pytest.approx(np.std([0.5, 0.6, 0.9], ddof=1))
