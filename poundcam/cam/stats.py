"""Statistics of one image's two CAMs, defined for reviewers and tools (docs/cam.md).

Per class (``real`` and ``fake``), over the raw grid map M (non-negative):
- ``max``, ``mean``: raw values, in the units of the map (the configured method's weighted
  activation, e.g. HiResCAM's gradient x activation): comparable between the two maps of one
  analysis and between images of one model and CAM configuration.
- ``area_half_max``: share of grid cells with M >= max/2 (0 when the map is all zero).
- ``entropy``: Shannon entropy of M / sum(M), divided by log(cells): 0 = one cell holds all the
  evidence, 1 = evenly spread. None for an all-zero map.
- ``peak``: [x, y] centre of the cell holding the maximum, in ORIGINAL image pixels (after
  EXIF orientation), through the recorded crop/resize geometry; ``peak_cell``: its [row, col]
  (only for a map that is not all zero). None for an all-zero map.
- ``centroid``: [x, y] evidence-weighted mean of the cell centres, original pixels. None if zero.
Comparative:
- ``correlation``: Pearson correlation of the two maps (None if either is constant). For the
  contrastive target of the gradient methods the maps are the two signs of one map, disjoint
  cell by cell, so their covariance is -mean(real) * mean(fake) and the correlation is never
  positive; for the logit target it measures how far both classes draw on the same cells.
- ``fake_share``: sum(fake) / (sum(fake) + sum(real)), the share of all evidence that points to
  "fake" (None if both are zero). For the contrastive target the maps are disjoint parts of one
  signed map, so this is the balance of that map.
"""

from __future__ import annotations

import math

import numpy as np

from ..preprocess.geometry import CropGeometry


def _as_array(m) -> np.ndarray:
    if hasattr(m, "detach"):
        m = m.detach().to("cpu").float().numpy()
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square 2-D map, got shape {a.shape}")
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError("a CAM must be finite and non-negative")
    return a


def cell_centre_axes(grid: int, geometry: CropGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the grid's columns (x) and rows (y) in original image pixels."""
    idx = np.arange(grid, dtype=np.float64)
    cell = geometry.crop_size / grid
    sx, sy = geometry.scale
    xs = ((idx + 0.5) * cell + geometry.crop_left) / sx
    ys = ((idx + 0.5) * cell + geometry.crop_top) / sy
    return xs, ys


def _cell_centres(grid: int, geometry: CropGeometry) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(*cell_centre_axes(grid, geometry))  # X[row, col], Y[row, col]


def class_stats(m, geometry: CropGeometry) -> dict:
    a = _as_array(m)
    grid = a.shape[0]
    total, peak_value = float(a.sum()), float(a.max())
    out: dict = {
        "max": peak_value,
        "mean": float(a.mean()),
        "area_half_max": 0.0,
        "entropy": None,
        "peak": None,
        "centroid": None,
    }
    if peak_value <= 0:
        return out
    out["area_half_max"] = float((a >= peak_value / 2).mean())
    p = a / total
    nz = p[p > 0]
    out["entropy"] = float(-(nz * np.log(nz)).sum() / math.log(a.size)) if a.size > 1 else 0.0
    X, Y = _cell_centres(grid, geometry)
    row, col = np.unravel_index(int(np.argmax(a)), a.shape)
    out["peak"] = [float(X[row, col]), float(Y[row, col])]
    out["peak_cell"] = [int(row), int(col)]
    out["centroid"] = [float((p * X).sum()), float((p * Y).sum())]
    return out


def comparative_stats(real, fake) -> dict:
    r, f = _as_array(real).ravel(), _as_array(fake).ravel()
    corr = None
    if r.std() > 0 and f.std() > 0:
        corr = float(np.corrcoef(r, f)[0, 1])
    total = r.sum() + f.sum()
    return {"correlation": corr, "fake_share": float(f.sum() / total) if total > 0 else None}


def compute_stats(real, fake, geometry: CropGeometry) -> dict:
    """All statistics of one image: {"real": {...}, "fake": {...}, "comparative": {...}}."""
    return {
        "real": class_stats(real, geometry),
        "fake": class_stats(fake, geometry),
        "comparative": comparative_stats(real, fake),
    }
