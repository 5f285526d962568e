"""Pipeline commands: worker, submit, status, results, resend, analyze (embedded)."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
RESULT_COLUMNS = ("uri", "status", "error_code", "sha256", "p_fake", "label", "model_id")


def register(sub) -> None:
    p = sub.add_parser("worker", help="start a worker (solo pool; run one per GPU)",
                       description="Start a Celery worker on the 'poundcam' queue. Reads "
                                   "POUNDCAM_BROKER_URL, POUNDCAM_DATABASE_URL, "
                                   "POUNDCAM_S3_ENDPOINT_URL, POUNDCAM_HEATMAP_BUCKET, "
                                   "POUNDCAM_WEIGHTS and the AWS credential variables.")
    p.add_argument("--name", default="poundcam@%h", help="worker node name (default poundcam@%%h)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(handler=_worker)

    p = sub.add_parser("submit", help="create a job and enqueue its images")
    p.add_argument("uris", nargs="*", metavar="URI", help="s3://bucket/key of each image")
    p.add_argument("--from-file", metavar="FILE", help="read URIs from FILE, one per line ('-': stdin)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="items per message (default POUNDCAM_TASK_BATCH_SIZE)")
    p.add_argument("--json", action="store_true", help='print {"job_id": ...}')
    p.set_defaults(handler=_submit)

    p = sub.add_parser("resend", help="enqueue a job's items that are still queued again")
    p.add_argument("job_id")
    p.set_defaults(handler=_resend)

    p = sub.add_parser("status", help="totals by state and whether a job is finished")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)

    p = sub.add_parser("results", help="one record per item of a job")
    p.add_argument("job_id")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--label", choices=("real", "fake"))
    p.add_argument("--min-prob", type=float, metavar="P", help="only items with P(fake) >= P")
    p.set_defaults(handler=_results)

    p = sub.add_parser("analyze", help="analyze local images embedded: SQLite + a local folder",
                       description="Analyze image files or folders on this machine, without "
                                   "Redis or S3: results go to SQLite and heatmaps to a folder.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--db", default=None, help="database URL (default sqlite:///./poundcam.db)")
    p.add_argument("--out", default=None, help="heatmap folder (default ./poundcam-out)")
    p.add_argument("--weights", default=None, help="checkpoint (default POUNDCAM_WEIGHTS)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threshold", type=float, default=None, help="P(fake) for the label 'fake'")
    p.add_argument("--target", choices=("contrastive", "logit"), default=None, help="CAM target")
    p.add_argument("--method", choices=("gradcam", "hirescam"), default=None,
                   help="CAM weighting (default POUNDCAM_CAM_METHOD or hirescam)")
    p.add_argument("--compile", choices=("off", "on"), default=None,
                   help="torch.compile the CAM's no-autograd part (default POUNDCAM_COMPILE or off)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=_analyze)


def _worker(args) -> int:
    # The worker lives in workers/ (Celery); poundcam itself never imports it.
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "--pool=solo", "--concurrency=1", "-Q", "poundcam", "-E",
            "--without-gossip", "--without-mingle", "-n", args.name, "--loglevel", args.loglevel]
    os.execv(sys.executable, argv)
    return 0  # not reached


def _read_uris(args) -> list[str]:
    uris = list(args.uris)
    if args.from_file:
        fh = sys.stdin if args.from_file == "-" else open(args.from_file, encoding="utf-8")
        with fh:
            uris += [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    return uris


def _submit(args) -> int:
    from .. import client

    uris = _read_uris(args)
    if not uris:
        print("poundcam submit: no URIs given (arguments or --from-file)", file=sys.stderr)
        return 2
    job_id = client.submit(uris, batch_size=args.batch_size)
    print(json.dumps({"job_id": job_id, "items": len(uris)}) if args.json else job_id)
    return 0


def _resend(args) -> int:
    from .. import client

    print(f"sent {client.resend(args.job_id)} message(s)")
    return 0


def _status(args) -> int:
    from .. import client

    st = client.status(args.job_id)
    if args.json:
        print(json.dumps(st))
    else:
        state = "finished" if st["finished"] else "in progress"
        print(f"job {st['job_id']}: {state}; {st['total']} items: {st['done']} done, "
              f"{st['failed']} failed, {st['running']} running, {st['queued']} queued")
    return 0


def _results(args) -> int:
    from .. import client

    rows = client.results(args.job_id, label=args.label, min_prob=args.min_prob)
    print(format_results(rows, args.format), end="")
    return 0


def _flat(row: dict) -> dict:
    stats = row.get("stats") or {}
    out = {k: row.get(k) for k in RESULT_COLUMNS}
    out["cam_config_id"] = row.get("cam_config_id")
    for cls in ("real", "fake"):
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


def format_results(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str) + "\n"
    flat = [_flat(r) for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for r in flat for k in r)) or list(RESULT_COLUMNS)
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        for r in flat:
            w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
        return buf.getvalue()
    return _table(flat)


def _table(flat: list[dict]) -> str:
    cols = ("uri", "status", "label", "p_fake", "fake_share", "fake_peak", "error_code")
    cells = [[_cell(r.get(c)) for c in cols] for r in flat]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    widths[0] = min(widths[0], 60)
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    for row in cells:
        row[0] = row[0] if len(row[0]) <= 60 else "…" + row[0][-59:]
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list):
        return "(" + ", ".join(f"{x:.0f}" for x in v) + ")"
    return str(v)


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; folders walked recursively for image files, in sorted order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)  # a missing file is reported as a failed item, not dropped
    return out


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, stream=None):
        stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced
        self.total, self.n, self.failed, self.stream = total, 0, 0, stream
        self.t0 = time.perf_counter()
        self.tty = stream.isatty()
        self._last = 0.0

    def __call__(self, outcome) -> None:
        self.n += 1
        if outcome is not None and not outcome.ok:
            self.failed += 1
        now = time.perf_counter()
        if self.tty or now - self._last > 5 or self.n == self.total:
            self._last = now
            rate = self.n / max(now - self.t0, 1e-9)
            filled = int(30 * self.n / max(self.total, 1))
            line = (f"[{'#' * filled}{'.' * (30 - filled)}] {self.n}/{self.total} "
                    f"{rate:.1f} img/s, {self.failed} failed")
            self.stream.write(("\r" + line) if self.tty else line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _analyze(args) -> int:
    from ..db import create_job, item_refs, job_results, session_scope
    from ..db.migrate import upgrade
    from ..pipeline import RetryLater, process_items
    from ..runtime import make_analyzer, make_context
    from ..settings import Settings

    files = expand_paths(args.paths)
    if not files:
        print("poundcam analyze: no image files found", file=sys.stderr)
        return 2
    out = Path(args.out or "poundcam-out").resolve()
    roots = sorted({str((f.parent if not f.is_dir() else f).resolve()) for f in files})
    overrides = {"local_root": str(out), "allowed_roots": tuple(roots)}
    if args.db:
        overrides["database_url"] = args.db
    elif "POUNDCAM_DATABASE_URL" not in os.environ:
        overrides["database_url"] = "sqlite:///./poundcam.db"
    for field, value in (("weights", args.weights), ("device", args.device),
                         ("batch_size", args.batch_size), ("threshold", args.threshold),
                         ("cam_target", args.target), ("cam_method", args.method),
                         ("compile", args.compile)):
        if value is not None:
            overrides[field] = value
    settings = Settings.from_env(**overrides)
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    upgrade(settings.database_url)
    print(f"loading model ({settings.weights or 'default weights'})", file=sys.stderr)
    analyzer = make_analyzer(settings)
    ctx = make_context(settings, analyzer)
    with session_scope(ctx.sessions) as s:
        job_id = create_job(s, [str(f.resolve()) if f.exists() else str(f) for f in files],
                            {"mode": "embedded", "model_id": analyzer.model_id,
                             "cam_config_id": analyzer.cam_config_id})
        refs = [(r["item_id"], r["uri"]) for r in item_refs(s, job_id)]
    progress = Progress(len(refs))
    chunk = max(1, settings.batch_size * 4)
    try:
        for start in range(0, len(refs), chunk):
            try:
                process_items(ctx, refs[start:start + chunk], progress=progress)
            except RetryLater as exc:  # a local disk hiccup: one more try
                process_items(ctx, [r for r in refs[start:start + chunk] if r[0] in exc.item_ids],
                              progress=progress)
    finally:
        progress.close()
        analyzer.close()
        ctx.close()
    with session_scope(ctx.sessions) as s:
        rows = job_results(s, job_id)
    if args.json:
        print(json.dumps({"job_id": job_id, "results": rows}, indent=2, default=str))
    else:
        print(_table([_flat(r) for r in rows]), end="")
        done = sum(r["status"] == "done" for r in rows)
        fake = sum(r.get("label") == "fake" for r in rows)
        print(f"\njob {job_id}: {done}/{len(rows)} analysed, {fake} labelled fake, "
              f"{len(rows) - done} failed; database {settings.database_url}, heatmaps in {out}")
    return 0 if all(r["status"] == "done" for r in rows) else 1
