"""``poundcam.cam.stats.compute_stats`` for a whole batch at once, vectorized over the batch.

The definitions are those of poundcam/cam/stats.py (tests/analysis/test_batch_stats.py checks
equality image by image); this only avoids a few dozen small numpy calls per image, which the
analysis would otherwise make while holding the GIL for every image of every batch. Maps that
fail stats.py's checks (not finite, negative) go through ``compute_stats`` itself: their
entry is the ValueError it raises, and the other images are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..preprocess.geometry import CropGeometry
from .stats import cell_centre_axes as _centres, compute_stats


def _class_stats(a: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> list[dict]:
    """a: [n, g, g] float64, valid; xs, ys: [n, g] cell centres in original pixels."""
    n, g, _ = a.shape
    flat = a.reshape(n, g * g)
    total = flat.sum(axis=1)
    peak = flat.max(axis=1)
    mean = flat.mean(axis=1)
    live = peak > 0
    safe_peak = np.where(live, peak, 1.0)
    area = (flat >= (safe_peak / 2)[:, None]).mean(axis=1)
    p = flat / np.where(live, total, 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -plogp.sum(axis=1) / math.log(g * g) if g * g > 1 else np.zeros(n)
    arg = flat.argmax(axis=1)
    row, col = arg // g, arg % g
    X = np.broadcast_to(xs[:, None, :], (n, g, g)).reshape(n, g * g)
    Y = np.broadcast_to(ys[:, :, None], (n, g, g)).reshape(n, g * g)
    cx, cy = (p * X).sum(axis=1), (p * Y).sum(axis=1)
    out = []
    for i in range(n):
        d: dict = {
            "max": float(peak[i]),
            "mean": float(mean[i]),
            "area_half_max": 0.0,
            "entropy": None,
            "peak": None,
            "centroid": None,
        }
        if live[i]:
            d["area_half_max"] = float(area[i])
            d["entropy"] = float(entropy[i])
            d["peak"] = [float(xs[i, col[i]]), float(ys[i, row[i]])]
            d["peak_cell"] = [int(row[i]), int(col[i])]
            d["centroid"] = [float(cx[i]), float(cy[i])]
        out.append(d)
    return out


def _comparative(r: np.ndarray, f: np.ndarray) -> list[dict]:
    n = r.shape[0]
    r, f = r.reshape(n, -1), f.reshape(n, -1)
    rs, fs = r.std(axis=1), f.std(axis=1)
    rc, fc = r - r.mean(axis=1, keepdims=True), f - f.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (rc * fc).sum(axis=1) / np.sqrt((rc * rc).sum(axis=1) * (fc * fc).sum(axis=1))
    corr = np.clip(corr, -1.0, 1.0)  # as np.corrcoef clips
    total = r.sum(axis=1) + f.sum(axis=1)
    share = f.sum(axis=1) / np.where(total > 0, total, 1.0)
    return [
        {
            "correlation": float(corr[i]) if rs[i] > 0 and fs[i] > 0 else None,
            "fake_share": float(share[i]) if total[i] > 0 else None,
        }
        for i in range(n)
    ]


def compute_stats_batch(real, fake, geometries: Sequence[CropGeometry]) -> list[dict | ValueError]:
    """``compute_stats(real[i], fake[i], geometries[i])`` for each i (real, fake: [n, g, g]);
    an image whose maps compute_stats refuses gets the ValueError it raised."""
    r = np.asarray(real.detach().cpu().double() if hasattr(real, "detach") else real, dtype=np.float64)
    f = np.asarray(fake.detach().cpu().double() if hasattr(fake, "detach") else fake, dtype=np.float64)
    if r.ndim != 3 or r.shape != f.shape or r.shape[1] != r.shape[2] or r.shape[0] != len(geometries):
        raise ValueError(
            f"expected two [n, g, g] batches of maps for {len(geometries)} images, "
            f"got {r.shape} and {f.shape}"
        )
    n, g = r.shape[0], r.shape[1]
    ok = (
        np.isfinite(r).all(axis=(1, 2))
        & (r >= 0).all(axis=(1, 2))
        & np.isfinite(f).all(axis=(1, 2))
        & (f >= 0).all(axis=(1, 2))
    )
    if not ok.all():  # stats.py's own error for the refused ones
        return [_one(r[i], f[i], geometries[i]) for i in range(n)]
    centres = [_centres(g, geom) for geom in geometries]
    xs = np.stack([c[0] for c in centres]) if n else np.zeros((0, g))
    ys = np.stack([c[1] for c in centres]) if n else np.zeros((0, g))
    real_s, fake_s = _class_stats(r, xs, ys), _class_stats(f, xs, ys)
    comp = _comparative(r, f)
    return [{"real": real_s[i], "fake": fake_s[i], "comparative": comp[i]} for i in range(n)]


def _one(real: np.ndarray, fake: np.ndarray, geometry: CropGeometry) -> dict | ValueError:
    try:
        return compute_stats(real, fake, geometry)
    except ValueError as exc:
        return exc
