"""The official PoundNet test transform and the geometry that maps the model's grid back to
the original image.

RGB -> JPEG re-encode at quality 90 (optimize=True) and decode -> resize the shorter side to
256 (bilinear, antialiased) -> center crop 224 -> tensor -> CLIP normalization.
"""
from __future__ import annotations

import dataclasses
import functools
import io

import torch
from PIL import Image
from torchvision.transforms import functional as TF

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE = 256
CROP = 224
JPEG_QUALITY = 90


@dataclasses.dataclass(frozen=True)
class CropGeometry:
    """Where the model's input crop lies in the original image.

    original: (width, height) of the decoded image; resized: its size after the shorter side
    went to 256; crop_left/crop_top/crop_size: the center crop inside the resized image.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    crop_left: int
    crop_top: int
    crop_size: int = CROP

    @property
    def scale(self) -> tuple[float, float]:
        """Resized pixels per original pixel, per axis (x, y)."""
        return self.resized[0] / self.original[0], self.resized[1] / self.original[1]

    def crop_to_original(self, x: float, y: float) -> tuple[float, float]:
        """A point in crop pixel coordinates (continuous, 0..crop_size) to original pixels."""
        sx, sy = self.scale
        return (x + self.crop_left) / sx, (y + self.crop_top) / sy

    def grid_to_original(self, row: float, col: float, grid: int) -> tuple[float, float]:
        """Centre of grid cell (row, col) of a grid x grid map, in original pixel coordinates (x, y)."""
        cell = self.crop_size / grid
        return self.crop_to_original((col + 0.5) * cell, (row + 0.5) * cell)

    def original_box(self) -> tuple[float, float, float, float]:
        """The crop as (left, top, right, bottom) in original pixel coordinates."""
        left, top = self.crop_to_original(0, 0)
        right, bottom = self.crop_to_original(self.crop_size, self.crop_size)
        return left, top, right, bottom

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resized_size(width: int, height: int, size: int = RESIZE) -> tuple[int, int]:
    """torchvision's Resize(int): shorter side to ``size``, longer side truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_offsets(width: int, height: int, crop: int = CROP) -> tuple[int, int]:
    """torchvision's CenterCrop offsets (left, top)."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def geometry_for(width: int, height: int) -> CropGeometry:
    rw, rh = resized_size(width, height)
    left, top = crop_offsets(rw, rh)
    return CropGeometry(original=(width, height), resized=(rw, rh), crop_left=left, crop_top=top)


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
