"""The DiTi encoder steering an exact ideal DDPM: where G reads each attribute, by time-step.

    python eval/encoder_ideal_ddpm.py                                          # 100 / 500 / 2000 / 6000 steps
    python eval/encoder_ideal_ddpm.py --set train.gradient_mode=stop_grad

The shipped 16-px DDPM gets the colour slightly wrong at every t, which alone could put the colour into
the early subset. This removes that excuse. The toy has exactly 8 images: a warm or cool background
(coarse), a small or large grey disc at the centre, and a faint mark (a 6x6 square of +0.3, or a checker
of the same energy with ``--mark checker``) in the top-left corner; no jitter. Its ideal DDPM is exact:
the posterior mean of x_0 over the 8 images given x_t. Each attribute's worth under the DiTi loss
(what knowing it saves that DDPM, by Monte Carlo) is printed first, with its share below each stage
boundary.

Then the `granular` recipe's E and G train on it (``--set`` overrides any recipe key) for each of
``--checkpoints`` steps, and G's reading is taken apart by t: for pairs of the 8 images that differ
in one attribute, the swap of one stage's dimensions of z from image i to image j, at x_t of image i; the
figure is how far the swap moves G's x_0 prediction towards image j, as a fraction of the difference
(1: all the way, 0: G ignores that stage for that attribute at that t). After the longest run the
`encoder probe` report runs on held-out draws (probe AP per stage; transfer under DDIM swaps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diti_sd.data.attributed import AttributedImages  # noqa: E402
from diti_sd.encoder import DiTiEncoder, fit_encoder, load_encoder_recipe  # noqa: E402
from diti_sd.encoder.model import DDPM  # noqa: E402
from diti_sd.encoder.probe import stage_groups  # noqa: E402
from diti_sd.encoder.report import run_probe  # noqa: E402

NAMES = ["fine_mark", "warm_background", "large_disc"]
SIZE = 16


def templates(mark: str) -> tuple[torch.Tensor, np.ndarray]:
    """The 8 images (uint8, N x 3 x 16 x 16) and their attributes (mark, warm, large)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    pattern = np.where((x + y) % 2 == 0, 1.0, -1.0) if mark == "checker" else np.ones_like(x)
    combos = np.array([(m, w, g) for m in (0, 1) for w in (0, 1) for g in (0, 1)])
    images = []
    for m, w, g in combos:
        colour = np.array([0.8, 0.35, 0.2]) if w else np.array([0.2, 0.4, 0.8])
        img = np.broadcast_to(colour.reshape(3, 1, 1), (3, SIZE, SIZE)).copy()
        radius = SIZE * (0.32 if g else 0.15)
        img[:, (x - SIZE / 2) ** 2 + (y - SIZE / 2) ** 2 <= radius**2] = 0.5
        if m:
            img[:, :6, :6] += 0.3 * pattern[:6, :6]
        images.append(np.clip(img, 0, 1))
    return torch.from_numpy((np.stack(images) * 255).round().astype(np.uint8)), combos


class IdealDenoiser(nn.Module):
    """eps(x_t, t) of the exact posterior mean over a finite set of images; shaped like a UNet2DModel."""

    def __init__(self, images: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.config = SimpleNamespace(sample_size=SIZE, in_channels=3, class_embed_type=None, num_class_embeds=None)
        self.register_buffer("images", images)
        self.register_buffer("abar", alphas_cumprod.float())

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        abar = self.abar[t].view(-1, 1, 1, 1)
        dist = (x_t.unsqueeze(1) - abar.sqrt().unsqueeze(1) * self.images.unsqueeze(0)).pow(2).flatten(2).sum(-1)
        logits = -dist / (2 * (1 - abar.view(-1, 1)))
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        return torch.einsum("bk,kchw->bchw", torch.softmax(logits, dim=1), self.images)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor):
        abar = self.abar[t].view(-1, 1, 1, 1)
        x0 = self.posterior_mean(x_t, t)
        return SimpleNamespace(sample=(x_t - abar.sqrt() * x0) / (1 - abar).sqrt())


def worth_by_t(denoiser: IdealDenoiser, combos: np.ndarray, snr_power: float, n: int = 4000, seed: int = 0):
    """Per t on a grid: what knowing each attribute saves the ideal DDPM under the DiTi loss weight."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(combos)
    grid = np.arange(25, 1000, 50)
    worth = np.zeros((len(grid), combos.shape[1]))
    for row, step in enumerate(grid):
        pick = torch.randint(0, len(combos), (n,), generator=g)
        t = torch.full((n,), int(step))
        abar = denoiser.abar[int(step)]
        x_t = abar.sqrt() * denoiser.images[pick] + (1 - abar).sqrt() * torch.randn(n, 3, SIZE, SIZE, generator=g)
        full = denoiser.posterior_mean(x_t, t)
        snr = abar / (1 - abar)
        for col in range(combos.shape[1]):
            told = denoiser.posterior_mean(x_t, t, labels[:, col].unsqueeze(0) == labels[pick, col].unsqueeze(1))
            # an x_0 error e is an epsilon error sqrt(SNR) e
            worth[row, col] = float(snr.pow(snr_power) / (1 + snr) * snr * (full - told).pow(2).mean())
    return grid, worth


@torch.no_grad()
def reading_by_t(model: DiTiEncoder, images: torch.Tensor, combos: np.ndarray, times: list[int], seed: int = 0):
    """{attribute: {stage: [move towards j at each t]}} for one-attribute-apart pairs of the images."""
    x0 = images.float() / 127.5 - 1
    z = model.encode(x0)
    g = torch.Generator().manual_seed(seed)
    groups = [*stage_groups(model.layout), ("all of z", list(range(model.layout.k)))]
    out = {}
    for col, name in enumerate(NAMES):
        pairs = [(i, j) for i in range(len(combos)) for j in range(len(combos))
                 if (combos[i] != combos[j]).sum() == 1 and combos[i][col] != combos[j][col]]
        i, j = [p[0] for p in pairs], [p[1] for p in pairs]
        diff = (x0[j] - x0[i]).flatten(1)
        out[name] = {stage: [] for stage, _ in groups}
        for step in times:
            t = torch.full((len(pairs),), step)
            abar = model.alphas_cumprod[step]
            x_t = abar.sqrt() * x0[i] + (1 - abar).sqrt() * torch.randn(x0[i].shape, generator=g)
            base = model.eps(x_t, t, z[i])
            for stage, members in groups:
                keep = model.layout.dims_of(members)
                eps = model.eps(x_t, t, torch.where(keep, z[j], z[i]))
                moved = (-(1 - abar).sqrt() / abar.sqrt() * (eps - base)).flatten(1)  # change of x_0 prediction
                out[name][stage].append(float(((moved * diff).sum(1) / diff.pow(2).sum(1)).mean()))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[100, 500, 2000, 6000],
                        help="training lengths, each trained from the initial weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mark", choices=["square", "checker"], default="square")
    parser.add_argument("--set", nargs="*", default=[], help="recipe overrides, e.g. train.gradient_mode=stop_grad")
    parser.add_argument("--times", type=int, nargs="+", default=[100, 300, 450, 550, 700, 900])
    parser.add_argument("--out", default="reports/encoder-ideal-ddpm")
    args = parser.parse_args(argv)

    from diffusers import DDPMScheduler

    images, combos = templates(args.mark)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    recipe = load_encoder_recipe("granular", [f"train.seed={args.seed}", "train.checkpoint_every=1000000", *args.set])
    denoiser = IdealDenoiser(images.float() / 127.5 - 1, scheduler.alphas_cumprod)
    grid, worth = worth_by_t(denoiser, combos, recipe.train.snr_power, seed=args.seed)
    bounds = [end for end, _ in recipe.layout.stages[:-1]]
    print(f"worth to the ideal DDPM ({args.mark} mark): | attribute | peak t | " +
          " | ".join(f"share t < {b}" for b in bounds) + " |")
    for col, name in enumerate(NAMES):
        w = worth[:, col]
        print(f"| {name} | {grid[w.argmax()]} | " + " | ".join(f"{w[grid < b].sum() / w.sum():.2f}" for b in bounds) + " |")

    def draws(n: int, seed: int) -> AttributedImages:
        pick = np.random.default_rng(seed).integers(0, len(combos), n)
        return AttributedImages(images[pick], combos[pick].astype(np.int64), list(NAMES), [str(k) for k in range(n)])

    data = draws(2000, args.seed)
    header = "| steps | attribute | swap | " + " | ".join(f"t {t}" for t in args.times) + " |"
    rows = []
    for steps in args.checkpoints:
        # each checkpoint is its own run from the initial weights: a finished fit keeps no optimiser state
        model = DiTiEncoder(recipe, DDPM(denoiser, scheduler, "ideal"))
        start = time.time()
        summary = fit_encoder(model, data, Path(args.out) / f"steps-{steps}", steps=steps, progress=False)
        print(f"\n{steps} steps, {recipe.train.gradient_mode} gradients: final loss {summary['final_loss']:.4g}, "
              f"{time.time() - start:.0f} s")
        reading = reading_by_t(model, images, combos, args.times, seed=args.seed)
        for name in NAMES:
            for stage, values in reading[name].items():
                if stage != "all of z":
                    rows.append(f"| {steps} | {name} | {stage} | " + " | ".join(f"{v:+.3f}" for v in values) + " |")
        print(header + "\n" + "\n".join(rows[-2 * len(NAMES):]))

    model.recipe.probe.transfer_pairs = 8
    report = run_probe(model, draws(600, 100 + args.seed), draws(400, 200 + args.seed), Path(args.out) / "probe",
                       progress=False)
    print(f"\nafter {args.checkpoints[-1]} steps: probe AP and transfer under DDIM swaps (`encoder probe`)")
    print("| | " + " | ".join(NAMES) + " |\n|---|---|---|---|")
    for stage in report["by_stage"]:
        print(f"| probe AP {stage}, trained (initial weights) | " + " | ".join(
            f"{report['by_stage'][stage][n]:.3f} ({report['initial_weights']['by_stage'][stage][n]:.3f})" for n in NAMES) + " |")
    for stage in report["transfer"]:
        print(f"| transfer, swap {stage} | " + " | ".join(f"{report['transfer'][stage][n]:+.2f}" for n in NAMES) + " |")
    print("\nmove of G's x_0 prediction towards the other image under a swap, by t and training steps:")
    print(header + "\n|---|---|---|" + "---|" * len(args.times) + "\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
