"""Speed and memory of the parts, on full-size SD 2 base architectures with random weights.

    python eval/bench_speed.py                 # SD 2 base shapes, 512 px, bf16 (a GPU)
    python eval/bench_speed.py --tiny          # the tiny test architecture on CPU: a smoke check
    python eval/bench_speed.py --encoder openclip:ViT-SO400M-14-SigLIP-384 --json speed.json

Weights are random (speed does not depend on their values) and built from config, so nothing is
downloaded. Speeds are compared as ratios measured side by side in this one run. Prints a table:
VAE encode, bare UNet forward, the UNet with 100 stacked class LoRAs, a scoring pass with its
projected time for a 3,333-image test set, and training steps (stacked multi-class batch vs one class
at a time), eager and, with --compile, compiled; with --encoder, a frozen image encoder's forward (an
OpenCLIP model without a tag has random weights). ``diti-sd eval --speed speed.json`` turns its report's
UNet calls and encoder forwards per test image into GPU-seconds with these rates.
"""

from __future__ import annotations

import argparse
import time

import torch

from diti_sd.backbone import Backbone
from diti_sd.files import write_json
from diti_sd.lora import ClassAdapters
from diti_sd.recipes import LoraConfig, ScoreConfig
from diti_sd.scoring import Schedule, score_latents
from diti_sd.training.optim import ClassAdamW

SD2_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    use_linear_projection=True,
)
SD2_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)


def build(tiny: bool, device, dtype) -> tuple[Backbone, int]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    if tiny:
        from diti_sd.testing.tiny import build_tiny_backbone

        bb = build_tiny_backbone(seed=0)
        return bb.to(device, dtype), bb.unet.config.cross_attention_dim
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD2_UNET)
    vae = AutoencoderKL(**SD2_VAE)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    bb = Backbone(vae, unet, torch.nn.Identity(), None, scheduler, model_id="sd2-base-arch-random", resolution=512)
    for m in (vae, unet):
        m.requires_grad_(False).eval()
    return bb.to(device, dtype), 1024


def timed(fn, device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny architecture on CPU (smoke check)")
    parser.add_argument("--batch", type=int, default=None, help="UNet batch (default 64; tiny: 16)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd UNet forwards")
    parser.add_argument("--encoder", default=None, help="also time this frozen encoder: openclip:MODEL or dinov2:ID")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batch = args.batch or (16 if args.tiny else 64)
    repeats = args.repeats or (2 if args.tiny else 10)
    bb, ctx_dim = build(args.tiny, device, dtype)
    c, h, w = bb.latent_shape
    rows = []

    def add(name, seconds, items, unit, **extra):
        rows.append({"part": name, "seconds": seconds, "per_s": items / seconds, "unit": unit, **extra})

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, c, h, w, generator=g).to(device, dtype)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    ctx = torch.randn(batch, 77, ctx_dim, generator=g).to(device, dtype)
    pixels = torch.randn(min(batch, 16), 3, bb.resolution, bb.resolution, generator=g).to(device, dtype)

    with torch.no_grad():
        add("VAE encode", timed(lambda: bb.vae.encode(pixels).latent_dist.mean, device, repeats), len(pixels),
            "images/s")
        bare = timed(lambda: bb.unet(x, t, encoder_hidden_states=ctx), device, repeats)
        add("UNet forward, bare", bare, batch, "calls/s")
    adapters = ClassAdapters(bb, args.classes, LoraConfig(rank=args.rank))  # the reference modules
    adapters.to(device)
    index = torch.arange(batch, device=device) % args.classes
    with torch.no_grad(), adapters.use(unet_index=index):
        stacked = timed(lambda: bb.unet(x, t, encoder_hidden_states=ctx), device, repeats)
    add(f"UNet forward, {args.classes} stacked LoRAs (r={args.rank}, mixed classes)", stacked, batch, "calls/s",
        ratio_to_bare=bare / stacked)
    if args.compile:
        compiled = torch.compile(bb.unet)
        with torch.no_grad(), adapters.use(unet_index=index):
            comp = timed(lambda: compiled(x, t, encoder_hidden_states=ctx), device, repeats, warmup=3)
        add("UNet forward, stacked LoRAs, torch.compile", comp, batch, "calls/s", ratio_to_bare=bare / comp)

    if args.encoder:  # a frozen encoder's forward at its own resolution, as diti-sd eval's rivals run it
        from diti_sd.baselines import load_encoder

        enc = load_encoder(args.encoder, device)
        enc.model.to(dtype)
        images = torch.randn(batch, 3, enc.image_size, enc.image_size, generator=g).to(device, dtype)
        add(f"encoder forward, {enc.label}", timed(lambda: enc.encode(images), device, repeats), batch, "images/s")

    # scoring pass: a budgeted round schedule over shared (t, noise) pairs
    n_images = 2 if args.tiny else 8
    rounds = [[1, 10], [4, 3], [10, 1]]
    cfg = ScoreConfig(rounds=rounds, t_min=0, t_max=300, batch_size=batch)
    latents = torch.randn(n_images, c, h, w, generator=g)
    contexts = torch.randn(args.classes, 77, ctx_dim, generator=g).to(device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(lambda: score_latents(bb, adapters, latents, contexts, cfg), device, 1, warmup=1)
    calls = Schedule.of(cfg).budget(args.classes)
    add(f"scoring pass ({calls} UNet calls/image, {args.classes} classes)", seconds, n_images, "images/s",
        projected_3333_images_min=3333 * seconds / n_images / 60, peak_gib=peak_gib(device))

    # training: one stacked multi-class batch vs one class at a time (1 instance + 1 prior image)
    params = adapters.unet_parameters()
    for p in params:
        p.requires_grad_(True)
    opt = ClassAdamW([{"params": params}], lr=1e-4)
    bb.unet.train()

    def train_step(n):
        idx = torch.arange(n, device=device) % args.classes
        with adapters.use(unet_index=idx):
            out = bb.unet(x[:n], t[:n], encoder_hidden_states=ctx[:n]).sample
        loss = (out.float() - x[:n].float()).pow(2).mean()
        loss.backward()
        opt.active_classes = idx.unique().cpu()
        opt.step()
        for p in params:
            p.grad = None

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stacked_train = timed(lambda: train_step(batch), device, repeats)
    add(f"training step, stacked ({batch} samples, mixed classes)", stacked_train, batch, "samples/s",
        peak_gib=peak_gib(device))
    single = timed(lambda: train_step(2), device, repeats)
    add("training step, one class at a time (2 samples)", single, 2, "samples/s",
        stacked_speedup=(batch / stacked_train) / (2 / single))

    dev = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {dev}, dtype {dtype}, UNet batch {batch}, torch {torch.__version__}")
    print(f"{'part':72s} {'per second':>12s}  notes")
    for r in rows:
        notes = ", ".join(f"{k} {v:.3g}" for k, v in r.items()
                          if k not in ("part", "seconds", "per_s", "unit") and v is not None)
        print(f"{r['part']:72s} {r['per_s']:10.1f} {r['unit']:>10s}  {notes}")
    if args.json:
        result = {"device": dev, "dtype": str(dtype), "batch": batch, "rows": rows}
        write_json(args.json, result)


if __name__ == "__main__":
    main()
