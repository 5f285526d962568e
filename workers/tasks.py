"""The task ``poundcam.analyze``: one message of image references.

Idempotent: a redelivered message (worker lost, visibility timeout) skips items already done and
never creates a second analysis. Transient S3 or database failures retry the message's
unfinished items after a randomised backoff (full jitter, so that workers do not all retry at
the same moment after an outage); once retries are exhausted those items fail with the code
``retries_exhausted``.
"""

from __future__ import annotations

import logging
import random
import time

from poundcam.constants import RETRY_DELAY_MAX_S, ErrorCode
from poundcam.db import is_transient_db_error, mark_failed_many, requeue, session_scope
from poundcam.messaging import TASK_NAME, MessageError, make_message, parse_message
from poundcam.pipeline import RetryLater, process_items

from . import runtime
from .celery_app import app

log = logging.getLogger(__name__)

MAX_RETRIES = 8
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = RETRY_DELAY_MAX_S
QUEUE_WAIT_MAX_S = 30 * 24 * 3600.0  # the longest queue wait the metric believes


def backoff(retries: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retries)] (AWS Architecture Blog,
    "Exponential Backoff And Jitter")."""
    return (rng or random).uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**retries))


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def analyze(self, message):
    try:
        parsed = parse_message(message)
    except MessageError as exc:  # the transport refuses these before they get here
        log.error("dropping malformed message: %s", exc)
        return {"error": str(exc)}
    job_id, items = parsed.job_id, parsed.items
    if parsed.invalid:
        log.warning(
            "job %s: %d malformed item entr(ies) ignored: %s",
            job_id,
            len(parsed.invalid),
            "; ".join(parsed.invalid[:5]),
            extra={"job_id": job_id},
        )
        runtime.metrics().unbacked(len(parsed.invalid))
    ctx = runtime.context()
    if parsed.enqueued_at is not None and self.request.retries == 0:
        waited = time.time() - parsed.enqueued_at
        if abs(waited) <= QUEUE_WAIT_MAX_S:  # else a wrong clock or a forged time: not a wait
            runtime.metrics().queue_wait.observe(max(0.0, waited))
    log.info(
        "message: job %s, %d items",
        job_id,
        len(items),
        extra={"job_id": job_id, "items": [i for i, _ in items]},
    )
    pending = items
    error: Exception
    try:
        report = process_items(ctx, items, job_id=job_id)
    except RetryLater as exc:
        pending = [(i, u) for i, u in items if i in set(exc.item_ids)]
        reason, error = ErrorCode.RETRIES_EXHAUSTED, exc
    except Exception as exc:
        if not is_transient_db_error(exc):
            raise
        reason, error = ErrorCode.DATABASE_UNAVAILABLE, exc
    else:
        log.info(
            "job %s: %d done, %d reused, %d failed, %d already finished, %d not backed",
            job_id,
            report.done,
            report.reused,
            report.failed,
            report.skipped,
            len(report.unbacked),
            extra={"job_id": job_id},
        )
        return {
            "done": report.done,
            "reused": report.reused,
            "failed": report.failed,
            "unbacked": report.unbacked,
        }
    if self.request.retries >= MAX_RETRIES:
        log.error("job %s: giving up on %d items: %s", job_id, len(pending), error, extra={"job_id": job_id})
        with session_scope(ctx.sessions) as s:
            mark_failed_many(s, [(i, reason, str(error)) for i, _ in pending], job_id=job_id)
        return {"failed": len(pending)}
    _give_back(ctx, job_id, pending)
    countdown = backoff(self.request.retries)
    log.warning(
        "job %s: retrying %d items in %.0fs: %s",
        job_id,
        len(pending),
        countdown,
        error,
        extra={"job_id": job_id},
    )
    raise self.retry(kwargs={"message": make_message(job_id, pending)}, countdown=countdown)


def _give_back(ctx, job_id: str, pending: list[tuple[int, str]]) -> None:
    """Items waiting for a retry go back to "queued": "running" means a worker is at it now,
    and the sweeper must not take a retry's wait for an abandoned item. The retry message
    claims them again. If the database is what failed, they stay running (the sweeper's
    business if the retry message is lost too)."""
    try:
        with session_scope(ctx.sessions) as s:
            requeue(s, [i for i, _ in pending], job_id=job_id)
    except Exception as exc:  # noqa: BLE001
        if not is_transient_db_error(exc):
            raise
