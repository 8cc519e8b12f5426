"""How the reference's processing scripts prepared a data set's images before training and scoring read them.

Kept free of torch so that the command line can check a preparation's name before torch is imported.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps


def pad_square(image: Image.Image) -> Image.Image:
    """Centre the image on a black square as wide as its longer side (TiF's VeRi preprocessing)."""
    side = max(image.size)
    dw, dh = side - image.width, side - image.height
    return ImageOps.expand(image, (dw // 2, dh // 2, dw - dw // 2, dh - dh // 2), fill="black")


def person_crop_pad(image: Image.Image) -> Image.Image:
    """TiF's DukeMTMC-reID preprocessing: a centred crop to width:height 1:2.5, then :func:`pad_square`."""
    w, h = image.size
    cw, ch = (int(h / 2.5), h) if w >= int(h / 2.5) else (w, int(w * 2.5))
    left, top = (w - cw) / 2, (h - ch) / 2
    return pad_square(image.crop((left, top, left + cw, top + ch)))


def resize_crop_512(image: Image.Image) -> Image.Image:
    """TiF's ISIC 2019 preprocessing: a Lanczos resize whose shorter side (by aspect, against the square) is 512,
    the other side truncated to an integer, then the central 512 x 512 (a half-pixel box, as PIL rounds it)."""
    w, h = image.size
    size = (512, int(h * 512 / w)) if w / h < 1 else (int(w * 512 / h), 512)
    image = image.resize(size, Image.LANCZOS)
    left, top = (size[0] - 512) / 2, (size[1] - 512) / 2
    return image.crop((left, top, left + 512, top + 512))


def as_they_are(image: Image.Image) -> Image.Image:
    """No geometry: files that are the processing's output already."""
    return image


def jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    """The image as a JPEG file at ``quality`` (PIL's encoder and its default chroma subsampling) decodes again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as im:
        return im.convert("RGB")


@dataclass(frozen=True)
class Preparation:
    """A data set's reference preprocessing: a geometry, then (``jpeg_quality``) the file it was saved as."""

    geometry: object
    jpeg_quality: int | None = None

    def apply(self, image: Image.Image, geometry_only: bool = False) -> Image.Image:
        image = self.geometry(image)
        if self.jpeg_quality is None or geometry_only:
            return image
        return jpeg_round_trip(image, self.jpeg_quality)


# TiF's process_{isic,duke,veri}.py save their results with PIL's ``save(".../x.jpg")``: JPEG at PIL's default
# quality, 75; training and scoring read those files. The names without "tif-" keep the geometry alone.
TIF_JPEG_QUALITY = 75
# TiF's processed folders, its scripts' output, read as they are: named so that what is fitted on them is keyed apart
# from what was fitted on the archives' images
AS_PROCESSED = "tif-processed"
PREPARE = {
    "pad-square": Preparation(pad_square),
    "person-crop-pad": Preparation(person_crop_pad),
    "tif-veri": Preparation(pad_square, TIF_JPEG_QUALITY),
    "tif-duke": Preparation(person_crop_pad, TIF_JPEG_QUALITY),
    "tif-isic": Preparation(resize_crop_512, TIF_JPEG_QUALITY),
    AS_PROCESSED: Preparation(as_they_are),
}
# what the readers of the official archives give each data set kind's images: a fit on them learned that
ARCHIVE_PREPARATION = {"isic2019": "tif-isic", "duke": "tif-duke", "veri": "tif-veri"}
