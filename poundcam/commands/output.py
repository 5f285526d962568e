"""How result records are printed: JSON (the records as stored), CSV (one flat row per item,
the CAM statistics pulled out of their JSON) and an aligned table for people.

Every command that prints results (``analyze --json``, ``results --format json``) prints one
shape: ``{"job_id": ..., "results": [record, ...]}``, each record with the keys of
``poundcam.db.RESULT_FIELDS``; ``analyze --json`` adds ``"skipped": [{"path", "code",
"reason"}, ...]``, the paths it did not read.
"""

from __future__ import annotations

import csv
import io
import json

from ..constants import LABELS

# The leading CSV columns, in order; CAM statistics and heatmap keys follow.
RESULT_COLUMNS = (
    "uri",
    "status",
    "error_code",
    "error_message",
    "sha256",
    "p_fake",
    "threshold",
    "label",
    "model_id",
)


def results_document(job_id: str, rows: list[dict], skipped: list[dict] | None = None) -> str:
    """The JSON document of a job's records; ``analyze`` adds the paths it skipped."""
    doc = {"job_id": job_id, "results": rows}
    if skipped is not None:
        doc["skipped"] = skipped
    return json.dumps(doc, indent=2, default=str) + "\n"


def flat_record(row: dict) -> dict:
    """One record as a flat row: the CSV's columns."""
    stats = row.get("stats") or {}
    out = {k: row.get(k) for k in RESULT_COLUMNS}
    out["cam_config_id"] = row.get("cam_config_id")
    for cls in LABELS:
        s = stats.get(cls) or {}
        out[f"{cls}_max"] = s.get("max")
        out[f"{cls}_area_half_max"] = s.get("area_half_max")
        out[f"{cls}_peak"] = s.get("peak")
    comp = stats.get("comparative") or {}
    out["fake_share"] = comp.get("fake_share")
    out["correlation"] = comp.get("correlation")
    for name, key in sorted((row.get("heatmap_keys") or {}).items()):
        out[f"heatmap_{name}"] = key
    return out


def format_results(rows: list[dict], fmt: str, job_id: str = "") -> str:
    """``rows`` as ``json``, ``csv`` or ``table`` text."""
    if fmt == "json":
        return results_document(job_id, rows)
    flat = [flat_record(r) for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        fields = list(dict.fromkeys([*RESULT_COLUMNS, *(k for r in flat for k in r)]))
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        for r in flat:
            w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
        return buf.getvalue()
    return table(flat, ("uri", "status", "label", "p_fake", "fake_share", "fake_peak", "error_code"))


def table(rows: list[dict], cols: tuple[str, ...], first_width: int = 60) -> str:
    """An aligned text table of ``cols``; the first column is cut to ``first_width``."""
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    widths[0] = min(widths[0], first_width)
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    for row in cells:
        if len(row[0]) > first_width:
            row[0] = "…" + row[0][-(first_width - 1) :]
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list):
        return "(" + ", ".join(f"{x:.0f}" for x in v) + ")"
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)
