"""One message's work: fetch images, analyze them, upload heatmaps, record results.

Used by the Celery task (S3 + PostgreSQL) and by the embedded ``poundcam analyze`` (a local
folder + SQLite) alike. Every step is safe to repeat: items already done are skipped, an image
already analysed with the same model and CAM configuration is linked rather than recomputed,
heatmap keys are deterministic and the analysis row is an idempotent upsert. Heatmaps are
uploaded before the row that points to them is written. Database work is batched (one lookup
per chunk of fetched images, one transaction per batch of finished items) so that a message
costs a few round trips, not several per image.

The database, not the message, says which items a message may touch and where their images
are. Permanent per-image problems (a corrupt file, a disallowed URI, heatmaps the store refuses
for good) fail that item with an error code and the rest go on. Transient problems (S3 or the
database unreachable) leave the affected items "running" and raise RetryLater once the rest of
the message is done.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from .analysis import Analyzer, ItemOutcome
from .constants import ErrorCode
from .db import (
    Done,
    claim_items,
    find_known,
    is_transient_db_error,
    mark_done_many,
    mark_failed_many,
    session_scope,
    upsert_analyses,
)
from .errors import PoundcamError
from .storage import ObjectStore, StorageError, heatmap_key

log = logging.getLogger(__name__)

DB_ATTEMPTS = 5


class RetryLater(PoundcamError):
    """Some items hit a transient failure; the message should be retried later."""

    def __init__(self, message: str, item_ids: list[int]):
        super().__init__(message)
        self.item_ids = item_ids


class Observer(Protocol):
    """What the pipeline reports as it goes (the worker's metrics and heartbeat)."""

    def item(self, outcome: str, code: str | None = None) -> None: ...

    def batch(self, seconds: float, n: int) -> None: ...

    def unbacked(self, n: int) -> None: ...


@dataclasses.dataclass
class PipelineContext:
    analyzer: Analyzer
    source: ObjectStore  # where images are read
    sink: ObjectStore  # where heatmaps are written
    sessions: sessionmaker[Session]
    heatmap_prefix: str = "heatmaps/"
    max_image_bytes: int | None = None
    worker: str = dataclasses.field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    io_threads: int = 16
    fetch_ahead: int = 32  # images fetched ahead of what the analyzer has read (bounds memory)
    store_threads: int = 4  # items stored at once (each puts its one heatmap itself)
    max_pending_stores: int = 64  # results waiting to be stored (bounds memory)
    observer: Observer | None = None  # metrics

    def __post_init__(self):
        self._io = cf.ThreadPoolExecutor(self.io_threads, thread_name_prefix="poundcam-s3")
        # A pool of its own: the uploads run beside the fetches, never queued behind them.
        self._store_pool = cf.ThreadPoolExecutor(self.store_threads, thread_name_prefix="poundcam-store")

    def close(self):
        self._store_pool.shutdown(wait=True)
        self._io.shutdown(wait=True)


@dataclasses.dataclass
class MessageReport:
    """What became of a message's items. ``skipped``: already finished; ``unbacked``: ids the
    database does not hold for the message's job (ignored); ``retry``: left running after a
    transient failure."""

    done: int = 0
    failed: int = 0
    reused: int = 0
    skipped: int = 0
    retry: list[int] = dataclasses.field(default_factory=list)
    unbacked: list[int] = dataclasses.field(default_factory=list)


def _few(ids: list[int], n: int = 20) -> str:
    """At most ``n`` ids for a log line."""
    return ", ".join(map(str, ids[:n])) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _db(ctx: PipelineContext, fn):
    """Run ``fn(session)`` in a transaction, retrying transient database errors with backoff."""
    delay = 0.2
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            with session_scope(ctx.sessions) as s:
                return fn(s)
        except Exception as exc:
            if not is_transient_db_error(exc) or attempt == DB_ATTEMPTS:
                raise
            log.warning("database unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _fetch(ctx: PipelineContext, uri: str) -> bytes | StorageError:
    try:
        return ctx.source.get(uri, max_bytes=ctx.max_image_bytes)
    except StorageError as exc:
        return exc


def _fetched_in_order(
    ctx: PipelineContext, todo: list[tuple[int, str]]
) -> Iterator[tuple[int, bytes | StorageError]]:
    """``(item id, bytes or the error)`` in the order of ``todo``, with at most
    ``ctx.fetch_ahead`` fetches started beyond the one read last. (``Executor.map`` would start
    every fetch of the message at once and hold all its images in memory.)"""
    pending: collections.deque[tuple[int, cf.Future]] = collections.deque()
    rest = iter(todo)
    try:
        for item_id, uri in itertools.islice(rest, max(1, ctx.fetch_ahead)):
            pending.append((item_id, ctx._io.submit(_fetch, ctx, uri)))
        while pending:
            item_id, future = pending.popleft()
            for next_id, uri in itertools.islice(rest, 1):
                pending.append((next_id, ctx._io.submit(_fetch, ctx, uri)))
            yield item_id, future.result()
    finally:  # the message stopped early (a retry): fetches not started yet are not needed
        for _, future in pending:
            future.cancel()


def _observe(ctx, outcome: str, code: str | None = None):
    if ctx.observer is not None:
        ctx.observer.item(outcome, code)


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


@dataclasses.dataclass
class _Ledger:
    """Settled items waiting for the database, written together in one transaction."""

    rows: list[tuple[int, dict]] = dataclasses.field(default_factory=list)  # (item, analysis)
    failures: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows) + len(self.failures)

    def write(self, ctx: PipelineContext) -> None:
        """Write what has gathered, in one transaction."""
        if len(self):
            _db(ctx, self._write_rows)
        self.rows, self.failures = [], []

    def _write_rows(self, session) -> None:
        ids = upsert_analyses(session, [record for _, record in self.rows])
        mark_done_many(
            session,
            [
                Done(item_id, a, record["label"], record["threshold"])
                for (item_id, record), a in zip(self.rows, ids, strict=True)
            ],
        )
        mark_failed_many(session, self.failures)


def process_items(
    ctx: PipelineContext,
    items: Iterable[tuple[int, str]],
    progress: Callable[[ItemOutcome | None], None] | None = None,
    job_id: str | None = None,
) -> MessageReport:
    """Process ``(item_id, uri)`` pairs of one message.

    The database is the authority, the message only a pointer: only items of ``job_id`` (if
    given) are claimed, each is read from the URI the database holds for it, and ids the
    database does not back change nothing and are reported (``MessageReport.unbacked``).

    Fetches run ahead in the I/O pool and are handed to the analyzer as they arrive (after one
    lookup per chunk for images analysed before); heatmaps are uploaded by the store pool while
    the device computes the next batch, and finished items are written to the database a
    batch at a time, each row only after its heatmaps are stored. ``progress`` is called once
    per image as it is settled (its outcome; ``None`` for an image analysed before), ahead of
    the batch's database write, so a progress bar moves image by image.

    Raises:
        RetryLater: some items hit a transient storage failure; they are left "running".
    """
    return _MessageRun(ctx, progress).run(list(items), job_id)


class _MessageRun:
    """The bookkeeping of one message: what is claimed, fetched, analysed, stored and written.

    The stages pass items along in order: :meth:`_to_analyze` turns fetched bytes into the
    analyzer's input (settling failures and images analysed before), :meth:`_store` hands each
    outcome to the store pool, and :meth:`_settle` accounts for finished uploads in order and
    writes them to the database a batch at a time.
    """

    def __init__(self, ctx: PipelineContext, progress: Callable[[ItemOutcome | None], None] | None):
        self.ctx = ctx
        self.progress = progress
        self.report = MessageReport()
        self.ledger = _Ledger()
        self.stores: collections.deque[tuple[ItemOutcome, cf.Future | None]] = collections.deque()
        self.n_analyzed = 0

    def run(self, items: list[tuple[int, str]], job_id: str | None) -> MessageReport:
        todo = self._claim(items, job_id)
        fetched = _fetched_in_order(self.ctx, todo)
        t0 = time.perf_counter()
        try:
            for outcome in self.ctx.analyzer.analyze(self._to_analyze(fetched)):
                self._store(outcome)
                self._settle(block=False)
            self._settle(block=True)
        except BaseException as exc:
            # nothing keeps running behind a retry
            cf.wait([f for _, f in self.stores if f is not None])
            if isinstance(exc, KeyboardInterrupt):
                self._record_settled()
            raise
        if self.ctx.observer is not None and self.n_analyzed:
            self.ctx.observer.batch(time.perf_counter() - t0, self.n_analyzed)
        if self.report.retry:
            raise RetryLater(
                f"{len(self.report.retry)} item(s) hit a transient storage failure", self.report.retry
            )
        return self.report

    def _record_settled(self) -> None:
        """On an interrupt: write the items whose heatmaps are stored (and the failures), so
        that they count as finished; the others stay claimed, for the caller to give back."""
        try:
            self._settle(block=True)
        except Exception as exc:  # noqa: BLE001 - the interrupt is what the caller must see
            log.warning("interrupted: %d settled item(s) not recorded: %s", len(self.ledger), exc)

    def _claim(self, items: list[tuple[int, str]], job_id: str | None) -> list[tuple[int, str]]:
        """Claim the items the database backs; returns them with the database's URIs."""
        ids = list(dict.fromkeys(i for i, _ in items))
        claim = _db(self.ctx, lambda s: claim_items(s, ids, job_id))
        self.report.unbacked = [i for i in ids if i not in claim.backed]
        self.report.skipped = len(claim.backed) - len(claim.uris)
        if self.report.unbacked:
            log.warning(
                "job %s: %d item id(s) the database does not back, ignored: %s",
                job_id,
                len(self.report.unbacked),
                _few(self.report.unbacked),
                extra={"job_id": job_id},
            )
            if self.ctx.observer is not None:
                self.ctx.observer.unbacked(len(self.report.unbacked))
        moved = sorted({i for i, u in items if i in claim.uris and u != claim.uris[i]})
        if moved:
            log.warning(
                "job %s: %d item(s) named with another URI than the database's; the database's is used: %s",
                job_id,
                len(moved),
                _few(moved),
                extra={"job_id": job_id},
            )
        return [(i, claim.uris[i]) for i in ids if i in claim.uris]

    # --- stage 1: fetched bytes -> the analyzer's input -------------------------------------

    def _to_analyze(self, fetched: Iterable[tuple[int, bytes | StorageError]]) -> Iterator[tuple[int, bytes]]:
        """Yield the fetched images not analysed before, a chunk at a time."""
        for chunk in _chunks(fetched, max(1, self.ctx.analyzer.options.batch_size)):
            fresh = [
                (item_id, data, hashlib.sha256(data).hexdigest())
                for item_id, data in chunk
                if self._fetched_ok(item_id, data)
            ]
            known = _db(self.ctx, lambda s, fresh=fresh: _link_known(self.ctx, s, fresh)) if fresh else {}
            for item_id, data, sha in fresh:
                if sha in known:
                    self._reused()
                else:
                    self.n_analyzed += 1
                    yield item_id, data

    def _fetched_ok(self, item_id: int, data: bytes | StorageError) -> bool:
        """Whether the fetch succeeded; a failed one is settled here (failed, or retried)."""
        if not isinstance(data, StorageError):
            return True
        if data.transient:
            log.warning(
                "item %s: %s; will retry", item_id, data, extra={"item_id": item_id, "error_code": data.code}
            )
            self.report.retry.append(item_id)
        else:
            self._fail(item_id, data.code, str(data))
        return False

    def _reused(self) -> None:
        self.report.reused += 1
        _observe(self.ctx, "done")
        self._tick(None)

    def _tick(self, outcome: ItemOutcome | None) -> None:
        """Report one settled image (``None``: analysed before). Called as each image is
        settled, not when its database batch is written, so progress moves image by image."""
        if self.progress:
            self.progress(outcome)

    # --- stage 2: outcomes -> heatmap uploads -------------------------------------------------

    def _store(self, outcome: ItemOutcome) -> None:
        """Queue an outcome behind the earlier ones; a success uploads its heatmaps."""
        future = self.ctx._store_pool.submit(_upload, self.ctx, outcome) if outcome.ok else None
        self.stores.append((outcome, future))
        head = self.stores[0][1]
        if len(self.stores) > self.ctx.max_pending_stores and head is not None:
            cf.wait([head])  # bounds the results held in memory

    # --- stage 3: stored outcomes -> the database ---------------------------------------------

    def _settle(self, block: bool) -> None:
        """Account for finished uploads (and failures queued behind them), in order; write
        them to the database once a batch has gathered (or at the end)."""
        while self.stores and (block or self.stores[0][1] is None or self.stores[0][1].done()):
            outcome, future = self.stores.popleft()
            if future is None:
                self._fail(
                    outcome.key, outcome.error_code or ErrorCode.ANALYSIS_FAILED, outcome.error_message or ""
                )
            else:
                self._settle_upload(outcome, future)
        if block or len(self.ledger) >= self.ctx.analyzer.options.batch_size:
            self.ledger.write(self.ctx)

    def _settle_upload(self, outcome: ItemOutcome, future: cf.Future) -> None:
        try:
            record = future.result()
        except StorageError as exc:
            if not exc.transient:
                self._fail(outcome.key, ErrorCode.HEATMAP_NOT_STORED, f"{exc.code}: {exc}")
                return
            log.warning(
                "item %s: heatmaps not stored: %s; will retry",
                outcome.key,
                exc,
                extra={"item_id": outcome.key, "error_code": exc.code},
            )
            self.report.retry.append(outcome.key)
            return
        self.ledger.rows.append((outcome.key, record))
        self.report.done += 1
        _observe(self.ctx, "done")
        self._tick(outcome)

    def _fail(self, item_id: int, code: str, message: str) -> None:
        self.ledger.failures.append((item_id, code, message))
        self.report.failed += 1
        _observe(self.ctx, "failed", code)
        self._tick(ItemOutcome(item_id, error_code=code, error_message=message))


def _link_known(ctx: PipelineContext, session, fresh: list[tuple[int, bytes, str]]) -> dict:
    """Mark done the items whose image was analysed before (same model and CAM configuration),
    linked to that analysis and labelled at this run's threshold (the analysis may have been
    made at another); returns ``{sha256: analysis id}`` of those images."""
    an = ctx.analyzer
    known = find_known(session, [sha for _, _, sha in fresh], an.model_id, an.cam_config_id)
    mark_done_many(
        session,
        [
            Done(item_id, known[sha].id, an.label_for(known[sha].p_fake), an.options.threshold)
            for item_id, _, sha in fresh
            if sha in known
        ],
    )
    return {sha: k.id for sha, k in known.items()}


def _upload(ctx: PipelineContext, outcome: ItemOutcome) -> dict:
    """Store an outcome's heatmaps; returns the analysis record that points to them."""
    r = outcome.result
    assert r is not None  # only analysed outcomes are uploaded
    keys = {
        name: heatmap_key(ctx.heatmap_prefix, r.sha256, r.model_id, r.cam_config_id, name)
        for name in r.heatmaps
    }
    for name, png in r.heatmaps.items():  # at most one object: put from this store thread
        ctx.sink.put(keys[name], png, "image/png")
    record = {**r.record(), "heatmap_keys": keys, "worker": ctx.worker}
    record["geometry"] = {**record["geometry"], "mode": record.pop("original_mode")}
    return record
