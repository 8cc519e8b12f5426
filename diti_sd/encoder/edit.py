"""Counterfactual edits: DDIM-invert an image under its own z, change z, decode under the new z.

Because x_T comes from inverting the image itself, whatever z does not say (pose, lighting details the
encoder left to x_T) is kept; only what the edited subsets of z encode changes.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError


def _ddim_times(model, steps: int) -> list[int]:
    T = len(model.alphas_cumprod)
    if not 1 <= steps <= T:
        raise ConfigError(f"DDIM steps must be in 1..{T}, got {steps}")
    return torch.linspace(0, T - 1, steps).round().long().tolist()


def _step(model, x, z, t_from: int, t_to: int) -> torch.Tensor:
    """One DDIM step, as the reference's (``model/diffusion/ddim.py``, ``shift_ddim_sample``/``_encode``): the
    predicted x_0 clamped to [-1, 1] and the noise re-derived from it."""
    abar = model.alphas_cumprod
    t = torch.full((len(x),), t_from, device=x.device, dtype=torch.long)
    eps = model.eps(x, t, z, sampling=True)
    a_from, a_to = abar[t_from], abar[t_to] if t_to >= 0 else torch.ones((), device=x.device)
    x0 = ((x - (1 - a_from).sqrt() * eps) / a_from.sqrt()).clamp(-1, 1)
    eps = (x - a_from.sqrt() * x0) / (1 - a_from).sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


@torch.no_grad()
def ddim_invert(model, x0: torch.Tensor, z: torch.Tensor, steps: int = 100) -> torch.Tensor:
    """Deterministic DDIM encoding of x0 (in [-1, 1]) to x_T under the shifted prediction given z."""
    times = _ddim_times(model, steps)
    x = x0  # the clean image stands in for x at the first grid time-step (t = 0)
    for t_from, t_to in zip(times[:-1], times[1:]):
        x = _step(model, x, z, t_from, t_to)
    return x


@torch.no_grad()
def ddim_decode(model, x_T: torch.Tensor, z: torch.Tensor, steps: int = 100) -> torch.Tensor:
    """Deterministic DDIM sampling from x_T under z; returns images in [-1, 1]."""
    times = _ddim_times(model, steps)
    x = x_T
    for i in range(len(times) - 1, -1, -1):
        x = _step(model, x, z, times[i], times[i - 1] if i > 0 else -1)
    return x.clamp(-1, 1)


@torch.no_grad()
def interpolate_subsets(model, a: torch.Tensor, b: torch.Tensor, subsets: list[int], n: int = 5,
                        steps: int = 100, progress: bool = False) -> torch.Tensor:
    """Rows per image pair: a, then a's decode with the chosen subsets of z moved from a's to b's
    in ``n`` even steps (the first is a's reconstruction), then b. Images in [-1, 1], (rows*(n+2), C, H, W).
    ``progress``: a bar over the DDIM passes (the inversion, then one decode per frame)."""
    keep = model.layout.dims_of(subsets).to(a.device)
    z_a, z_b = model.encode(a), model.encode(b)
    bar = tqdm(total=n + 1, desc="DDIM passes", disable=not progress, leave=False)
    x_T = ddim_invert(model, a, z_a, steps)
    bar.update()
    frames = []
    for alpha in torch.linspace(0, 1, n).tolist():
        z = torch.where(keep, (1 - alpha) * z_a + alpha * z_b, z_a)
        frames.append(ddim_decode(model, x_T, z, steps))
        bar.update()
    bar.close()
    rows = [torch.stack([a[i], *(f[i] for f in frames), b[i]]) for i in range(len(a))]
    return torch.cat(rows)


@torch.no_grad()
def move_along(model, x: torch.Tensor, direction: torch.Tensor, strengths: list[float],
               subsets: list[int] | None = None, steps: int = 100, progress: bool = False) -> torch.Tensor:
    """Rows per image: the image, then decodes of z + s * direction for each s. ``direction`` is scaled
    so that s is the change of the linear attribute classifier's logit (restricted to ``subsets``). ``progress``: a
    bar over the DDIM passes."""
    d = direction.to(x.device, torch.float32).clone()
    if subsets is not None:
        d = d * model.layout.dims_of(subsets).to(x.device)
    if float(d.norm()) == 0:
        raise ConfigError("the attribute direction is zero on the chosen subsets; pick other subsets")
    d = d / d.pow(2).sum()
    z = model.encode(x)
    bar = tqdm(total=len(strengths) + 1, desc="DDIM passes", disable=not progress, leave=False)
    x_T = ddim_invert(model, x, z, steps)
    bar.update()
    frames = []
    for s in strengths:
        frames.append(ddim_decode(model, x_T, z + s * d, steps))
        bar.update()
    bar.close()
    return torch.cat([torch.stack([x[i], *(f[i] for f in frames)]) for i in range(len(x))])


def save_grid(images: torch.Tensor, columns: int, path) -> None:
    """Images in [-1, 1] as one PNG, ``columns`` per row."""
    from torchvision.utils import make_grid, save_image

    from ..files import atomic_write

    grid = make_grid((images.float().cpu() + 1) / 2, nrow=columns, padding=2, pad_value=1.0)
    atomic_write(path, lambda tmp: save_image(grid, tmp, format="png"))
