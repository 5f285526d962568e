"""Where the model's 224x224 input crop lies in the original image: torchvision's Resize(256)
and CenterCrop(224) arithmetic, and the mapping of the model's grid back to original pixels."""

from __future__ import annotations

import dataclasses

RESIZE = 256
CROP = 224


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
