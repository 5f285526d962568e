"""The report's data layer: which items, in which order, and what each shows.

``select_rows`` applies the command line's filters and order; ``item_images`` decides the
pictures of one item (the one place to change where they come from: a renderer that draws
overlays on demand from stored maps replaces it); ``report_item`` gathers what the template
shows for one item.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..constants import LABELS, REPORT_SORTS, ItemState
from .images import Picture, Unavailable

# Panels in the order shown: (name, caption). "original" is the source image, unchanged; the
# overlays are heatmaps stored under the analysis's keys of the same name; the maps alone are
# drawn from the stored raw maps ({real,fake}_raw16).
PANELS = (
    ("original", "original"),
    ("fake_overlay", "fake evidence"),
    ("real_overlay", "real evidence"),
    ("fake_map", "fake map"),
    ("real_map", "real map"),
)
HEATMAP_PANELS = ("fake_overlay", "real_overlay")
# The deep maps' overlays (attention relevance, docs/cam.md), shown for the items that have
# them (POUNDCAM_DEEP_MAPS, `poundcam explain`): both on one scale of their own.
DEEP_PANELS = (("deep_fake_overlay", "deep fake evidence"), ("deep_real_overlay", "deep real evidence"))
SORTS = REPORT_SORTS


def _p(row: Mapping) -> float | None:
    v = row.get("p_fake") if row.get("status") == ItemState.DONE else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _fake_share(row: Mapping) -> float | None:
    v = ((row.get("stats") or {}).get("comparative") or {}).get("fake_share")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def select_rows(
    rows: Iterable[Mapping],
    label: str | None = None,
    min_prob: float | None = None,
    sort: str = "position",
    limit: int | None = None,
) -> list[Mapping]:
    """The rows a report shows.

    Args:
        rows: records of ``job_results``, in position order.
        label: keep only analysed items with this label.
        min_prob: keep only analysed items with P(fake) at least this.
        sort: ``position`` (submission order), ``p_fake`` or ``fake_share`` (highest first;
            items without the value last, in position order).
        limit: keep the first ``limit`` rows after sorting.

    Returns:
        The selected rows.
    """
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    out = [
        r
        for r in rows
        if (label is None or (r.get("status") == ItemState.DONE and r.get("label") == label))
        and (min_prob is None or ((p := _p(r)) is not None and p >= min_prob))
    ]
    if sort != "position":
        key = _p if sort == "p_fake" else _fake_share
        out.sort(key=lambda r: (key(r) is None, -(key(r) or 0.0), r.get("position") or 0))
    return out[:limit] if limit is not None else out


def item_images(row: Mapping, source) -> dict[str, Picture | Unavailable]:
    """The pictures of one item, by panel name: its original from its URI, its evidence maps
    (and its deep maps' overlays, where it has a key for them) from the heatmaps stored under
    its keys (``source`` is an EmbeddedImages or LinkedImages).
    An item not analysed has none. Any failure is an Unavailable with its reason, never
    another picture."""
    if row.get("status") != ItemState.DONE:
        return {}
    out: dict[str, Picture | Unavailable] = {"original": _safely(source.original, row.get("uri"))}
    keys = row.get("heatmap_keys") or {}
    for name in HEATMAP_PANELS:
        key = keys.get(name)
        out[name] = (
            _safely(source.heatmap, key)
            if isinstance(key, str)
            else Unavailable(f"no {name} heatmap recorded", "not_recorded")
        )
    raw = keys.get("real_raw16"), keys.get("fake_raw16")
    if all(isinstance(k, str) for k in raw):
        try:
            out.update(source.maps(*raw))
        except Exception as exc:  # noqa: BLE001 - shown in the panels
            out.update(dict.fromkeys(("real_map", "fake_map"), _safely(_raise, exc)))
    else:
        out.update(
            dict.fromkeys(("real_map", "fake_map"), Unavailable("no raw maps recorded", "not_recorded"))
        )
    for name, _ in DEEP_PANELS:  # only where the item has deep maps
        key = keys.get(name)
        if isinstance(key, str):
            out[name] = _safely(source.heatmap, key)
    return out


def _raise(exc: BaseException):
    raise exc


def _safely(fn: Callable, arg) -> Picture | Unavailable:
    try:
        return fn(arg)
    except Exception as exc:  # noqa: BLE001 - shown in the panel; the report goes on
        return Unavailable(str(exc) or type(exc).__name__, getattr(exc, "code", None) or type(exc).__name__)


@dataclass
class ReportItem:
    """What the template shows for one item."""

    row: Mapping[str, Any]
    pictures: dict[str, Picture | Unavailable] = field(default_factory=dict)
    scale: float | None = None  # the maps' shared scale: the legend's top value

    @property
    def p_fake(self) -> float | None:
        return _p(self.row)


def shared_scale(row: Mapping) -> float | None:
    """The value the overlays' full colour stands for: the larger of the two maps' maxima."""
    stats = row.get("stats") or {}
    maxima = [(stats.get(c) or {}).get("max") for c in LABELS]
    values = [float(v) for v in maxima if isinstance(v, (int, float)) and math.isfinite(v)]
    return max(values) if values else None


def report_items(
    rows: list[Mapping],
    source,
    workers: int = 8,
    images: Callable[[Mapping, Any], dict] = item_images,
    progress: Callable[[], None] | None = None,
) -> list[ReportItem]:
    """One ReportItem per row; pictures are made with ``workers`` threads; ``progress`` is
    called, on the calling thread, as each row's pictures are taken (in row order)."""
    pictures = []
    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        for made in pool.map(lambda r: images(r, source), rows):
            pictures.append(made)
            if progress is not None:
                progress()
    return [ReportItem(r, p, shared_scale(r)) for r, p in zip(rows, pictures, strict=True)]
