"""Review commands: ``poundcam report JOB --out report.html``."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

MAX_HEATMAP_BYTES = 32 * 1024 * 1024
MAX_EXPIRES_S = 7 * 24 * 3600  # the longest a SigV4 presigned URL can live


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML review page for a job",
        description="Write one HTML file with, per image, the original view and the real and "
                    "fake overlays side by side, P(fake), the label and the key CAM statistics, "
                    "sortable and filterable by P(fake) and label. Reads the job from "
                    "POUNDCAM_DATABASE_URL and the heatmaps from POUNDCAM_LOCAL_ROOT (embedded) "
                    "or the S3 bucket POUNDCAM_HEATMAP_BUCKET.")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--images", choices=("embed", "presigned"), default="embed",
                   help="embed the PNGs as data: URIs (default; the file opens anywhere) or "
                        "reference them by presigned URLs that expire")
    p.add_argument("--expires", type=int, default=3600, metavar="SECONDS",
                   help="lifetime of presigned URLs (default 3600, at most 604800)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL (default POUNDCAM_DATABASE_URL)")
    p.add_argument("--heatmaps", default=None, metavar="DIR",
                   help="local heatmap folder (default: the folder `poundcam analyze` "
                        "recorded with the job, else POUNDCAM_LOCAL_ROOT; unset: S3)")
    p.set_defaults(handler=_report)


def heatmap_store(settings):
    """The store the heatmaps are read from: the local folder in the embedded mode, else the
    heatmap bucket (read-only use; only that bucket is readable through it)."""
    from ..settings import SettingsError
    from ..storage import LocalStore, S3Store

    if settings.embedded:
        return LocalStore(settings.local_root)
    if not settings.heatmap_bucket:
        raise SettingsError("POUNDCAM_HEATMAP_BUCKET must be set to read heatmaps from S3 "
                            "(or give --heatmaps DIR for a local folder)")
    return S3Store(settings.heatmap_bucket, allowed_buckets=[settings.heatmap_bucket],
                   endpoint_url=settings.s3_endpoint_url)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _report(args) -> int:
    from ..client import Client
    from ..report import build_report
    from ..settings import Settings

    if not 1 <= args.expires <= MAX_EXPIRES_S:
        print(f"poundcam report: --expires must be between 1 and {MAX_EXPIRES_S} seconds",
              file=sys.stderr)
        return 2
    overrides = {}
    if args.db:
        overrides["database_url"] = args.db
    if args.heatmaps:
        overrides["local_root"] = str(Path(args.heatmaps).resolve())
    settings = Settings.from_env(**overrides)
    with Client(settings) as client:
        status = client.status(args.job_id)  # unknown job: an error, exit 2
        job = client.job(args.job_id)
        rows = client.results(args.job_id)
    if not settings.embedded and not settings.heatmap_bucket and job["options"].get("heatmap_root"):
        # `poundcam analyze` recorded where it wrote the heatmaps
        settings = settings.replace(local_root=str(job["options"]["heatmap_root"]))
    store = heatmap_store(settings)
    if args.images == "embed":
        def fetch_png(key: str) -> bytes:
            return store.get(store.uri_for(key), max_bytes=MAX_HEATMAP_BYTES)

        html = build_report(rows, fetch_png, job_id=args.job_id, status=status)
    else:
        html = build_report(rows, image_url=lambda key: store.presigned_url(key, args.expires),
                            job_id=args.job_id, status=status)
    out = Path(args.out)
    write_atomically(out, html)
    done = sum(r["status"] == "done" for r in rows)
    print(f"wrote {out}: {len(rows)} items ({done} analysed), images "
          f"{'embedded' if args.images == 'embed' else f'linked, expiring in {args.expires} s'}")
    return 0
