"""``poundcam render ANALYSIS|JOB``: heatmap files drawn on demand from the stored maps.

The analysis writes one heatmap object per image; every other picture (the overlays on the
model's crop and on the original, the 16-bit maps) is drawn here from the maps in the database
and the source image, exactly as the analysis would have drawn it (poundcam.cam.ondemand).
The report uses the same ``Renderer``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from ..errors import PoundcamError

DEEP_PREFIX = "deep_"
# The deep maps' crop overlays, drawn for the report where an analysis has deep maps.
DEEP_RENDERINGS = ("deep_real_overlay", "deep_fake_overlay")


class RenderError(PoundcamError):
    """One analysis could not be drawn; ``code`` says why (stable, documented)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def register(sub) -> None:
    p = sub.add_parser(
        "render",
        help="draw heatmap files from the stored maps",
        description="Draw heatmap files of an analysis (its id) or of every analysed item of a "
        "job from the maps in the database: the overlays on the model's crop and "
        "on the original, the 16-bit raw maps and the comparative heatmap. Source "
        "images are read from S3 (POUNDCAM_ALLOWED_BUCKETS) or local paths "
        "(POUNDCAM_ALLOWED_ROOTS); a source whose bytes differ from the analysed "
        "image is not drawn.",
    )
    p.add_argument("target", metavar="ANALYSIS|JOB", help="analysis id (a number) or job id")
    p.add_argument(
        "--out",
        default="poundcam-render",
        metavar="DIR",
        help="folder to write OUT/<analysis id>/<name>.png (default poundcam-render)",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="NAMES",
        help="comma list of files to draw (default all: real_overlay, fake_overlay, "
        "real_overlay_original, fake_overlay_original, real_raw16, fake_raw16, "
        "comparative)",
    )
    p.add_argument("--db", default=None, metavar="URL", help="database URL (default POUNDCAM_DATABASE_URL)")
    p.set_defaults(handler=_render)


class Renderer:
    """Draws the files of stored analyses, reading each source image once.

    Args:
        settings: where sources may be read (allowed buckets and roots, the S3 endpoint) and
            their size limit.
    """

    def __init__(self, settings):
        self.settings = settings
        self._s3 = None
        self._local = None

    def _read(self, uri: str | None) -> bytes:
        from ..storage import make_store

        if not uri:
            raise RenderError("source_unknown", "no submitted source is recorded for it")
        if uri.startswith("s3://"):
            if self._s3 is None:  # reads from the allowed buckets, writes nothing
                self._s3 = make_store(self.settings, local_root=None, heatmap_bucket=None)
            store = self._s3
        else:
            if self._local is None:  # the bytes are checked against the analysed image below
                self._local = make_store(
                    self.settings,
                    local_root=str(Path.cwd()),
                    allowed_roots=self.settings.allowed_roots or ("/",),
                )
            store = self._local
        return store.get(uri, max_bytes=self.settings.max_image_bytes)

    def source(self, record: dict[str, Any]) -> bytes:
        """The bytes of the analysed image of a record of ``analyses_for_rendering``, read
        from its submitted source.

        Raises:
            RenderError: no source recorded, or its bytes are not the analysed image any more.
            poundcam.storage.StorageError: the source could not be read.
        """
        data = self._read(record["uri"])
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise RenderError("source_changed", f"{record['uri']}: not the analysed image any more")
        return data

    def render(self, record: dict[str, Any], names=None) -> dict[str, bytes]:
        """The files of one record of ``analyses_for_rendering``; ``names`` may also ask for
        the deep maps' crop overlays (DEEP_RENDERINGS), drawn on the same source.

        Raises:
            RenderError: no maps (or no deep maps) stored, or the source is unreadable or
                changed.
            poundcam.storage.StorageError: the source could not be read.
        """
        from ..cam.ondemand import RENDERINGS, render_maps, source_view
        from ..preprocess.decode import DecodeLimits

        names = RENDERINGS if names is None else names
        deep = [n for n in names if n in DEEP_RENDERINGS]
        if not deep:
            return self._render_fast(record, names)
        if record.get("deep_real_map") is None or record.get("deep_fake_map") is None:
            raise RenderError(
                "maps_not_stored",
                "no deep maps are stored for this analysis (poundcam explain computes them)",
            )
        source = source_view(self.source(record), DecodeLimits.from_settings(self.settings))
        out = self._render_fast(record, [n for n in names if n not in DEEP_RENDERINGS], source)
        drawn = render_maps(
            record["deep_real_map"], record["deep_fake_map"], source, names=("real_overlay", "fake_overlay")
        )
        out.update({n: drawn[n[len(DEEP_PREFIX) :]] for n in deep})
        return out

    def _render_fast(self, record: dict[str, Any], names, source=None) -> dict[str, bytes]:
        from ..cam.ondemand import MAP_ONLY, render_maps, source_view
        from ..preprocess.decode import DecodeLimits

        if record["real_map"] is None or record["fake_map"] is None:
            raise RenderError("maps_not_stored", "this analysis was stored before the maps were kept")
        if source is None and any(n not in MAP_ONLY for n in names):
            source = source_view(self.source(record), DecodeLimits.from_settings(self.settings))
        return render_maps(
            record["real_map"], record["fake_map"], source, p_fake=record["p_fake"], names=names
        )


def _render(args) -> int:
    from ..cam.ondemand import RENDERINGS
    from ..db import analyses_for_rendering, make_session_factory, session_scope
    from ..errors import InvalidRequestError
    from ..settings import Settings
    from ..storage import make_store

    names = RENDERINGS
    if args.only is not None:  # checked before the database is opened
        names = tuple(dict.fromkeys(n.strip() for n in args.only.split(",") if n.strip()))
        unknown = [n for n in names if n not in RENDERINGS]
        if unknown or not names:
            raise InvalidRequestError(
                f"--only {args.only!r}: "
                + (f"unknown file name(s) {', '.join(unknown)}; " if unknown else "no file name; ")
                + f"choose from {', '.join(RENDERINGS)}"
            )
    settings = Settings.from_env(**({"database_url": args.db} if args.db else {}))
    sessions = make_session_factory(settings.database_url)
    try:
        with session_scope(sessions) as s:
            records = analyses_for_rendering(s, args.target)
    finally:
        sessions.kw["bind"].dispose()
    folder = Path(args.out).resolve()
    out = make_store(settings, local_root=str(folder), allowed_roots=())
    renderer = Renderer(settings)
    failed = 0
    for record in records:
        try:
            files = renderer.render(record, names)
        except (RenderError, PoundcamError) as exc:
            failed += 1
            print(
                f"analysis {record['analysis_id']}: {getattr(exc, 'code', 'error')}: {exc}", file=sys.stderr
            )
            continue
        for name, png in files.items():
            out.put(f"{record['analysis_id']}/{name}.png", png, "image/png")
    print(f"drew {len(records) - failed} of {len(records)} analyses into {folder}")
    return 1 if failed else 0


RENDERED = "rendered:"  # the "key" of a picture drawn on demand, not read from the store


class RenderedPanels:
    """Pictures of a job drawn on demand from the stored maps, for readers that take stored
    heatmaps by key (the report): ``rows`` gives each analysed row a ``rendered:<analysis
    id>/<name>`` key for each of ``names`` it has no stored object for, and ``fetch(key)``
    draws those (each analysis once, all its pictures together) or reads stored objects with
    ``fetch_stored``.

    Args:
        settings: the database and where sources may be read.
        job_id: the job whose analyses are drawn.
        names: the pictures (poundcam.cam.ondemand.RENDERINGS) the reader asks for.
        fetch_stored: ``key -> bytes`` of a stored object.
    """

    def __init__(self, settings, job_id: str, names: tuple[str, ...], fetch_stored=None):
        import threading

        from ..db import analyses_for_rendering, make_session_factory, session_scope

        sessions = make_session_factory(settings.database_url)
        try:
            with session_scope(sessions) as s:
                self.records = {r["analysis_id"]: r for r in analyses_for_rendering(s, job_id)}
        finally:
            sessions.kw["bind"].dispose()
        self.names = names
        self._renderer = Renderer(settings)
        self._fetch_stored = fetch_stored
        self._locks = {i: threading.Lock() for i in self.records}
        self._drawn: dict[int, dict[str, bytes] | Exception] = {}

    def rows(self, rows: list) -> list[dict]:
        out = []
        for r in rows:
            keys = dict(r.get("heatmap_keys") or {})
            if r.get("analysis_id") in self.records:
                for name in self._names(r["analysis_id"]):
                    keys.setdefault(name, f"{RENDERED}{r['analysis_id']}/{name}")
            out.append({**r, "heatmap_keys": keys})
        return out

    def _names(self, analysis_id: int) -> tuple[str, ...]:
        """What is drawn for an analysis: ``names``, and its deep overlays where it has deep maps."""
        has_deep = self.records[analysis_id].get("deep_real_map") is not None
        return self.names + DEEP_RENDERINGS if has_deep else self.names

    def fetch(self, key: str) -> bytes:
        if not key.startswith(RENDERED):
            if self._fetch_stored is None:
                raise RenderError("not_configured", f"{key}: stored objects are not read here")
            return self._fetch_stored(key)
        analysis, name = key[len(RENDERED) :].split("/", 1)
        analysis_id = int(analysis)
        with self._locks[analysis_id]:
            if analysis_id not in self._drawn:
                try:
                    self._drawn[analysis_id] = self._renderer.render(
                        self.records[analysis_id], self._names(analysis_id)
                    )
                except Exception as exc:  # noqa: BLE001 - shown where the picture would be
                    self._drawn[analysis_id] = exc
        drawn = self._drawn[analysis_id]
        if isinstance(drawn, Exception):
            raise drawn
        return drawn[name]
