"""The synthetic benchmark's data: its streams, tasks, captions, base domains and the accident's strength."""


import numpy as np
import pytest
import torch

from diti_sd.backbone import load_backbone
from diti_sd.benchmarks.synthetic.data import (
    COLOUR_NAMES,
    TEXTURES,
    SyntheticSpec,
    attribute_caption,
    background_class_dependence,
    background_of,
    make_split,
    texture,
)
from diti_sd.benchmarks.synthetic.streams import SyntheticSeed
from diti_sd.errors import ConfigError
from diti_sd.recipes import load_recipe

SPEC = SyntheticSpec(size=16)


def test_every_experiment_draws_a_seeds_streams_from_the_same_generator_seeds():
    # the offsets are what keeps the sealed test streams (1000 + s) apart from the tuning ones (5000 + s)
    run = SyntheticSeed(seed=7, shots=2, spec=SPEC)
    for name, split, offset in [("train", "train", 0), ("decorrelated", "decorrelated", 1000),
                                ("correlated", "correlated", 1000), ("val", "train", 5000),
                                ("oracle val", "val", 5000), ("second val", "train", 6000),
                                ("second oracle val", "val", 6000), ("generic", "generic", 7000),
                                ("held-out shots", "train", 8000), ("shots without the shortcut", "val", 9000)]:
        expected = make_split(SPEC, split, 2, offset + 7)
        got = run.stream(name, 2)
        assert got.labels == expected.labels and all(torch.equal(a, b) for a, b in zip(got.images, expected.images))
    assert run.train.labels == run.stream("train", 2).labels and len(run.train.images) == 2 * SPEC.n_classes
    recipe = load_recipe("synthetic", ["fit.prior_images=20"])
    assert len(run.prior(recipe)) == 20  # 20 // 5 classes, 4 generic images per class
    with pytest.raises(ConfigError, match="unknown stream 'test'"):
        run.stream("test", 2)


@pytest.mark.parametrize("split, low, high", [("train", 0.99, 1.0), ("correlated", 0.99, 1.0),
                                              ("decorrelated", 0.0, 0.25), ("val", 0.0, 0.25)])
def test_background_follows_the_class_only_where_it_should(split, low, high):
    data = make_split(SPEC, split, 40, seed=3)
    assert low <= background_class_dependence(data, SPEC) <= high
    assert sorted(set(data.labels)) == list(range(SPEC.n_classes))


def test_validation_is_drawn_as_a_users_is_and_the_shots_can_change_backgrounds():
    run = SyntheticSeed(seed=3, shots=8, spec=SPEC)
    # a user's validation images come from where the shots came from: the shortcut follows the class
    assert background_class_dependence(run.stream("val", 10), SPEC) > 0.99
    # independent up to sampling noise: with 200 images Cramér's V of independent draws sits near 0.14
    assert background_class_dependence(run.stream("oracle val", 40), SPEC) < 0.25
    # the shots with the next class's background: the same objects and textures, another class's colour
    shots, moved = run.train, run.stream("train, other backgrounds", 8)
    assert shots.labels == moved.labels
    for a, b, label in zip(shots.images, moved.images, shots.labels):
        assert background_of(a) == label and background_of(b) == (label + 1) % SPEC.n_classes
        inside = (a - a[:, :1, :1]).abs().sum(0) > 0.05  # the object: off the background colour
        assert torch.equal(a[:, inside], b[:, inside])
    # the control that prices the shortcut: k shots per class whose background is independent of the class,
    # drawn apart from every validation and test stream
    control = SyntheticSeed(seed=3, shots=8, spec=SPEC, train_stream="shots without the shortcut")
    assert control.train.labels == shots.labels and background_class_dependence(control.train, SPEC) < 0.5
    assert not any(torch.equal(x, y) for x, y in zip(control.train.images, run.stream("oracle val", 8).images))
    with pytest.raises(ConfigError, match="train_stream must be one of"):
        SyntheticSeed(seed=3, shots=8, spec=SPEC, train_stream="decorrelated")


def test_the_texture_is_the_class_and_splits_are_reproducible():
    data = make_split(SPEC, "decorrelated", 6, seed=1)
    again = make_split(SPEC, "decorrelated", 6, seed=1)
    other = make_split(SPEC, "decorrelated", 6, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(data.images, again.images))
    assert not all(torch.equal(a, b) for a, b in zip(data.images, other.images))
    for image, label in zip(data.images, data.labels):
        grey = (image[0] == image[1]) & (image[1] == image[2])  # object pixels; backgrounds are saturated
        centred = (image[0] - SPEC.object_level)[grey].numpy()
        scores = [np.corrcoef(centred, texture(kind, 16)[grey.numpy()])[0, 1] for kind in TEXTURES[: SPEC.n_classes]]
        assert int(np.argmax(scores)) == label and max(scores) > 0.95


@pytest.mark.parametrize("task, split, shortcut_follows", [
    ("texture", "train", True), ("texture", "decorrelated", False),
    ("colour", "train", True), ("colour", "decorrelated", False), ("colour", "val", False),
    ("shape", "train", True), ("shape", "correlated", True), ("shape", "decorrelated", False), ("shape", "val", False),
])
def test_each_task_makes_its_class_attribute_and_its_shortcut(monkeypatch, task, split, shortcut_follows):
    """texture: class = texture, shortcut = background; colour: class = background, shortcut = texture,
    shape is noise; shape: class = shape, shortcut = texture, background is noise."""
    import diti_sd.benchmarks.synthetic.data as synthetic

    drawn = []
    original = synthetic.render

    def recording(spec, label, background, shape, extent, center, texture_kind=None):
        drawn.append((label, background, shape, texture_kind))
        return original(spec, label, background, shape, extent, center, texture_kind)

    monkeypatch.setattr(synthetic, "render", recording)
    spec = SyntheticSpec(size=16, task=task, n_classes=3)
    data = make_split(spec, split, 30, seed=4)
    names = {"texture": TEXTURES, "colour": COLOUR_NAMES, "shape": synthetic.SHAPES}[task]
    assert [d[0] for d in drawn] == data.labels and data.classnames == list(names[:3])
    if task == "texture":
        cls, shortcut, noise = [d[3] for d in drawn], [d[1] for d in drawn], [d[2] for d in drawn]
        assert cls == [TEXTURES[y] for y in data.labels]
    elif task == "colour":
        cls, shortcut, noise = [d[1] for d in drawn], [TEXTURES.index(d[3]) for d in drawn], [d[2] for d in drawn]
        assert cls == data.labels
    else:
        cls, shortcut, noise = [d[2] for d in drawn], [TEXTURES.index(d[3]) for d in drawn], [d[1] for d in drawn]
        assert cls == data.labels
    assert (shortcut == data.labels) == shortcut_follows
    if not shortcut_follows:  # every class meets every value of the shortcut
        assert len(set(zip(data.labels, shortcut))) == 9
    assert len(set(zip(data.labels, noise))) == 9
    with pytest.raises(ConfigError, match="n_classes must be in 2..3 for the shape task"):
        SyntheticSpec(task="shape", n_classes=5)


def test_attribute_captions_name_the_texture_and_the_background():
    spec = SyntheticSpec(size=16)
    train = make_split(spec, "train", 2, 0)  # background c for class c
    assert [attribute_caption(x, y, spec) for x, y in zip(train.images, train.labels)][:5] == [
        f"a photo of a {TEXTURES[c]} pattern on a {COLOUR_NAMES[c]} background" for c in range(5)]
    generic = make_split(spec, "generic", 20, 0)
    colours = {attribute_caption(x, y, spec).split(" on a ")[1] for x, y in zip(generic.images, generic.labels)}
    assert len(colours) == spec.n_classes  # independent of the texture: every background appears


def test_base_training_conditions_each_sample_on_its_own_caption():
    """Captions that are all the same prompt train exactly what that prompt alone trains (same draws);
    captions naming the texture train something else."""
    from diti_sd.benchmarks.synthetic.base_model import train_unet
    from diti_sd.testing.tiny import build_tiny_backbone

    spec = SyntheticSpec(size=16)
    data = make_split(spec, "generic", 4, 0)
    pixels = torch.stack(data.images) * 2 - 1

    def weights(**kwargs):
        backbone = build_tiny_backbone(seed=0, resolution=16, latent_factor=2)
        train_unet(backbone, pixels, "a photo", steps=3, batch_size=4, progress=False, **kwargs)
        return torch.cat([p.flatten() for p in backbone.unet.parameters()])

    same = ["a photo"] * len(data)
    named = [attribute_caption(x, y, spec) for x, y in zip(data.images, data.labels)]
    assert torch.equal(weights(), weights(captions=same))
    assert not torch.allclose(weights(), weights(captions=named))


def test_shipped_tiny_base_loads_through_the_normal_loader():
    from pathlib import Path

    import diti_sd

    folder = Path(diti_sd.__file__).parent / "assets" / "tiny-base"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 10 * 2**20
    backbone = load_backbone("builtin:tiny-base", device="cpu")
    assert backbone.resolution == 16 and backbone.latent_shape == (4, 8, 8)
    assert (folder / "base_recipe.yaml").is_file()
    latents = backbone.encode_images(torch.stack(make_split(SPEC, "val", 1, 0).images) * 2 - 1)
    assert latents.shape == (5, 4, 8, 8) and 0.5 < float(latents.std()) < 2.0  # scaling factor fitted


def test_a_base_domain_with_other_textures_never_shows_a_class_texture():
    spec = SyntheticSpec(size=16, generic_textures=["dots", "coarse-vertical"])
    generic = make_split(spec, "generic", 6, seed=0)
    assert set(generic.labels) == {0, 1}
    captions = {attribute_caption(x, y, spec).split(" pattern")[0] for x, y in zip(generic.images, generic.labels)}
    assert captions == {"a photo of a dots", "a photo of a coarse-vertical"}
    # the object's pixels follow the caption's texture, never one of the class textures
    patterns = {k: texture(k, 16) for k in TEXTURES}
    for image, label in zip(generic.images, generic.labels):
        grey = image[0].numpy()
        inside = np.isclose(grey, image[1].numpy()) & np.isclose(image[1].numpy(), image[2].numpy())  # grey object
        best = max(patterns, key=lambda k: abs(np.corrcoef(grey[inside], patterns[k][inside])[0, 1]))
        assert best == spec.generic_textures[label]
    # the benchmark's own generic split (the prior images) is untouched by the field
    assert make_split(SyntheticSpec(size=16), "generic", 2, seed=0).labels == make_split(
        SyntheticSpec(size=16, generic_textures=[]), "generic", 2, seed=0).labels
    with pytest.raises(ConfigError, match="generic_textures must name textures"):
        SyntheticSpec(generic_textures=["zigzag"])


def test_the_many_class_variant_has_24_distinct_fine_textures_and_five_shortcut_colours():
    from diti_sd.benchmarks.synthetic.data import MANY_TEXTURES, texture

    patterns = [texture(kind, 16) for kind in MANY_TEXTURES]
    assert len(MANY_TEXTURES) == 24 and all(abs(p.mean()) < 0.07 for p in patterns)
    assert len({p.tobytes() for p in patterns}) == 24
    spec = SyntheticSpec(size=16, task="many", n_classes=24)
    train = make_split(spec, "train", 1, seed=2)
    assert [background_of(image) for image in train.images] == [label % 5 for label in train.labels]
    assert {background_of(image) for image in make_split(spec, "decorrelated", 4, seed=2).images} <= set(range(5))


def test_a_partial_shortcut_breaks_the_accident_on_the_rest_and_leaves_rate_one_as_it_was():
    full, partial = SyntheticSpec(size=16), SyntheticSpec(size=16, shortcut_rate=0.5)
    n = 40  # per class

    def follows(spec, split):
        data = make_split(spec, split, n, seed=3)
        return np.mean([background_of(x) == y for x, y in zip(data.images, data.labels)])

    assert follows(full, "train") == 1.0 and follows(full, "correlated") == 1.0
    # half follow; of the other half a fifth draw their own class's background by chance: about 0.6
    for split in ("train", "correlated"):
        assert 0.5 <= follows(partial, split) <= 0.7
    assert follows(SyntheticSpec(size=16, shortcut_rate=0.0), "train") < 0.35
    # rate 1 draws nothing extra: every stream of the benchmark stays as it was before the field existed
    # (pixel sums taken at e41b959), and the splits drawn independently of the class ignore the rate
    before = {"train": (3862.1000467687845, 28902.500361084938), "correlated": (3840.9000489264727, 28737.600359618664),
              "val": (3861.100051984191, 29081.0004042387), "decorrelated": (4169.1000317931175, 31307.300258487463)}
    for split, sums in before.items():
        x = torch.stack(make_split(full, split, 2, seed=5).images).double()
        assert (float(x.sum()), float((x * torch.arange(16).double()).sum())) == pytest.approx(sums, rel=1e-12)
    for split in ("decorrelated", "val"):
        assert all(torch.equal(x, y) for x, y in zip(make_split(full, split, 2, seed=5).images,
                                                     make_split(partial, split, 2, seed=5).images))
    with pytest.raises(ConfigError, match="shortcut_rate must be in"):
        SyntheticSpec(shortcut_rate=1.5)


def test_generic_images_can_be_held_to_some_backgrounds_and_nothing_else_changes():
    full, held = SyntheticSpec(size=16), SyntheticSpec(size=16, generic_backgrounds=[0, 3])
    generic = make_split(held, "generic", 20, seed=4)
    colours = [background_of(x) for x in generic.images]
    assert set(colours) == {0, 3} and 0.3 < colours.count(0) / len(colours) < 0.7  # both, drawn evenly
    assert {background_of(x) for x in make_split(full, "generic", 20, seed=4).images} == set(range(5))
    for split in ("train", "val", "decorrelated", "correlated"):  # only the generic split is held
        assert all(torch.equal(x, y) for x, y in zip(make_split(full, split, 3, seed=4).images,
                                                     make_split(held, split, 3, seed=4).images))
    with pytest.raises(ConfigError, match="generic_backgrounds must index the 5 background colours"):
        SyntheticSpec(generic_backgrounds=[5])
    with pytest.raises(ConfigError, match="the colour task's is another"):
        SyntheticSpec(task="colour", generic_backgrounds=[0])


def test_detailed_backgrounds_carry_one_pattern_per_colour_and_leave_the_rest_as_it_was():
    from diti_sd.benchmarks.synthetic.data import BACKGROUND_DETAILS, object_masks

    flat, spec = SyntheticSpec(size=16), SyntheticSpec(size=16, background_detail=0.1)
    for split in ("train", "val", "generic"):
        plain, detailed = make_split(flat, split, 2, seed=4), make_split(spec, split, 2, seed=4)
        assert plain.labels == detailed.labels  # the same draws: only the background's pixels change
        for a, b, mask in zip(plain.images, detailed.images, object_masks(spec, split, 2, 4)):
            assert torch.equal(a[:, mask], b[:, mask])
            background = background_of(a)
            assert background_of(b, spec.background_detail) == background  # the colour still reads as it did
            difference = (b - a)[0][~mask].numpy()
            pattern = texture(BACKGROUND_DETAILS[background], 16)[~mask.numpy()]
            assert np.allclose(difference, 0.1 * pattern, atol=1e-6)  # that colour's own stripes, nothing else
            assert np.allclose((b - a)[1:][:, ~mask], (b - a)[0][~mask])  # grey stripes: the same on every channel
    patterns = [texture(kind, 16) for kind in BACKGROUND_DETAILS]
    assert len({p.tobytes() for p in patterns}) == len(BACKGROUND_DETAILS)
    assert not {p.tobytes() for p in patterns} & {texture(kind, 16).tobytes() for kind in TEXTURES}
    # at the largest amplitude every one of the eight colours is still read right
    top, eight = SyntheticSpec(size=16, n_classes=8, background_detail=0.2), SyntheticSpec(size=16, n_classes=8)
    read = [background_of(x, 0.2) for x in make_split(top, "val", 6, seed=5).images]
    assert read == [background_of(x) for x in make_split(eight, "val", 6, seed=5).images] and len(set(read)) == 8
    with pytest.raises(ConfigError, match=r"background_detail must be in \[0, 0.2\]"):
        SyntheticSpec(background_detail=-0.1)
    with pytest.raises(ConfigError, match="needs the texture task"):
        SyntheticSpec(task="colour", background_detail=0.1)


def test_class_detail_puts_another_classs_texture_on_each_background_and_nothing_else():
    from diti_sd.benchmarks.synthetic.data import object_masks

    flat = SyntheticSpec(size=16)
    spec = SyntheticSpec(size=16, background_detail=0.1, background_detail_kind="class")
    for split in ("train", "decorrelated", "generic"):
        plain, detailed = make_split(flat, split, 2, seed=4), make_split(spec, split, 2, seed=4)
        assert plain.labels == detailed.labels
        for a, b, mask in zip(plain.images, detailed.images, object_masks(spec, split, 2, 4)):
            assert torch.equal(a[:, mask], b[:, mask])  # the object as it was
            background = background_of(a)
            assert background_of(b, spec.background_detail) == background
            pattern = texture(TEXTURES[(background + 1) % 5], 16)[~mask.numpy()]  # the next class's own texture
            assert np.allclose((b - a)[0][~mask].numpy(), 0.1 * pattern, atol=1e-6)
    # on the shots the background (so its texture) follows the class, as the colour does
    shots = make_split(spec, "train", 2, seed=4)
    assert all(background_of(x, 0.1) == y for x, y in zip(shots.images, shots.labels))
    with pytest.raises(ConfigError, match="background_detail_kind must be one of thin, class"):
        SyntheticSpec(background_detail=0.1, background_detail_kind="coarse")
    with pytest.raises(ConfigError, match="at most 5 classes, got 6"):
        SyntheticSpec(n_classes=6, background_detail=0.1, background_detail_kind="class")
