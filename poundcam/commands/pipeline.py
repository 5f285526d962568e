"""Pipeline commands: worker, submit, status, results, resend, analyze (embedded)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..constants import (
    LABELS,
    CamMethod,
    CamTarget,
    CompileMode,
    DeepMaps,
    ErrorCode,
    ItemState,
    Label,
    values,
)
from ..logs import one_line, redact
from .common import (
    add_db_option,
    add_model_options,
    client_for,
    model_overrides,
    positive_int,
    probability,
    seconds,
    settings_for,
)
from .output import format_results, results_document, table

# Skipped paths printed one line each on stderr; the rest are counted (--json lists them all).
SKIPPED_SHOWN = 20


def register(sub) -> None:
    p = sub.add_parser(
        "worker",
        help="start a worker (solo pool; run one per GPU)",
        description="Start a Celery worker on the 'poundcam' queue. Reads "
        "POUNDCAM_BROKER_URL, POUNDCAM_DATABASE_URL, "
        "POUNDCAM_S3_ENDPOINT_URL, POUNDCAM_HEATMAP_BUCKET, "
        "POUNDCAM_WEIGHTS and the AWS credential variables.",
    )
    p.add_argument("--name", default="poundcam@%h", help="worker node name (default poundcam@%%h)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(handler=_worker)

    p = sub.add_parser("submit", help="create a job and enqueue its images")
    p.add_argument("uris", nargs="*", metavar="URI", help="s3://bucket/key of each image")
    p.add_argument("--from-file", metavar="FILE", help="read URIs from FILE, one per line ('-': stdin)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="items per message (default POUNDCAM_TASK_BATCH_SIZE)",
    )
    p.add_argument(
        "--key",
        default=None,
        metavar="KEY",
        help="idempotency key: submitting again with KEY returns the same job",
    )
    p.add_argument("--json", action="store_true", help='print {"job_id": ..., "items": ...}')
    add_db_option(p)
    p.set_defaults(handler=_submit)

    p = sub.add_parser("resend", help="enqueue a job's queued items that no message names")
    p.add_argument("job_id")
    add_db_option(p)
    p.set_defaults(handler=_resend)

    p = sub.add_parser("status", help="totals by state and whether a job is finished")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--wait",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="first wait up to SECONDS for the job to finish (exit 75 if it does not)",
    )
    add_db_option(p)
    p.set_defaults(handler=_status)

    p = sub.add_parser("results", help="one record per item of a job")
    p.add_argument("job_id")
    p.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help='json: {"job_id", "results": [...]}, the shape of `analyze --json`',
    )
    p.add_argument("--label", choices=LABELS)
    p.add_argument("--min-prob", type=probability, metavar="P", help="only items with P(fake) >= P (0 to 1)")
    add_db_option(p)
    p.set_defaults(handler=_results)

    p = sub.add_parser("jobs", help="the most recent jobs with their counts by state")
    p.add_argument("--limit", type=positive_int, default=20, metavar="N", help="at most N jobs (default 20)")
    p.add_argument("--json", action="store_true")
    add_db_option(p)
    p.set_defaults(handler=_jobs)

    p = sub.add_parser(
        "analyze",
        help="analyze local images embedded: SQLite + a local folder",
        description="Analyze image files or folders on this machine, without "
        "Redis or S3: results go to SQLite and heatmaps to a folder. "
        "Each path, symlinks resolved, must lie under "
        "POUNDCAM_ALLOWED_ROOTS (unset: the paths given); others "
        "are skipped, each with its reason. Folders are walked for "
        "files with an image extension; their other files are not "
        "read, and counted in one line on stderr.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    add_db_option(p)
    p.add_argument("--out", default=None, help="heatmap folder (default ./poundcam-out)")
    add_model_options(p)
    p.add_argument("--target", choices=values(CamTarget), default=None, help="CAM target")
    p.add_argument(
        "--method",
        choices=values(CamMethod),
        default=None,
        help="CAM weighting (default POUNDCAM_CAM_METHOD or hirescam)",
    )
    p.add_argument(
        "--compile",
        choices=values(CompileMode),
        default=None,
        help="torch.compile the CAM's no-autograd part (default POUNDCAM_COMPILE or off)",
    )
    p.add_argument(
        "--deep-maps",
        choices=values(DeepMaps),
        default=None,
        help="which images also get the deep (relevance) maps: none, flagged (labelled "
        "fake) or all (default POUNDCAM_DEEP_MAPS or none)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=_analyze)


def _worker(args) -> int:
    # The worker lives in workers/ (Celery); poundcam itself never imports it. Its settings are
    # checked here first: a bad one is then one line, not Celery's traceback of its app import.
    settings_for(args)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        "poundcam",
        "-E",
        "--without-gossip",
        "--without-mingle",
        "-n",
        args.name,
        "--loglevel",
        args.loglevel,
    ]
    os.execv(sys.executable, argv)
    return 0  # not reached


def _read_uris(args) -> list[str]:
    uris = list(args.uris)
    if args.from_file:
        # closed by the with statement below (standard input too)
        fh = sys.stdin if args.from_file == "-" else open(args.from_file, encoding="utf-8")  # noqa: SIM115
        with fh:
            uris += [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    return uris


def _submit(args) -> int:
    from ..errors import InvalidRequestError

    uris = _read_uris(args)
    if not uris:
        raise InvalidRequestError("no URIs given (arguments or --from-file)")
    from ..client import EnqueueError

    with client_for(args) as client:
        try:
            job_id = client.submit(uris, key=args.key, batch_size=args.batch_size)
        except EnqueueError as exc:  # the job exists: print its id, so it can be resent
            print(
                json.dumps({"job_id": exc.job_id, "items": len(uris), "enqueued": False})
                if args.json
                else exc.job_id
            )
            raise
    print(json.dumps({"job_id": job_id, "items": len(uris)}) if args.json else job_id)
    return 0


def _resend(args) -> int:
    with client_for(args) as client:
        print(f"sent {client.resend(args.job_id)} message(s)")
    return 0


def _wait(client, job_id: str, timeout: float) -> None:
    """``client.wait`` with a progress bar of the job's finished items on stderr."""
    bar: Progress | None = None

    def show(st: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(st["total"], unit="item")
        bar.advance_to(st["done"] + st["failed"], st["failed"])

    try:
        client.wait(job_id, timeout=timeout, on_status=show)
    finally:
        if bar is not None:
            bar.close()


def _status(args) -> int:
    with client_for(args) as client:
        if args.wait is not None:
            _wait(client, args.job_id, args.wait)  # WaitTimeout: exit 75
        st = client.status(args.job_id)
    if args.json:
        print(json.dumps(st))
    else:
        state = "finished" if st["finished"] else "in progress"
        print(
            f"job {st['job_id']}: {state}; {st['total']} items: {st['done']} done, "
            f"{st['failed']} failed, {st['running']} running, {st['queued']} queued"
        )
    return 0


def _results(args) -> int:
    with client_for(args) as client:
        rows = client.results(args.job_id, label=args.label, min_prob=args.min_prob)
    print(format_results(rows, args.format, job_id=args.job_id), end="")
    return 0


def _jobs(args) -> int:
    with client_for(args) as client:
        rows = client.jobs(limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(
            table(
                rows,
                ("job_id", "created_at", "mode", "total", "done", "failed", "running", "queued", "finished"),
                first_width=36,
            ),
            end="",
        )
    return 0


class Progress:
    """Per-image progress on stderr (tqdm): count, rate, ETA and failures. Log records are
    written above the bar while it runs (tqdm's logging redirect), not through it. Off a
    terminal the bar is redrawn at most every 10 s. ``failures`` names what the failure count
    counts ("3 failed": the items; a caller counting other things says which)."""

    def __init__(self, total: int, stream=None, unit: str = "img", failures: str = "failed"):
        from tqdm import tqdm

        stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced
        tty = stream.isatty()
        self.failed = 0
        self.failures = failures
        self.bar = tqdm(
            total=total,
            file=stream,
            unit=unit,
            dynamic_ncols=True,
            mininterval=0.1 if tty else 10.0,
            smoothing=0.1,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
        )
        self.bar.set_postfix_str(f"0 {failures}", refresh=False)

    def __call__(self, outcome) -> None:
        if outcome is not None and not outcome.ok:
            self.failed += 1
            self.bar.set_postfix_str(f"{self.failed} {self.failures}", refresh=False)
        self.bar.update(1)

    def advance_to(self, settled: int, failed: int) -> None:
        """Show ``settled`` items done or failed and ``failed`` failures (a count read from
        elsewhere: the database's failed items, the report's failed pictures)."""
        self.failed = failed
        self.bar.set_postfix_str(f"{failed} {self.failures}", refresh=False)
        self.bar.update(settled - self.bar.n)

    def close(self) -> None:
        self.bar.close()


# Signals that end an analyze run as Ctrl-C does: `kill` and supervisors (SIGTERM; a script's
# background job ignores Ctrl-C), a closed terminal (SIGHUP). The embedded run owns its items
# and gives them back before it exits.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals(handler):
    """``handler`` for STOP_SIGNALS meanwhile (the main thread only: elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)  # None: installed from C


def _analyze(args) -> int:
    with _signals(signal.default_int_handler):
        return _analyze_run(args)


def _analyze_run(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..db import create_job, item_refs, job_results, session_scope
    from ..db.migrate import upgrade
    from ..errors import InvalidRequestError
    from ..model.weights import with_local_weights
    from ..settings import Settings
    from ..storage import LocalStore, make_store
    from .inputs import collect, default_roots

    out = Path(args.out or "poundcam-out").resolve()
    overrides: dict[str, Any] = {"local_root": str(out)}
    if args.db:
        overrides["database_url"] = args.db
    overrides.update(model_overrides(args))
    for field, value in (
        ("cam_target", args.target),
        ("cam_method", args.method),
        ("compile", args.compile),
        ("deep_maps", args.deep_maps),
    ):
        if value is not None:
            overrides[field] = value
    settings = Settings.from_env(**overrides)
    roots_from = "POUNDCAM_ALLOWED_ROOTS"
    if not settings.allowed_roots:  # unset: the files and folders given
        settings = settings.replace(allowed_roots=default_roots(args.paths, settings))
        roots_from = "the paths given; set POUNDCAM_ALLOWED_ROOTS to allow others"
    sources = make_store(settings)  # the embedded mode's: the same check as each read
    assert isinstance(sources, LocalStore)  # local_root is set
    roots = tuple(str(r) for r in sources.read_roots)
    inputs = collect(args.paths, sources, outputs=[out])
    _report_skipped(inputs.skipped, roots, roots_from)
    if not inputs.files:
        raise InvalidRequestError("no image files found in the paths given")
    if not any(os.path.exists(f) for f in inputs.files):  # before the weights are fetched
        missing = ", ".join(repr(f) for f in inputs.files[:3])
        more = f" (and {len(inputs.files) - 3} more)" if len(inputs.files) > 3 else ""
        raise InvalidRequestError(f"nothing to analyse: {missing}{more} not found")
    # The weights first, before PyTorch is imported and before a database or a folder is
    # created: missing or unreachable weights fail in seconds and leave nothing behind.
    settings = with_local_weights(settings)
    from ..pipeline import RetryLater, process_items
    from ..runtime import make_analyzer, make_context, pick_device

    device = pick_device(settings.device)  # --device cuda without CUDA: before anything is made
    # Then what may fail for want of a place to write (the heatmap folder, the database), before
    # the model (a ViT-L: tens of seconds). A failure from here on until the job exists removes
    # the folders this run made while they are still empty; a database it migrated stays (a
    # database without jobs, as `poundcam db upgrade` leaves it: another run may use it already).
    made = _heatmap_folder(out)
    with contextlib.ExitStack() as undo:  # unwound only if the run fails before its job exists
        undo.callback(_remove_empty, made)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        upgrade(settings.database_url)
        analyzer = make_analyzer(settings, device=device)
        undo.callback(analyzer.close)
        ctx = make_context(settings, analyzer)
        undo.callback(ctx.close)
        with session_scope(ctx.sessions) as s:
            job_id = create_job(
                s,
                inputs.files,
                {
                    "mode": "embedded",
                    "model_id": analyzer.model_id,
                    "cam_config_id": analyzer.cam_config_id,
                    "heatmap_root": str(out),
                    "image_roots": list(roots),
                },
            )
            refs = [(r["item_id"], r["uri"]) for r in item_refs(s, job_id)]
        undo.pop_all()  # the job exists: the run below closes the analyzer and the context
    print(f"poundcam analyze: job {job_id}: {len(refs)} image(s)", file=sys.stderr)
    progress = Progress(len(refs))
    chunk = max(1, settings.batch_size * 4)
    try:
        with logging_redirect_tqdm():
            for start in range(0, len(refs), chunk):
                try:
                    process_items(ctx, refs[start : start + chunk], progress=progress)
                except RetryLater as exc:  # a local disk hiccup: one more try
                    process_items(
                        ctx,
                        [r for r in refs[start : start + chunk] if r[0] in exc.item_ids],
                        progress=progress,
                    )
    # The items are given back before the pools are closed (a second Ctrl-C there must not keep
    # them): this thread is the only one that writes to the database, and it stopped doing so.
    except KeyboardInterrupt:
        progress.close()
        return _interrupted(ctx.sessions, job_id)
    except Exception:  # a second RetryLater, the database gone: reported as any failure
        with contextlib.suppress(Exception):
            _give_back(ctx.sessions, job_id)
        raise
    finally:
        progress.close()
        analyzer.close()
        ctx.close()
    with session_scope(ctx.sessions) as s:
        rows = job_results(s, job_id)
    skipped = [k.as_dict() for k in inputs.skipped]
    if args.json:
        print(results_document(job_id, rows, skipped=skipped), end="")
    else:
        print(format_results(rows, "table"), end="")
        done = sum(r["status"] == ItemState.DONE for r in rows)
        fake = sum(r.get("label") == Label.FAKE for r in rows)
        unread = f", {len(inputs.other_files)} not read for their names" if inputs.other_files else ""
        print(
            f"\njob {job_id}: {done}/{len(rows)} analysed, {fake} labelled fake, "
            f"{len(rows) - done} failed, {len(skipped)} skipped{unread}; "
            f"database {redact(settings.database_url)}, heatmaps in {out}"
        )
    return 0 if not skipped and all(r["status"] == ItemState.DONE for r in rows) else 1


def _give_back(sessions, job_id: str) -> dict:
    """The job's claimed, unfinished items back to "queued": a run of ``analyze`` is their only
    owner, and left "running" they would look taken for ever. Returns the job's status."""
    from ..db import item_refs, job_status, requeue, session_scope

    # a second Ctrl-C (or a supervisor's repeated TERM) must not cut the give-back short
    with _signals(signal.SIG_IGN), session_scope(sessions) as s:
        running = [r["item_id"] for r in item_refs(s, job_id, status=ItemState.RUNNING)]
        for start in range(0, len(running), 500):  # bound the statement's parameters
            requeue(s, running[start : start + 500], job_id=job_id)
        return job_status(s, job_id)


def _interrupted(sessions, job_id: str) -> int:
    """Ctrl-C: the unfinished items given back, and one line that says where the job stands
    and how to go on. Exit status 130, as for any interrupted command."""
    try:
        st = _give_back(sessions, job_id)
    except Exception as exc:  # noqa: BLE001 - the interrupt is what is reported
        print(
            f"poundcam analyze: interrupted: job {job_id}: its unfinished items could not be "
            f"given back ({one_line(exc)}); they stay running",
            file=sys.stderr,
        )
        return 130
    print(
        f"poundcam analyze: interrupted: job {job_id}: {st['done']}/{st['total']} analysed, "
        f"{st['failed']} failed, {st['queued']} queued again; the same command again makes a new "
        f"job that reuses the analyses made (not computed again); "
        f"`poundcam results {job_id}` lists this one's",
        file=sys.stderr,
    )
    return 130


def _heatmap_folder(out: Path) -> list[Path]:
    """Make the heatmap folder (and its missing parents) and write a file in it; returns the
    folders made, innermost first (none when it existed).

    Raises:
        InvalidRequestError: it cannot be made or written to; nothing made is left.
    """
    from ..errors import InvalidRequestError

    made = [p for p in (out, *out.parents) if not (p.exists() or p.is_symlink())]
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".poundcam-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _remove_empty(made)
        why = exc.strerror or one_line(exc)
        raise InvalidRequestError(
            f"cannot write heatmaps to {out}: {why} (check --out, default ./poundcam-out)"
        ) from exc
    return made


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) that exist and are empty; others stay."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return  # not empty: its parents are not empty either


def _report_skipped(skipped, roots: tuple[str, ...], roots_from: str) -> None:
    """One line per skipped path on stderr (the first SKIPPED_SHOWN), then the allowed roots
    if a path was outside them."""
    for k in skipped[:SKIPPED_SHOWN]:
        print(f"poundcam analyze: skipped ({k.code}) {k.reason}", file=sys.stderr)
    if len(skipped) > SKIPPED_SHOWN:
        print(
            f"poundcam analyze: ... and {len(skipped) - SKIPPED_SHOWN} more skipped (--json lists them all)",
            file=sys.stderr,
        )
    if any(k.code == ErrorCode.URI_NOT_ALLOWED for k in skipped):
        print(f"poundcam analyze: allowed roots: {', '.join(roots)} ({roots_from})", file=sys.stderr)
