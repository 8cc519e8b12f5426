"""Can the shift network draw each synthetic attribute when it is simply told it?

    python eval/shift_network_oracle.py --checkpoints 500 1000 2000

No encoder: z is the attribute labels themselves (+1 / -1, one dimension each, visible at every t), and
only G trains, with the `granular` recipe's loss, optimiser and G on the shipped 16-px DDPM. At each
checkpoint, 32 DDIM samples from fresh x_T are drawn twice per attribute, with that attribute's label set
to +1 and to -1 (the others kept), and read straight from the pixels: the checker correlation in the
mark's corner, the background's red-minus-blue (warmth), and the share of grey disc pixels. A gap between
the +1 and -1 readings means G has learnt to draw the attribute from z.

This bounds what any encoder can show in the same number of steps: if G cannot draw the mark from its
true label, it cannot draw it from whatever an encoder learns to write into z either.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diti_sd.data.granular import make_granular  # noqa: E402
from diti_sd.encoder import DiTiEncoder, load_ddpm, load_encoder_recipe  # noqa: E402
from diti_sd.encoder.edit import ddim_decode  # noqa: E402


def read_pixels(x: torch.Tensor, mark_side: int) -> dict[str, torch.Tensor]:
    """Per image in [-1, 1]: mark (checker correlation in the corner), warmth (R - B of the border),
    disc (share of near-grey pixels)."""
    yy, xx = torch.meshgrid(torch.arange(mark_side), torch.arange(mark_side), indexing="ij")
    checker = torch.where((xx + yy) % 2 == 0, 1.0, -1.0)
    border = torch.cat([x[:, :, -2:, :].flatten(2), x[:, :, :, -2:].flatten(2)], dim=2)
    grey = (x.max(dim=1).values - x.min(dim=1).values) < 0.15
    return {
        "fine_mark": (x[:, :, :mark_side, :mark_side].mean(1) * checker).mean(dim=(1, 2)),
        "warm_background": (border[:, 0] - border[:, 2]).mean(1),
        "large_disc": grey.float().mean(dim=(1, 2)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = make_granular(2000, seed=0)
    names = data.names
    # the granular recipe's G, optimiser and loss; z is the labels, so one stage holding every dimension
    recipe = load_encoder_recipe("granular", [f"z_dim={len(names)}", f"layout.stages=[[1000,{len(names)}]]",
                                              "layout.subsets=1", f"train.seed={args.seed}"])
    model = DiTiEncoder(recipe, load_ddpm("builtin:granular-ddpm"))
    optimizer = torch.optim.Adam(model.shift.parameters(), lr=recipe.train.lr)
    x_all = data.images.float() / 127.5 - 1
    labels = torch.as_tensor(data.attributes).float() * 2 - 1
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(args.samples, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(1))
    base_z = labels[: args.samples]
    mark_side = max(2, round(model.image_size * 0.375))  # make_granular's default mark

    print("| steps | attribute | reading with +1 | with -1 | gap |\n|---|---|---|---|---|")
    # the scale: the same readings on the training images themselves, attribute present vs absent
    real = read_pixels(x_all[:512], mark_side)
    for k, name in enumerate(names):
        on = labels[:512, k] > 0
        print(f"| images | {name} | {float(real[name][on].mean()):.3f} | {float(real[name][~on].mean()):.3f} | "
              f"{float(real[name][on].mean() - real[name][~on].mean()):.3f} |")
    start, step = time.time(), 0
    for checkpoint in sorted(args.checkpoints):
        model.train()
        while step < checkpoint:
            idx = torch.randint(len(x_all), (recipe.train.batch_size,), generator=g)
            x0, z = x_all[idx], labels[idx]
            t = torch.randint(0, len(model.alphas_cumprod), (len(x0),), generator=g)
            loss = model.loss(x0, t, torch.randn(x0.shape, generator=g), z=z)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        model.eval()
        for k, name in enumerate(names):
            readings = []
            for value in (1.0, -1.0):
                z = base_z.clone()
                z[:, k] = value
                readings.append(float(read_pixels(ddim_decode(model, x_T, z, steps=50), mark_side)[name].mean()))
            print(f"| {step} | {name} | {readings[0]:.3f} | {readings[1]:.3f} | {readings[0] - readings[1]:.3f} |",
                  flush=True)
    print(f"\n{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
