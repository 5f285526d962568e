"""Localization and faithfulness metrics of [N, g, g] maps against planted masks.

Resolution: everything is scored at the model's grid resolution. A grid cell counts as
"inside" the planted region when the region covers at least half of the cell's pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import normalize

# Fractions of the grid cells removed (deletion) or restored (insertion) at each curve point.
FRACTIONS = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)
BLUR_SIGMA = 4.0  # pixels: the replacement of removed cells is the image blurred this much


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


def blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def cell_order(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Cells by decreasing map value; ties in a seeded random order. [N, g*g] indices."""
    flat = maps.flatten(1)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(flat.shape[1], generator=gen) for _ in range(len(flat))])
    shuffled = flat.gather(1, perm)
    order = torch.sort(shuffled, dim=1, descending=True, stable=True).indices
    return perm.gather(1, order)


@torch.no_grad()
def deletion_insertion(
    model, images: torch.Tensor, maps: torch.Tensor, fractions=FRACTIONS, batch: int = 64
) -> dict[str, np.ndarray]:
    """P(fake) curves [N, len(fractions)].

    Deletion: the top-ranked cells of the image are replaced by the same cells of the blurred
    image (Gaussian, sigma BLUR_SIGMA px), which erases fine-scale traces but keeps colours and
    layout. Insertion: start from the blurred image and restore the top-ranked cells."""
    n, _, size, _ = images.shape
    g = maps.shape[-1]
    cell = size // g
    order = cell_order(maps)
    blurred = blur(images)
    counts = [int(round(f * g * g)) for f in fractions]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(g * g).expand(n, -1).contiguous())
    curves = {"deletion": np.zeros((n, len(fractions))), "insertion": np.zeros((n, len(fractions)))}
    model.eval()
    for j, k in enumerate(counts):
        chosen = (rank < k).reshape(n, 1, g, g).float()
        chosen = F.interpolate(chosen, scale_factor=cell, mode="nearest")
        for name, (top, rest) in {"deletion": (blurred, images), "insertion": (images, blurred)}.items():
            composite = top * chosen + rest * (1 - chosen)
            probs = torch.cat(
                [model(normalize(composite[i : i + batch])).softmax(-1)[:, 1] for i in range(0, n, batch)]
            )
            curves[name][:, j] = probs.numpy()
    return curves


def area_under(curve: np.ndarray, fractions=FRACTIONS) -> np.ndarray:
    """Trapezoidal area under each row of [N, len(fractions)] over the fraction axis 0..1."""
    f = np.asarray(fractions)
    return ((curve[:, 1:] + curve[:, :-1]) / 2 * np.diff(f)).sum(axis=1)
