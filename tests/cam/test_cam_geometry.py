"""Peaks land on the right pixels of the ORIGINAL image, for wide and tall images: checked
against the transform's arithmetic and against a bright square drawn into the image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from poundcam.cam.stats import class_stats
from poundcam.preprocess.transform import geometry_for, preprocess_with_geometry

GRID = 7
CELL = 224 / GRID

SIZES = [(1000, 229), (300, 900), (640, 480), (257, 256)]


@pytest.mark.parametrize("size", SIZES)
def test_geometry_follows_the_official_transform(size):
    w, h = size
    img = Image.new("RGB", size, (40, 40, 40))
    x, geom, crop = preprocess_with_geometry(img)
    assert x.shape == (3, 224, 224) and crop.size == (224, 224)
    assert geom.original == (w, h)
    short = min(w, h)
    assert min(geom.resized) == 256 and max(geom.resized) == int(256 * max(w, h) / short)
    if size == (1000, 229):
        assert geom.resized == (1117, 256) and (geom.crop_left, geom.crop_top) == (446, 16)
    if size == (300, 900):
        assert geom.resized == (256, 768) and (geom.crop_left, geom.crop_top) == (16, 272)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("cell", [(0, 0), (3, 5), (6, 6), (6, 1)])
def test_hot_cell_peak_inside_its_region(size, cell):
    geom = geometry_for(*size)
    m = np.zeros((GRID, GRID))
    m[cell] = 1.0
    s = class_stats(m, geom)
    row, col = cell
    sx, sy = geom.scale
    x0, x1 = (col * CELL + geom.crop_left) / sx, ((col + 1) * CELL + geom.crop_left) / sx
    y0, y1 = (row * CELL + geom.crop_top) / sy, ((row + 1) * CELL + geom.crop_top) / sy
    px, py = s["peak"]
    assert x0 < px < x1 and y0 < py < y1
    assert 0 <= px <= size[0] and 0 <= py <= size[1]
    assert s["peak"] == pytest.approx(list(geom.grid_to_original(row, col, GRID)))
    left, top, right, bottom = geom.original_box()
    assert left <= x0 and x1 <= right + 1e-9 and top <= y0 and y1 <= bottom + 1e-9


@pytest.mark.parametrize("size", [(1000, 229), (300, 900)])
@pytest.mark.parametrize("cell", [(1, 1), (3, 5), (5, 2)])
def test_bright_square_round_trip(size, cell):
    """Draw a bright square where the cell's peak says, preprocess the image, and find the
    square in the model's crop: it must sit in that cell."""
    geom = geometry_for(*size)
    m = np.zeros((GRID, GRID))
    m[cell] = 1.0
    px, py = class_stats(m, geom)["peak"]
    half = 0.25 * CELL / min(geom.scale)  # a quarter cell, in original pixels
    img = Image.new("RGB", size, (20, 20, 20))
    ImageDraw.Draw(img).rectangle([px - half, py - half, px + half, py + half], fill=(250, 250, 250))
    _, geom2, crop = preprocess_with_geometry(img)
    assert geom2 == geom
    a = np.asarray(crop.convert("L"), dtype=np.float64)
    ys, xs = np.nonzero(a > 128)
    assert len(xs) > 0
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    assert (int(cy // CELL), int(cx // CELL)) == cell
    # and the crop pixel at the cell centre maps back to the drawn point
    back = geom.crop_to_original((cell[1] + 0.5) * CELL, (cell[0] + 0.5) * CELL)
    assert back == pytest.approx((px, py))
    assert abs(cx - (cell[1] + 0.5) * CELL) < 2 and abs(cy - (cell[0] + 0.5) * CELL) < 2
