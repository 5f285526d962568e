"""Which block ComparativeCAM explains, chosen from evidence: the deletion rule.

The rule needs the model and images, no ground truth. For each candidate block (and, when
several are given, each candidate weighting), the fake maps (ComparativeCAM with that
weighting and one target) of the images the model labels fake are scored
by deletion: the grid cells of each image are replaced, in the map's order, by the same cells
of the image blurred with a Gaussian of sigma ``BLUR_SIGMA`` pixels (which erases fine-scale
traces but keeps colour and layout), and P(fake) is measured after ``FRACTIONS`` of the cells.
The deletion AUC is the area under the mean curve over the fraction axis 0..1; the block with
the lowest is chosen: its hottest cells are the ones whose loss removes the decision fastest.
Every candidate is scored on the same images, so two candidates compare image by image.

Which images and which class: the images labelled fake at the threshold (P(fake) >=
threshold, the label rule of poundcam.analysis), their fake map and P(fake). Images labelled
real are not used (a real image has no fake evidence to delete); an image whose map cannot be
computed at some candidate block is left out at every block, so that every block is scored on
the same images. No map is ever made up for a missing one.

``poundcam calibrate`` runs the rule on a deployer's images; benchmarks/faithfulness runs it
on its selection split and scores the maps with the same deletion curves (docs/faithfulness.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import LABELS, CamMethod, CamTarget, Label, labelled_fake
from ..errors import CAMError
from .engine import ComparativeCAM

# Fractions of the grid cells removed (deletion) or restored (insertion) at each curve point.
FRACTIONS = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)
BLUR_SIGMA = 4.0  # pixels: the replacement of removed cells is the image blurred this much
DROP_FRACTION = 0.1  # the table's "P(fake) after deleting 10% of the cells" column
FAKE = LABELS.index(Label.FAKE)  # the fake class's column in the logits
KINDS = ("deletion", "insertion")
# A chosen block whose gain over another is within this many standard errors does not beat it.
TIE_STANDARD_ERRORS = 2


def blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] images (reflected border), kernel radius 3 sigma."""
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def cell_order(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Cells by decreasing map value; ties in a seeded random order. [N, g*g] indices."""
    flat = maps.flatten(1).cpu()
    gen = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(flat.shape[1], generator=gen) for _ in range(len(flat))])
    shuffled = flat.gather(1, perm)
    order = torch.sort(shuffled, dim=1, descending=True, stable=True).indices
    return perm.gather(1, order)


@torch.no_grad()
def deletion_insertion(
    model,
    x: torch.Tensor,
    maps: torch.Tensor,
    cls: int = FAKE,
    fractions: Sequence[float] = FRACTIONS,
    batch: int = 64,
    kinds: Sequence[str] = KINDS,
    progress: Callable[[int], None] | None = None,
    unmodified: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """P(class ``cls``) curves [N, len(fractions)] of the model inputs ``x`` [N, 3, H, W].

    Deletion: the top-ranked cells of ``maps`` [N, g, g] are replaced by the same cells of the
    blurred input. Insertion: start from the blurred input and restore the top-ranked cells.
    ``unmodified``, when given, is P(class ``cls``) of ``x`` itself [N]: the deletion points
    that remove no cell take it instead of a forward. ``progress(n)`` is called after each
    batch of ``n`` images has been scored."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds must be among {KINDS}, not {sorted(unknown)}")
    n, _, size, _ = x.shape
    g = maps.shape[-1]
    cell = size // g
    order = cell_order(maps).to(x.device)
    blurred = blur(x)
    counts = [int(round(f * g * g)) for f in fractions]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(g * g, device=x.device).expand(n, -1).contiguous())
    curves = {k: np.zeros((n, len(fractions))) for k in kinds}
    pairs = {"deletion": (blurred, x), "insertion": (x, blurred)}
    for j, k in enumerate(counts):
        chosen = (rank < k).reshape(n, 1, g, g).to(x.dtype)
        chosen = F.interpolate(chosen, scale_factor=cell, mode="nearest")
        for name in kinds:
            if name == "deletion" and k == 0 and unmodified is not None:
                curves[name][:, j] = unmodified
                continue
            top, rest = pairs[name]
            composite = top * chosen + rest * (1 - chosen)
            parts = []
            for i in range(0, n, batch):
                parts.append(model(composite[i : i + batch]).float().softmax(-1)[:, cls])
                if progress is not None:
                    progress(len(parts[-1]))
            curves[name][:, j] = torch.cat(parts).cpu().numpy()
    return curves


def area_under(curve: np.ndarray, fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
    """Trapezoidal area under each row of [N, len(fractions)] over the fraction axis 0..1."""
    f = np.asarray(fractions)
    return ((curve[:, 1:] + curve[:, :-1]) / 2 * np.diff(f)).sum(axis=1)


@torch.no_grad()
def fake_probabilities(model, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """P(fake) of each input [N], in batches."""
    return torch.cat([model(x[i : i + batch]).float().softmax(-1)[:, FAKE] for i in range(0, len(x), batch)])


@dataclasses.dataclass(frozen=True)
class LayerScore:
    """One candidate block: the deletion AUC of its fake maps (lower is better), the mean P(fake)
    before any deletion and after ``DROP_FRACTION`` of the cells, and the images scored."""

    layer: int
    deletion_auc: float
    p_fake_start: float
    p_fake_after: float
    images: int
    deletion_curve: tuple[float, ...]
    # each scored image's own deletion AUC, in input order (the same images at every block)
    per_image: tuple[float, ...] = ()
    method: str = CamMethod.HIRESCAM  # the weighting of the maps scored

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def paired_gain(better: LayerScore, other: LayerScore) -> tuple[float, float]:
    """How much lower ``better``'s deletion AUC is than ``other``'s, and the standard error of
    that mean difference over the images (paired: the same images for both; NaN from one)."""
    diff = np.asarray(other.per_image) - np.asarray(better.per_image)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return float(diff.mean()), se


def within_noise(gain: float, se: float) -> bool:
    """Whether a gain does not tell two candidates apart: within ``TIE_STANDARD_ERRORS``
    standard errors of zero (a NaN standard error, from one image, too)."""
    return not gain > TIE_STANDARD_ERRORS * se


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The outcome of the rule: every candidate's score and the chosen block (``chosen``) and
    weighting (``method``). A candidate is named by its block and, where several weightings
    were tried, its weighting (default: the chosen one)."""

    method: str  # the chosen candidate's weighting
    target: str
    threshold: float
    images: int  # inputs given
    flagged: int  # of them labelled fake (P(fake) >= threshold)
    used: int  # of those, the ones with a map at every candidate
    scores: tuple[LayerScore, ...]
    chosen: int

    @property
    def methods(self) -> tuple[str, ...]:
        """The weightings tried, in the order given (read from the scores)."""
        return tuple(dict.fromkeys(s.method for s in self.scores))

    def score(self, layer: int, method: str | None = None) -> LayerScore | None:
        method = method or self.method
        return next((s for s in self.scores if s.layer == layer and s.method == method), None)

    def is_tie(self, layer: int, method: str | None = None) -> bool:
        """Whether the images do not tell the chosen candidate from ``layer`` (with ``method``):
        the gain is within ``TIE_STANDARD_ERRORS`` standard errors (NaN, from one image, too).
        False when that is the choice or was not a candidate."""
        method = method or self.method
        measured = self.gain(layer, method)
        if (layer, method) == (self.chosen, self.method) or measured is None:
            return False
        return within_noise(*measured)

    def gain(self, layer: int, method: str | None = None) -> tuple[float, float] | None:
        """How much lower the chosen candidate's deletion AUC is than that of ``layer`` (with
        ``method``), and the standard error of that mean difference over the images (paired:
        the same images for both); None when that was not a candidate."""
        chosen, other = self.score(self.chosen), self.score(layer, method)
        if chosen is None or other is None:
            return None
        return paired_gain(chosen, other)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["scores"] = [s.as_dict() for s in self.scores]
        out["methods"] = list(self.methods)
        return out


class CalibrationError(CAMError):
    """The rule cannot run on these inputs (no image labelled fake, a block out of range)."""


def candidate_layers(model, layers: Sequence[int] | None) -> list[int]:
    """``layers`` as distinct non-negative block indices in the order given (None: every block);
    CalibrationError for an index out of range or an empty list."""
    if layers is None:
        return list(range(model.num_blocks))
    try:
        out = list(dict.fromkeys(model.block_index(int(k)) for k in layers))
    except ValueError as exc:
        raise CalibrationError(f"layer: {exc}") from None
    if not out:
        raise CalibrationError("no candidate layer given")
    return out


def calibrate(
    model,
    x: torch.Tensor,
    threshold: float,
    layers: Sequence[int] | None = None,
    method: str | Sequence[str] = CamMethod.HIRESCAM,
    target: str = CamTarget.CONTRASTIVE,
    batch: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Run the rule on the model inputs ``x`` [N, 3, H, W] (normalized, on the model's device),
    for one weighting ``method`` or several (a sequence: the weighting is chosen too).

    ``progress(n, total)`` is called as work is done: ``n`` units more out of ``total`` (one
    unit per map of an image at a block, one per forward of an image in a deletion step).
    Raises CalibrationError when no image is labelled fake, a layer is out of range or no
    weighting is given."""
    cands = candidate_layers(model, layers)
    methods = [method] if isinstance(method, str) else list(dict.fromkeys(method))
    if not methods:
        raise CalibrationError("no weighting given")
    pairs = [(m, layer) for m in methods for layer in cands]
    p_fake = fake_probabilities(model, x, batch)
    flagged = torch.tensor(
        [i for i, p in enumerate(p_fake.tolist()) if labelled_fake(p, threshold)], dtype=torch.long
    )
    if len(flagged) == 0:
        raise CalibrationError(
            f"none of the {len(x)} images is labelled fake (P(fake) >= {threshold:g}); the rule "
            "needs images the model calls fake"
        )
    xf = x.index_select(0, flagged.to(x.device))
    # a map per block, and a forward per deletion step that removes some cells
    cells = math.prod(model.patch_grid)
    steps = sum(1 for f in FRACTIONS if int(round(f * cells)) > 0)
    total = len(xf) * len(pairs) * (1 + steps)

    def advance(n: int) -> None:
        if progress is not None:
            progress(n, total)

    maps, valid = {}, torch.ones(len(xf), dtype=torch.bool)
    for m, layer in pairs:
        cam = ComparativeCAM(model, layer=layer, target=target, method=m)
        parts = []
        for i in range(0, len(xf), batch):
            res = cam.attribute(xf[i : i + batch], on_invalid="report")
            for r in res.invalid:
                valid[i + r] = False
            parts.append(res.fake.float())
            advance(len(parts[-1]))
        maps[m, layer] = torch.cat(parts)
    keep = torch.nonzero(valid).flatten()
    if len(keep) == 0:
        raise CalibrationError(
            f"none of the {len(xf)} images labelled fake has a map at every candidate layer"
        )
    xk = xf.index_select(0, keep.to(xf.device))
    p_kept = p_fake.cpu().index_select(0, flagged.index_select(0, keep.cpu())).numpy()
    j_drop = FRACTIONS.index(DROP_FRACTION)
    scores = []
    for m, layer in pairs:
        kept_maps = maps[m, layer].index_select(0, keep.to(maps[m, layer].device))
        by_kind = deletion_insertion(
            model, xk, kept_maps, batch=batch, kinds=("deletion",), progress=advance, unmodified=p_kept
        )
        curves = by_kind["deletion"]
        mean = curves.mean(0)
        aucs = area_under(curves)
        scores.append(
            LayerScore(
                layer=layer,
                deletion_auc=float(np.mean(aucs)),
                p_fake_start=float(mean[0]),
                p_fake_after=float(mean[j_drop]),
                images=len(keep),
                deletion_curve=tuple(float(v) for v in mean),
                per_image=tuple(float(v) for v in aucs),
                method=str(m),
            )
        )
    best = min(scores, key=lambda s: s.deletion_auc)  # the first of equals: methods, then layers
    return Calibration(
        method=best.method,
        target=str(target),
        threshold=threshold,
        images=len(x),
        flagged=len(flagged),
        used=len(keep),
        scores=tuple(scores),
        chosen=best.layer,
    )
