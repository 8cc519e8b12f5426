"""Object masks: which pixels of a shot are the object, for the coarse swap to keep (``fit(masks=...)``).

A mask is the size of its image as the fit reads it. A mask *file* is the size of its image file: a data set's
banner crop and reference preparation apply to both, so for a loaded data set read the masks with
:func:`dataset_masks` (``diti-sd fit --masks`` does). The object is bright: grey level above half of 255, or
values 0/1 (a segmenter's labels); a palette PNG's non-zero indices; a cut-out's opaque pixels (a PNG whose alpha
varies). A segmenter's output, a data set's box annotation drawn as a filled rectangle (:func:`dataset_box_masks`
draws them), or a hand-painted PNG can serve; keep them tight: on synthetic shots a rim of background around each
object did worse than no masks, a mask short of the object's edge less so, a box in between (docs/method.md, "Masks").
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DitiWarning
from .images import IMAGE_SUFFIXES, load_image


class MaskError(ConfigError):
    """A mask is missing, unreadable or does not match its image."""


class MissingMaskError(MaskError):
    """Some image has no mask file in the folder given (the folder may hold masks for other images only)."""


def _grey(image: Image.Image) -> Image.Image:
    """The mask's one channel, object bright: the alpha of a cut-out (an alpha that varies), a palette image's
    indices (non-zero: the object), else the grey level."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
    if image.mode == "P":
        return Image.fromarray(((np.asarray(image) > 0) * 255).astype(np.uint8))
    return image.convert("L")


def _bright(array: torch.Tensor) -> torch.Tensor:
    """The object of a one-channel mask: values 0/1 (at most 1 anywhere) read as labels, others above half of 255."""
    if array.dtype == torch.bool:
        return array
    return array > (0.5 if not array.numel() or float(array.max()) <= 1 else 127)


def load_mask(source, crop_bottom: int = 0, prepare: str = "") -> torch.Tensor:
    """(H, W) bool: True on the object. ``source``: a path or PIL image (see the module's note; the data set's
    ``crop_bottom`` and ``prepare`` are applied as to the image), or an (H, W) array or tensor already in the
    image's frame as the fit loads it (bool; values 0/1, or 0 to 1; else above 127)."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        array = torch.as_tensor(np.asarray(source) if isinstance(source, np.ndarray) else source.detach().cpu())
        if array.dim() != 2:
            raise MaskError(f"a mask array must be (H, W), got shape {tuple(array.shape)}; pass one channel")
        return _bright(array)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise MaskError(f"mask file not found: {path}")
        try:
            with Image.open(path) as im:
                image = _grey(im)
        except (UnidentifiedImageError, OSError) as err:
            raise MaskError(f"cannot read mask {path}: {err}; save it again as a PNG") from None
    elif isinstance(source, Image.Image):
        image = _grey(source)
    else:
        raise MaskError(f"cannot use {type(source).__name__} as a mask; pass a path, PIL image, or (H, W) array")
    framed = load_image(image.convert("RGB"), crop_bottom=crop_bottom, prepare=prepare, geometry_only=True)
    return _bright(torch.from_numpy(np.asarray(framed.convert("L")).copy()))


def as_mask_sequence(masks) -> list | object:
    """``fit``'s masks as an indexable sequence (a (n, H, W) array or tensor is n masks)."""
    if isinstance(masks, (np.ndarray, torch.Tensor)) and masks.ndim == 3:
        return list(masks)
    if isinstance(masks, (str, os.PathLike)) or not (hasattr(masks, "__len__") and hasattr(masks, "__getitem__")):
        return [masks] if isinstance(masks, (str, os.PathLike)) else list(masks)
    return masks


def check_masks(masks, X, read: bool = True, stacklevel: int = 2, loss: bool = False, needed: bool = False,
                what: str = "fit"):
    """``fit``'s masks checked against its images before any work, one at a time (each mask and image is read
    once here): one per image, readable, each of its image's size. ``read``: whether the fit's recipe reads them
    (a coarse swap or ``fit.mask_loss``); ``loss``: it has ``fit.mask_loss``, which warns when no masks (None) are
    given; ``needed``: the recipe cannot train without them (``fit.swap_background: whole``), an error when none
    are given. Warns where they would change nothing (the swap off) and where some keep
    nothing or everything. Returns them as an indexable sequence. ``what``: who reads them, for the messages;
    another reader than ``fit`` (scoring's object cells) gets the size checks alone."""
    if masks is None:
        if needed:
            raise MaskError("fit.swap_background 'whole' keeps each shot's object and replaces the rest, but fit got "
                            "no masks: pass masks=... (diti-sd fit --masks DIR or --box-masks), or set "
                            "fit.swap_background: coarse")
        if loss:
            warnings.warn("fit.mask_loss takes each shot's loss over its object mask, but fit got no masks: the loss "
                          "is taken over whole shots; pass masks=... (diti-sd fit --masks DIR)", DitiWarning,
                          stacklevel=stacklevel + 1)
        return None
    masks = as_mask_sequence(masks)
    if len(masks) != len(X):
        raise MaskError(f"{what} got {len(masks)} masks for {len(X)} images; pass one mask per image, in their order")
    empty = full = 0
    for i in range(len(X)):
        mask = load_mask(masks[i])
        width, height = load_image(X[i]).size
        if tuple(mask.shape) != (height, width):
            raise MaskError(f"mask {i} is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}; a mask "
                            f"must be its image's size as {what} reads it (for a data set that crops its images, read "
                            "the mask files with diti_sd.data.dataset_masks)")
        empty, full = empty + (not bool(mask.any())), full + bool(mask.all())
    if what != "fit":
        return masks
    if needed and empty:
        raise MaskError(f"{empty} of {len(X)} masks keep nothing: with fit.swap_background 'whole' their shots would "
                        "be replaced by prior images; check that the object is bright in them, or set "
                        "fit.swap_background: coarse")
    if not read:
        warn_masks_unread(stacklevel + 1)
    elif empty or full:
        warnings.warn(f"of {len(X)} masks, {empty} keep nothing (no pixel above half: those shots are swapped whole) "
                      f"and {full} keep everything (never swapped); check that the object is bright in them",
                      DitiWarning, stacklevel=stacklevel + 1)
    return masks


def warn_masks_unread(stacklevel: int = 2) -> None:
    """The warning for masks given to a recipe that trains without them."""
    warnings.warn("masks are read in training only by the coarse swap and the masked loss, which this recipe has "
                  "off, so they change only the shortcut check (it reads the backgrounds); set fit.coarse_swap (or "
                  "fit.coarse_swap_auto) or fit.mask_loss to train with them", DitiWarning, stacklevel=stacklevel + 1)


def find_masks(folder, ids: list[str], what: str = "shots", flag: str = "--masks") -> list[Path]:
    """Each image's mask file under ``folder``: the image's id in its data set with any image suffix in place of
    its own (for an image folder the id is its path under the split's folder, ``Boeing/0001.jpg`` ->
    ``folder/Boeing/0001.png``; for an archive its stem, ``1025794`` -> ``folder/1025794.png``). Every missing one
    is counted in one error, before any work. ``what`` the images are and ``flag`` that gave the folder, for the
    messages."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MaskError(f"mask folder not found: {folder}; pass the folder that holds one mask per image ({flag})")
    # PNG first: a folder holding the images beside their masks must not give an image as its own mask
    suffixes = [".png", *(s for s in IMAGE_SUFFIXES if s != ".png")]
    suffixes += [s.upper() for s in suffixes]
    found, missing = [], []
    for image_id in ids:
        stem = folder / Path(image_id).with_suffix("")
        candidates = [stem.with_name(stem.name + s) for s in suffixes if stem.with_name(stem.name + s).is_file()]
        if not candidates:
            missing.append(image_id)
        else:
            found.append(candidates[0])
    if missing:
        expected = folder / Path(missing[0]).with_suffix(".png")
        raise MissingMaskError(f"{len(missing)} of {len(ids)} {what} have no mask under {folder} (e.g. {missing[0]!r}: "
                        f"expected {expected}); add them or leave {flag} out")
    return found


def bounding_box(mask) -> tuple[int, int, int, int] | None:
    """The smallest box holding a mask's object, as (left, top, right, bottom) pixel indices, right and bottom
    excluded (PIL's convention); None where the mask keeps nothing."""
    mask = load_mask(mask)
    rows, cols = np.flatnonzero(mask.any(1).numpy()), np.flatnonzero(mask.any(0).numpy())
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """``mask`` grown by ``pixels`` (a chessboard neighbourhood; a segmenter that takes in a rim of background) or,
    negative, shrunk by as many (one that misses the object's edge; an object that meets the image's border is not
    shrunk from that side, as if it went on beyond it)."""
    if pixels == 0:
        return mask
    k = abs(pixels)
    m = mask.float()[None, None] if pixels > 0 else (~mask).float()[None, None]
    grown = torch.nn.functional.max_pool2d(m, 2 * k + 1, stride=1, padding=k)[0, 0] > 0
    return grown if pixels > 0 else ~grown


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> torch.Tensor:
    """(H, W) bool for an image of ``size`` (width, height): True inside ``box`` (left, top, right, bottom; right
    and bottom excluded), clipped to the image."""
    width, height = size
    left, top, right, bottom = (int(v) for v in box)
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[max(top, 0):max(min(bottom, height), 0), max(left, 0):max(min(right, width), 0)] = True
    return mask


@dataclass(frozen=True, eq=False)
class FileBox:
    """A box annotation on an image file, drawn as a mask the size of the file (before a data set's crop)."""

    image: object  # a path, or anything load_image reads
    box: tuple[int, int, int, int]
    image_id: str = ""

    def size(self) -> tuple[int, int]:
        """The image file's (width, height), from the header alone where it is a file."""
        if isinstance(self.image, (str, os.PathLike)) and Path(self.image).is_file():
            with Image.open(self.image) as im:
                return im.size
        return load_image(self.image).size

    def draw(self) -> Image.Image:
        return Image.fromarray(box_mask(self.size(), self.box).numpy().astype(np.uint8) * 255)


def dataset_box_masks(data, boxes: Mapping[str, tuple[int, int, int, int]]) -> MaskSequence:
    """Masks drawn from box annotations, one per image of a loaded data set (``boxes``: image id -> (left, top,
    right, bottom) in the image file's pixels, right and bottom excluded; FGVC-Aircraft's come from
    :func:`~diti_sd.data.fgvc.load_fgvc_boxes`), read with its banner crop and preparation as
    :func:`dataset_masks` reads mask files. Every image without a box, and every box that holds no pixel of its
    image once the banner is cropped, is counted in one error here (the images' headers are read, not their
    pixels). A box keeps the background in its corners: on the synthetic shots it kept less of the swap's gain
    than the object's own mask (docs/method.md, "Masks")."""
    missing = [i for i in data.ids if i not in boxes]
    if missing:
        raise MaskError(f"{len(missing)} of {len(data.ids)} shots have no box (e.g. {missing[0]!r}); pass masks "
                        "drawn for them instead")
    sources = [FileBox(image, tuple(boxes[i]), i) for image, i in zip(data.images, data.ids)]
    empty = []
    for source in sources:
        width, height = source.size()
        if not box_mask((width, height - data.crop_bottom), source.box).any():
            empty.append(source)
    if empty:
        first = empty[0]
        raise MaskError(f"{len(empty)} of {len(sources)} boxes hold no pixel of their image as read (e.g. "
                        f"{first.image_id!r}: {first.box}{' above the banner crop' if data.crop_bottom else ''}); "
                        "check the annotations (left, top, right, bottom)")
    return MaskSequence(sources, data.crop_bottom, data.prepare)


def check_file_sizes(files: list, images: list) -> None:
    """Each mask file the size of its image file, read from the headers, before any pixel: one error counting
    those that are not and naming the first. Compared as the files are, since a data set's crop or preparation can
    give masks of other sizes one size (ISIC's resize-and-crop does); images that are no files, or that cannot be
    read (their loader names them), are left out."""
    wrong = []
    for file, image in zip(files, images):
        if not isinstance(image, (str, os.PathLike)):
            continue
        try:
            with Image.open(image) as im:
                size = im.size
        except (UnidentifiedImageError, OSError):
            continue
        try:
            with Image.open(file) as im:
                mask_size = im.size
        except (UnidentifiedImageError, OSError) as err:
            raise MaskError(f"cannot read mask {file} (the mask of {image}): {err}; save it again as a PNG") from None
        if mask_size != size:
            wrong.append((file, image, mask_size, size))
    if wrong:
        file, image, (mw, mh), (w, h) = wrong[0]
        raise MaskError(f"{len(wrong)} of {len(files)} masks are not their image file's size (e.g. {file} is "
                        f"{mw}x{mh} but {image} is {w}x{h}); save each mask at its image file's size")


def dataset_masks(data, folder) -> MaskSequence:
    """The masks of a loaded data set's images (a :class:`~diti_sd.data.images.LabeledImages`, e.g. a k-shot
    split's train part) from ``folder`` (:func:`find_masks`), read with its banner crop and preparation: what to
    pass to ``fit(ImageSequence(data), data.label_names(), masks=...)``. Each file is checked against its image
    file's size first (:func:`check_file_sizes`)."""
    files = find_masks(folder, data.ids)
    check_file_sizes(files, data.images)
    return MaskSequence(files, data.crop_bottom, data.prepare)


class MaskSequence:
    """Masks read on access, with the data set's banner crop and preparation (as :class:`ImageSequence` reads
    the images); ``sources``: mask files, or :class:`FileBox` annotations drawn on access."""

    def __init__(self, sources: list, crop_bottom: int = 0, prepare: str = ""):
        self.sources, self.crop_bottom, self.prepare = list(sources), crop_bottom, prepare

    @property
    def paths(self) -> list:
        """The mask files (its name before box annotations joined them as sources)."""
        return self.sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> torch.Tensor:
        source = self.sources[index]
        return load_mask(source.draw() if isinstance(source, FileBox) else source, self.crop_bottom, self.prepare)
