"""The task ``poundcam.analyze``: one message of image references.

Idempotent: a redelivered message (worker lost, visibility timeout) skips items already done and
never creates a second analysis. Transient S3 or database failures retry the message's
unfinished items with exponential backoff; once retries are exhausted those items fail with
the code ``retries_exhausted``.
"""
from __future__ import annotations

import logging
import time

from poundcam.db import is_transient_db_error, mark_failed, session_scope
from poundcam.messaging import TASK_NAME, MessageError, make_message, parse_message
from poundcam.pipeline import RetryLater, process_items

from . import runtime
from .celery_app import app

log = logging.getLogger(__name__)

MAX_RETRIES = 8


def backoff(retries: int) -> float:
    return min(2.0 ** retries, 300.0)


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=MAX_RETRIES)
def analyze(self, message):
    try:
        job_id, items = parse_message(message)
    except MessageError as exc:
        log.error("dropping malformed message: %s", exc)
        return {"error": str(exc)}
    ctx = runtime.context()
    enqueued = message.get("enqueued_at")
    if isinstance(enqueued, (int, float)) and self.request.retries == 0:
        runtime.metrics().queue_wait.observe(max(0.0, time.time() - enqueued))
    log.info("message: job %s, %d items", job_id, len(items),
             extra={"job_id": job_id, "items": [i for i, _ in items]})
    pending = items
    try:
        report = process_items(ctx, items)
    except RetryLater as exc:
        pending = [(i, u) for i, u in items if i in set(exc.item_ids)]
        reason = "retries_exhausted"
        error = exc
    except Exception as exc:
        if not is_transient_db_error(exc):
            raise
        reason, error = "database_unavailable", exc
    else:
        log.info("job %s: %d done, %d reused, %d failed, %d already finished", job_id,
                 report.done, report.reused, report.failed, report.skipped,
                 extra={"job_id": job_id})
        return {"done": report.done, "reused": report.reused, "failed": report.failed}
    if self.request.retries >= MAX_RETRIES:
        log.error("job %s: giving up on %d items: %s", job_id, len(pending), error,
                  extra={"job_id": job_id})
        with session_scope(ctx.sessions) as s:
            for item_id, _ in pending:
                mark_failed(s, item_id, reason, str(error))
        return {"failed": len(pending)}
    countdown = backoff(self.request.retries)
    log.warning("job %s: retrying %d items in %.0fs: %s", job_id, len(pending), countdown, error,
                extra={"job_id": job_id})
    raise self.retry(kwargs={"message": make_message(job_id, pending)}, countdown=countdown)
