"""What reading attention masks costs, at each reading size, on SD 2 base's architecture with random weights.

    python eval/bench_attention_masks.py                      # SD 2 base shapes (a GPU: bf16; a CPU: fp32, slow)
    python eval/bench_attention_masks.py --tiny               # the tiny test architecture on CPU: a smoke check
    python eval/bench_attention_masks.py --upscale 1 2 --size 768x512 --images 4 --json masks-cost.json

``diti-sd fit --attention-masks WORD`` reads each shot's (and validation image's) mask off the base: images x
prompts x time-steps UNet calls, no gradient (``diti_sd.attention_masks``). With ``--mask-upscale N`` each call runs
at N times the model's resolution, so the count of calls stays and each costs more: at least N squared times the
convolutions' work, self-attention's more (its cost grows with the square of the positions). This script times the
library's reader itself at each ``--upscale`` side by side in one run, beside a bare UNet forward at the model's
resolution, and prints each reading's seconds per image, its UNet calls, the cost of one of its calls in bare
forwards, and its ratio to the first upscale. Weights are random (speed does not depend on their values; the masks
themselves mean nothing), the text encoder is a small stand-in (its cost is one pass per prompt), so nothing is
downloaded. Images are noise at ``--size`` (FGVC-Aircraft's photos are about 3:2; the shorter side is read at the
model's resolution times the upscale).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diti_sd.attention_masks import AttentionMasks
from diti_sd.files import atomic_write

_spec = importlib.util.spec_from_file_location("bench_speed", Path(__file__).with_name("bench_speed.py"))
bench_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_speed)


def with_text(bb, ctx_dim: int):
    """``bb`` given a tokenizer and a small random text encoder of width ``ctx_dim`` where it has none."""
    if bb.tokenizer is not None:
        return bb
    from transformers import CLIPTextConfig, CLIPTextModel

    from diti_sd.testing.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=ctx_dim, intermediate_size=2 * ctx_dim,
                            num_hidden_layers=2, num_attention_heads=8, max_position_embeddings=77,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    bb.tokenizer, bb.text_encoder = tokenizer, CLIPTextModel(config).eval().to(bb.device)
    return bb


def noise_images(n: int, size: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes WIDTHxHEIGHT in pixels, e.g. 768x512; got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"--size needs a positive width and height; got {text!r}")
    return w, h


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny architecture on CPU (smoke check)")
    parser.add_argument("--upscale", type=int, nargs="+", default=[1, 2], help="the reading sizes compared")
    parser.add_argument("--images", type=int, default=None, help="images timed per reading (default 8; tiny: 4)")
    parser.add_argument("--size", type=parse_size, default=(768, 512), help="the images' WIDTHxHEIGHT")
    parser.add_argument("--word", default="aircraft")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    specs = [AttentionMasks(args.word, upscale=u) for u in args.upscale]  # a bad upscale: one line, before work

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    bb, ctx_dim = bench_speed.build(args.tiny, device, dtype)
    bb = with_text(bb, ctx_dim)
    images = noise_images(args.images or (4 if args.tiny else 8), args.size)

    c, h, w = bb.latent_shape
    g = torch.Generator(device="cpu").manual_seed(0)
    batch = len(specs[0].times)
    x = torch.randn(batch, c, h, w, generator=g).to(device, dtype)
    t = torch.as_tensor(specs[0].times, device=device)
    ctx = torch.randn(batch, 77, ctx_dim, generator=g).to(device, dtype)
    with torch.no_grad():
        bare = bench_speed.timed(lambda: bb.unet(x, t, encoder_hidden_states=ctx), device, 2, warmup=1) / batch

    rows = []
    for spec in specs:
        spec(bb, images[:1])  # warm-up at this size
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        start = time.perf_counter()
        spec(bb, images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_image = (time.perf_counter() - start) / len(images)
        calls = spec.unet_calls(1)
        rows.append({"upscale": spec.upscale, "seconds_per_image": per_image, "unet_calls_per_image": calls,
                     "bare_forwards_per_call": per_image / calls / bare, "peak_gib": bench_speed.peak_gib(device)})
    for r in rows:
        r["ratio_to_first"] = r["seconds_per_image"] / rows[0]["seconds_per_image"]

    dev = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {dev}, dtype {dtype}, torch {torch.__version__}, {len(images)} images of "
          f"{args.size[0]}x{args.size[1]}, model resolution {bb.resolution}, bare UNet forward {bare:.3g} s a call")
    print(f"{'upscale':>8s} {'s / image':>10s} {'calls':>6s} {'bare forwards a call':>21s} {'x first':>8s}  peak GiB")
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        print(f"{r['upscale']:8d} {r['seconds_per_image']:10.3g} {r['unet_calls_per_image']:6d} "
              f"{r['bare_forwards_per_call']:21.3g} {r['ratio_to_first']:8.2f}  {peak}")
    result = {"device": dev, "dtype": str(dtype), "torch": torch.__version__, "size": list(args.size),
              "images": len(images), "model_resolution": bb.resolution, "bare_seconds_per_call": bare, "rows": rows}
    if args.json:
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    return result


if __name__ == "__main__":
    main()
