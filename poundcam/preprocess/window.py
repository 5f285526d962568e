"""The official transform's 224x224 crop, computed from the part of the image that feeds it.

The official transform re-encodes the whole image as JPEG, resizes the whole image (shorter side
to 256) and keeps a 224x224 window. Done literally, its memory follows the *resized* image, which
is unbounded for thin strips (a 65000x1 image resizes to 16,640,000x256), plus copies of the
whole image at every step. Here the same pixels are computed from bounded pieces:

- The resize is Pillow's two one-axis passes. For images of ordinary proportions, Pillow's own
  first pass runs over bands of whole rows (or columns), cut to the window's columns (rows),
  and its second pass over just those: a one-axis resize of whole rows uses the same weights
  as the full resize. For strips too thin for that (the first pass's output of one row is
  millions of pixels wide), both passes are computed for the window only, with Pillow's
  arithmetic in NumPy (``resample.resize_window``), which is cheap there.
- The JPEG re-encode is local: a pixel of the decoded JPEG depends only on the 16x16 blocks
  (4:2:0 MCUs) around it. So each piece is re-encoded on its own with a margin of one whole MCU
  on every side and cut on the MCU grid; the margin is dropped. Inside, the pixels are those of
  the whole image's round trip (libjpeg's edge padding happens at the image's own right and
  bottom edges in both cases, the chroma subsampling phase is the same because pieces start on
  the MCU grid, and the decoder's chroma upsampling reads at most one MCU into the margin).

tests/transform/test_bounded_transform.py checks the result against the literal transform
(``transform.reference_crop``) bit for bit, on many sizes and aspect ratios.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .geometry import CROP, CropGeometry, geometry_for
from .resample import _horizontal_first, resize_window, window_inputs

MCU = 16  # 4:2:0 minimum coded unit of the quality-90 re-encode
BAND = 512  # rows (or columns) per band of the banded path
BANDED_MAX_PIXELS = 4 * 1024 * 1024  # largest Pillow image the banded path makes (16 MB)
WINDOW_MAX_FLOPS = 64 * 1024 * 1024  # the window path's NumPy passes, when cheaper than bands


def bounded_crop(image: Image.Image, roundtrip) -> tuple[np.ndarray, CropGeometry]:
    """The official transform's crop of an RGB ``image`` (uint8 [224, 224, 3]) and its geometry.

    ``roundtrip``: the JPEG re-encode and decode of a PIL image (``transform.jpeg_roundtrip``).
    Working memory is a few bands of the image, never a copy of the whole of it. Small crops
    of the input (thin strips, small images) take the window path, whose NumPy passes are
    cheap for them; others the banded path (Pillow's C code for both passes), unless its bands
    would be too large (strips too thin for it)."""
    size = image.size
    geom = geometry_for(*size)
    window = (geom.crop_left, geom.crop_top, geom.crop_left + CROP, geom.crop_top + CROP)
    box = window_inputs(size, geom.resized, window)
    if (
        _window_flops(box) > WINDOW_MAX_FLOPS
        and max(_banded_pixels(size, geom.resized, box)) <= BANDED_MAX_PIXELS
    ):
        return _banded(image, geom, window, box, roundtrip), geom
    region = roundtrip_region(image, box, roundtrip)
    return resize_window(region, box[:2], size, geom.resized, window), geom


def _window_flops(box) -> int:
    """Multiply-adds of the window path's two passes (dense products over the input box)."""
    x0, y0, x1, y1 = box
    rows, cols = y1 - y0, x1 - x0
    return 3 * CROP * (rows * cols + CROP * max(rows, cols))


def _banded_pixels(size, out, box) -> tuple[int, int, int]:
    """Pixels of the banded path's images: a band after the first pass, the canvas of the
    second pass, and its output."""
    (w, h), (ow, oh) = size, out
    x0, y0, x1, y1 = box
    if _horizontal_first(size, out):
        return ow * min(BAND, y1 - y0), CROP * h, CROP * oh
    return min(BAND, x1 - x0) * oh, w * CROP, ow * CROP


def roundtrip_region(image: Image.Image, box: tuple[int, int, int, int], roundtrip) -> np.ndarray:
    """uint8 [rows, cols, 3]: the pixels in ``box`` (left, top, right, bottom) of the JPEG round
    trip of the whole ``image``, computed from the box's MCUs and a margin of one MCU."""
    w, h = image.size
    x0, y0, x1, y1 = box
    cut = (
        max(0, (x0 // MCU - 1) * MCU),
        max(0, (y0 // MCU - 1) * MCU),
        min(w, (-(-x1 // MCU) + 1) * MCU),
        min(h, (-(-y1 // MCU) + 1) * MCU),
    )
    piece = image if cut == (0, 0, w, h) else image.crop(cut)
    decoded = roundtrip(piece)
    out = np.asarray(decoded)[y0 - cut[1] : y1 - cut[1], x0 - cut[0] : x1 - cut[0]]
    return np.ascontiguousarray(out)


def _banded(image: Image.Image, geom: CropGeometry, window, box, roundtrip) -> np.ndarray:
    """The window by bands: Pillow's first pass over bands of whole rows (horizontal first) or
    whole columns (vertical first), cut to the window; then Pillow's second pass over a canvas
    that has the window's rows (columns) in place and nothing elsewhere. A one-axis resize uses
    the full resize's weights for that axis, and outputs in the window read only inputs from
    the bands, so every step is the full resize's arithmetic."""
    size, (rw, rh) = image.size, geom.resized
    w, h = size
    left, top, right, bottom = window
    x0, y0, x1, y1 = box
    if _horizontal_first(size, geom.resized):
        canvas = Image.new("RGB", (CROP, h))
        for b0 in range(y0, y1, BAND):
            b1 = min(y1, b0 + BAND)
            rows = Image.fromarray(roundtrip_region(image, (0, b0, w, b1), roundtrip), "RGB")
            if rw != w:
                rows = rows.resize((rw, b1 - b0), Image.Resampling.BILINEAR)
            canvas.paste(rows.crop((left, 0, right, b1 - b0)), (0, b0))
        if rh != h:
            canvas = canvas.resize((CROP, rh), Image.Resampling.BILINEAR)
        return np.asarray(canvas.crop((0, top, CROP, bottom)))
    canvas = Image.new("RGB", (w, CROP))
    for b0 in range(x0, x1, BAND):
        b1 = min(x1, b0 + BAND)
        cols = Image.fromarray(roundtrip_region(image, (b0, 0, b1, h), roundtrip), "RGB")
        if rh != h:
            cols = cols.resize((b1 - b0, rh), Image.Resampling.BILINEAR)
        canvas.paste(cols.crop((0, top, b1 - b0, bottom)), (b0, 0))
    if rw != w:
        canvas = canvas.resize((rw, CROP), Image.Resampling.BILINEAR)
    return np.asarray(canvas.crop((left, 0, right, CROP)))
