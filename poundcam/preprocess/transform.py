"""The official PoundNet test transform, on Pillow images (the reference the device path matches).

RGB -> JPEG re-encode at quality 90 (optimize=True) and decode -> resize the shorter side to
256 (bilinear, antialiased) -> center crop 224 -> tensor -> CLIP normalization.

``crop_image`` computes the crop from the part of the image that feeds it, in bounded memory
(poundcam.preprocess.window); ``reference_crop`` is the transform done literally, on the whole
image, which the tests and the memory benchmark compare it with.
"""

from __future__ import annotations

import functools
import io

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from .geometry import CROP, RESIZE, CropGeometry, crop_offsets, geometry_for, resized_size
from .window import bounded_crop

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CROP",
    "JPEG_QUALITY",
    "RESIZE",
    "CropGeometry",
    "crop_image",
    "crop_offsets",
    "geometry_for",
    "jpeg_roundtrip",
    "normalize",
    "preprocess",
    "preprocess_with_geometry",
    "reference_crop",
    "resized_size",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
JPEG_QUALITY = 90


def jpeg_roundtrip(image: Image.Image, quality: int = JPEG_QUALITY) -> Image.Image:
    """Encode as JPEG (4:2:0, Huffman tables optimized, as the official transform) and decode.

    With optimize=True Pillow gives libjpeg one output buffer of about one byte per pixel, too
    small for detailed strips a few pixels high (their padding to 16-pixel blocks is coded
    too): the encoder fails. Such images are encoded again without optimized tables. The
    decoded pixels are the same (the Huffman coding is lossless; the quantized coefficients do
    not depend on it), and every image the official encoder takes is encoded by it unchanged.
    """
    buf = io.BytesIO()
    try:
        image.save(buf, format="JPEG", quality=quality, optimize=True)
    except OSError:  # "broken data stream": the output did not fit the encoder's buffer
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality, optimize=False)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def crop_image(image: Image.Image) -> tuple[Image.Image, CropGeometry]:
    """The model's 224x224 RGB input crop (before normalization) and its geometry: the official
    transform's pixels, computed in memory bounded by a few bands of the image."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    crop, geom = bounded_crop(rgb, jpeg_roundtrip)
    return Image.fromarray(crop, "RGB"), geom


def reference_crop(image: Image.Image) -> tuple[Image.Image, CropGeometry]:
    """``crop_image`` done literally: re-encode, resize and crop the whole image. Its memory
    grows with the resized image (gigabytes for thin strips); for tests and benchmarks."""
    rgb = image.convert("RGB")
    geom = geometry_for(*rgb.size)
    rgb = jpeg_roundtrip(rgb)
    resized = TF.resize(
        rgb, [geom.resized[1], geom.resized[0]], interpolation=TF.InterpolationMode.BILINEAR, antialias=True
    )
    crop = resized.crop((geom.crop_left, geom.crop_top, geom.crop_left + CROP, geom.crop_top + CROP))
    return crop, geom


def normalize(crop: torch.Tensor) -> torch.Tensor:
    """[.., 3, H, W] float in 0..1 -> CLIP-normalized."""
    mean, std = _clip_stats(crop.device, crop.dtype)
    return (crop - mean) / std


@functools.cache
def _clip_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean and std [3, 1, 1] on ``device``, made once: a copy to a GPU made per call
    would wait for everything queued on the stream before it."""
    mean, std = (torch.tensor(v, dtype=dtype).view(3, 1, 1).to(device) for v in (CLIP_MEAN, CLIP_STD))
    return mean, std


def preprocess_with_geometry(image: Image.Image) -> tuple[torch.Tensor, CropGeometry, Image.Image]:
    crop, geom = crop_image(image)
    return normalize(TF.to_tensor(crop)), geom, crop


def preprocess(image: Image.Image) -> torch.Tensor:
    """The official test transform: PIL image -> normalized Tensor[3, 224, 224]."""
    return preprocess_with_geometry(image)[0]
