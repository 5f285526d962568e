"""Pillow's antialiased bilinear resize of 8-bit images, computed only for a window of the output.

``Image.resize`` always computes the whole output, so the official transform's resize of a thin
strip (shorter side to 256, longer side proportional) can need gigabytes for the 224x224 window
the center crop keeps. This module computes that window alone, with Pillow's own arithmetic
(``src/libImaging/Resample.c``): the same float64 filter weights (same operations in the same
order), the same conversion to 22-bit fixed point, the same rounding and clipping, two passes
rounded to 8 bits each, in Pillow's order (vertical first when the height shrinks by more than
twice as many pixels as the width, horizontal first otherwise). Each output pixel depends only on its own
weights and input pixels, so the window equals the same window of Pillow's full resize, bit for
bit (tests/transform/test_bounded_transform.py checks it against Pillow on many sizes).

Pillow's ``box`` argument cannot do this exactly: it changes the float arithmetic of the
filter centres, and with it some weights.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit samples
_HALF = 1 << (PRECISION_BITS - 1)
_MAX_TAPS_VALUES = 4 * 1024 * 1024  # float64 samples converted at once by one pass (32 MB)


@dataclasses.dataclass(frozen=True)
class AxisWeights:
    """Pillow's bilinear weights along one axis, for outputs [start, start + n).

    first: first input sample of each output [n]; weights: 22-bit fixed-point weights [n, taps]
    (zero past each output's own count), so output i reads inputs first[i] .. first[i] + taps - 1
    (clipped to the input).
    """

    in_size: int
    first: np.ndarray
    weights: np.ndarray

    @property
    def lo(self) -> int:
        """First input sample any output reads."""
        return int(self.first.min())

    @property
    def hi(self) -> int:
        """One past the last input sample any output reads."""
        return int(min(self.in_size, (self.first + self.weights.shape[1]).max()))


def axis_weights(in_size: int, out_size: int, start: int, stop: int) -> AxisWeights:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` (bilinear, box = whole input)
    for the outputs [start, stop) of a resize from ``in_size`` to ``out_size`` samples."""
    if not 0 <= start < stop <= out_size or in_size < 1:
        raise ValueError(f"bad window [{start}, {stop}) of {in_size} -> {out_size}")
    scale = float(np.float32(in_size)) / out_size  # Pillow passes the box as C floats
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    xx = np.arange(start, stop, dtype=np.float64)
    center = 0.0 + (xx + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C casts truncate
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize, dtype=np.int64)
    arg = ((taps[None, :] + xmin[:, None]).astype(np.float64) - center[:, None] + 0.5) * ss
    w = np.where(np.abs(arg) < 1.0, 1.0 - np.abs(arg), 0.0)
    w[taps[None, :] >= xmax[:, None]] = 0.0
    ww = np.zeros(len(xx))
    for t in range(ksize):  # summed in order, as the C loop does (numpy's sum is pairwise)
        ww = ww + w[:, t]
    w = np.divide(w, ww[:, None], out=w, where=ww[:, None] != 0.0)
    fixed = (0.5 + w * (1 << PRECISION_BITS)).astype(np.int64)  # weights are never negative
    return AxisWeights(in_size=in_size, first=xmin, weights=fixed)


def resample(samples: np.ndarray, axis: int, weights: AxisWeights, offset: int = 0) -> np.ndarray:
    """One 8-bit pass of Pillow's resize along ``axis`` of uint8 ``samples``.

    ``samples`` holds the input samples [offset, offset + samples.shape[axis]) of that axis
    (it must cover [weights.lo, weights.hi)); the result has one entry per output of
    ``weights`` along the axis, rounded and clipped to uint8 as Pillow does.

    The sums are float64 products with a banded weight matrix: every product and partial sum
    is an integer below 2**31, so each is exact in any order and equals Pillow's int32 sums."""
    x = np.moveaxis(samples, axis, -1)
    n_in = x.shape[-1]
    n, taps = weights.weights.shape
    index = np.minimum(weights.first[:, None] + np.arange(taps)[None, :], weights.in_size - 1)
    index = index - offset
    live = weights.weights != 0
    if live.any() and (index[live].min() < 0 or index[live].max() >= n_in):
        raise ValueError("the samples do not cover the inputs the window reads")
    matrix = np.zeros((n_in, n), dtype=np.float64)
    cols = np.broadcast_to(np.arange(n)[:, None], index.shape)
    np.add.at(matrix, (index[live], cols[live]), weights.weights[live].astype(np.float64))
    flat = x.reshape(-1, n_in)
    out = np.empty((flat.shape[0], n), dtype=np.uint8)
    step = max(1, _MAX_TAPS_VALUES // max(n_in, n))
    for a in range(0, flat.shape[0], step):
        acc = flat[a : a + step].astype(np.float64) @ matrix
        acc += _HALF
        acc *= 1.0 / (1 << PRECISION_BITS)
        out[a : a + step] = np.clip(np.floor(acc), 0, 255)
    return np.moveaxis(out.reshape(x.shape[:-1] + (n,)), -1, axis)


def _horizontal_first(size: tuple[int, int], out: tuple[int, int]) -> bool:
    """Pillow's choice of pass order (ImagingResampleInner): the vertical pass first when the
    height shrinks by more than twice as many pixels as the width."""
    (w, h), (ow, oh) = size, out
    return not (h - oh > 0 and h - oh > (w - ow) * 2)


def window_inputs(
    size: tuple[int, int], out: tuple[int, int], window: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """The input box (left, top, right, bottom) that the output ``window`` (same form) of a
    resize from ``size`` to ``out`` reads."""
    (w, h), (ow, oh) = size, out
    left, top, right, bottom = window
    x0, x1 = (left, right) if ow == w else _span(axis_weights(w, ow, left, right))
    y0, y1 = (top, bottom) if oh == h else _span(axis_weights(h, oh, top, bottom))
    return x0, y0, x1, y1


def _span(weights: AxisWeights) -> tuple[int, int]:
    return weights.lo, weights.hi


def resize_window(
    region: np.ndarray,
    origin: tuple[int, int],
    size: tuple[int, int],
    out: tuple[int, int],
    window: tuple[int, int, int, int],
) -> np.ndarray:
    """The ``window`` (left, top, right, bottom) of Pillow's bilinear resize of an image of
    ``size`` (w, h) to ``out`` (w, h), computed from ``region``: uint8 [rows, cols, channels]
    holding the image's pixels from ``origin`` (x, y) on, at least ``window_inputs(...)``."""
    (w, h), (ow, oh) = size, out
    left, top, right, bottom = window
    x0, y0, x1, y1 = window_inputs(size, out, window)
    ox, oy = origin
    if x0 < ox or y0 < oy or x1 > ox + region.shape[1] or y1 > oy + region.shape[0]:
        raise ValueError("the region does not cover the inputs the window reads")
    x = region[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    passes = []
    if ow != w:
        passes.append((1, axis_weights(w, ow, left, right), x0))
    if oh != h:
        passes.append((0, axis_weights(h, oh, top, bottom), y0))
    if not _horizontal_first(size, out):
        passes.reverse()
    for axis, weights, offset in passes:
        x = resample(x, axis, weights, offset)
    return np.ascontiguousarray(x)
