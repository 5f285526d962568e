"""Localization and faithfulness metrics of [N, g, g] maps against planted masks.

Deletion and insertion are the library's (poundcam.cam.calibration), the metric of the layer
rule; this module scores them on 0..1 images. Resolution: everything is scored at the model's
grid resolution. A grid cell counts as "inside" the planted region when the region covers at
least half of the cell's pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from poundcam.cam import calibration
from poundcam.cam.calibration import BLUR_SIGMA, FRACTIONS, area_under

from .data import normalize

__all__ = [
    "BLUR_SIGMA",
    "FRACTIONS",
    "area_under",
    "auroc",
    "deletion_insertion",
    "energy_share",
    "grid_labels",
    "pointing_game",
    "rankdata",
    "spearman",
]


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank (as scipy.stats.rankdata)."""
    a = np.asarray(a)
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(a)] - 1
    avg = (first + last) / 2 + 1
    ranks = np.empty(len(a))
    ranks[order] = avg[group]
    return ranks


def grid_labels(masks: torch.Tensor, g: int) -> torch.Tensor:
    """[N, H, W] bool pixel masks -> [N, g, g] bool: cell covered at least half."""
    return F.adaptive_avg_pool2d(masks[:, None].float(), g)[:, 0] >= 0.5


def pointing_game(maps: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """1 where the map's peak cell (first one on ties) is inside the region; an all-zero map
    has no peak and counts as a miss."""
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1)
    hit = labels.flatten(1).gather(1, peak[:, None])[:, 0]
    return (hit & (flat.amax(dim=1) > 0)).numpy().astype(float)


def auroc(maps: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per image: probability that a random inside cell outranks a random outside cell (ties
    count half), from the Mann-Whitney U statistic; NaN where a class of cells is empty."""
    out = np.full(len(maps), np.nan)
    for i, (m, lab) in enumerate(zip(maps.flatten(1).numpy(), labels.flatten(1).numpy(), strict=True)):
        pos, neg = lab.sum(), (~lab).sum()
        if pos == 0 or neg == 0:
            continue
        r = rankdata(m)
        out[i] = (r[lab].sum() - pos * (pos + 1) / 2) / (pos * neg)
    return out


def energy_share(maps: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Share of the map's total mass inside the region (0 for an all-zero map)."""
    flat = maps.flatten(1).clamp_min(0)
    total = flat.sum(dim=1)
    inside = (flat * labels.flatten(1)).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total)).numpy()


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image Spearman rank correlation of two [N, g, g] map sets (ties get average ranks);
    0 where either map is constant (it keeps no ranking)."""
    out = np.zeros(len(a))
    for i, (x, y) in enumerate(zip(a.flatten(1).numpy(), b.flatten(1).numpy(), strict=True)):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        rx, ry = rankdata(x), rankdata(y)
        out[i] = np.corrcoef(rx, ry)[0, 1]
    return out


@torch.no_grad()
def deletion_insertion(
    model, images: torch.Tensor, maps: torch.Tensor, fractions=FRACTIONS, batch: int = 64
) -> dict[str, np.ndarray]:
    """P(fake) curves [N, len(fractions)] of 0..1 images, by the library's deletion and
    insertion (poundcam.cam.calibration: the layer rule's own metric), on their normalized form.

    Deletion: the top-ranked cells of the image are replaced by the same cells of the blurred
    image (Gaussian, sigma BLUR_SIGMA px), which erases fine-scale traces but keeps colours and
    layout. Insertion: start from the blurred image and restore the top-ranked cells."""
    model.eval()
    return calibration.deletion_insertion(model, normalize(images), maps, fractions=fractions, batch=batch)
