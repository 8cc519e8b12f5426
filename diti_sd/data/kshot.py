"""CoOp-style k-shot splits: k images per class from train, min(k, 4) from validation, per seed."""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError, DitiError, MissingEntryError
from ..files import atomic_write
from .images import LabeledImages

FORMAT_VERSION = 1


class TooFewImagesError(DitiError, ValueError):
    """A class has fewer images than the shots asked for."""


def sample_per_class(data: LabeledImages, k: int, rng: random.Random, what: str = "train",
                     at_most: bool = False) -> list[int]:
    """Indices of k images per class, as Dassl's ``generate_fewshot_dataset`` (CoOp's) draws them: classes in
    the order of their first image in the data set, each class's pool in data-set order, ``rng.sample``.

    ``at_most``: a class with fewer than k images gives all it has instead of an error.
    """
    if k < 1:
        raise ConfigError(f"shots must be at least 1, got {k}")
    pools: dict[int, list[int]] = {}  # insertion order: first appearance, as Dassl's defaultdict
    for i, label in enumerate(data.labels):
        pools.setdefault(label, []).append(i)
    for c in range(len(data.classnames)):
        pools.setdefault(c, [])
    short = {data.classnames[c]: len(p) for c, p in pools.items() if len(p) < k}
    if short and not at_most:
        listed = ", ".join(f"{name!r} ({n})" for name, n in list(short.items())[:5])
        raise TooFewImagesError(
            f"{len(short)} class(es) have fewer than {k} {what} images: {listed}"
            f"{' ...' if len(short) > 5 else ''}. Use fewer shots"
            f"{' or a smaller --val-per-class' if what == 'validation' else ''}, or add images."
        )
    chosen = []
    for pool in pools.values():  # a short class gives all it has and draws nothing from the stream (Dassl's)
        chosen.extend(rng.sample(pool, k) if len(pool) >= k else pool)
    return chosen


@dataclass
class KShotSplit:
    """Which images a k-shot task uses, by id, so every method sees the same ones."""

    dataset: str
    shots: int
    seed: int
    classnames: list[str]
    train_ids: list[str]
    val_ids: list[str]
    format_version: int = FORMAT_VERSION

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(asdict(self), indent=1)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> KShotSplit:
        data = json.loads(Path(path).read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{path}: split format {data.get('format_version')} is not this version's "
                              f"({FORMAT_VERSION}); sample the split again with this version")
        return cls(**data)

    def select(self, data: LabeledImages, which: str = "train") -> LabeledImages:
        """The images of this split found in ``data`` (the full train or val set), in split order."""
        if list(data.classnames) != list(self.classnames):
            raise ConfigError(f"the split was made for other classes than this data set's ({self.dataset}); pass the "
                              "data set it was drawn from, or sample a new split (without --split)")
        wanted = self.train_ids if which == "train" else self.val_ids
        position = {image_id: i for i, image_id in enumerate(data.ids)}
        missing = [i for i in wanted if i not in position]
        if missing:
            raise MissingEntryError(f"{len(missing)} image(s) of the split are not in the data set, e.g. "
                                    f"{missing[:3]}; point --data-root at the data set the split was drawn from")
        return data.subset(position[i] for i in wanted)


def load_split(path: str | os.PathLike, train: LabeledImages, val: LabeledImages | None,
               dataset: str = "dataset") -> KShotSplit:
    """A saved split: this package's JSON, or a TiF split file (``train_<k>_<seed>.data``).

    TiF's files (its repository's ``lora/splits/<data set>/``) are torch-saved lists of
    ``{classname, impath, label}``; they are read with ``weights_only=True`` (plain data only) and each
    image is found in ``train`` by its folder and file name, wherever the file said it lay, so the images
    come from ``--data-root``. Their validation images are drawn as CoOp's: min(k, 4) per class with the seed in
    the file name, after CoOp's train draw on the same stream (replayed and set aside: the file's images are
    the shots), so where the file holds CoOp's shots the validation images are CoOp's too.
    """
    path = Path(path)
    if path.suffix != ".data":
        return KShotSplit.load(path)
    import re

    import torch

    try:
        entries = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with objects, or not a torch file at all
        raise ConfigError(f"{path} is not a TiF split file (a torch-saved list of dicts): {err}") from err
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"classname", "impath"} <= set(e)
                                                for e in entries):
        raise ConfigError(f"{path}: expected a list of {{classname, impath, label}} entries")
    match = re.search(r"_(\d+)_(\d+)$", path.stem)
    seed = int(match.group(2)) if match else 1
    def where(p):
        p = Path(str(p))
        return p.parent.name, p.stem

    position = {where(p): i for i, p in enumerate(train.images)}
    train_ids, labels, missing = [], [], []
    for entry in entries:
        if where(entry["impath"]) not in position:
            missing.append(entry["impath"])
            continue
        i = position[where(entry["impath"])]
        if train.classnames[train.labels[i]] != entry["classname"]:
            raise ConfigError(f"{path}: {entry['impath']} is class {entry['classname']!r} there but "
                             f"{train.classnames[train.labels[i]]!r} in the data set at hand; another data set?")
        train_ids.append(train.ids[i])
        labels.append(train.labels[i])
    if missing:
        raise ConfigError(f"{len(missing)} image(s) of {path.name} are not in the data set's train split under "
                         f"--data-root (e.g. {missing[:2]}); point --data-root at the data set they came from")
    shots = min(labels.count(c) for c in range(len(train.classnames)))
    if shots < 1:
        raise ConfigError(f"{path.name} has no image of some classes of this data set")
    rng = random.Random(seed)
    sample_per_class(train, shots, rng, at_most=True)  # CoOp's train draw comes first on this stream
    taken = set(train_ids)
    pool = val if val is not None else train.subset(i for i, v in enumerate(train.ids) if v not in taken)
    val_ids = [pool.ids[i] for i in sample_per_class(pool, min(shots, 4), rng, "validation", at_most=True)]
    return KShotSplit(dataset, shots, seed, list(train.classnames), train_ids, val_ids)


def make_kshot_split(
    train: LabeledImages, val: LabeledImages | None, shots: int, seed: int, dataset: str = "dataset",
    val_per_class: int | None = None,
) -> KShotSplit:
    """Deterministic in (data, shots, seed): one ``random.Random(seed)`` stream, train then validation.

    Validation is cut to min(shots, 4) per class as in CoOp, or to ``val_per_class``; without a
    validation set it is drawn from the train images not chosen for training (as many as are left, up
    to that number). The train images do not depend on ``val_per_class``.
    """
    rng = random.Random(seed)
    train_idx = sample_per_class(train, shots, rng, "train")
    val_k = min(shots, 4) if val_per_class is None else val_per_class
    if val is None:
        taken = set(train_idx)
        rest = [i for i in range(len(train)) if i not in taken]
        pool = train.subset(rest)
        val_idx = [rest[i] for i in sample_per_class(pool, val_k, rng, at_most=True)]
        val_ids = [train.ids[i] for i in val_idx]
    else:
        val_ids = [val.ids[i] for i in sample_per_class(val, val_k, rng, "validation")]
    return KShotSplit(dataset, shots, seed, list(train.classnames), [train.ids[i] for i in train_idx], val_ids)
