"""Small stand-ins in the real layouts: a fake FGVC-Aircraft archive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# The 100 variant names of FGVC-Aircraft's variants.txt, in the official order.
FGVC_VARIANTS = """707-320 727-200 737-200 737-300 737-400 737-500 737-600 737-700 737-800 737-900 747-100 747-200
747-300 747-400 757-200 757-300 767-200 767-300 767-400 777-200 777-300 A300B4 A310 A318 A319 A320 A321
A330-200 A330-300 A340-200 A340-300 A340-500 A340-600 A380 ATR-42 ATR-72 An-12 BAE_146-200 BAE_146-300
BAE-125 Beechcraft_1900 Boeing_717 C-130 C-47 CRJ-200 CRJ-700 CRJ-900 Cessna_172 Cessna_208 Cessna_525
Cessna_560 Challenger_600 DC-10 DC-3 DC-6 DC-8 DC-9-30 DH-82 DHC-1 DHC-6 DHC-8-100 DHC-8-300 DR-400
Dornier_328 E-170 E-190 E-195 EMB-120 ERJ_135 ERJ_145 Embraer_Legacy_600 Eurofighter_Typhoon F-16A/B
F/A-18 Falcon_2000 Falcon_900 Fokker_100 Fokker_50 Fokker_70 Global_Express Gulfstream_IV Gulfstream_V
Hawk_T1 Il-76 L-1011 MD-11 MD-80 MD-87 MD-90 Metroliner Model_B200 PA-28 SR-20 Saab_2000 Saab_340
Spitfire Tornado Tu-134 Tu-154 Yak-42""".split()
FGVC_VARIANTS = [name.replace("_", " ") for name in FGVC_VARIANTS]
assert len(FGVC_VARIANTS) == 100


def family_of(variant: str) -> str:
    return variant.split("-")[0].split(" ")[0]


def make_fake_fgvc(root: Path, per_split: int = 3, n_classes: int = 100, size=(48, 40), seed: int = 0,
                   corrupt: int = 0, layout: str = "official", box_objects: bool = False) -> Path:
    """``root/fgvc-aircraft-2013b/data/`` with the official files; ``per_split`` images per class and split.

    Ids are 7-digit numbers like the real ones; each image has a 20-px dark banner at the bottom and a box in
    ``images_box.txt`` (1-based, both corners inside, above the banner). ``box_objects``: each image is dark with
    its box light (the box is the object), in place of noise. ``corrupt`` makes that many train images unreadable
    bytes. ``layout="coop"``: CoOp's / TiF's ``root/fgvc_aircraft/`` instead (images and the variant files only).
    """
    rng = np.random.default_rng(seed)
    box_rng = np.random.default_rng([seed, 1])  # apart, so that the images' noise is as before the boxes
    boxes = []
    data = root / ("fgvc_aircraft" if layout == "coop" else "fgvc-aircraft-2013b/data")
    (data / "images").mkdir(parents=True, exist_ok=True)
    variants = FGVC_VARIANTS[:n_classes]
    families = sorted({family_of(v) for v in variants})
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    (data / "families.txt").write_text("\n".join(families) + "\n")
    (data / "manufacturers.txt").write_text("\n".join(families) + "\n")
    next_id = 1000000
    for split in ("train", "val", "test"):
        lines_v, lines_f = [], []
        for variant in variants:
            for _ in range(per_split):
                image_id = f"{next_id:07d}"
                next_id += 1
                pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
                width, height = int(box_rng.integers(8, size[0] // 2)), int(box_rng.integers(5, size[1] - 26))
                left, top = int(box_rng.integers(0, size[0] - width)), int(box_rng.integers(0, size[1] - 20 - height))
                boxes.append(f"{image_id} {left + 1} {top + 1} {left + width} {top + height}")
                if box_objects:
                    pixels[:] = 25
                    pixels[top:top + height, left:left + width] = 230
                pixels[-20:] = 10
                Image.fromarray(pixels).save(data / "images" / f"{image_id}.jpg")
                lines_v.append(f"{image_id} {variant}")
                lines_f.append(f"{image_id} {family_of(variant)}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines_v) + "\n")
        (data / f"images_family_{split}.txt").write_text("\n".join(lines_f) + "\n")
        (data / f"images_manufacturer_{split}.txt").write_text("\n".join(lines_f) + "\n")
    (data / "images_box.txt").write_text("\n".join(boxes) + "\n")
    train_ids = [line.split()[0] for line in (data / "images_variant_train.txt").read_text().splitlines()]
    for image_id in train_ids[:corrupt]:
        (data / "images" / f"{image_id}.jpg").write_bytes(b"not a jpeg")
    if layout == "coop":
        for stale in [*data.glob("images_family_*"), *data.glob("images_manufacturer_*"), data / "families.txt",
                      data / "manufacturers.txt"]:
            stale.unlink()
    return root


def write_tif_split(path: Path, entries: list[tuple[str, str, int]]) -> Path:
    """A split file as TiF's repository keeps them (lora/splits/<set>/train_<k>_<seed>.data): a
    torch-saved list of {classname, impath, label}, paths as they were on its authors' machine."""
    import torch

    torch.save([{"classname": c, "impath": f"./data/fgvc_aircraft/images/{image_id}.jpg", "label": label}
                for c, image_id, label in entries], path)
    return path


def _noise_image(path: Path, rng, size) -> None:
    Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


def make_fake_isic(root: Path, per_class=(12, 10, 8, 8, 8, 6, 6, 6), seed: int = 0) -> Path:
    """``root/ISIC_2019_Training_Input/ISIC_*.jpg`` and the ground-truth CSV beside it, as distributed."""
    rng = np.random.default_rng(seed)
    folder = root / "ISIC_2019_Training_Input"
    folder.mkdir(parents=True, exist_ok=True)
    rows, n = ["image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"], 0
    for label, count in enumerate(per_class):
        for _ in range(count):
            name = f"ISIC_{n:07d}"
            n += 1
            _noise_image(folder / f"{name}.jpg", rng, (40, 30))
            onehot = ["1.0" if c == label else "0.0" for c in range(9)]
            rows.append(",".join([name, *onehot]))
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return root


def make_fake_reid(root: Path, kind: str, gallery: dict[int, int], query: dict[int, int], seed: int = 0) -> Path:
    """DukeMTMC-reID (``kind="duke"``) or VeRi-776 (``"veri"``) folders with ``gallery[id]`` and
    ``query[id]`` images per identity, named as the archives name them (``0012_c3_f0001234.jpg``)."""
    rng = np.random.default_rng(seed)
    names = {"duke": ("DukeMTMC-reID", "bounding_box_test", "query", (24, 60)),
             "veri": ("VeRi", "image_test", "image_query", (50, 40))}
    top, g_dir, q_dir, size = names[kind]
    for sub, counts in ((g_dir, gallery), (q_dir, query)):
        folder = root / top / sub
        folder.mkdir(parents=True, exist_ok=True)
        for identity, count in counts.items():
            for j in range(count):
                _noise_image(folder / f"{identity:04d}_c{j % 8 + 1}_f{j:07d}.jpg", rng, size)
    (root / top / "bounding_box_train" if kind == "duke" else root / top / "image_train").mkdir(exist_ok=True)
    return root
