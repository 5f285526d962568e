"""The Python client for ingestion services and scripts.

    from poundcam import client
    job_id = client.submit(["s3://images/a.jpg", "s3://images/b.png"])
    client.status(job_id)    # {"total": 2, "queued": .., "done": .., "failed": .., "finished": ..}
    client.results(job_id)   # one record per item

Configuration comes from POUNDCAM_* variables (``Settings.from_env``) unless ``settings`` is
given. The job row is written before any message is sent; if sending fails part-way,
``resend(job_id)`` sends the items still queued.
"""
from __future__ import annotations

from typing import Any, Iterable

from .db import create_job, item_refs, job_results, job_status, make_session_factory, session_scope
from .messaging import QUEUE, TASK_NAME, make_message, make_producer
from .settings import Settings

_factories: dict[str, Any] = {}


def _sessions(settings: Settings):
    if settings.database_url not in _factories:
        _factories[settings.database_url] = make_session_factory(settings.database_url)
    return _factories[settings.database_url]


def _send(settings: Settings, job_id: str, refs: list[dict], batch_size: int) -> int:
    producer = make_producer(settings)
    sent = 0
    with producer.connection_for_write() as conn:
        for start in range(0, len(refs), batch_size):
            chunk = [(r["item_id"], r["uri"]) for r in refs[start:start + batch_size]]
            producer.send_task(TASK_NAME, kwargs={"message": make_message(job_id, chunk)},
                               queue=QUEUE, connection=conn)
            sent += 1
    return sent


def submit(uris: Iterable[str], batch_size: int | None = None, options: dict | None = None,
           settings: Settings | None = None) -> str:
    """Create a job for ``uris`` and enqueue it in messages of up to ``batch_size`` items."""
    settings = settings or Settings.from_env()
    uris = [str(u) for u in uris]
    if not uris:
        raise ValueError("nothing to submit: no URIs given")
    batch_size = batch_size or settings.task_batch_size
    with session_scope(_sessions(settings)) as s:
        job_id = create_job(s, uris, options)
        refs = item_refs(s, job_id)
    _send(settings, job_id, refs, batch_size)
    return job_id


def resend(job_id: str, batch_size: int | None = None, settings: Settings | None = None) -> int:
    """Send messages again for the job's items still queued; returns the number of messages."""
    settings = settings or Settings.from_env()
    with session_scope(_sessions(settings)) as s:
        job_status(s, job_id)  # raises for an unknown job
        refs = item_refs(s, job_id)
    return _send(settings, job_id, refs, batch_size or settings.task_batch_size) if refs else 0


def status(job_id: str, settings: Settings | None = None) -> dict:
    settings = settings or Settings.from_env()
    with session_scope(_sessions(settings)) as s:
        return job_status(s, job_id)


def results(job_id: str, label: str | None = None, min_prob: float | None = None,
            settings: Settings | None = None) -> list[dict]:
    settings = settings or Settings.from_env()
    with session_scope(_sessions(settings)) as s:
        return job_results(s, job_id, label=label, min_prob=min_prob)
