"""Review commands: ``poundcam report JOB --out report.html``."""

from __future__ import annotations

import functools
import itertools
import os
import sys
import tempfile
import threading
from pathlib import Path

from ..constants import LABELS, REPORT_SORTS, ItemState
from ..logs import one_line
from .common import add_db_option, output_file, positive_int
from .render import RENDERED

MAX_HEATMAP_BYTES = 32 * 1024 * 1024
MAX_EXPIRES_S = 7 * 24 * 3600  # the longest a SigV4 presigned URL can live


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML review page for a job",
        description="Write one HTML file with, per image, the original and the fake and real "
        "evidence maps side by side with a colour legend and its scale, P(fake) "
        "against the threshold, the label and the key CAM statistics; pictures zoom "
        "on click; the page sorts and filters by P(fake) and label. Reads the job "
        "from POUNDCAM_DATABASE_URL (or --db), the heatmaps from --heatmaps, "
        "POUNDCAM_LOCAL_ROOT, the folder `poundcam analyze` recorded or the S3 bucket "
        "POUNDCAM_HEATMAP_BUCKET, in that order, and originals from the job's own folders or the "
        "buckets in POUNDCAM_ALLOWED_BUCKETS.",
    )
    p.add_argument("job_id", metavar="JOB")
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="the HTML file to write (replaced if it exists), or a folder (existing, or ending "
        "with /) to write report-JOB.html into; missing folders are created",
    )
    p.add_argument("--label", choices=LABELS, help="only items with this label")
    p.add_argument("--min-prob", type=float, metavar="P", help="only items with P(fake) >= P")
    p.add_argument(
        "--sort",
        choices=REPORT_SORTS,
        default="position",
        help="order of the items: position (as submitted, default), p_fake or fake_share (highest first)",
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N items (after sorting)")
    p.add_argument(
        "--images",
        choices=("embed", "presigned"),
        default="embed",
        help="embed compressed thumbnails as data: URIs (default; the file opens "
        "anywhere) or reference the images by presigned URLs that expire",
    )
    p.add_argument(
        "--expires",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="lifetime of presigned URLs (default 3600, at most 604800)",
    )
    add_db_option(p)
    p.add_argument(
        "--heatmaps",
        default=None,
        metavar="DIR",
        help="local heatmap folder (default: POUNDCAM_LOCAL_ROOT, else the folder "
        "`poundcam analyze` recorded with the job when POUNDCAM_HEATMAP_BUCKET is unset, "
        "else that bucket)",
    )
    p.set_defaults(handler=_report)


def heatmap_store(settings):
    """The store the heatmaps are read from: the local folder in the embedded mode, else the
    heatmap bucket (read-only use; only that bucket is readable through it)."""
    from ..settings import SettingsError
    from ..storage import make_store

    if settings.embedded:
        return make_store(settings, allowed_roots=())
    if not settings.heatmap_bucket:
        raise SettingsError(
            "POUNDCAM_HEATMAP_BUCKET must be set to read heatmaps from S3 "
            "(or give --heatmaps DIR for a local folder)"
        )
    return make_store(settings, allowed_buckets=(settings.heatmap_bucket,))


def original_store(settings, job: dict):
    """The store originals are read from: for a job of `poundcam analyze`, its image folders
    (as recorded, or POUNDCAM_ALLOWED_ROOTS); else S3, only from POUNDCAM_ALLOWED_BUCKETS."""
    from ..storage import make_store

    options = job.get("options") or {}
    if options.get("mode") == "embedded":
        roots = settings.allowed_roots or tuple(options.get("image_roots") or ())
        if not roots:
            return None
        return make_store(settings, local_root=settings.local_root or roots[0], allowed_roots=roots)
    return make_store(settings, local_root=None, heatmap_bucket=None)


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


def _selection(args, shown: int, total: int) -> str | None:
    parts = []
    if args.label:
        parts.append(f"label {args.label}")
    if args.min_prob is not None:
        parts.append(f"P(fake) ≥ {args.min_prob:g}")
    if args.sort != "position":
        parts.append(f"sorted by {args.sort}, highest first")
    if args.limit is not None:
        parts.append(f"at most {args.limit}")
    if not parts:
        return None
    return f"showing {shown} of the job's {total} items: " + ", ".join(parts)


def _report(args) -> int:
    from ..client import Client
    from ..errors import InvalidRequestError
    from ..preprocess.decode import DecodeLimits
    from ..report import EmbeddedImages, build_report, select_rows
    from ..settings import Settings
    from .pipeline import Progress
    from .render import RenderedPanels  # noqa: I001

    if not 1 <= args.expires <= MAX_EXPIRES_S:
        raise InvalidRequestError(f"--expires must be between 1 and {MAX_EXPIRES_S} seconds")
    out = output_file(args.out, f"report-{args.job_id}.html")  # a bad one fails before the work
    overrides = {}
    if args.db:
        overrides["database_url"] = args.db
    if args.heatmaps:
        overrides["local_root"] = str(Path(args.heatmaps).resolve())
    settings = Settings.from_env(**overrides)
    with Client(settings) as client:
        status = client.status(args.job_id)  # unknown job: an error, exit 2
        job = client.job(args.job_id)
        all_rows = client.results(args.job_id)
    if not settings.embedded and not settings.heatmap_bucket and job["options"].get("heatmap_root"):
        # `poundcam analyze` recorded where it wrote the heatmaps
        settings = settings.replace(local_root=str(job["options"]["heatmap_root"]))
    selected = select_rows(
        all_rows, label=args.label, min_prob=args.min_prob, sort=args.sort, limit=args.limit
    )
    originals = original_store(settings, job)
    # The panels are drawn from the stored maps (poundcam render); stored heatmap objects are
    # read only for analyses made before the maps were stored (revision 0004), so the store is
    # made, and required, only when one is.
    stored = functools.cache(lambda: heatmap_store(settings))
    failures = _Failures()
    drawn = RenderedPanels(
        settings,
        args.job_id,
        DRAWN_PANELS,
        lambda key: stored().get(stored().uri_for(key), max_bytes=MAX_HEATMAP_BYTES),
    )
    rows = drawn.rows(selected)
    if args.images == "embed":
        source = EmbeddedImages(
            failures.watch(drawn.fetch),
            None
            if originals is None
            else failures.watch(lambda uri: originals.get(uri, max_bytes=settings.max_image_bytes)),
            limits=DecodeLimits.from_settings(settings),
        )
    else:
        source = _LinkedOrDrawn(
            failures.watch(drawn.fetch),
            failures.watch(lambda key: stored().presigned_url(key, args.expires)),
            None
            if originals is None
            else failures.watch(lambda uri: _presigned_original(originals, uri, args.expires)),
        )
    # reading and shrinking pictures takes a while; the bar counts what the closing line counts
    bar = Progress(len(rows), unit="item", failures="pictures failed")
    items = itertools.count(1)
    try:
        html = build_report(
            rows,
            source=source,
            job_id=args.job_id,
            status=status,
            selection=_selection(args, len(rows), len(all_rows)),
            sort=args.sort,
            progress=lambda: bar.advance_to(next(items), failures.count),
        )
    finally:
        bar.close()
    write_atomically(out, html)
    done = sum(r["status"] == ItemState.DONE for r in rows)
    print(
        f"wrote {out}: {len(rows)} items ({done} analysed), {len(html) / 1e6:.1f} MB, images "
        f"{'embedded' if args.images == 'embed' else f'linked, expiring in {args.expires} s'}"
    )
    if failures.count:
        print(
            f"poundcam report: warning: {failures.count} pictures failed: they show as unavailable "
            f"in the page; the first: {failures.first}",
            file=sys.stderr,
        )
    return 0


class _Failures:
    """Counts the pictures that could not be read (each shows as unavailable in its panel),
    for one line at the end."""

    def __init__(self):
        self.count = 0
        self.first: str | None = None
        self._lock = threading.Lock()

    def watch(self, read):
        def watched(arg):
            try:
                return read(arg)
            except Exception as exc:
                with self._lock:
                    self.count += 1
                    self.first = self.first or one_line(exc)
                raise

        return watched


DRAWN_PANELS = ("fake_overlay", "real_overlay", "real_raw16", "fake_raw16")


def _LinkedOrDrawn(draw, heatmap_url, original_url):
    """LinkedImages whose pictures drawn from the stored maps (``draw``: key -> PNG bytes)
    are embedded (nothing to link)."""
    from ..report import EmbeddedImages, LinkedImages

    class LinkedOrDrawn(LinkedImages):
        def heatmap(self, key: str):
            if key.startswith(RENDERED):
                return EmbeddedImages(draw).heatmap(key)
            return super().heatmap(key)

    return LinkedOrDrawn(heatmap_url, original_url)


def _presigned_original(store, uri: str, expires_s: int) -> str:
    """A presigned URL of an original in an allowed bucket (``store.ref`` checks the bucket)."""
    ref = store.ref(uri)
    return store.client.generate_presigned_url(
        "get_object", Params={"Bucket": ref.bucket, "Key": ref.key}, ExpiresIn=int(expires_s)
    )
