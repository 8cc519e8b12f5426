"""Masks read off the base's cross-attention to a word naming the object (``AttentionMasks``, ``diti-sd fit
--attention-masks``; ours, after DAAM)."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from fakes import make_fake_fgvc
from PIL import Image
from sd_configs import SD2_BASE_UNET, SD15_UNET

from diti_sd import attention_masks as am
from diti_sd.attention_masks import AttentionMasks, layer_shape, otsu, recording, word_maps, word_positions
from diti_sd.cli import main
from diti_sd.data.masks import MaskError
from diti_sd.errors import ConfigError
from diti_sd.seeding import torch_generator


def _pixels(backbone, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, backbone.resolution, backbone.resolution, generator=g) * 2 - 1


def test_otsu_splits_two_levels_between_them():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.0, 0.05, 300), rng.normal(1.0, 0.05, 100)])
    threshold = otsu(values)
    assert values[:300].max() < threshold < values[300:].min() and 0.3 < threshold < 0.7  # mid-gap


def test_a_bad_word_prompt_or_time_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="a word that names the object"):
        AttentionMasks(" ")
    with pytest.raises(ConfigError, match="exactly one {} for the word"):
        AttentionMasks("aircraft", ["a photo of an aircraft"])
    with pytest.raises(ConfigError, match="time-steps"):
        AttentionMasks("aircraft", times=[50, -1])
    assert AttentionMasks("aircraft", ["a {}", "the {}"]).unet_calls(10) == 10 * 2 * 5
    for bad in (0, 5, 1.5, True):
        with pytest.raises(ConfigError, match="upscale must be an integer from 1 to 4"):
            AttentionMasks("aircraft", upscale=bad)


def test_the_word_is_found_by_its_tokens_and_a_missing_one_is_refused(tiny_backbone):
    where = word_positions(tiny_backbone, "a photo of a pattern", "pattern")
    ids = tiny_backbone.tokenize(["a photo of a pattern"])[0].tolist()
    assert [ids[i] for i in where] == tiny_backbone.tokenizer("pattern", add_special_tokens=False).input_ids
    assert where[0] > 4  # after the start token and "a photo of a"
    with pytest.raises(MaskError, match="'aircraft' is not among the tokens"):
        word_positions(tiny_backbone, "a photo of a pattern", "aircraft")


def test_each_layers_shape_follows_the_latents_halvings():
    assert layer_shape((8, 8), 64) == (8, 8) and layer_shape((8, 8), 16) == (4, 4)
    assert layer_shape((5, 7), 35) == (5, 7) and layer_shape((5, 7), 12) == (3, 4) and layer_shape((5, 7), 4) == (2, 2)
    with pytest.raises(ValueError):
        layer_shape((8, 8), 10)


@pytest.mark.parametrize("config", [SD2_BASE_UNET, SD15_UNET], ids=["sd2-base", "sd1.5"])
def test_on_the_real_unet_every_cross_attention_layer_is_recorded_at_a_shape_it_names(config):
    """On the real architecture (meta device: names and shapes, no weights): the recorder sits on the 16
    cross-attention layers and no self-attention one, every map it records has a layer shape of an odd-sided
    latent (a wide photo at 512: 64 x 85, halved rounding up), and the UNet's processors come back."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    kept = dict(unet.attn_processors)
    latent, rows = (64, 85), 2
    with recording(unet) as recorder:
        recorded = [name for name, p in unet.attn_processors.items() if p is recorder]
        recorder.where = [5]
        unet(torch.empty(rows, 4, *latent, device="meta"), torch.zeros(rows, dtype=torch.long, device="meta"),
             encoder_hidden_states=torch.empty(rows, 77, config["cross_attention_dim"], device="meta"),
             return_dict=False)
    assert len(recorded) == 16 and all(".attn2." in name for name in recorded)
    assert len(recorder.maps) == 16 and all(m.shape[0] == rows for m in recorder.maps)
    shapes = Counter(layer_shape(latent, m.shape[1]) for m in recorder.maps)
    assert shapes == {(64, 85): 5, (32, 43): 5, (16, 22): 5, (8, 11): 1}  # 8 x 11: the mid block
    assert all(unet.attn_processors[k] is p for k, p in kept.items())


def test_reading_the_maps_changes_no_prediction_and_puts_the_processors_back(tiny_backbone):
    latents = torch.randn(2, *tiny_backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 300)
    context = tiny_backbone.encode_prompts(["a photo of a pattern"]).expand(2, -1, -1)
    with torch.no_grad():
        before = tiny_backbone.predict(latents, t, context)
    kinds = {k: type(p) for k, p in tiny_backbone.unet.attn_processors.items()}
    contexts = tiny_backbone.encode_prompts(["a photo of a pattern"])
    where = [word_positions(tiny_backbone, "a photo of a pattern", "pattern")]
    maps = word_maps(tiny_backbone, _pixels(tiny_backbone, 2), contexts, where, (300,),
                     [torch_generator(0, i) for i in range(2)])
    size = tiny_backbone.resolution
    assert maps.shape == (2, size, size) and bool((maps >= 0).all()) and float(maps.std()) > 0
    assert {k: type(p) for k, p in tiny_backbone.unet.attn_processors.items()} == kinds
    with torch.no_grad():
        assert torch.equal(tiny_backbone.predict(latents, t, context), before)


def test_the_word_and_every_other_token_share_the_attention(tiny_backbone):
    """Each query's probabilities over the tokens sum to 1, so the word's map and the rest's add up to one per
    cross-attention layer, time-step and prompt at every pixel: heads, layers and upsampling read as documented."""
    prompts = ["a photo of a pattern", "a photo of a pattern on a background"]
    times = (100, 600)
    contexts = tiny_backbone.encode_prompts(prompts)
    word = [word_positions(tiny_backbone, p, "pattern") for p in prompts]
    rest = [[i for i in range(contexts.shape[1]) if i not in w] for w in word]
    pixels = _pixels(tiny_backbone)
    gens = lambda: [torch_generator(1, i) for i in range(3)]  # noqa: E731
    a = word_maps(tiny_backbone, pixels, contexts, word, times, gens())
    b = word_maps(tiny_backbone, pixels, contexts, rest, times, gens())
    layers = sum(name.endswith("attn2.processor") for name in tiny_backbone.unet.attn_processors)
    assert torch.allclose(a + b, torch.full_like(a, layers * len(times) * len(prompts)), atol=1e-4)
    assert float(a.mean()) < float(b.mean())
    one = word_maps(tiny_backbone, pixels[1:2], contexts, word, times, gens()[1:2])  # no image's map hangs on another
    assert torch.allclose(one[0], a[1], atol=1e-5)


def test_masks_are_the_map_above_otsu_shrunk_by_half_a_latent_cell_at_each_images_size(tiny_backbone, monkeypatch):
    r, f = tiny_backbone.resolution, tiny_backbone.vae_scale_factor
    k = f // 2

    def right_half(b, pixels, *a):  # the object: the right half of what the UNet sees, up to its cut edge
        m = torch.zeros(len(pixels), *pixels.shape[-2:])
        m[..., pixels.shape[-1] // 2:] = 3.0
        m[..., : r // 4, :] = 0.0  # and not the top rows
        return m + 0.1

    monkeypatch.setattr(am, "word_maps", right_half)
    wide = 2 * r + f - 1  # not a multiple of the latent's factor: its last f - 1 columns are cut for the UNet
    images = [Image.new("RGB", (r, r)), Image.new("RGB", (wide, r)), Image.new("RGB", (r, 2 * r))]
    masks = AttentionMasks("pattern", ["a photo of a {}"])(tiny_backbone, images)
    assert k >= 1 and [m.shape for m in masks] == [(r, r), (r, wide), (2 * r, r)]
    expect = [torch.zeros(m.shape, dtype=torch.bool) for m in masks]
    for e, left in zip(expect, (r // 2, wide // f * f // 2, r // 2)):
        e[r // 4 + k:, left + k:] = True  # shrunk inside the image, not from its border; the cut columns kept
    assert all(torch.equal(m, e) for m, e in zip(masks, expect))
    unshrunk = AttentionMasks("pattern", ["a photo of a {}"], shrink=False)(tiny_backbone, images[:1])
    assert int(unshrunk[0].sum()) > int(masks[0].sum())


def test_upscaled_the_maps_are_read_at_that_multiple_in_smaller_batches(tiny_backbone, monkeypatch):
    r, f = tiny_backbone.resolution, tiny_backbone.vae_scale_factor
    seen = []

    def centre(b, pixels, *a):  # the object: the middle half of what the UNet sees
        seen.append(tuple(pixels.shape))
        m = torch.zeros(len(pixels), *pixels.shape[-2:])
        h, w = pixels.shape[-2:]
        m[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
        return m

    monkeypatch.setattr(am, "word_maps", centre)
    images = [Image.new("RGB", (r, r)) for _ in range(5)]
    plain = AttentionMasks("pattern", shrink=False)(tiny_backbone, images)
    assert seen == [(5, 3, r, r)]
    seen.clear()
    spec = AttentionMasks("pattern", shrink=False, upscale=2)
    finer = spec(tiny_backbone, images)
    assert seen == [(2, 3, 2 * r, 2 * r)] * 2 + [(1, 3, 2 * r, 2 * r)]  # 8 // 2 ** 2 images a call
    assert [m.shape for m in finer] == [(r, r)] * 5 and all(torch.equal(a, b) for a, b in zip(finer, plain))
    assert spec.record(5)["upscale"] == 2 and spec.unet_calls(5) == AttentionMasks("pattern").unet_calls(5)
    shrunk = AttentionMasks("pattern", upscale=2)(tiny_backbone, images[:1])[0]
    # half a latent cell at the read size is a quarter of one at the image's: less is taken off
    assert int(shrunk.sum()) > int(AttentionMasks("pattern")(tiny_backbone, images[:1])[0].sum())
    assert f >= 2


def test_a_resumed_fit_reads_back_the_masks_it_made(tiny_backbone, tmp_path, monkeypatch):
    spec = AttentionMasks("pattern", ["a photo of a {}"], times=(300,))
    images = [Image.new("RGB", (tiny_backbone.resolution,) * 2, (40 * i, 90, 200)) for i in range(2)]
    path = tmp_path / "attention-masks.pt"
    made, record = am.resolve_masks(spec, tiny_backbone, images, path=path)
    assert path.exists() and record["unet_calls"] == 2 and record["word"] == "pattern"

    def refuse(self, *a, **k):
        raise AssertionError("read again")

    monkeypatch.setattr(AttentionMasks, "__call__", refuse)
    again, _ = am.resolve_masks(spec, tiny_backbone, images, path=path, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(again, made))
    with pytest.raises(AssertionError, match="read again"):  # another reading, or no resume: made anew
        am.resolve_masks(AttentionMasks("pattern", times=(300,)), tiny_backbone, images, path=path, resume=True)
    with pytest.raises(AssertionError, match="read again"):
        am.resolve_masks(spec, tiny_backbone, images, path=path)
    with pytest.raises(AssertionError, match="read again"):  # other images of the same number
        am.resolve_masks(spec, tiny_backbone, images[::-1], path=path, resume=True)
    with pytest.raises(AssertionError, match="read again"):  # other noise
        am.resolve_masks(AttentionMasks("pattern", ["a photo of a {}"], times=(300,), seed=1), tiny_backbone, images,
                         path=path, resume=True)
    with pytest.raises(AssertionError, match="read again"):  # the same weights read at another resolution
        monkeypatch.setattr(tiny_backbone, "resolution", tiny_backbone.resolution * 2)
        am.resolve_masks(spec, tiny_backbone, images, path=path, resume=True)
    monkeypatch.setattr(tiny_backbone, "resolution", tiny_backbone.resolution // 2)
    assert am.resolve_masks([m.clone() for m in made], tiny_backbone, images)[1] is None  # given masks pass through


def test_a_wide_image_runs_through_the_unet_at_its_own_shape(tiny_backbone):
    r = tiny_backbone.resolution
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (r, r * 3 // 2 + 5, 3), dtype=np.uint8))
    mask = AttentionMasks("pattern", ["a photo of a {}"], times=(300,))(tiny_backbone, [image])[0]
    assert mask.shape == (r, r * 3 // 2 + 5) and 0 < int(mask.sum()) < mask.numel()


def test_on_the_shipped_base_the_masks_find_the_objects():
    """End to end on the shipped headline base and the benchmark's shots: the masks overlap each shot's own object
    far better than another shot's (the study: IoU about 0.6 over 10 seeds)."""
    from diti_sd.backbone import load_backbone
    from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
    from diti_sd.recipes import load_recipe

    recipe = load_recipe("synthetic")
    backbone = load_backbone(recipe.model, device="cpu", dtype=torch.float32, progress=False)
    run = SyntheticSeed.for_recipe(recipe, 11, 2)
    prompts = [f"a photo of a {t} {{}} on a {c} background" for t in ("dots", "coarse-vertical")
               for c in ("red", "green", "blue")]
    masks = AttentionMasks("pattern", prompts, seed=11)(backbone, run.train.images)
    exact = list(run.train_masks)

    def iou(a, b):
        return float((a & b).sum() / max(float((a | b).sum()), 1))

    own = np.mean([iou(m, e) for m, e in zip(masks, exact)])
    other = np.mean([iou(m, e) for m, e in zip(masks, exact[1:] + exact[:1])])
    assert own > 0.45 and own > other + 0.15


def test_fit_reads_the_masks_off_the_base_for_shots_and_validation(tmp_path, tiny_model_dir, capsys, swaps,
                                                                      monkeypatch):
    from diti_sd import DiTiFewShotClassifier

    given, fit, inner = {}, DiTiFewShotClassifier.fit, DiTiFewShotClassifier._fit_adapters
    monkeypatch.setattr(DiTiFewShotClassifier, "fit", lambda self, *a, **kw: given.update(kw) or fit(self, *a, **kw))
    monkeypatch.setattr(DiTiFewShotClassifier, "_fit_adapters",
                        lambda self, *a, **kw: given.update(read=kw["validation"]) or inner(self, *a, **kw))
    root = make_fake_fgvc(tmp_path / "data", per_split=2, n_classes=3, seed=3)
    fast = ["--set", "fit.steps=1", "--set", "fit.prior_images=2", "--set", "fit.prior_sample_steps=2",
            "--set", "score.rounds=[[2,2],[4,1]]", "--set", "fit.coarse_swap=1"]
    argv = ["fit", "--dataset", "fgvc-aircraft", "--data-root", str(root), "--model", str(tiny_model_dir),
            "--shots", "2", "--out", str(tmp_path / "out"), "--no-progress", "--attention-masks", "aircraft",
            "--mask-prompt", "a photo of an {}", "--mask-prompt", "an {} in the sky", "--mask-upscale", "2",
            "--no-mask-shrink", *fast]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    made = summary["masks"]["made"]
    assert made["from"] == "attention" and made["word"] == "aircraft" and made["unet_calls"] == 6 * 2 * 5
    assert made["upscale"] == 2 and summary["validation_masks_made"]["upscale"] == 2 and made["shrink"] is False
    assert summary["validation_masks_made"]["unet_calls"] == len(given["validation"][0]) * 2 * 5
    assert isinstance(given["masks"], AttentionMasks) and given["masks"].prompts == ("a photo of an {}",
                                                                                    "an {} in the sky")
    assert swaps and all(keep is not None for _, keep in swaps)  # the swap kept what the masks said
    images, _, masks = given["read"]  # the shortcut check gets each validation image's own mask, its size
    assert len(masks) == len(images) and all(m.dtype == torch.bool and tuple(m.shape) == (im.height, im.width)
                                             for m, im in zip(masks, (images[i] for i in range(len(images)))))
    assert (tmp_path / "out" / "attention-masks.pt").exists()
    assert Image.open(tmp_path / "out" / "attention_masks.png").size[0] > 100  # the masks drawn to look at


def test_the_attention_mask_flags_are_checked_before_any_work(tmp_path, capsys):
    argv = ["fit", "--dataset", "image-folder", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*argv, "--mask-prompt", "a {}"]) == 2
    assert "--mask-prompt is read only with --attention-masks" in capsys.readouterr().err
    assert main([*argv, "--attention-masks", "aircraft", "--mask-prompt", "a photo"]) == 2
    assert "exactly one {} for the word" in capsys.readouterr().err
    assert main([*argv, "--mask-upscale", "2"]) == 2
    assert "--mask-upscale is read only with --attention-masks" in capsys.readouterr().err
    assert main([*argv, "--no-mask-shrink"]) == 2
    assert "--no-mask-shrink is read only with --attention-masks" in capsys.readouterr().err
    for bad in ("9", "0"):
        assert main([*argv, "--attention-masks", "aircraft", "--mask-upscale", bad]) == 2
        assert "upscale must be an integer from 1 to 4" in capsys.readouterr().err
    assert main([*argv, "--mask-upscale", "0"]) == 2
    assert "--mask-upscale is read only with --attention-masks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--attention-masks", "aircraft", "--masks", str(tmp_path)])
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
