"""eval/attention_masks.py: the study fits the library's attention masks from the caption vocabulary (ours)."""

from __future__ import annotations

import torch
from helpers import eval_script

from diti_sd.data.masks import grow_mask


def test_the_vocabulary_sets_masks_are_fitted_shrunk_and_not_each_under_a_key_naming_them(monkeypatch):
    script = eval_script("attention_masks")
    seen, asked = {}, []

    def read(self, backbone, images):  # each shot's exact object, grown by a pixel: a map a bit too wide
        asked.append((self.prompts, self.shrink))
        run = script.SyntheticSeed.for_recipe(script.load_recipe("synthetic"), self.seed, 2)
        wide = [grow_mask(m, 1) for m in run.train_masks]
        return [grow_mask(m, -1) for m in wide] if self.shrink else wide

    def rows(masks, qualities, seeds, shots, val_per_class, cache, key_extra, name, swap, background_detail,
             background_detail_kind):
        seen[name] = (masks, key_extra, qualities)
        seen.setdefault("swaps", []).append(swap)
        seen.setdefault("details", []).append((background_detail, background_detail_kind))
        return {"rows": {}}

    monkeypatch.setattr(script.AttentionMasks, "__call__", read)
    monkeypatch.setattr(script.adapter_masks, "masked_swap_rows", rows)
    monkeypatch.setattr(script, "load_backbone", lambda *a, **k: None)
    out = script.main(["--seeds", "11", "--smoke", "--shots", "2"])
    vocabulary = tuple(out["prompt sets"]["caption vocabulary"])
    assert len(vocabulary) > 3 and all("{}" in p for p in vocabulary)
    assert (vocabulary, True) in asked and (vocabulary, False) in asked
    plain, key, quality = seen["attention masks"]
    small, small_key, _ = seen["attention masks, shrunk"]
    assert key(11)["shrunk by"] == 0 and small_key(11)["shrunk by"] == 1 and quality[0]["background kept"] > 0
    assert key(11)["masks sha"] == script.masks_sha(plain[11]) != small_key(11)["masks sha"]
    assert all(bool((s <= p).all()) and int(s.sum()) < int(p.sum()) for s, p in zip(small[11], plain[11]))
    assert set(out["mask quality per prompt set"]) == {f"{s}{x}" for s in out["prompt sets"]
                                                        for x in ("", ", shrunk")}
    assert out["mask quality per prompt set"]["caption vocabulary"][0]["object lost"] == 0  # grown: none lost
    assert isinstance(small[11][0], torch.Tensor)
    assert seen["swaps"] == [script.adapter_masks.SWAP] * 2  # the masked swap as the first study fitted it
    seen.clear()
    out = script.main(["--seeds", "11", "--smoke", "--shots", "2", "--swap-background", "whole"])
    assert seen["swaps"] == [[*script.adapter_masks.SWAP, "fit.swap_background=whole"]] * 2 == [out["swap"]] * 2
    assert seen["details"] == [(0.0, "thin")] * 2


def test_with_detailed_backgrounds_the_masks_are_read_off_the_detailed_shots_and_kept_apart(monkeypatch, tmp_path):
    script = eval_script("attention_masks")
    read_from, files, details = [], [], []

    def read(self, backbone, images, progress=False, indices=None):
        read_from.append(images[0].numpy().tobytes())
        return [torch.ones(16, 16, dtype=torch.bool) for _ in images]

    def kept(spec, backbone, images, path=None, resume=False):
        files.append(path.name)
        return read(spec, backbone, images), None

    monkeypatch.setattr(script.AttentionMasks, "__call__", read)
    monkeypatch.setattr(script, "resolve_masks", kept)
    monkeypatch.setattr(script.adapter_masks, "masked_swap_rows", lambda *a, background_detail, background_detail_kind,
                        **k: details.append((background_detail, background_detail_kind)) or {"rows": {}})
    monkeypatch.setattr(script, "load_backbone", lambda *a, **k: None)
    out = script.main(["--seeds", "11", "--smoke", "--shots", "2", "--background-detail", "0.1", "--cache",
                       str(tmp_path)])
    recipe = script.load_recipe("synthetic")
    detailed = script.SyntheticSeed.for_recipe(recipe, 11, 2, background_detail=0.1).train.images[0].numpy().tobytes()
    flat = script.SyntheticSeed.for_recipe(recipe, 11, 2).train.images[0].numpy().tobytes()
    assert detailed != flat and set(read_from) == {detailed}
    assert details == [(0.1, "thin")] * 2 and out["background_detail"] == 0.1
    assert all("-detail0.1-" in name for name in files)
    # another class's texture on the backgrounds: read off those shots, kept under their own name
    read_from.clear(), files.clear(), details.clear()
    script.main(["--seeds", "11", "--smoke", "--shots", "2", "--background-detail", "0.1", "--background-detail-kind",
                 "class", "--cache", str(tmp_path)])
    classy = script.SyntheticSeed.for_recipe(recipe, 11, 2, background_detail=0.1, background_detail_kind="class")
    assert set(read_from) == {classy.train.images[0].numpy().tobytes()} != {detailed}
    assert details == [(0.1, "class")] * 2 and all("-detail0.1-class-" in name for name in files)


def test_the_study_keeps_each_reading_of_a_seeds_shots_and_reads_it_back(monkeypatch, tmp_path):
    from types import SimpleNamespace

    script = eval_script("attention_masks")
    calls = []

    def read(self, backbone, images, progress=False, indices=None):
        calls.append(self.upscale)
        return [torch.rand(4, 4) > 0.5 for _ in images]

    monkeypatch.setattr(script.AttentionMasks, "__call__", read)
    from PIL import Image

    base = SimpleNamespace(fingerprint=lambda: "base", resolution=4)
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(3)]
    spec = script.AttentionMasks("pattern", seed=11)
    first = script.read_masks(spec, base, images, tmp_path, 11, 8)
    again = script.read_masks(spec, base, images, tmp_path, 11, 8)
    assert calls == [1] and all(torch.equal(a, b) for a, b in zip(first, again))
    script.read_masks(script.AttentionMasks("pattern", seed=11, upscale=2), base, images, tmp_path, 11, 8)
    script.read_masks(spec, base, images, tmp_path, 12, 8)  # another seed's shots
    script.read_masks(spec, base, images, None, 11, 8)  # no cache: read
    assert calls == [1, 2, 1, 1]
