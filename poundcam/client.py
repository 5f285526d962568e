"""The Python client for ingestion services and scripts.

    from poundcam.client import Client

    with Client() as client:                       # settings from POUNDCAM_* variables
        job_id = client.submit(["s3://images/a.jpg", "s3://images/b.png"], key="batch-0042")
        client.wait(job_id, timeout=600)           # the status once finished
        client.results(job_id)                     # one record per item

A :class:`Client` holds one Celery app (made on the first submit) and one database engine
(made on the first query) for its lifetime. The job row is written before any message is
sent; if sending fails, :meth:`Client.submit` raises :class:`EnqueueError`, which carries the
job id, and :meth:`Client.resend` later sends messages for the job's queued items that no
message in the broker names.

The module-level functions (``submit``, ``status``, ``results``, ``resend``, ``jobs``)
do the same through one client per settings, for scripts.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from .constants import S3_SCHEME
from .db import (
    create_job,
    explain_db_error,
    find_job_by_key,
    item_refs,
    job_info,
    job_results,
    job_status,
    job_uris,
    list_jobs,
    make_engine,
    make_session_factory,
    require_database,
)
from .errors import InvalidRequestError, PoundcamError, UnavailableError
from .logs import one_line
from .messaging import QUEUE, TASK_NAME, make_message, make_producer
from .settings import Settings

MAX_KEY_CHARS = 200  # the column's width


class WaitTimeout(PoundcamError, TimeoutError):
    """A job did not finish within the time :meth:`Client.wait` was given."""

    exit_code = 75  # not finished yet: a later look may succeed


class EnqueueError(UnavailableError):
    """The job exists but not every message could be sent; ``job_id`` says which job."""

    def __init__(self, job_id: str, reason: str):
        super().__init__(
            f"job {job_id} was created but not enqueued: {reason}; "
            f"run `poundcam resend {job_id}` once the broker is back "
            "(check POUNDCAM_BROKER_URL)"
        )
        self.job_id = job_id


class Client:
    """Submit jobs and read their results, with one Celery app and one engine.

    Args:
        settings: configuration (default: ``Settings.from_env()``); the client reads
            ``database_url``, ``broker_url``, ``task_batch_size``, ``allowed_buckets`` and
            ``local_root`` from it.

    Raises:
        SettingsError: ``settings`` omitted and a ``POUNDCAM_*`` variable is invalid.

    The client is safe to keep for a process's lifetime; :meth:`close` (or leaving a
    ``with`` block) releases its connections.
    """

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self._engine: sa.Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._app: Any = None  # a Celery app

    # --- resources ---------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """The database engine (made on first use; an SQLite file must already exist).

        Raises:
            UnavailableError: the SQLite file named by ``database_url`` does not exist.
        """
        if self._engine is None:
            require_database(self.settings.database_url)
            self._engine = make_engine(self.settings.database_url)
            self._sessions = make_session_factory(self._engine)
        return self._engine

    @property
    def app(self) -> Any:
        """The Celery app that sends the messages (made on first use)."""
        if self._app is None:
            self._app = make_producer(self.settings)
        return self._app

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success; database failures become one-line errors.

        Returns:
            A context manager that yields the session.

        Raises:
            UnavailableError: the database is unreachable or has no poundcam tables.
        """
        _ = self.engine  # makes the engine and the session factory
        assert self._sessions is not None
        try:
            with self._sessions() as s, s.begin():
                yield s
        except sa.exc.DBAPIError as exc:
            explained = explain_db_error(self.settings.database_url, exc)
            if explained is None:
                raise
            raise explained from exc

    def close(self) -> None:
        """Release the engine's connections and the broker connection pool."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._sessions = None
        if self._app is not None:
            self._app.close()
            self._app = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- producing ---------------------------------------------------------------------------

    def validate_uri(self, uri: str) -> str:
        """Check that a worker may read ``uri``.

        Accepted: an ``s3://bucket/key`` URI (bucket name and key well formed; the bucket on
        ``POUNDCAM_ALLOWED_BUCKETS`` when that is set), or in the embedded mode an absolute
        local path.

        Args:
            uri: the image's location, as it would be submitted.

        Returns:
            The URI, unchanged.

        Raises:
            InvalidRequestError: naming the URI and what is wrong with it.
        """
        from .storage.stores import StorageError, parse_s3_uri

        if not isinstance(uri, str):
            raise InvalidRequestError(f"{uri!r} is not a string")
        if self.settings.embedded and uri.startswith("/"):
            return uri
        try:
            ref = parse_s3_uri(uri)
        except StorageError as exc:
            raise InvalidRequestError(str(exc)) from None
        allowed = self.settings.allowed_buckets
        if allowed and ref.bucket not in allowed:
            raise InvalidRequestError(
                f"{uri!r}: bucket {ref.bucket!r} is not in POUNDCAM_ALLOWED_BUCKETS ({', '.join(allowed)})"
            )
        return uri

    def submit(
        self,
        uris: Iterable[str],
        key: str | None = None,
        batch_size: int | None = None,
        options: dict | None = None,
    ) -> str:
        """Create a job for ``uris`` and enqueue it in messages of ``batch_size`` items.

        Args:
            uris: ``s3://bucket/key`` of each image, in the order results are reported.
            key: the caller's idempotency key. Submitting again with the same key returns the
                job made the first time (and sends nothing); with other URIs it fails.
            batch_size: items per message (default ``POUNDCAM_TASK_BATCH_SIZE``).
            options: free-form options stored with the job.

        Returns:
            The job id.

        Raises:
            InvalidRequestError: no URIs, a URI a worker may not read (every bad one is
                named), a key too long, or a key already used for other URIs.
            UnavailableError: the database cannot be reached.
        """
        uris = [u if isinstance(u, str) else str(u) for u in uris]
        if not uris:
            raise InvalidRequestError("nothing to submit: no URIs given")
        bad = []
        for uri in uris:
            try:
                self.validate_uri(uri)
            except InvalidRequestError as exc:
                bad.append(str(exc))
        if bad:
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise InvalidRequestError(f"{len(bad)} invalid URI(s): {'; '.join(bad[:3])}{more}")
        if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
            raise InvalidRequestError(f"idempotency key must be 1 to {MAX_KEY_CHARS} characters")
        batch_size = self._batch_size(batch_size)
        if key is not None:
            existing = self._job_for_key(key, uris)
            if existing is not None:
                return existing
        try:
            with self.session() as s:
                job_id = create_job(s, uris, options, key=key)
                refs = item_refs(s, job_id)
        except sa.exc.IntegrityError:  # a concurrent submit with the same key won the race
            existing = self._job_for_key(key, uris) if key is not None else None
            if existing is None:
                raise
            return existing
        self.enqueue(job_id, refs, batch_size)
        return job_id

    def _job_for_key(self, key: str, uris: list[str]) -> str | None:
        with self.session() as s:
            job_id = find_job_by_key(s, key)
            if job_id is None:
                return None
            if job_uris(s, job_id) != uris:
                raise InvalidRequestError(
                    f"idempotency key {key!r} was used for job {job_id} with other URIs"
                )
            return job_id

    def _batch_size(self, batch_size: int | None) -> int:
        """Items per message: ``batch_size``, or ``POUNDCAM_TASK_BATCH_SIZE`` when None.

        Raises:
            InvalidRequestError: not a whole number of at least 1 (a job would get no message).
        """
        if batch_size is None:
            return self.settings.task_batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise InvalidRequestError(f"batch_size must be a whole number of at least 1, not {batch_size!r}")
        return int(batch_size)

    def enqueue(self, job_id: str, refs: list[dict], batch_size: int | None = None) -> int:
        """Send ``refs`` (``{"item_id", "uri"}`` of one job) in messages of ``batch_size``.

        Args:
            job_id: the job the items belong to.
            refs: the items to send, each ``{"item_id": int, "uri": str}``.
            batch_size: items per message (default ``POUNDCAM_TASK_BATCH_SIZE``).

        Returns:
            The number of messages sent.

        Raises:
            EnqueueError: the broker refused or could not be reached.
        """
        batch_size = self._batch_size(batch_size)
        sent = 0
        try:
            with self.app.connection_for_write() as conn:
                for start in range(0, len(refs), batch_size):
                    chunk = [(r["item_id"], r["uri"]) for r in refs[start : start + batch_size]]
                    self.app.send_task(
                        TASK_NAME,
                        kwargs={"message": make_message(job_id, chunk)},
                        queue=QUEUE,
                        connection=conn,
                    )
                    sent += 1
        except PoundcamError:
            raise
        except Exception as exc:  # kombu and redis-py raise many types for one broker outage
            raise EnqueueError(job_id, f"{type(exc).__name__}: {one_line(exc)}") from exc
        return sent

    def resend(self, job_id: str, batch_size: int | None = None) -> int:
        """Send messages for the job's queued items that no message in the broker names.

        For a failed submit, or messages lost with the broker; items a message in the broker
        already names are not sent twice (unless the message moves in the queue as it is read:
        then some are, which is idempotent). Only ``s3://`` items are sent.

        Args:
            job_id: the job.
            batch_size: items per message (default ``POUNDCAM_TASK_BATCH_SIZE``).

        Returns:
            The number of messages sent.

        Raises:
            JobNotFoundError: no such job.
            InvalidRequestError: every queued item is a local path (an embedded job).
            EnqueueError: the broker refused or could not be reached.
        """
        from .broker.inflight import queued_item_ids

        with self.session() as s:
            job_status(s, job_id)  # raises for an unknown job
            queued = item_refs(s, job_id)
        refs = [r for r in queued if r["uri"].startswith(S3_SCHEME)]
        if queued and not refs:
            raise InvalidRequestError(
                f"job {job_id}: its queued items are local paths (a `poundcam analyze` job): no "
                "worker can read them; run `poundcam analyze` on them again"
            )
        if refs:
            waiting = queued_item_ids(self.settings, job_id)
            refs = [r for r in refs if r["item_id"] not in waiting]
        return self.enqueue(job_id, refs, batch_size) if refs else 0

    # --- reading -----------------------------------------------------------------------------

    def status(self, job_id: str) -> dict:
        """The job's items counted by state.

        Args:
            job_id: the job.

        Returns:
            ``{"job_id", "total", "queued", "running", "done", "failed", "finished"}``:
            counts, and whether no item is queued or running any more.

        Raises:
            JobNotFoundError: no such job.
        """
        with self.session() as s:
            return job_status(s, job_id)

    def job(self, job_id: str) -> dict:
        """What the job was created with.

        Args:
            job_id: the job.

        Returns:
            ``{"job_id", "created_at", "options", "idempotency_key", "total"}``.

        Raises:
            JobNotFoundError: no such job.
        """
        with self.session() as s:
            return job_info(s, job_id)

    def results(self, job_id: str, label: str | None = None, min_prob: float | None = None) -> list[dict]:
        """One record per item, in submission order.

        Args:
            job_id: the job.
            label: keep only items labelled ``real`` or ``fake``.
            min_prob: keep only items with P(fake) at least this.

        Returns:
            Dicts with the fields ``poundcam.db.RESULT_FIELDS`` names.

        Raises:
            JobNotFoundError: no such job.
        """
        with self.session() as s:
            return job_results(s, job_id, label=label, min_prob=min_prob)

    def jobs(self, limit: int = 20) -> list[dict]:
        """The most recent jobs, newest first.

        Args:
            limit: how many jobs at most.

        Returns:
            One dict per job, with its counts by state (as :meth:`status`).
        """
        with self.session() as s:
            return list_jobs(s, limit=limit)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_status: Callable[[dict], None] | None = None,
    ) -> dict:
        """Block until no item of the job is queued or running.

        Args:
            job_id: the job.
            timeout: seconds to wait at most (None: no limit).
            poll_s: seconds between two looks at the database.
            on_status: called with each status read (progress), the last one included.

        Returns:
            The job's final status (see :meth:`status`).

        Raises:
            WaitTimeout: the job was not finished after ``timeout`` seconds.
            JobNotFoundError: no such job.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.status(job_id)
            if on_status is not None:
                on_status(st)
            if st["finished"]:
                return st
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"job {job_id} not finished after {timeout:g} s: "
                    f"{st['queued']} queued, {st['running']} running"
                )
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            time.sleep(max(left, 0.0))


# --- module-level convenience: one client per settings ----------------------------------------

_clients: dict[Settings, Client] = {}


def client_for(settings: Settings | None = None) -> Client:
    """The shared :class:`Client` for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    if settings not in _clients:
        _clients[settings] = Client(settings)
    return _clients[settings]


def submit(
    uris: Iterable[str],
    batch_size: int | None = None,
    options: dict | None = None,
    settings: Settings | None = None,
    key: str | None = None,
) -> str:
    """:meth:`Client.submit` with the shared client for ``settings``."""
    return client_for(settings).submit(uris, key=key, batch_size=batch_size, options=options)


def resend(job_id: str, batch_size: int | None = None, settings: Settings | None = None) -> int:
    """:meth:`Client.resend` with the shared client for ``settings``."""
    return client_for(settings).resend(job_id, batch_size=batch_size)


def status(job_id: str, settings: Settings | None = None) -> dict:
    """:meth:`Client.status` with the shared client for ``settings``."""
    return client_for(settings).status(job_id)


def results(
    job_id: str, label: str | None = None, min_prob: float | None = None, settings: Settings | None = None
) -> list[dict]:
    """:meth:`Client.results` with the shared client for ``settings``."""
    return client_for(settings).results(job_id, label=label, min_prob=min_prob)


def jobs(limit: int = 20, settings: Settings | None = None) -> list[dict]:
    """:meth:`Client.jobs` with the shared client for ``settings``."""
    return client_for(settings).jobs(limit=limit)


def wait(job_id: str, timeout: float | None = None, settings: Settings | None = None) -> dict:
    """:meth:`Client.wait` with the shared client for ``settings``."""
    return client_for(settings).wait(job_id, timeout=timeout)
