"""The official PoundNet test transform, on Pillow images (the reference the device path matches).

RGB -> JPEG re-encode at quality 90 (optimize=True) and decode -> resize the shorter side to
256 (bilinear, antialiased) -> center crop 224 -> tensor -> CLIP normalization.
"""
from __future__ import annotations

import functools
import io

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from .geometry import CROP, RESIZE, CropGeometry, crop_offsets, geometry_for, resized_size

__all__ = ["CLIP_MEAN", "CLIP_STD", "CROP", "JPEG_QUALITY", "RESIZE", "CropGeometry", "crop_image",
           "crop_offsets", "geometry_for", "jpeg_roundtrip", "normalize", "preprocess",
           "preprocess_with_geometry", "resized_size"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
JPEG_QUALITY = 90


def jpeg_roundtrip(image: Image.Image, quality: int = JPEG_QUALITY) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=True)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def crop_image(image: Image.Image) -> tuple[Image.Image, CropGeometry]:
    """The model's 224x224 RGB input crop (before normalization) and its geometry."""
    rgb = image.convert("RGB")
    geom = geometry_for(*rgb.size)
    rgb = jpeg_roundtrip(rgb)
    resized = TF.resize(rgb, [geom.resized[1], geom.resized[0]],
                        interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    crop = resized.crop((geom.crop_left, geom.crop_top,
                         geom.crop_left + CROP, geom.crop_top + CROP))
    return crop, geom


def normalize(crop: torch.Tensor) -> torch.Tensor:
    """[.., 3, H, W] float in 0..1 -> CLIP-normalized."""
    mean, std = _clip_stats(crop.device, crop.dtype)
    return (crop - mean) / std


@functools.lru_cache(maxsize=None)
def _clip_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean and std [3, 1, 1] on ``device``, made once: a copy to a GPU made per call
    would wait for everything queued on the stream before it."""
    return tuple(torch.tensor(v, dtype=dtype).view(3, 1, 1).to(device) for v in (CLIP_MEAN, CLIP_STD))


def preprocess_with_geometry(image: Image.Image) -> tuple[torch.Tensor, CropGeometry, Image.Image]:
    crop, geom = crop_image(image)
    return normalize(TF.to_tensor(crop)), geom, crop


def preprocess(image: Image.Image) -> torch.Tensor:
    """The official test transform: PIL image -> normalized Tensor[3, 224, 224]."""
    return preprocess_with_geometry(image)[0]
