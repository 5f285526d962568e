"""A self-contained HTML review page for one job, rendered from the package's Jinja2 templates
(poundcam/report/templates/, autoescaped).

Per item: its URI, status, label, P(fake) against the threshold, the key CAM statistics, and
three pictures side by side: the **original** image, unchanged, and the **fake** and **real
evidence** maps over the 224 x 224 crop the model saw, both on one shared scale, with a colour
legend whose numbers are that scale (the map's value at full colour is the larger of the two
maxima). Clicking a picture zooms it. Pictures load as they scroll into view, so a
1,000-item page opens as fast as a short one.

Everything from the database is untrusted (URIs come from whoever submitted the job): every
string is HTML-escaped by the template engine, URIs are text and never links, and a
Content-Security-Policy lets the page run only its own script (by hash) and load images only
from ``data:`` or the schemes of the given URLs. There are no external resources.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlparse

from markupsafe import Markup

from ..cam.colormap import css_gradient
from ..constants import ItemState, Label
from .data import DEEP_PANELS, PANELS, report_items
from .images import EmbeddedImages, LinkedImages, Picture


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("poundcam.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["point"] = _point
    return env


def page_script() -> str:
    """The page's own script (its hash is in the Content-Security-Policy)."""
    return resources.files("poundcam.report").joinpath("templates/report.js").read_text("utf-8")


def _num(value: Any, fmt: str = ".4f") -> str:
    if value is None or isinstance(value, bool):
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return format(v, fmt) if math.isfinite(v) else "–"


def _point(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"({_num(value[0], '.0f')}, {_num(value[1], '.0f')})"
    return "–"


def _csp(items, script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    img = {"data:"}
    for item in items:
        for pic in item.pictures.values():
            if isinstance(pic, Picture) and not pic.src.startswith("data:"):
                img.add(urlparse(pic.src).scheme.lower() + ":")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"img-src {' '.join(sorted(img))}; script-src 'sha256-{digest}'; "
        "base-uri 'none'; form-action 'none'"
    )


def build_report(
    rows: Iterable[Mapping[str, Any]],
    fetch_png: Callable[[str], bytes] | None = None,
    *,
    image_url: Callable[[str], str] | None = None,
    fetch_original: Callable[[str], bytes] | None = None,
    original_url: Callable[[str], str] | None = None,
    source=None,
    job_id: str | None = None,
    status: Mapping[str, Any] | None = None,
    title: str | None = None,
    generated_at: datetime | None = None,
    selection: str | None = None,
    sort: str = "position",
    workers: int = 8,
    progress: Callable[[], None] | None = None,
) -> str:
    """The HTML page for ``rows`` (records of ``job_results``, in the order to show).

    Args:
        rows: the items.
        fetch_png: ``key -> bytes`` of a stored heatmap, embedded as a compressed thumbnail.
        image_url: ``key -> URL`` of a stored heatmap, referenced (presigned URLs) instead.
        fetch_original: ``uri -> bytes`` of an item's original (embedded mode).
        original_url: ``uri -> URL`` of an item's original (linked mode).
        source: an EmbeddedImages or LinkedImages to use instead of the four above.
        job_id: shown in the title.
        status: the job's ``job_status`` record (a running job is marked as a snapshot).
        title: the page title (default from ``job_id``).
        generated_at: the time shown as generated (default now).
        selection: a sentence saying which items were selected (shown in the header).
        sort: the order ``rows`` are in (``position``, ``p_fake`` or ``fake_share``).
        workers: threads that read and shrink the pictures.
        progress: called once per item whose pictures are made.

    Returns:
        The page.

    Raises:
        ValueError: not exactly one of ``fetch_png`` and ``image_url`` (without ``source``).
    """
    if source is None:
        if fetch_png is not None and image_url is None:
            source = EmbeddedImages(fetch_png, fetch_original)
        elif image_url is not None and fetch_png is None:
            source = LinkedImages(image_url, original_url)
        else:
            raise ValueError("give exactly one of fetch_png (embed) and image_url (link)")
    rows = list(rows)
    items = report_items(rows, source, workers=workers, progress=progress)
    generated_at = generated_at or datetime.now(timezone.utc)
    title = title or (f"poundcam review: job {job_id}" if job_id else "poundcam review")

    done = [r for r in rows if r.get("status") == ItemState.DONE]
    counts = {
        "items": len(rows),
        "done": len(done),
        "failed": sum(r.get("status") == ItemState.FAILED for r in rows),
        "fake": sum(r.get("label") == Label.FAKE for r in done),
        "real": sum(r.get("label") == Label.REAL for r in done),
    }
    pending = len(rows) - counts["done"] - counts["failed"]
    unavailable = sum(not isinstance(p, Picture) for i in items for p in i.pictures.values())
    models = sorted({str(r.get("model_id")) for r in done if r.get("model_id")})
    cams = sorted({str(r.get("cam_config_id")) for r in done if r.get("cam_config_id")})
    thresholds = sorted({float(r["threshold"]) for r in done if r.get("threshold") is not None})
    meta = [
        f"{counts['items']} items: {counts['done']} analysed "
        f"({counts['fake']} fake, {counts['real']} real), {counts['failed']} failed"
        + (f", {pending} not finished" if pending else "")
    ]
    if selection:
        meta.append(selection)
    if status is not None and not status.get("finished", True):
        meta.append("the job is still running: this page is a snapshot")
    if models:
        meta.append("model " + ", ".join(models) + "; CAM config " + ", ".join(cams))
    if thresholds:
        meta.append("label fake at P(fake) ≥ " + ", ".join(f"{t:.2f}" for t in thresholds))
    if unavailable:
        meta.append(f"{unavailable} picture(s) could not be shown")
    meta.append("generated " + generated_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    script = page_script()
    summary = json.dumps({**counts, "job_id": job_id, "pictures_unavailable": unavailable})
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            meta=meta,
            items=items,
            panels=PANELS,
            deep_panels=DEEP_PANELS,
            csp=_csp(items, script),
            script=Markup(script),
            summary=summary,
            sort=sort,
            ramp=css_gradient(),
        )
    )
