"""The reference recipes reproduce TiF's published configuration (docs/reference-parity.md).

Each expected value is read from the reference code (github yue-zhongqi/tif); where a behaviour is
checked, the expectation is computed here independently, the way the reference code computes it.
"""

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sd_configs import SD2_BASE_UNET, SD2_TEXT, SD15_TEXT, SD15_UNET

from diti_sd.lora import ClassAdapters, StackedLoRALinear
from diti_sd.recipes import load_recipe
from diti_sd.scoring import Schedule
from diti_sd.timesteps import tif_distance, tif_weights
from diti_sd.training.optim import ClassAdamW

# The values every reference recipe shares (recipes/_tif.yaml), pinned on each of the four: a recipe that
# overrode one would drift from the reference unnoticed. {db} / {tip} name the data set's reference configs.
REFERENCE_RECIPES = {"fgvc-aircraft": {"db": "fgvc", "tip": "fgvc"}, "isic2019": {"db": "isic2019", "tip": "isic2019"},
                     "duke": {"db": "duke_v2", "tip": "duke"}, "veri": {"db": "veri", "tip": "veri"}}
SHARED_VALUES = [
    ("model", "stabilityai/stable-diffusion-2-base", "lora/train_finegrain_dreambooth.py MODEL_IDS['2.0']"),
    ("prompt.token", "hta", "lora/training_examples.py rare_token='hta'"),
    ("lora.targets", ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj"],
     "lora/lora_diffusion/lora.py UNET_DEFAULT_TARGET_REPLACE: the linears of Attention and GEGLU"),
    ("lora.feed_forward", False, "lora/lora_diffusion/lora.py: ff.net.2 is under no target module"),
    ("lora.text_targets", ["q_proj", "k_proj", "v_proj", "out_proj"],
     "lora/train_lora_dreambooth.py target_replace_module=['CLIPAttention']"),
    ("lora.init", "normal", "lora/lora_diffusion/lora.py normal_(std=1/r)"),
    ("lora.alpha", None, "lora/lora_diffusion/lora.py scale=1.0"),
    ("fit.lr", 1e-4, "lora/train_finegrain_dreambooth.py --learning_rate"),
    ("fit.text_lr", 5e-5, "lora/train_finegrain_dreambooth.py --learning_rate_text"),
    ("fit.weight_decay", 1e-2, "lora/train_lora_dreambooth.py --adam_weight_decay"),
    ("fit.grad_clip", 1.0, "lora/train_lora_dreambooth.py --max_grad_norm"),
    ("fit.prior", True, "lora/train_finegrain_dreambooth.py --with_prior_preservation"),
    ("fit.prior_weight", 1.0, "lora/train_lora_dreambooth.py --prior_loss_weight"),
    ("fit.prior_images", 100, "lora/training_examples.py num_class_images"),
    ("fit.prior_prompt", "generic", "lora/train_lora_dreambooth.py: prior images sampled and denoised under --class_prompt"),
    ("fit.prior_sample_steps", 50, "StableDiffusionPipeline default, lora/train_lora_dreambooth.py"),
    ("fit.prior_guidance", 7.5, "StableDiffusionPipeline default, lora/train_lora_dreambooth.py"),
    ("fit.mixed_precision", "fp16", "lora/train_finegrain_dreambooth.py --mixed_precision fp16"),
    ("fit.brightness", 0.2, "lora/train_lora_dreambooth.py ColorJitter(0.2, 0.1)"),
    ("fit.contrast", 0.1, "lora/train_lora_dreambooth.py ColorJitter(0.2, 0.1)"),
    ("fit.t_min", 0, "lora/train_lora_dreambooth.py randint(0, T)"),
    ("fit.t_max", 1000, "lora/train_lora_dreambooth.py randint(0, T)"),
    ("fit.latent", "sample", "lora/train_lora_dreambooth.py latent_dist.sample()"),
    ("fit.rescale_unet", 0.6, "lora/train_lora_dreambooth.py tune_lora_scale(pipeline.unet, 0.6)"),
    ("fit.rescale_text", 0.7, "lora/train_lora_dreambooth.py tune_lora_scale(pipeline.text_encoder, 0.7)"),
    ("fit.dropout", 0.0, "lora/train_lora_dreambooth.py inject_trainable_lora: dropout_p default 0.0"),
    ("fit.shift", 0, "lora/train_lora_dreambooth.py DreamBoothDataset: no translation"),
    ("fit.coarse_swap", 0.0, "lora/train_lora_dreambooth.py DreamBoothDataset: instance images as they are"),
    ("fit.coarse_swap_auto", False, "lora/train_finegrain_dreambooth.py: one fit per class"),
    ("fit.coarse_swap_premise", False, "lora/train_lora_dreambooth.py DreamBoothDataset: instance images as they are"),
    ("fit.mask_loss", False, "lora/train_lora_dreambooth.py: F.mse_loss over the whole latent"),
    ("fit.swap_background", "coarse", "lora/train_lora_dreambooth.py DreamBoothDataset: instance images as they are"),
    ("fit.early_stop_every", 0, "lora/train_lora_dreambooth.py: a fixed number of steps"),
    ("gpu_dtype", "fp16", "inference/configs/dreambooth/{db}.yaml dtype float16"),
    ("score.weighting", "tif", "inference/inference_examples.py test_weight_t='tif'"),
    ("score.unet_scale", 0.6, "inference/configs/dreambooth/{db}.yaml unet_lora_scale"),
    ("score.text_scale", 0.7, "inference/configs/dreambooth/{db}.yaml text_lora_scale"),
    ("score.text_dropout", 0.1, "inference/methods/lora_diffusion/lora.py LoraInjectedLinear dropout_p=0.1"),
    ("score.t_min", 0, "inference/methods/dreambooth.py eval_prob_adaptive_diffclf"),
    ("score.t_max", 1000, "inference/methods/dreambooth.py eval_prob_adaptive_diffclf"),
    ("score.cells", "all", "inference/methods/dreambooth.py eval_error: the MSE over the whole latent"),
    ("baselines.augment_passes", 10, "inference/configs/tip/{tip}.yaml augment_epoch"),
    ("baselines.init_alpha", 5.0, "inference/configs/tipf/{tip}.yaml init_alpha"),
    ("baselines.init_beta", 1.0, "inference/configs/tipf/{tip}.yaml init_beta"),
    ("baselines.search_scale", [30.0, 30.0], "inference/configs/tip/{tip}.yaml search_scale"),
    ("baselines.search_step", [200, 20], "inference/configs/tip/{tip}.yaml search_step"),
    ("baselines.tipf_epochs", 20, "inference/configs/tipf/{tip}.yaml train_epochs"),
    ("baselines.tipf_lr", 1e-3, "inference/configs/tipf/{tip}.yaml lr"),
    ("baselines.tipf_epoch", "last", "inference/run_finegrain.py: best_acc never updated, the last epoch kept"),
]

# (recipe, dotted key, reference value, where the reference sets it)
TIF_VALUES = [
    *[(name, key, value, where.format(**configs))
      for name, configs in REFERENCE_RECIPES.items() for key, value, where in SHARED_VALUES],
    ("fgvc-aircraft", "prompt.template", "a photo of a {token} {name}, a type of aircraft.", "lora/training_examples.py templates, add_class_name"),
    ("fgvc-aircraft", "prompt.generic", "a photo of an aircraft", "lora/training_examples.py class_prompts"),
    ("fgvc-aircraft", "lora.rank", 16, "lora/training_examples.py lora_rank=16"),
    ("fgvc-aircraft", "lora.text_rank", 16, "lora/train_lora_dreambooth.py text LoRA r=lora_rank"),
    ("fgvc-aircraft", "fit.crop", "none", "lora/train_lora_dreambooth.py Resize(512), no crop, batch 1"),
    ("fgvc-aircraft", "score.rounds", [[20, 20], [50, 10], [100, 5], [500, 1]], "inference/configs/dreambooth/fgvc.yaml"),
    ("fgvc-aircraft", "dataset.metric", "accuracy", "inference/configs/dreambooth/fgvc.yaml: no metric, acc"),
    ("fgvc-aircraft", "dataset.crop_banner", False, "inference/datasets/fgvc.py (banner kept)"),
    ("fgvc-aircraft", "baselines.tip_templates", ["a photo of a {}, a type of aircraft."], "inference/datasets/fgvc.py template"),
    ("fgvc-aircraft", "baselines.zeroshot_templates", ["a photo of a {}, a type of aircraft."],
     "inference/methods/zs_clip.py: the data set's template (inference/datasets/fgvc.py)"),
    ("fgvc-aircraft", "baselines.val_protocol", "full", "inference/methods/tip_adaptor.py: the whole val split"),
    ("fgvc-aircraft", "baselines.clip_weight", 1.0, "inference/methods/tip_adaptor.py (no clip_weight in fgvc.yaml)"),
    ("isic2019", "lora.rank", 8, "lora/training_examples.py lora_rank=8"),
    ("isic2019", "lora.text_rank", 8, "lora/train_lora_dreambooth.py text LoRA r=lora_rank"),
    ("isic2019", "prompt.template", "a high quality dermoscopic image of {token} {name}.", "lora/training_examples.py"),
    ("isic2019", "prompt.generic", "a high quality dermoscopic image.", "lora/training_examples.py class_prompts"),
    ("isic2019", "score.rounds", [[128, 4], [256, 2], [500, 1]], "inference/configs/dreambooth/isic2019.yaml"),
    ("isic2019", "dataset.metric", "macro-f1", "inference/configs/dreambooth/isic2019.yaml metric: f1"),
    ("isic2019", "fit.crop", "center", "inference/process_isic.py (512 centre crops)"),
    ("isic2019", "baselines.tip_templates", ["a high quality dermoscopic image of {}."], "inference/datasets/isic2019.py"),
    ("duke", "prompt.template", "a photo of person {token} captured by surveillance camera.", "lora/training_examples.py"),
    ("duke", "prompt.use_class_name", False, "lora/training_examples.py add_class_name=False"),
    ("duke", "prompt.generic", "a photo of a person captured by surveillance camera.", "lora/training_examples.py"),
    ("duke", "lora.rank", 16, "lora/training_examples.py"),
    ("duke", "lora.text_rank", 16, "lora/train_lora_dreambooth.py text LoRA r=lora_rank"),
    ("duke", "score.rounds", [[32, 50], [128, 20], [256, 5], [500, 1]], "inference/configs/dreambooth/duke_v2.yaml"),
    ("duke", "dataset.metric", "accuracy", "inference/configs/dreambooth/duke_v2.yaml: no metric, acc"),
    ("duke", "baselines.clip_weight", 0.0, "inference/configs/tip/duke.yaml clip_weight"),
    ("duke", "baselines.tip_templates", ["a photo of {}."], "inference/datasets/duke.py template"),
    ("veri", "prompt.template", "a photo of car {token} captured by surveillance camera.", "lora/training_examples.py"),
    ("veri", "prompt.use_class_name", False, "lora/training_examples.py add_class_name=False"),
    ("veri", "prompt.generic", "a photo of a car captured by surveillance camera.", "lora/training_examples.py"),
    ("veri", "lora.rank", 16, "lora/training_examples.py"),
    ("veri", "lora.text_rank", 16, "lora/train_lora_dreambooth.py text LoRA r=lora_rank"),
    ("veri", "score.rounds", [[32, 50], [128, 20], [256, 5], [500, 1]], "inference/configs/dreambooth/veri.yaml"),
    ("veri", "dataset.metric", "accuracy", "inference/configs/dreambooth/veri.yaml: no metric, acc"),
    ("veri", "baselines.clip_weight", 0.0, "inference/configs/tip/veri.yaml clip_weight"),
    ("veri", "baselines.tip_templates", ["a photo of car {} captured by surveillance camera."], "inference/datasets/veri.py"),
    *[(name, "fit.crop", "none", "inference/process_duke.py, process_veri.py: padded squares, trained whole")
      for name in ("duke", "veri")],
]


def _get(recipe, dotted):
    node = recipe
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("name, key, expected, where", TIF_VALUES, ids=[f"{r[0]}:{r[1]}" for r in TIF_VALUES])
def test_recipe_value_matches_the_reference(name, key, expected, where):
    assert _get(load_recipe(name), key) == expected, where


# inference/inference_examples.py: lora_iteration of the published runs by shots 1 / 2 / 4 / 8 / 16
SCORED_ITERATIONS = {"fgvc-aircraft": (60, 100, 200, 700, 1000), "isic2019": (150, 200, 500, 700, 800),
                     "duke": (200, 250, 400, 700, 1000), "veri": (150, 200, 400, 500, 1000)}
FILTERS = ("all-2", "all-2", "all-2", "all-1", "none")  # unet_lora_filter, the same for all four


@pytest.mark.parametrize("name", sorted(SCORED_ITERATIONS))
def test_blocks_and_scored_iteration_by_shots(name):
    recipe = load_recipe(name)
    for i, shots in enumerate((1, 2, 4, 8, 16)):
        assert recipe.filter_for(shots) == FILTERS[i]
        assert recipe.steps_for(shots) == SCORED_ITERATIONS[name][i], (name, shots)


# lora/training_examples.py `stats`: (save_freq f, save_start s) by shots 1 / 2 / 4 / 8 / 16
REFERENCE_SAVES = {"fgvc-aircraft": ((30, 60), (50, 100), (100, 200), (200, 300), (200, 400)),
                   "duke": ((50, 50), (50, 100), (100, 200), (100, 400), (200, 400)),
                   "veri": ((50, 50), (50, 100), (100, 200), (100, 400), (200, 400)),
                   "isic2019": ((50, 50), (50, 100), (100, 200), (100, 200), (100, 400))}


def reference_training_scales(steps, save_steps, save_start):
    """The (UNet, text) LoRA scale of each training step, as lora/train_lora_dreambooth.py's loop sets it:
    the save block runs after a step when ``global_step - last_save >= save_steps and global_step >=
    save_start`` and calls tune_lora_scale(0.6 / 0.7) on the live models, which nothing undoes."""
    scale, global_step, last_save, out = (1.0, 1.0), 0, 0, []
    for _ in range(steps):
        out.append(scale)
        global_step += 1
        if save_steps and global_step - last_save >= save_steps and global_step >= save_start:
            scale, last_save = (0.6, 0.7), global_step
    return out


@pytest.mark.parametrize("name", sorted(REFERENCE_SAVES))
def test_training_scale_switches_where_the_reference_first_saves(name):
    from diti_sd.training.loop import train_scales

    recipe = load_recipe(name)
    for i, shots in enumerate((1, 2, 4, 8, 16)):
        steps = recipe.steps_for(shots)
        ours = [train_scales(recipe.fit, recipe.rescale_after(shots), s) for s in range(steps)]
        assert ours == reference_training_scales(steps, *REFERENCE_SAVES[name][i]), (name, shots)
    if name == "fgvc-aircraft":  # the published 8- and 16-shot checkpoints trained 400 and 600 steps rescaled
        assert [sum(s != (1.0, 1.0) for s in (train_scales(recipe.fit, recipe.rescale_after(k), i)
                                                for i in range(recipe.steps_for(k)))) for k in (1, 2, 4, 8, 16)] \
            == [0, 0, 0, 400, 600]


def test_fit_trains_at_the_switched_scales_after_the_first_save():
    from diti_sd.recipes import FitConfig, LoraConfig
    from diti_sd.testing.tiny import build_tiny_backbone
    from diti_sd.training.loop import FitData, fit_adapters

    backbone = build_tiny_backbone(seed=0)
    adapters = ClassAdapters(backbone, 2, LoraConfig(rank=2, text_rank=2))
    seen = []
    predict = backbone.predict

    def recording_predict(x_t, t, context):
        seen.append((adapters.unet_router.scale, adapters.text_router.scale))
        return predict(x_t, t, context)

    backbone.predict = recording_predict
    images = [(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(c)) * 255).to(torch.uint8)
              for c in range(2)]
    cfg = FitConfig(prior=False, batch_size=2, checkpoint_every=0, rescale_unet=0.6, rescale_text=0.7)
    fit_adapters(backbone, adapters, FitData(images, ["a hta", "a sks"], "a photo"), cfg, 5, rescale_after=2,
                 progress=False)
    assert seen == [(1.0, 1.0)] * 2 + [(0.6, 0.7)] * 3


# ------------------------------------------------------------------ LoRA modules on the real UNet
REFERENCE_FILTERS = {  # lora/train_lora_dreambooth.py: regexes searched in the full module name
    "all-2": ["down_blocks.2", "up_blocks.1", "mid_block"],
    "all-1": ["down_blocks.(1|2)", "up_blocks.(1|2)", "mid_block"],
    "none": None,
}


def reference_unet_targets(unet, filter_name):
    """What lora_diffusion's inject_trainable_lora adapts: every nn.Linear under a module of class
    Attention / CrossAttention / GEGLU, kept by the reference's filter regexes."""
    names = set()
    for ancestor_name, ancestor in unet.named_modules():
        if type(ancestor).__name__ not in ("Attention", "CrossAttention", "GEGLU"):
            continue
        for sub, module in ancestor.named_modules():
            if isinstance(module, torch.nn.Linear):
                names.add(f"{ancestor_name}.{sub}")
    regexes = REFERENCE_FILTERS[filter_name]
    return {n for n in names if regexes is None or any(re.search(r, n) for r in regexes)}


def meta_backbone(unet_config, text_config):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():
        unet = UNet2DConditionModel(**unet_config)
        text = CLIPTextModel(CLIPTextConfig(**text_config))
    return SimpleNamespace(unet=unet, text_encoder=text, device=torch.device("meta"))


@pytest.fixture(scope="module", params=["sd2-base", "sd1.5"])
def real_architecture(request):
    configs = {"sd2-base": (SD2_BASE_UNET, SD2_TEXT), "sd1.5": (SD15_UNET, SD15_TEXT)}
    unet_config, text_config = configs[request.param]
    return meta_backbone(unet_config, text_config), text_config["num_hidden_layers"]


@pytest.mark.parametrize("shots, n_transformer_blocks", [(1, 6), (4, 6), (8, 11), (16, 16)])
def test_adapted_modules_are_the_references_on_the_real_unet(real_architecture, shots, n_transformer_blocks):
    backbone, text_layers = real_architecture
    recipe = load_recipe("fgvc-aircraft")
    filter_name = recipe.filter_for(shots)
    expected = reference_unet_targets(backbone.unet, filter_name)
    adapters = ClassAdapters(backbone, 2, recipe.lora, block_filter=filter_name)
    try:
        assert set(adapters.unet_names) == expected
        # per transformer block: q, k, v, out of self- and cross-attention, and GEGLU's projection
        assert len(adapters.unet_names) == 9 * n_transformer_blocks
        assert not any(n.endswith("ff.net.2") or "proj_in" in n for n in adapters.unet_names)
        # the text encoder: q, k, v, out of every CLIPAttention
        assert len(adapters.text_names) == 4 * text_layers
        assert all(n.endswith(("q_proj", "k_proj", "v_proj", "out_proj")) for n in adapters.text_names)
    finally:
        adapters.remove()


def test_all_2_adapts_six_transformer_blocks_on_sd2():
    backbone = meta_backbone(SD2_BASE_UNET, SD2_TEXT)
    names = ClassAdapters(backbone, 2, load_recipe("fgvc-aircraft").lora, block_filter="all-2").unet_names
    blocks = {n.split(".transformer_blocks")[0] for n in names}
    assert blocks == {"down_blocks.2.attentions.0", "down_blocks.2.attentions.1", "up_blocks.1.attentions.0",
                      "up_blocks.1.attentions.1", "up_blocks.1.attentions.2", "mid_block.attentions.0"}


def test_lora_init_draws_a_with_std_one_over_rank():
    base = torch.nn.Linear(1280, 640)
    g = torch.Generator().manual_seed(0)
    normal = StackedLoRALinear(base, 4, 16, 16.0, None, g, init="normal")
    kaiming = StackedLoRALinear(base, 4, 16, 16.0, None, g, init="kaiming")
    assert abs(float(normal.lora_A.detach().std()) - 1 / 16) < 0.002
    # peft's default is 2-4x smaller
    assert float(normal.lora_A.detach().std()) > 2 * float(kaiming.lora_A.detach().std())
    assert float(normal.lora_B.abs().max()) == 0.0


# ------------------------------------------------------------------ scoring stages
def reference_stages(n_samples, T=1000):
    """inference/methods/dreambooth.py eval_prob_adaptive_diffclf, transcribed: the t per stage."""
    max_n = max(n_samples)
    start = T // max_n // 2
    t_to_eval = list(range(start, T, T // max_n))[:max_n]
    evaluated, out = set(), []
    for n in n_samples:
        cur = t_to_eval[len(t_to_eval) // n // 2 :: len(t_to_eval) // n][:n]
        cur = [t for t in cur if t not in evaluated]
        evaluated.update(cur)
        out.append(cur)
    return out


@pytest.mark.parametrize("rounds", [
    [[20, 20], [50, 10], [100, 5], [500, 1]],  # fgvc
    [[32, 50], [128, 20], [256, 5], [500, 1]],  # duke_v2, veri
    [[128, 4], [256, 2], [500, 1]],  # isic2019
])
def test_stage_timesteps_are_the_references_grid(rounds):
    assert Schedule(rounds).stages == reference_stages([r[0] for r in rounds])


def test_reference_schedule_costs_5550_unet_calls_for_100_classes():
    rounds = load_recipe("fgvc-aircraft").score.rounds
    assert [len(s) for s in Schedule(rounds).stages] == [20, 50, 80, 350]
    assert Schedule(rounds).budget(100) == 100 * 20 + 20 * 50 + 10 * 80 + 5 * 350 == 5550


# ------------------------------------------------------------------ TiF's per-t weight
def reference_tif_weights(d, T=1000):
    """inference/methods/diffusion_classifier.py get_tif_weights, transcribed."""
    alphas_cumprod = (1 - torch.linspace(0.0001, 0.02, T)).cumprod(dim=0)
    scale = alphas_cumprod.sqrt() / (2 * (2 * (1 - alphas_cumprod)).sqrt())
    w = np.zeros(T)
    for i in range(T):
        fine = 1 - math.erf(scale[i].item() * d)
        coarse = 1e-18
        for j in range(500):
            coarse += 1 - math.erf(scale[i].item() * (d + 1 + j))
        w[i] = fine / (fine + coarse)
    return w


@pytest.mark.parametrize("d", [2.5, 10.0, 31.0])
def test_tif_weight_matches_the_reference_formula(d):
    ours, ref = tif_weights(d), reference_tif_weights(d)
    assert np.allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert np.array_equal(ours == 0, ref == 0)


def test_tif_weight_is_a_band_for_d_10():
    w = tif_weights(10.0)
    assert np.flatnonzero(w > 0)[0] == 170 and w[:170].max() == 0
    assert 180 <= int(w.argmax()) <= 190
    assert abs(w[300] - 0.838) < 1e-3 and w[999] < w[500] < w[300]


def test_tif_distance_matches_the_reference_loop():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(12, 4, 3, 5, generator=g)
    labels = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # inference/methods/diffusion_classifier.py find_finegrain_edit, transcribed
    targets = torch.tensor(labels)
    same = targets[:, None] == targets
    mins = []
    for h in range(3):
        for w in range(5):
            dist = torch.cdist(latents[:, :, h, w][None], latents[:, :, h, w][None]) ** 2
            dist[0, same] = 100
            mins.append(np.percentile(dist.numpy(), 0.1))
    assert tif_distance(latents, labels) == pytest.approx(float(np.sqrt(np.array(mins).sum())), rel=1e-6)


# ------------------------------------------------------------------ resuming on another device
def test_optimizer_state_follows_its_parameters_device_after_load():
    # the fit checkpoint is loaded to the CPU; torch.optim leaves a state entry named "step" there,
    # and ClassAdamW.step indexes it with the parameter's device (a CUDA index on a GPU: a crash)
    cpu = torch.nn.Parameter(torch.zeros(3, 4))
    opt = ClassAdamW([cpu], lr=1e-2)
    cpu.grad = torch.ones(3, 4)
    opt.active_classes = torch.tensor([0, 2])
    opt.step()
    saved = opt.state_dict()
    moved = torch.nn.Parameter(torch.zeros(3, 4, device="meta"))
    resumed = ClassAdamW([moved], lr=1e-2)
    resumed.load_state_dict(saved)
    state = resumed.state[moved]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
    assert all(v.device == moved.device and v.dtype == torch.float32 for v in state.values())
