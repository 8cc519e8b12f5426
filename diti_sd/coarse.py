"""An image's coarse content (a Gaussian low-pass), and whether the shots' coarse content alone names their class.

The method's premise is that a fine-grained class lives in fine attributes, which diffusion noise destroys
first, while coarse ones (colour layout, lighting, background) survive it. Where every shot of a class shares
a coarse attribute by accident, an adapter learns it with the class, and the user's validation images, drawn
where the shots came from, share it too, so no score on them shows the accident. What a user can see before
any fit is whether the shots' coarse content alone tells the classes apart: :func:`coarse_shortcut` measures
it (leave-one-out nearest class mean on the low-pass, against the same with the labels permuted). It cannot
say whether that content is the class or an accident: only the user knows what the classes differ in.
``fit.coarse_swap`` (diti_sd/training/coarse_swap.py) is the remedy where it is an accident. No UNet call.
"""

from __future__ import annotations

import math
from itertools import repeat

import numpy as np
import torch
import torch.nn.functional as F

from .seeding import COARSE_SHORTCUT, numpy_rng

# a fit warns when the shots beat their label permutations at this level (199 permutations: the smallest
# p-value is 1/200, so a few ties with the observed figure still leave it below)
SHORTCUT_P = 0.01
PERMUTATIONS = 199
# fit.coarse_swap_premise takes an accident that names the class, not one that narrows it: the shots' blur must
# point to their own class for more than half of them (a background shared by a few classes points to one of the
# few, so about one shot in that many)
PREMISE_ACCURACY = 0.5
MAX_CELLS = 32  # per side of the grid the blur is averaged to: a small sigma must not grow the features unbounded
# the least background weight a cell of a background-only low-pass is read from (below: the image's mean background)
REACH = 1e-3


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, c, h, w) float images, ``sigma`` in pixels, reflected at the borders
    (the kernel is cut to the image so that reflection stays defined)."""
    h, w = images.shape[-2:]
    radius = min(math.ceil(3 * sigma), h - 1, w - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def coarse_sigma(sigma_fraction: float, shape) -> float:
    """The blur's sigma in pixels: ``sigma_fraction`` of the shorter side of ``shape`` (.., H, W), so that the
    split between coarse and fine is the same at any resolution (at least half a pixel)."""
    return max(sigma_fraction * min(shape[-2:]), 0.5)


def coarse_features(pixels: torch.Tensor, sigma_fraction: float, batch_size: int = 64,
                    objects: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 3, H, W) uint8 images to their low-pass in [0, 1], averaged to a grid of about one cell per sigma
    (the low-pass holds nothing finer; at most :data:`MAX_CELLS` a side), flattened. The images are first
    averaged over blocks of a quarter sigma (reflected to whole blocks) and blurred at that scale: a blur of
    sigma 64 pixels at 512 costs minutes on a CPU. In batches: a few-shot set at 512 pixels is gigabytes as
    floats. ``objects``: (n, 1, H, W) bool object masks: the low-pass of the background alone (each cell the
    blur-weighted mean of the pixels outside the object, so that a cell inside it takes the background around it;
    a cell beyond the blur's reach of any background, deep in a large object, the image's mean background); an
    image whose mask keeps everything has no background and gives its plain low-pass (:func:`coarse_shortcut`
    leaves such shots out)."""
    h, w = pixels.shape[-2:]
    sigma = coarse_sigma(sigma_fraction, pixels.shape)
    grid = tuple(min(MAX_CELLS, max(2, round(side / sigma))) for side in (h, w))
    block = max(1, min(int(sigma // 4), h // 2, w // 2))
    pad = (0, -w % block, 0, -h % block)

    def low_pass(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, pad, mode="reflect") if any(pad) else x
        return F.adaptive_avg_pool2d(gaussian_blur(F.avg_pool2d(x, block), sigma / block), grid)

    out = []
    for i in range(0, len(pixels), batch_size):
        x = pixels[i:i + batch_size].float() / 255
        if objects is None:
            out.append(low_pass(x).flatten(1))
            continue
        background = (~objects[i:i + batch_size].bool()).float()
        weight = low_pass(background)
        area = background.sum((2, 3), keepdim=True)
        mean = (x * background).sum((2, 3), keepdim=True) / area.clamp(min=1)
        # the Gaussian is cut at 3 sigma: a cell that far inside an object has no weight, not a small one
        only = torch.where(weight > REACH, low_pass(x * background) / weight.clamp(min=REACH), mean)
        bare = area.flatten() == 0  # no background to read
        if bool(bare.any()):
            only[bare] = low_pass(x[bare])
        out.append(only.flatten(1))
    return torch.cat(out)


def with_background(pixels: torch.Tensor, objects, labels):
    """Shots whose mask leaves some background (those whose mask keeps everything have none to read): their
    pixels, masks and labels (an array), and how many were left out; without masks, all of them."""
    labels = np.asarray(labels)
    if objects is None:
        return pixels, None, labels, 0
    read = (~objects.bool()).flatten(1).any(1)
    return pixels[read], objects[read], labels[read.numpy()], int((~read).sum())


def _class_means(features: torch.Tensor, labels):
    """The classes (sorted), each row's index into them, their counts and the class means of ``features``."""
    classes, index = np.unique(np.asarray(labels), return_inverse=True)
    index = torch.as_tensor(index.reshape(-1))
    counts = torch.bincount(index, minlength=len(classes)).double()
    means = torch.zeros(len(classes), features.shape[1], dtype=features.dtype).index_add_(0, index, features)
    return classes, index, counts, means / counts[:, None]


def leave_one_out_accuracy(features: torch.Tensor, labels: np.ndarray) -> float | None:
    """Share of images whose nearest class mean (squared Euclidean; their own class's mean taken without
    them) is their class's. Images alone in their class are left out (they still stand as a rival class);
    None when every class has one image."""
    x = features.double()
    _, index, counts, means = _class_means(x, labels)
    distance = torch.cdist(x, means, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    own = counts[index]
    kept = own > 1
    if not bool(kept.any()):
        return None
    # without the image, its class's mean moves away from it: the distance grows by (n / (n - 1))^2
    rows = torch.arange(len(x))
    exact = ((x - means[index]) ** 2).sum(1)
    distance[rows, index] = exact * (own / (own - 1).clamp(min=1)) ** 2
    return float((distance.argmin(1) == index)[kept].double().mean())


def shot_spread(features: torch.Tensor, labels) -> float:
    """How far a typical shot's coarse content lies from its class's (the median, over the shots of classes with
    more than one, of the distance to their class mean taken without them); 0 when no class has two shots."""
    x = features.double()
    _, index, counts, means = _class_means(x, labels)
    own = counts[index]
    kept = own > 1
    if not bool(kept.any()):
        return 0.0
    distance = ((x - means[index]) ** 2).sum(1).sqrt() * own / (own - 1).clamp(min=1)
    return float(np.median(distance[kept].numpy()))


def coarse_conflicts(shot_pixels: torch.Tensor, shot_labels, pixels, labels,
                     sigma_fraction: float = 0.125, margin: float | None = None, shot_objects=None,
                     objects=None) -> np.ndarray:
    """Which of ``pixels`` (labelled images, e.g. validation images) break the shots' coarse accident: their
    coarse content (:func:`coarse_features`) lies nearer another class's shot mean than their own class's by more
    than a typical shot lies from its own (:func:`shot_spread`). The margin is what keeps classes that share
    coarse content (a site, a camera, a background shared by a few classes) from counting as broken: an image
    drawn as its class's shots were lies about as near each of them. Where the shots' coarse content names their
    class by accident, these are the images on which reading it is wrong; where it is the class itself, there are
    none. uint8 (n, 3, H, W) images, or an iterable of such batches (a validation set decoded a batch at a time);
    a label the shots lack counts as a conflict. ``margin``: another margin (0: any image nearer another class's
    mean, the rule before the margin). ``shot_objects`` and ``objects`` (the images' masks, batched as ``pixels``):
    backgrounds alone, as :func:`coarse_shortcut` reads them given masks (shots without background left out)."""
    shot_pixels, shot_objects, shot_labels, _ = with_background(shot_pixels, shot_objects, shot_labels)
    shot_features = coarse_features(shot_pixels, sigma_fraction, objects=shot_objects).double()
    classes, _, _, means = _class_means(shot_features, shot_labels)
    margin = shot_spread(shot_features, shot_labels) if margin is None else margin
    batches = [pixels] if isinstance(pixels, torch.Tensor) else pixels
    masks = repeat(None) if objects is None else [objects] if isinstance(objects, torch.Tensor) else objects
    features = torch.cat([coarse_features(batch, sigma_fraction, objects=m).double()
                          for batch, m in zip(batches, masks)])
    distance = torch.cdist(features, means)
    labels = np.asarray(labels)
    where = {c: i for i, c in enumerate(classes.tolist())}
    own = torch.as_tensor([where.get(c, -1) for c in labels.tolist()], dtype=torch.long)
    known = own >= 0
    rows = torch.arange(len(labels))[known]
    others = distance.clone()
    others[rows, own[known]] = float("inf")
    conflict = torch.ones(len(labels), dtype=torch.bool)
    if len(classes) > 1:
        conflict[known] = distance[rows, own[known]] - others[known].min(1).values > margin
    else:
        conflict[known] = False
    return conflict.numpy()


def coarse_shortcut(pixels: torch.Tensor, labels, sigma_fraction: float = 0.125, permutations: int = PERMUTATIONS,
                    seed: int = 0, objects: torch.Tensor | None = None) -> dict:
    """How well the shots' coarse content alone names their class: ``accuracy`` (leave-one-out nearest class
    mean on :func:`coarse_features`), ``chance`` (its mean with the labels permuted ``permutations`` times)
    and ``p_value`` (the share of permutations at or above it, counting the observed one). ``pixels``: (n, 3,
    H, W) uint8; ``labels``: one per image. ``objects``: the shots' object masks ((n, 1, H, W) bool): the check
    reads their backgrounds alone (``"background_only"`` in the report), where the masks' premise puts an
    accident, and not the objects' own coarse content, which may be the class; shots whose mask keeps everything
    are left out (``"without_background"``, not in ``"images"``). With one image a class there is nothing to
    leave out: accuracy and chance are None and the p-value 1."""
    pixels, objects, labels, left_out = with_background(pixels, objects, labels)
    extra = {} if objects is None else {"background_only": True, "without_background": left_out}
    features = coarse_features(pixels, sigma_fraction, objects=objects).double()
    accuracy = leave_one_out_accuracy(features, labels)
    report = {"accuracy": None, "chance": None, "p_value": 1.0, "sigma_fraction": sigma_fraction,
              "images": len(labels), **extra}
    if accuracy is None:
        return report
    rng = numpy_rng(seed, COARSE_SHORTCUT)
    null = np.array([leave_one_out_accuracy(features, rng.permutation(labels)) for _ in range(permutations)])
    return {**report, "accuracy": round(accuracy, 4), "chance": round(float(null.mean()), 4),
            "p_value": round(float((1 + np.sum(null >= accuracy)) / (1 + permutations)), 4)}


def fired(report: dict) -> bool:
    """Whether the shots' coarse content names their class beyond chance (p at most :data:`SHORTCUT_P`)."""
    return report["accuracy"] is not None and report["p_value"] <= SHORTCUT_P


def names_outright(report: dict) -> bool:
    """Whether the shots' blur names their class beyond chance (:func:`fired`) and for most of them (leave-one-out
    accuracy above :data:`PREMISE_ACCURACY`), rather than narrowing it to a few classes that share it or naming it
    for a minority of the shots."""
    return fired(report) and report["accuracy"] > PREMISE_ACCURACY


def premise_applies(report: dict) -> bool:
    """Whether the shots' blur names their class outright (:func:`names_outright`) and no validation image breaks
    that accident (none given, none of them breaking it, or none readable for it: :func:`validation_unread`):
    nothing the user holds can tell it from the class, so only the method's premise (coarse content is not the
    class) can decide (``fit.coarse_swap_premise``)."""
    return names_outright(report) and not (report.get("validation") or {}).get("breaking")


def validation_unread(report: dict) -> bool:
    """Whether the validation images were given but could not be read for the accident: the check read the shots'
    backgrounds (masks given), and the validation images come without masks, so which of them break it is
    unknown (``"breaking"`` is empty and ``"without_masks"`` set)."""
    return bool((report.get("validation") or {}).get("without_masks"))


def validation_breaks(report: dict, shot_pixels: torch.Tensor, shot_labels, pixels, labels, shot_objects=None,
                      objects=None) -> dict:
    """Which validation images break the accident the check found (:func:`coarse_conflicts`, at the report's
    sigma): ``{"images": n, "breaking": [indices]}``. Reading a fit on exactly these images is how the user's own
    data can tell an accident from the class: where they exist, a fit that reads the accident gets them wrong;
    where there are none, the data cannot tell."""
    mask = coarse_conflicts(shot_pixels, shot_labels, pixels, labels, report["sigma_fraction"],
                            shot_objects=shot_objects, objects=objects)
    return {"images": int(len(mask)), "breaking": [int(i) for i in np.flatnonzero(mask)]}


def shortcut_warning(report: dict, swap: float, auto: bool = False) -> str | None:
    """The one-line warning a fit gives when the shots' coarse content names their class beyond chance (the
    permutation p-value at most :data:`SHORTCUT_P`) and ``fit.coarse_swap`` is off; None otherwise. With
    validation images (``report["validation"]``), it says how many of them break the accident; with
    ``fit.coarse_swap_auto`` (``auto``) and such images, none: the fit compares the two on them itself."""
    if swap > 0 or not fired(report):
        return None
    val = report.get("validation")
    if auto and val and val["breaking"]:
        return None
    if val is None:
        tail = ""
    elif validation_unread(report):
        tail = (f"; your {val['images']} validation images come without masks, so which of them break it cannot be "
                "read on their backgrounds: only you can tell (fit.coarse_swap_premise takes the method's premise)")
    elif val["breaking"]:
        tail = (f"; {len(val['breaking'])} of your {val['images']} validation images break it (their blur points to "
                "another class): compare fits with and without the swap on them, or let fit.coarse_swap_auto do it "
                "(fit_summary_['coarse_shortcut']['validation']['breaking']; breaking_ids in diti-sd fit's summary "
                "line)")
    else:
        tail = (f"; none of your {val['images']} validation images breaks it, so they cannot tell an accident from "
                "the class: only you can (fit.coarse_swap_premise takes the method's premise where they cannot)")
    what = "backgrounds (outside their masks) alone point" if report.get("background_only") else "blur alone points"
    return (f"the shots' {what} to their class for {report['accuracy']:.0%} of {report['images']} shots, "
            f"leave-one-out ({report['chance']:.0%} with the labels permuted, p = {report['p_value']:.3f}); if that "
            "is an accident of where they were taken, not what the classes differ in, see fit.coarse_swap "
            f"(--set fit.coarse_swap=1) in docs/method.md, 'The shortcut check'{tail}")
