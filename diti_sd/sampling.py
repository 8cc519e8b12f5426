"""DDIM sampling with classifier-free guidance, optionally through class adapters.

Used to make the generic prior-preservation images (the base model's own samples of a generic
prompt) and to show what a class adapter learned (``diti-sd sample``).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .errors import ConfigError
from .seeding import torch_generator


@torch.no_grad()
def sample_images(
    backbone,
    prompts: list[str],
    *,
    adapters=None,
    class_index: list[int] | None = None,
    steps: int = 50,
    guidance: float = 7.5,
    seed: int = 0,
    batch_size: int = 8,
    unet_scale: float = 1.0,
    text_scale: float = 1.0,
    progress: bool = False,
    desc: str = "sampling",
) -> torch.Tensor:
    """Images in [0, 1], one per prompt; with ``adapters``, sample i runs under class ``class_index[i]``."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(backbone.scheduler.config, set_alpha_to_one=False, steps_offset=1)
    if class_index is not None and len(class_index) != len(prompts):
        raise ConfigError("class_index needs one entry per prompt")
    out = []
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        n = len(chunk)
        idx = None if class_index is None else torch.tensor(class_index[start : start + n])
        # guidance 1 is the conditional prediction alone: skip the unconditional half
        guided_run = guidance != 1.0
        copies = 2 if guided_run else 1
        ctx_idx = None if idx is None else idx.repeat(copies)
        with _route(adapters, None, ctx_idx, unet_scale, text_scale):
            context = backbone.encode_prompts(([""] * n if guided_run else []) + chunk)
        g = torch_generator(seed, start)
        latents = torch.randn((n, *backbone.latent_shape), generator=g).to(backbone.device, backbone.dtype)
        latents = latents * scheduler.init_noise_sigma
        scheduler.set_timesteps(steps, device=backbone.device)
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(latents.repeat(copies, 1, 1, 1), t)
            tt = t.expand(copies * n).to(backbone.device)
            with _route(adapters, ctx_idx, None, unet_scale, text_scale):
                output = backbone.predict(model_in, tt, context)
            if guided_run:
                uncond, cond = output.chunk(2)
                guided = uncond + guidance * (cond - uncond)
            else:
                guided = output
            latents = scheduler.step(guided, t, latents).prev_sample
        out.append(backbone.decode_latents(latents).cpu())
        bar.update(n)
    bar.close()
    return torch.cat(out) if out else torch.empty(0, 3, backbone.resolution, backbone.resolution)


class _NoRoute:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _route(adapters, unet_index, text_index, unet_scale, text_scale):
    if adapters is None:
        return _NoRoute()
    return adapters.use(unet_index=unet_index, text_index=text_index, unet_scale=unet_scale, text_scale=text_scale)


class SamplingMixin:
    """The classifier's ``sample``: what each class's adapter learned, as images."""

    def sample(self, classes=None, n_per_class: int = 4, steps: int = 50, guidance: float = 7.5,
               seed: int = 0) -> tuple[torch.Tensor, list]:
        """Images generated under each class's adapter and prompt (what the adapter learned)."""
        self._check_fitted()
        chosen = self.classes_.tolist() if classes is None else list(classes)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        missing = [c for c in chosen if c not in index]
        if missing:
            raise ConfigError(f"unknown classes {missing}; fitted classes: {self.classes_.tolist()[:10]}")
        idx = [index[c] for c in chosen for _ in range(n_per_class)]
        images = sample_images(self.backbone_, [self.prompts_[i] for i in idx], adapters=self.adapters_,
                               class_index=idx, steps=steps, guidance=guidance, seed=seed,
                               unet_scale=self.recipe_.score.unet_scale, text_scale=self.recipe_.score.text_scale,
                               progress=self.progress)
        return images, [self.classes_[i] for i in idx]
