"""A self-contained HTML review page for one job.

``build_report(rows, fetch_png)`` turns the records of ``poundcam.db.job_results`` into one
HTML file: per item its URI, status, label, P(fake), the key CAM statistics and three heatmap
panels side by side:

- "original view": ``fake_overlay_original``, the whole image (EXIF-oriented, at most 768 px)
  with the fake evidence drawn where the model's crop lies. The model's input crop itself is
  not stored; where the fake map is zero the image shows unchanged, so this panel doubles as
  the picture of the image under review;
- "real evidence" and "fake evidence": ``real_overlay`` and ``fake_overlay``, the two maps over
  the 224 x 224 crop the model saw, on one shared scale.

Images are embedded as ``data:`` URIs (the file opens anywhere, offline) or, with ``image_url``,
referenced by URLs such as presigned S3 URLs. A heatmap that cannot be read is shown as an
error in its panel, never replaced by another picture.

Everything from the database is untrusted (URIs come from whoever submitted the job): every
string is HTML-escaped, URIs are text and never links, and a Content-Security-Policy lets the
page run only its own script (by hash) and load images only from ``data:`` or the schemes of
the given URLs. Sorting and filtering by P(fake), label and status are done by the small
inline script; there are no external resources.
"""
from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import html
import json
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PANELS = (("fake_overlay_original", "original view"),
          ("real_overlay", "real evidence"),
          ("fake_overlay", "fake evidence"))
URL_SCHEMES = ("https", "http", "file")


class HeatmapUnavailable(Exception):
    """A heatmap could not be read; the message is shown in its panel."""


def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


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


def _data_uri(data: bytes) -> str:
    if not isinstance(data, (bytes, bytearray)) or not bytes(data[:8]) == PNG_SIGNATURE:
        raise HeatmapUnavailable("not a PNG file")
    return "data:image/png;base64," + base64.b64encode(bytes(data)).decode("ascii")


def _checked_url(url: str) -> str:
    scheme = urlparse(url).scheme.lower() if isinstance(url, str) else ""
    if scheme not in URL_SCHEMES:
        raise HeatmapUnavailable(f"refused an image URL with scheme {scheme or 'none'!r}")
    return url


def _sources(rows: list[Mapping], fetch_png, image_url, workers: int) -> dict[str, str | Exception]:
    """``{key: src or the exception}`` for every heatmap key the panels show."""
    keys = sorted({k for r in rows for name, _ in PANELS
                   if isinstance(k := (r.get("heatmap_keys") or {}).get(name), str)})

    def one(key: str) -> str:
        if image_url is not None:
            return _checked_url(image_url(key))
        return _data_uri(fetch_png(key))

    out: dict[str, str | Exception] = {}
    if not keys:
        return out
    with cf.ThreadPoolExecutor(max(1, min(workers, len(keys)))) as pool:
        futures = {k: pool.submit(one, k) for k in keys}
        for k, fut in futures.items():
            try:
                out[k] = fut.result()
            except Exception as exc:  # noqa: BLE001 - shown in the panel, the rest goes on
                out[k] = exc
    return out


def _panel(row: Mapping, name: str, caption: str, sources: Mapping[str, Any]) -> str:
    key = (row.get("heatmap_keys") or {}).get(name)
    head = f'<figure class="panel" data-panel="{_e(name)}"><figcaption>{_e(caption)}</figcaption>'
    if not isinstance(key, str):
        return head + f'<div class="missing">no {_e(name)} heatmap recorded</div></figure>'
    src = sources.get(key)
    if not isinstance(src, str):
        why = getattr(src, "code", None) or type(src).__name__
        return (head + f'<div class="missing" data-error="{_e(why)}">heatmap unavailable: '
                f'{_e(src)}</div></figure>')
    return (head + f'<img class="heatmap" data-heatmap="{_e(name)}" src="{_e(src)}" '
            f'alt="{_e(caption)}" title="{_e(key)}" loading="eager" decoding="async">'
            f'</figure>')


def _stats_block(row: Mapping) -> str:
    stats = row.get("stats") or {}
    real, fake = stats.get("real") or {}, stats.get("fake") or {}
    comp = stats.get("comparative") or {}
    items = [
        ("fake share", _num(comp.get("fake_share"), ".3f")),
        ("max real / fake", f"{_num(real.get('max'))} / {_num(fake.get('max'))}"),
        ("area ≥ ½ max real / fake",
         f"{_num(real.get('area_half_max'), '.3f')} / {_num(fake.get('area_half_max'), '.3f')}"),
        ("fake peak (x, y)", _point(fake.get("peak"))),
        ("real peak (x, y)", _point(real.get("peak"))),
        ("correlation", _num(comp.get("correlation"), ".3f")),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<dl class="stats">{dl}</dl>'


def _threshold(row: Mapping) -> str:
    if row.get("threshold") is None:
        return ""
    return f'<div class="thr">threshold {_e(_num(row.get("threshold"), ".2f"))}</div>'


def _row(row: Mapping, sources: Mapping[str, Any]) -> str:
    status = str(row.get("status") or "")
    label = row.get("label") if status == "done" else None
    p = row.get("p_fake") if status == "done" else None
    p_attr = _num(p, ".6f") if p is not None else ""
    pos = row.get("position")
    head = (f'<tr class="item status-{_e(status)}" data-position="{_e(pos)}" '
            f'data-status="{_e(status)}" data-label="{_e(label or "")}" '
            f'data-p-fake="{_e(p_attr)}">')
    ident = (f'<td class="ident"><div class="pos">#{_e(pos)}</div>'
             f'<div class="uri">{_e(row.get("uri"))}</div>'
             f'<div class="status">{_e(status)}</div>')
    if row.get("sha256"):
        sha = _e(str(row["sha256"])[:12])
        ident += f'<div class="sha" title="{_e(row.get("sha256"))}">sha256 {sha}…</div>'
    ident += "</td>"
    if status != "done":
        code = row.get("error_code")
        msg = row.get("error_message")
        if status == "failed":
            body = (f'<td class="error" colspan="3"><span class="code">{_e(code)}</span> '
                    f'<span class="message">{_e(msg)}</span>'
                    f'<div class="attempts">attempts: {_e(row.get("attempts"))}</div></td>')
        else:
            body = f'<td class="pending" colspan="3">not analysed yet ({_e(status)})</td>'
        return head + ident + body + "</tr>"
    verdict = (f'<td class="verdict"><div class="label label-{_e(label)}">{_e(label)}</div>'
               f'<div class="p">P(fake) <b>{_e(_num(p, ".4f"))}</b></div>'
               f'{_threshold(row)}'
               f'{_stats_block(row)}</td>')
    panels = "".join(f"<td>{_panel(row, n, c, sources)}</td>" for n, c in PANELS[:1])
    pair = "".join(_panel(row, n, c, sources) for n, c in PANELS[1:])
    return head + ident + verdict + panels + f'<td class="pair">{pair}</td></tr>'


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1b1b1b;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .meta{color:#555;margin-bottom:12px}
.controls{position:sticky;top:0;background:#fafafa;padding:8px 0;border-bottom:1px solid #ccc;
 display:flex;gap:16px;align-items:center;flex-wrap:wrap;z-index:1}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:6px;
 vertical-align:top;text-align:left} th button{font:inherit;font-weight:600;border:0;
 background:none;cursor:pointer;padding:0} th button[aria-sort]::after{content:attr(data-arrow)}
.ident{max-width:260px;word-break:break-all} .pos{font-weight:600} .sha,.status,.thr{color:#666}
.label{display:inline-block;padding:1px 8px;border-radius:8px;font-weight:600}
.label-fake{background:#f6c6c0;color:#7a1206} .label-real{background:#c9ebcf;color:#0d5120}
.stats{display:grid;grid-template-columns:auto auto;gap:0 8px;margin:6px 0 0;font-size:12px}
.stats dt{color:#555} .stats dd{margin:0;font-variant-numeric:tabular-nums}
figure{margin:0 6px 0 0;display:inline-block;vertical-align:top}
figcaption{font-size:12px;color:#555} .pair{white-space:nowrap}
img.heatmap{display:block;width:224px;height:auto;image-rendering:auto;background:#eee}
figure[data-panel=fake_overlay_original] img.heatmap{width:auto;height:auto;max-width:300px;
 max-height:300px;min-width:64px}
.missing{width:224px;min-height:60px;border:1px dashed #b33;color:#b33;font-size:12px;padding:4px}
.error .code{font-family:monospace;font-weight:600;color:#b33} .error .message{color:#333}
.pending{color:#666}
"""

_JS = r"""
(function () {
  "use strict";
  var tbody = document.getElementById("items");
  var rows = Array.prototype.slice.call(tbody.querySelectorAll("tr.item"));
  var labelSel = document.getElementById("filter-label");
  var minP = document.getElementById("filter-min-p");
  var maxP = document.getElementById("filter-max-p");
  var shown = document.getElementById("shown");
  var sortKey = "position", sortDir = 1;

  function pOf(r) {
    var v = r.getAttribute("data-p-fake");
    return v === "" ? null : parseFloat(v);
  }
  function bound(input, fallback) {
    var v = parseFloat(input.value);
    return isNaN(v) ? fallback : v;
  }
  function apply() {
    var want = labelSel.value, lo = bound(minP, 0), hi = bound(maxP, 1), n = 0;
    rows.forEach(function (r) {
      var label = r.getAttribute("data-label"), status = r.getAttribute("data-status");
      var p = pOf(r), ok;
      if (want === "all") ok = true;
      else if (want === "failed") ok = status === "failed";
      else if (want === "pending") ok = status === "queued" || status === "running";
      else ok = label === want;
      if (ok && (lo > 0 || hi < 1)) ok = p !== null && p >= lo && p <= hi;
      r.hidden = !ok;
      if (ok) n += 1;
    });
    shown.textContent = n + " of " + rows.length + " shown";
    document.body.setAttribute("data-shown", String(n));
  }
  function sortBy(key, dir) {
    sortKey = key; sortDir = dir;
    rows.sort(function (a, b) {
      if (key === "p_fake") {
        var pa = pOf(a), pb = pOf(b);
        if (pa === null && pb === null) return posOf(a) - posOf(b);
        if (pa === null) return 1;   /* items without P(fake) last, either direction */
        if (pb === null) return -1;
        return (pa - pb) * dir || posOf(a) - posOf(b);
      }
      return (posOf(a) - posOf(b)) * dir;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
    Array.prototype.forEach.call(document.querySelectorAll("button[data-sort]"), function (b) {
      if (b.getAttribute("data-sort") === key) {
        b.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        b.setAttribute("data-arrow", dir > 0 ? " \u25B2" : " \u25BC");
      } else {
        b.removeAttribute("aria-sort");
      }
    });
    document.body.setAttribute("data-sort", key + (dir > 0 ? ":asc" : ":desc"));
  }
  function posOf(r) { return parseInt(r.getAttribute("data-position"), 10); }

  Array.prototype.forEach.call(document.querySelectorAll("button[data-sort]"), function (b) {
    b.addEventListener("click", function () {
      var key = b.getAttribute("data-sort");
      sortBy(key, key === sortKey ? -sortDir : (key === "p_fake" ? -1 : 1));
    });
  });
  [labelSel, minP, maxP].forEach(function (el) {
    el.addEventListener("input", apply);
    el.addEventListener("change", apply);
  });

  /* Mark every heatmap once it has decoded, so a reader (or a test) can tell that it rendered. */
  Array.prototype.forEach.call(document.querySelectorAll("img.heatmap"), function (img) {
    function loaded() {
      img.setAttribute("data-loaded", img.naturalWidth > 0 ? "1" : "0");
      img.setAttribute("data-natural-width", String(img.naturalWidth));
    }
    function failed() { img.setAttribute("data-loaded", "0"); }
    if (img.complete && img.naturalWidth > 0) loaded();
    else { img.addEventListener("load", loaded); img.addEventListener("error", failed); }
  });

  var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  if (params.has("label")) labelSel.value = params.get("label");
  if (params.has("min")) minP.value = params.get("min");
  if (params.has("max")) maxP.value = params.get("max");
  if (params.has("sort")) {
    var parts = params.get("sort").split(":");
    sortBy(parts[0] === "p_fake" ? "p_fake" : "position", parts[1] === "desc" ? -1 : 1);
  } else {
    sortBy("position", 1);
  }
  apply();
  document.body.setAttribute("data-ready", "1");
})();
"""


def _csp(sources: Mapping[str, Any], script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    img = {"data:"}
    for src in sources.values():
        if isinstance(src, str) and not src.startswith("data:"):
            img.add(urlparse(src).scheme.lower() + ":")
    return ("default-src 'none'; style-src 'unsafe-inline'; "
            f"img-src {' '.join(sorted(img))}; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def build_report(rows: Iterable[Mapping[str, Any]],
                 fetch_png: Callable[[str], bytes] | None = None, *,
                 image_url: Callable[[str], str] | None = None,
                 job_id: str | None = None, status: Mapping[str, Any] | None = None,
                 title: str | None = None, generated_at: datetime | None = None,
                 workers: int = 8) -> str:
    """The HTML page for a job's ``rows`` (records of ``job_results``, in position order).

    ``fetch_png(key) -> bytes`` reads a heatmap for embedding as a data: URI; or
    ``image_url(key) -> str`` gives the URL to reference instead (a presigned URL). Exactly
    one of the two. ``status`` is the job's ``job_status`` record, shown in the header.
    Heatmaps are read with ``workers`` threads.
    """
    if (fetch_png is None) == (image_url is None):
        raise ValueError("give exactly one of fetch_png (embed) and image_url (link)")
    rows = list(rows)
    sources = _sources(rows, fetch_png, image_url, workers)
    generated_at = generated_at or datetime.now(timezone.utc)
    title = title or (f"poundcam review: job {job_id}" if job_id else "poundcam review")

    done = [r for r in rows if r.get("status") == "done"]
    counts = {"items": len(rows), "done": len(done),
              "failed": sum(r.get("status") == "failed" for r in rows),
              "fake": sum(r.get("label") == "fake" for r in done),
              "real": sum(r.get("label") == "real" for r in done)}
    pending = len(rows) - counts["done"] - counts["failed"]
    models = sorted({str(r.get("model_id")) for r in done if r.get("model_id")})
    cams = sorted({str(r.get("cam_config_id")) for r in done if r.get("cam_config_id")})
    unavailable = sum(not isinstance(v, str) for v in sources.values())
    meta = [f"{counts['items']} items: {counts['done']} analysed "
            f"({counts['fake']} fake, {counts['real']} real), {counts['failed']} failed"
            + (f", {pending} not finished" if pending else "")]
    if status is not None and not status.get("finished", True):
        meta.append("the job is still running: this page is a snapshot")
    if models:
        meta.append("model " + ", ".join(models) + "; CAM config " + ", ".join(cams))
    if unavailable:
        meta.append(f"{unavailable} heatmap(s) could not be read")
    meta.append("generated " + generated_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))

    body_rows = "\n".join(_row(r, sources) for r in rows)
    summary = json.dumps({**counts, "job_id": job_id, "heatmaps_unavailable": unavailable})
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(_csp(sources, _JS))}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body data-items="{len(rows)}" data-summary="{_e(summary)}">
<h1>{_e(title)}</h1>
<div class="meta">{"<br>".join(_e(m) for m in meta)}</div>
<div class="controls">
<label>label <select id="filter-label">
<option value="all">all</option><option value="fake">fake</option>
<option value="real">real</option><option value="failed">failed</option>
<option value="pending">not finished</option></select></label>
<label>P(fake) from <input id="filter-min-p" type="number" min="0" max="1" step="0.05"
 value="0"></label>
<label>to <input id="filter-max-p" type="number" min="0" max="1" step="0.05" value="1"></label>
<span id="shown">{len(rows)} of {len(rows)} shown</span>
</div>
<table>
<thead><tr><th><button type="button" data-sort="position">item</button></th>
<th><button type="button" data-sort="p_fake">P(fake)</button> / label</th>
<th>original view</th><th>real and fake evidence (model input crop)</th></tr></thead>
<tbody id="items">
{body_rows}
</tbody>
</table>
<script>{_JS}</script>
</body>
</html>
"""
