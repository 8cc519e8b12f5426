"""Pins of reference elements (docs/reference-parity.md) that are behaviours or defaults, not recipe values.

Each expectation is computed here the way the reference (github yue-zhongqi/tif) computes it: torchvision
transforms on PIL images, the reference's ranking and search loops transcribed, its optimiser settings.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from diti_sd.preprocessing import uint8_pixels

BICUBIC, BILINEAR = transforms.InterpolationMode.BICUBIC, transforms.InterpolationMode.BILINEAR


def noise_image(w, h, seed=0):
    # noise: any change of kernel or crop window moves most pixels by many levels
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def as_array(pixels):
    return pixels.permute(1, 2, 0).numpy().astype(int)


# ------------------------------------------------------------------ scoring transform
# 100 x 67 at 32: the long side is 47.76, which torchvision's Resize truncates to 47 (rounding gives 48), and
# CenterCrop's offset 7.5 rounds to 8 (flooring gives 7): a window a pixel off moves every noise pixel.
@pytest.mark.parametrize("w, h", [(96, 64), (64, 96), (100, 67), (67, 100)])
def test_scoring_pixels_are_a_bicubic_resize_and_centre_crop(w, h):
    image = noise_image(w, h)
    ours = as_array(uint8_pixels([image], 32)[0])
    # inference/methods/diffusion_classifier.py get_transform: Resize(512, BICUBIC), CenterCrop(512) on PIL
    reference = np.asarray(transforms.Compose([transforms.Resize(32, BICUBIC), transforms.CenterCrop(32)])(image))
    # PIL rounds to uint8 between its horizontal and vertical passes: a level or two, on a few pixels
    assert np.abs(ours - reference).max() <= 2 and np.abs(ours - reference).mean() < 0.3
    # the tolerance tells the kernels apart: bilinear is tens of levels off
    bilinear = np.asarray(transforms.Compose([transforms.Resize(32, BILINEAR), transforms.CenterCrop(32)])(image))
    assert np.abs(ours - bilinear.astype(int)).max() > 10


def test_scoring_latent_is_the_posterior_mean_times_0_18215(tiny_backbone):
    from diti_sd.classifier import DiTiFewShotClassifier

    image = noise_image(96, 64)
    # the classifier's own encode (what score_images noises), on a stand-in for the fitted state it checks
    fitted = SimpleNamespace(backbone_=tiny_backbone, _check_fitted=lambda: None)
    latents = DiTiFewShotClassifier.encode(fitted, [image])
    pixels = uint8_pixels([image], tiny_backbone.resolution).float() / 127.5 - 1
    with torch.no_grad():
        posterior = tiny_backbone.vae.encode(pixels).latent_dist
    # inference/methods/diffusion_classifier.py eval: latent_dist.mean, then x0 *= 0.18215 (hard-coded there;
    # ours reads the VAE config's factor, which is 0.18215 in SD 2 base's config and in the tiny VAE's)
    assert torch.allclose(latents, posterior.mean * 0.18215, atol=1e-6)
    assert not torch.allclose(latents, posterior.sample(torch.Generator().manual_seed(0)) * 0.18215, atol=1e-3)


# ------------------------------------------------------------------ weighted ranking
def reference_prediction(errors, stages, keeps, w):
    """inference/methods/diffusion_classifier.py eval_prob_adaptive, transcribed: after each stage the
    classes are ranked by -(error x w(t)).mean() over the t they saw, top-k kept."""
    remaining, seen = list(range(errors.shape[0])), []
    for new, keep in zip(stages, keeps):
        seen += new
        scores = [-(errors[c, seen] * w[seen]).mean() for c in remaining]
        remaining = [remaining[i] for i in torch.topk(torch.tensor(scores), k=keep).indices.tolist()]
    return remaining[0]


def test_ranking_follows_the_tif_weighted_mean_not_the_plain_one(monkeypatch):
    from diti_sd.recipes import ScoreConfig
    from diti_sd.scoring import Schedule, engine, simulate_rounds
    from diti_sd.timesteps import tif_weights

    d, rounds = 10.0, [[20, 2], [50, 1]]
    w = tif_weights(d)  # zero below t = 170, a band at 170-400, fading above (pinned in test_reference_parity)
    t = np.arange(1000)
    errors = np.ones((3, 1000))  # class x t
    errors[0] += np.where(t < 170, -0.6, 0.05)  # best where w = 0: wins the plain mean
    errors[1] += np.where((t >= 170) & (t < 400), -0.1, 0.05)  # best in the band: wins the weighted mean
    errors[2] += np.where(t >= 400, -0.04, 0.0)  # best where w fades: wins a plain mean over [170, 1000)
    schedule = Schedule(rounds)
    expected = reference_prediction(errors, schedule.stages, schedule.keeps, w)
    # the errors tell the rules apart: uniform, a hard window and TiF's weight each pick another class
    assert expected == 1
    assert reference_prediction(errors, schedule.stages, schedule.keeps, np.ones(1000)) == 0
    assert reference_prediction(errors, schedule.stages, schedule.keeps, (t >= 170).astype(float)) == 2

    # the live staged pass, with the UNet's errors replaced by the table (class, t)
    monkeypatch.setattr(engine, "batch_errors", lambda b, a, lat, ctx, tt, noise, ii, cc, pp, s, cells=None:
                        errors[cc.numpy(), tt[pp].numpy()])
    cfg = ScoreConfig(rounds=rounds, weighting="tif")
    result = engine.score_latents(None, None, torch.zeros(1, 4, 2, 2), torch.zeros(3, 1, 1), cfg, tif_d=d)
    assert result.predictions.tolist() == [expected]
    # the replay of dense errors (budget curves, synthetic benchmark) decides the same
    columns = np.array(schedule.timesteps)
    predicted, _ = simulate_rounds(errors[None][:, :, columns], columns, schedule, w[columns])
    assert predicted.tolist() == [expected]


# ------------------------------------------------------------------ training transform (fit.crop: none)
@pytest.mark.parametrize("w, h", [(96, 64), (64, 96), (100, 67), (67, 100)])
def test_whole_image_training_pixels_are_a_bilinear_resize(w, h):
    image = noise_image(w, h, seed=1)
    ours = as_array(uint8_pixels([image], 32, crop=False)[0])
    # lora/train_lora_dreambooth.py DreamBoothDataset: Resize(resolution, BILINEAR) on PIL, no crop
    reference = np.asarray(transforms.Resize(32, BILINEAR)(image)).astype(int)
    assert ours.shape == reference.shape == (32 * h // min(w, h), 32 * w // min(w, h), 3)  # truncated, not rounded
    assert np.abs(ours - reference).max() <= 2 and np.abs(ours - reference).mean() < 0.3
    assert np.abs(ours - np.asarray(transforms.Resize(32, BICUBIC)(image)).astype(int)).max() > 10


# ------------------------------------------------------------------ OpenCLIP backbone
def test_openclip_backbone_defaults_to_vit_h_14_laion2b(monkeypatch):
    import diti_sd.evaluation.harness as harness
    from diti_sd.cli import build_parser
    from diti_sd.evaluation.config import EvalConfig

    # inference/methods/zs_clip.py: create_model_and_transforms('ViT-H-14', pretrained='laion2b_s32b_b79k')
    seen = []

    class Stop(Exception):
        pass

    def capture(cfg):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(harness, "Evaluation", capture)
    args = build_parser().parse_args(["eval", "--dataset", "fgvc-aircraft", "--data-root", "d", "--out", "o"])
    with pytest.raises(Stop):
        args._run(args)  # what `diti-sd eval` hands the harness when no --clip-* flag is given
    assert seen[0].encoder_specs[0] == "openclip:ViT-H-14:laion2b_s32b_b79k"
    assert EvalConfig("d", "r", "o").encoder_specs[0] == "openclip:ViT-H-14:laion2b_s32b_b79k"


# ------------------------------------------------------------------ Tip-Adapter
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_cache_augmentation_is_the_references_random_resized_crop_and_flip():
    from diti_sd.baselines.encoders import FrozenEncoder

    preprocess = transforms.Compose([transforms.Resize(224, BICUBIC), transforms.CenterCrop(224),
                                     transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])
    encoder = FrozenEncoder("", "openclip", "ViT-H-14", "random", torch.nn.Identity(), preprocess, 224)
    ours = encoder.augmented()
    # inference/methods/zs_clip.py train_tfm, the cache's transform
    reference = transforms.Compose([
        transforms.RandomResizedCrop(size=224, scale=(0.5, 1), interpolation=BICUBIC),
        transforms.RandomHorizontalFlip(p=0.5), transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])
    image = noise_image(300, 200)
    for seed in range(6):  # both draw their window and flip from the global generator: same draws, same views
        torch.manual_seed(seed)
        view = ours(image)
        torch.manual_seed(seed)
        assert torch.equal(view, reference(image)), seed


def reference_search(features, labels, keys, values, clip_logits, search_scale, search_step):
    """inference/methods/utils.py search_hp, transcribed: beta outer, alpha inner, best_acc updated on a
    strict improvement only (the first best kept)."""
    betas = [i * (search_scale[0] - 0.1) / search_step[0] + 0.1 for i in range(search_step[0])]
    alphas = [i * (search_scale[1] - 0.1) / search_step[1] + 0.1 for i in range(search_step[1])]
    best_acc, best, scores = 0, None, []
    for beta in betas:
        for alpha in alphas:
            cache_logits = ((-1) * (beta - beta * (features @ keys.T))).exp() @ values
            acc = float(((clip_logits + cache_logits * alpha).argmax(1).numpy() == labels).mean())
            scores.append(((alpha, beta), acc))
            if acc > best_acc:
                best_acc, best = acc, (alpha, beta)
    return best, scores


def test_tip_adapter_search_keeps_the_first_of_tied_best_points():
    from diti_sd.baselines.tip_adapter import search_alpha_beta

    g = torch.Generator().manual_seed(4)
    keys = torch.nn.functional.normalize(torch.randn(6, 6, generator=g), dim=-1)
    values = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float()
    features = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1)
    labels = np.arange(8) % 3
    clip_logits = torch.randn(8, 3, generator=g) * 2
    scale, step = (10.0, 10.0), (10, 5)
    expected, scores = reference_search(features, labels, keys, values, clip_logits, scale, step)
    tied = [point for point, acc in scores if acc == max(a for _, a in scores)]
    # several points tie at the best, and the first is neither the grid's first point nor the last of them
    assert len(tied) > 2 and tied[0] == expected and tied[-1] != expected and scores[0][0] != expected
    alpha, beta, _ = search_alpha_beta(features, labels, keys, values, clip_logits, scale, step)
    assert (alpha, beta) == pytest.approx(expected, abs=1e-12)


def test_tip_adapter_f_trains_with_adamw_eps_1e_4_cosine_and_batch_256(monkeypatch):
    from diti_sd.baselines.tip_adapter import cache_model, train_tip_adapter_f

    steps_lr, optimisers, batches = [], [], []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimisers.append(self)

        def step(self, closure=None):
            steps_lr.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    g = torch.Generator().manual_seed(0)
    n, epochs, lr = 300, 2, 1e-3
    labels = np.arange(n) % 3
    views = [torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1) for _ in range(epochs + 1)]
    keys, values = cache_model(views[:1], labels, 3)
    text = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)

    def clip_logits_of(f):
        batches.append(len(f))
        return 100 * f @ text.T

    train_tip_adapter_f(views[1:], labels, keys, values, clip_logits_of, views[0][:6], labels[:6],
                        clip_logits_of(views[0][:6]), epochs=epochs, lr=lr)
    # inference/methods/tip_adaptor.py: AdamW(lr, eps=1e-4); train_loader_F batch_size=256
    assert len(optimisers) == 1 and optimisers[0].defaults["eps"] == 1e-4
    assert batches[1:] == [256, n - 256] * epochs
    # CosineAnnealingLR(T_max = epochs x batches per epoch), stepped once per batch
    total = epochs * math.ceil(n / 256)
    assert steps_lr == pytest.approx([lr * (1 + math.cos(math.pi * k / total)) / 2 for k in range(total)])


# ------------------------------------------------------------------ data protocol defaults
def test_duke_keeps_150_identities_and_isic_scores_600_per_class(tmp_path):
    from diti_sd.data import load_dataset
    from diti_sd.data.isic import CLASSNAMES

    # Duke (inference/datasets/duke.py): 151 identities qualify (16 gallery images each); identity 151 has
    # the fewest queries, so the 150-way task drops it. Empty files: only their names are read here.
    duke = tmp_path / "DukeMTMC-reID"
    for sub in ("bounding_box_test", "query"):
        (duke / sub).mkdir(parents=True)
    for identity in range(1, 152):
        for j in range(16):
            (duke / "bounding_box_test" / f"{identity:04d}_c1_f{j:07d}.jpg").touch()
        for j in range(1 if identity == 151 else 2):
            (duke / "query" / f"{identity:04d}_c2_f{j:07d}.jpg").touch()
    classes = load_dataset("duke", tmp_path, "train").classnames
    assert len(classes) == 150 and "person 151" not in classes
    # ISIC (inference/process_isic.py): at most 600 test images scored per class
    for label, name in enumerate(CLASSNAMES):
        folder = tmp_path / "isic2019" / "test" / f"{label}_{name.replace(' ', '_')}"
        folder.mkdir(parents=True)
        for j in range(601 if label == 0 else 1):
            (folder / f"{j:04d}.jpg").touch()
    assert load_dataset("isic2019", tmp_path, "test").labels.count(0) == 600


@pytest.mark.parametrize("kind", ["isic2019", "duke", "veri"])
def test_archive_images_are_processed_as_tifs_scripts_wrote_their_files(tmp_path, kind):
    """inference/process_{isic,duke,veri}.py: the geometry, then ``image.save("....jpg")``, PIL's JPEG default
    (quality 75); training and scoring read those files. From the official archives the readers give the same
    pixels; a mask takes the geometry alone."""
    from fakes import make_fake_isic, make_fake_reid

    from diti_sd.data import load_duke, load_isic2019, load_veri
    from diti_sd.data.images import load_image
    from diti_sd.data.masks import load_mask
    from diti_sd.image_preparation import pad_square, person_crop_pad

    def isic_geometry(image):  # the limiting side to 512 by Lanczos, the other truncated, the central 512
        w, h = image.size
        size = (512, int(h * 512 / w)) if w < h else (int(w * 512 / h), 512)
        left, top = (size[0] - 512) / 2, (size[1] - 512) / 2
        return image.resize(size, Image.LANCZOS).crop((left, top, left + 512, top + 512))

    if kind == "isic2019":
        data, geometry = load_isic2019(make_fake_isic(tmp_path / "src"), "train"), isic_geometry
    elif kind == "duke":
        root = make_fake_reid(tmp_path / "src", kind, {7: 2}, {7: 1})
        data, geometry = load_duke(root, "train", n_classes=1, min_gallery=2), person_crop_pad
    else:
        data, geometry = load_veri(make_fake_reid(tmp_path / "src", kind, {7: 2}, {7: 1}), "train"), pad_square
    source = Image.open(data.images[0]).convert("RGB")

    def as_tif_wrote_it(image):
        image.save(tmp_path / "as_tif_wrote_it.jpg")  # the reference's call: no quality given
        with Image.open(tmp_path / "as_tif_wrote_it.jpg") as written:
            return np.asarray(written.convert("RGB"))

    expected, got = as_tif_wrote_it(geometry(source)), np.asarray(data.load(0))
    assert got.shape == expected.shape and np.array_equal(got, expected)
    assert not np.array_equal(got, np.asarray(geometry(source)))  # the JPEG is not a no-op
    if kind == "isic2019":  # the fakes are landscape with an even excess: a portrait with an odd one (half pixels)
        portrait = Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 31, 3), dtype=np.uint8))
        assert np.array_equal(np.asarray(load_image(portrait, prepare=data.prepare)), as_tif_wrote_it(
            isic_geometry(portrait)))
    # a mask is framed as its image is, with no JPEG in between: a faint 1-px checker about the threshold (110 / 145)
    # keeps its cells through the geometry of Duke and VeRi, and a JPEG at 75 would flatten it to one side
    w, h = source.size
    mask = Image.fromarray((110 + 35 * (np.add.outer(np.arange(h), np.arange(w)) % 2)).astype(np.uint8))
    framed = load_mask(mask, prepare=data.prepare)
    assert torch.equal(framed, torch.from_numpy(np.asarray(geometry(mask.convert("RGB")).convert("L")) > 127))
