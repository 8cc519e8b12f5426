"""CoOp-style k-shot splits: k images per class from train, min(k, 4) from validation, per seed."""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from .images import LabeledImages

FORMAT_VERSION = 1


class TooFewImagesError(ValueError):
    """A class has fewer images than the shots asked for."""


def sample_per_class(data: LabeledImages, k: int, rng: random.Random, what: str = "train",
                     at_most: bool = False) -> list[int]:
    """Indices of k images per class, classes in label order, each class's pool in data-set order.

    ``at_most``: a class with fewer than k images gives all it has instead of an error.
    """
    if k < 1:
        raise ValueError(f"shots must be at least 1, got {k}")
    pools: dict[int, list[int]] = {c: [] for c in range(len(data.classnames))}
    for i, label in enumerate(data.labels):
        pools[label].append(i)
    short = {data.classnames[c]: len(p) for c, p in pools.items() if len(p) < k}
    if short and not at_most:
        listed = ", ".join(f"{name!r} ({n})" for name, n in list(short.items())[:5])
        raise TooFewImagesError(
            f"{len(short)} class(es) have fewer than {k} {what} images: {listed}"
            f"{' ...' if len(short) > 5 else ''}. Use fewer shots or add images."
        )
    chosen = []
    for c in range(len(data.classnames)):
        chosen.extend(rng.sample(pools[c], min(k, len(pools[c]))))
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> KShotSplit:
        data = json.loads(Path(path).read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported split format {data.get('format_version')}")
        return cls(**data)

    def select(self, data: LabeledImages, which: str = "train") -> LabeledImages:
        """The images of this split found in ``data`` (the full train or val set), in split order."""
        if list(data.classnames) != list(self.classnames):
            raise ValueError(f"split was made for other classes than this data set's ({self.dataset})")
        wanted = self.train_ids if which == "train" else self.val_ids
        position = {image_id: i for i, image_id in enumerate(data.ids)}
        missing = [i for i in wanted if i not in position]
        if missing:
            raise KeyError(f"{len(missing)} image(s) of the split are not in the data set, e.g. {missing[:3]}")
        return data.subset(position[i] for i in wanted)


def make_kshot_split(
    train: LabeledImages, val: LabeledImages | None, shots: int, seed: int, dataset: str = "dataset"
) -> KShotSplit:
    """Deterministic in (data, shots, seed): one ``random.Random(seed)`` stream, train then validation.

    Validation is cut to min(shots, 4) per class as in CoOp; without a validation set it is drawn
    from the train images not chosen for training (as many as are left, up to that number).
    """
    rng = random.Random(seed)
    train_idx = sample_per_class(train, shots, rng, "train")
    val_k = min(shots, 4)
    if val is None:
        taken = set(train_idx)
        rest = [i for i in range(len(train)) if i not in taken]
        pool = train.subset(rest)
        val_idx = [rest[i] for i in sample_per_class(pool, val_k, rng, at_most=True)]
        val_ids = [train.ids[i] for i in val_idx]
    else:
        val_ids = [val.ids[i] for i in sample_per_class(val, val_k, rng, "validation")]
    return KShotSplit(dataset, shots, seed, list(train.classnames), [train.ids[i] for i in train_idx], val_ids)
