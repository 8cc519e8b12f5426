"""Object masks read off the base model itself: where its cross-attention puts a word that names the object.

For users with neither masks nor boxes: ``fit(X, y, masks=AttentionMasks("aircraft"))`` (``diti-sd fit
--attention-masks aircraft``). As DAAM (Tang et al. 2023) reads a diffusion model's attention: each image is noised
at a few time-steps, the base UNet (no adapter) denoises it under prompts that contain the word, and the attention
probabilities of every cross-attention layer to the word's tokens are averaged over heads, upsampled to pixels and
summed over layers, time-steps and prompts. The object is where that map is above Otsu's threshold (where DAAM cuts
at a fixed share of the maximum; Otsu needs no value), shrunk by half a latent cell: the map's finest cells are the
latent's, so its edge blurs over about that much, and a rim of background around the object costs the masked swap
more than a strip of object lost (``docs/method.md``, "Masks"). Cost: images x prompts x time-steps UNet calls, no
gradient.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor
from tqdm.auto import tqdm

from .data.images import as_image_sequence, images_digest, load_image
from .data.masks import MaskError, grow_mask
from .errors import ConfigError
from .files import atomic_write
from .preprocessing import to_pixels_uncropped
from .seeding import torch_generator

TIMES = (50, 150, 300, 500, 700)  # DAAM sums over the whole schedule; these spread over it, denser at small t
ATTENTION_NOISE = 7  # the torch_generator key of the noise each image is read under
IMAGES_PER_CALL = 8  # images per UNet batch (times x images rows); no result depends on it


@dataclass(frozen=True)
class AttentionMasks:
    """How to read masks off the base: the ``word`` that names the object, ``prompts`` with a ``{}`` for it, the
    ``times`` the image is noised at, and whether to ``shrink`` the mask by half a latent cell; ``seed`` of the
    noise; ``upscale``: read the maps with the image's shorter side at that many times the model's resolution (finer
    cells against the object; each image's UNet calls at least ``upscale`` squared times the work, self-attention
    more, in as many times more and smaller batches; the base away from its training size). Passed as ``fit``'s
    ``masks`` (and ``validation_masks``), resolved once the base is loaded."""

    word: str
    prompts: tuple[str, ...] = ("a photo of a {}.",)
    times: tuple[int, ...] = TIMES
    shrink: bool = True
    seed: int = 0
    upscale: int = 1

    def __post_init__(self):
        if not isinstance(self.word, str) or not self.word.strip() or "{" in self.word or "}" in self.word:
            raise ConfigError(f"attention masks need a word that names the object (e.g. 'aircraft'); got {self.word!r}")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "times", tuple(self.times))
        bad = [p for p in self.prompts if not isinstance(p, str) or p.count("{}") != 1]
        if not self.prompts or bad:
            raise ConfigError(f"each attention-mask prompt needs exactly one {{}} for the word; got {bad or 'none'}")
        if not self.times or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.times):
            raise ConfigError(f"attention-mask times must be time-steps (integers >= 0); got {list(self.times)}")
        if isinstance(self.upscale, bool) or not isinstance(self.upscale, int) or not 1 <= self.upscale <= 4:
            raise ConfigError(f"attention-mask upscale must be an integer from 1 to 4; got {self.upscale!r}")

    def unet_calls(self, n_images: int) -> int:
        return n_images * len(self.prompts) * len(self.times)

    def record(self, n_images: int) -> dict:
        """What the fit's summary says of how the masks were made."""
        return {"from": "attention", "word": self.word, "prompts": list(self.prompts), "times": list(self.times),
                "shrink": self.shrink, "upscale": self.upscale, "unet_calls": self.unet_calls(n_images)}

    def __call__(self, backbone, X, progress: bool = False, indices=None) -> list[torch.Tensor]:
        """One (H, W) bool mask per image of ``X``, each its image's size. Each image's noise is drawn from
        (``seed``, its index): its position in ``X``, or ``indices`` (its position in the caller's whole list, so
        that a process's share gets the masks the whole list would)."""
        steps = backbone.num_train_timesteps
        if max(self.times) >= steps:
            raise ConfigError(f"attention-mask times must be below the base's {steps} time-steps; got "
                              f"{list(self.times)}")
        prompts = [p.replace("{}", self.word) for p in self.prompts]
        where = [word_positions(backbone, p, self.word) for p in prompts]
        with torch.no_grad():
            contexts = backbone.encode_prompts(prompts)
        shrink = backbone.vae_scale_factor // 2 if self.shrink else 0
        X = as_image_sequence(X)
        out: list = [None] * len(X)
        bar = tqdm(total=len(X), desc="attention masks", unit="image", disable=not progress)
        for chunk in same_size_chunks(X, backbone.resolution * self.upscale, backbone.vae_scale_factor,
                                      max(1, IMAGES_PER_CALL // self.upscale ** 2)):
            pixels = torch.stack([p for _, _, _, p in chunk])
            maps = word_maps(backbone, pixels, contexts, where, self.times,
                             [torch_generator(self.seed, ATTENTION_NOISE, i if indices is None else int(indices[i]))
                              for i, _, _, _ in chunk])
            for (i, size, uncut, _), m in zip(chunk, maps):
                mask = grow_mask(m > otsu(m.flatten().numpy()), -shrink).float()
                # the rows and columns cut to the latent's multiple take their neighbours' value, so the mask is
                # resized from the image's own extent and not stretched over it
                mask = F.pad(mask[None, None], (0, uncut[1] - mask.shape[1], 0, uncut[0] - mask.shape[0]),
                             mode="replicate")
                out[i] = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)[0, 0] >= 0.5
            bar.update(len(chunk))
        bar.close()
        return out


def same_size_chunks(X, resolution: int, factor: int, most: int):
    """Runs of consecutive images of ``X`` whose pixels have the same shape, at most ``most`` each: (index, the
    image's (H, W), its (h, w) with the shorter side at ``resolution``, its pixels (3, h', w') in [-1, 1] there, cut
    to multiples of ``factor``)."""
    chunk = []
    for i in range(len(X)):
        image = load_image(X[i])
        pixels = to_pixels_uncropped([image], resolution)[0]
        uncut = tuple(pixels.shape[1:])
        pixels = pixels[:, : uncut[0] // factor * factor, : uncut[1] // factor * factor]
        if chunk and (len(chunk) == most or chunk[-1][3].shape != pixels.shape):
            yield chunk
            chunk = []
        chunk.append((i, (image.height, image.width), uncut, pixels))
    if chunk:
        yield chunk


class AttentionRecorder(AttnProcessor):
    """The plain attention processor that adds, for each cross-attention call, the attention to the tokens at
    ``where`` (heads averaged; (batch, queries)) to ``maps``; given a self-attention call it records nothing."""

    def __init__(self):
        super().__init__()
        self.where: list[int] = []
        self.maps: list[torch.Tensor] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        if encoder_hidden_states is None:
            return super().__call__(attn, hidden_states, None, attention_mask, temb)
        scores = attn.get_attention_scores

        def recorded(query, key, mask=None):
            probs = scores(query, key, mask)
            b = probs.shape[0] // attn.heads
            self.maps.append(probs.detach().float().view(b, attn.heads, *probs.shape[1:])[..., self.where]
                             .sum(-1).mean(1))
            return probs

        attn.get_attention_scores = recorded
        try:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        finally:
            del attn.get_attention_scores


def word_positions(backbone, prompt: str, word: str) -> list[int]:
    """The positions of ``word``'s tokens in ``prompt``'s token ids (where they first occur in a row)."""
    ids = backbone.tokenize([prompt])[0].tolist()
    sub = backbone.tokenizer(word, add_special_tokens=False).input_ids
    for start in range(len(ids) - len(sub) + 1):
        if ids[start:start + len(sub)] == sub:
            return list(range(start, start + len(sub)))
    raise MaskError(f"the word {word!r} is not among the tokens of the prompt {prompt!r} (cut at the tokenizer's "
                    "length?); give a shorter prompt")


def layer_shape(latent_hw: tuple[int, int], queries: int) -> tuple[int, int]:
    """The (h, w) of a UNet layer with ``queries`` positions over a latent of ``latent_hw``: each downsampling
    halves a side, rounding up."""
    h, w = latent_hw
    while h * w > queries:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != queries:
        raise ValueError(f"no layer of a {latent_hw} latent has {queries} positions")
    return h, w


@torch.no_grad()
def word_maps(backbone, pixels: torch.Tensor, contexts: torch.Tensor, where: list[list[int]], times,
              generators: list) -> torch.Tensor:
    """(n, H, W) at ``pixels``' size ((n, 3, H, W) in [-1, 1]): each image's attention to the word (positions
    ``where[k]`` of prompt ``k``, contexts (P, L, D)) summed over layers (each upsampled), ``times`` and prompts,
    image i noised with draws from ``generators[i]``."""
    n, size = len(pixels), tuple(pixels.shape[-2:])
    latents = backbone.encode_images(pixels.to(backbone.device, backbone.dtype))
    noise = torch.cat([torch.randn((len(times), *latents.shape[1:]), generator=g) for g in generators])
    t = torch.as_tensor(list(times), device=latents.device).repeat(n)
    x_t = backbone.add_noise(latents.repeat_interleave(len(times), 0), noise.to(latents.device, latents.dtype), t)
    total = torch.zeros(n, *size)
    with recording(backbone.unet) as recorder:
        for k in range(len(contexts)):
            recorder.where, recorder.maps = where[k], []
            backbone.unet(x_t, t, encoder_hidden_states=contexts[k:k + 1].expand(len(t), -1, -1), return_dict=False)
            for m in recorder.maps:
                m = m.view(n, len(times), *layer_shape(tuple(latents.shape[-2:]), m.shape[1])).sum(1)
                total += F.interpolate(m[:, None].cpu(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return total


@contextmanager
def recording(unet):
    """``unet`` with an :class:`AttentionRecorder` (yielded) on its cross-attention layers (diffusers names them
    ``attn2``) and its own processors put back after: self-attention keeps its (memory-efficient) one."""
    before = unet.attn_processors
    recorder = AttentionRecorder()
    unet.set_attn_processor({name: recorder if name.endswith("attn2.processor") else processor
                             for name, processor in before.items()})
    try:
        yield recorder
    finally:
        unet.set_attn_processor(before)


def otsu(values: np.ndarray, bins: int = 64) -> float:
    """The threshold that best splits ``values`` into two classes (Otsu 1979: the largest between-class variance),
    as the upper edge of the lower class's last bin; where several splits tie (an empty gap), the middle one."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    score = w0 * w1 * (m0 - m1) ** 2
    best = np.flatnonzero(score >= score.max() * (1 - 1e-9))
    return float(edges[best[len(best) // 2] + 1])


def resolve_masks(masks, backbone, X, progress: bool = False, path=None, resume: bool = False, indices=None) -> tuple:
    """``fit``'s masks with an :class:`AttentionMasks` read off ``backbone`` for images ``X``, and the record of how
    (None for masks given as such, which pass through). With ``path`` the masks are kept there (atomically) and, with
    ``resume``, read back where the same reading of the same base made them of the same images: a resumed fit gets
    the masks its checkpoint was made with, whatever a GPU's rounding would flip near the threshold. ``indices``:
    as :meth:`AttentionMasks.__call__`'s."""
    if not isinstance(masks, AttentionMasks):
        return masks, None
    record = masks.record(len(X))
    if path is None:
        return masks(backbone, X, progress=progress, indices=indices), record
    key = {**record, "seed": masks.seed, "base": backbone.fingerprint(), "images": images_digest(X),
           "resolution": backbone.resolution,  # a recipe's resolution reads the maps at another size
           **({"indices": [int(i) for i in indices]} if indices is not None else {})}
    if resume and Path(path).exists():
        saved = torch.load(path)
        kept = saved.get("key") or {}
        # one kept before the resolution was in its key is read as it was then
        if kept == key or ("resolution" not in kept and kept == {k: v for k, v in key.items() if k != "resolution"}):
            return saved["masks"], record
    made = masks(backbone, X, progress=progress, indices=indices)
    atomic_write(path, lambda tmp: torch.save({"key": key, "masks": made}, tmp))
    return made, record
