"""The sweeper: gives back items left "running" by a worker that is gone, and sends again the
queued items whose message was lost.

A worker that dies mid-message leaves its items "running". Redis redelivers the message itself
after the visibility timeout, but only while it still exists; when it does not (it was
acknowledged, dropped or lost with the broker) nothing else would ever finish those items.
Once an item has been "running" longer than ``POUNDCAM_VISIBILITY_TIMEOUT_S``, the sweeper puts
it back to "queued" and sends a message for it, or fails it with ``retries_exhausted`` once it
has been claimed ``POUNDCAM_MAX_ATTEMPTS`` times.

A message can also be lost before any worker holds it: kombu takes it off the Redis list
(BRPOP) before it records it as unacknowledged, so a connection cut between the two loses it
(kombu#1733), as does a Redis restart without its data or a submit whose send failed. Its
items stay "queued" and no message names them. When the queue is empty, an item queued and
unchanged for longer than the visibility timeout is waiting in no queue: the sweeper reads the
unacknowledged messages (a few per worker) and sends again the items none of them names. A
queue that is not empty is not read (producers push and workers pop while it would be read by
position, so messages would be missed and sent twice); lost items wait until it empties, or
``poundcam resend JOB``. Only items a worker can read (``s3://``) are ever sent: an embedded
job's items are put back to "queued" at most. The workers' periodic sweeps take turns through a
Redis lock, so that one of them, at most once per ``POUNDCAM_SWEEP_INTERVAL_S``, does this.

Run by every worker every ``POUNDCAM_SWEEP_INTERVAL_S`` and by ``poundcam sweep``; sweepers
running at once are safe (each row changes once).
"""

from __future__ import annotations

import logging

from ..constants import S3_SCHEME
from ..db import Sweep, requeue_stale, session_scope, stale_queued, sweep_abandoned
from ..logs import one_line

log = logging.getLogger(__name__)

LOST_MESSAGES_LOCK = "poundcam:sweep-lost-messages"  # a Redis key of the broker's database


def sweep(settings, sessions, take_turns: bool = False) -> Sweep:
    """Sweep once; returns what was requeued (and re-sent), what failed, and the queued items
    sent again because no message named them. ``take_turns``: look for lost messages only if
    no other sweeper did within ``POUNDCAM_SWEEP_INTERVAL_S`` (the workers' periodic sweeps).

    Raises:
        EnqueueError: items were requeued but a message could not be sent (``poundcam resend``
            sends them later; they are "queued" either way).
    """
    with session_scope(sessions) as s:
        swept = sweep_abandoned(s, settings.visibility_timeout_s, settings.max_attempts)
    for job_id, refs in swept.requeued.items():
        log.warning(
            "job %s: %d item(s) abandoned while running, requeued",
            job_id,
            len(refs),
            extra={"job_id": job_id},
        )
        _send(settings, job_id, refs)
    if swept.failed:
        log.warning(
            "%d item(s) abandoned too often, failed with retries_exhausted: %s",
            len(swept.failed),
            swept.failed[:20],
        )
    try:
        swept.resent = resend_lost(settings, sessions, take_turns)
    except Exception as exc:  # noqa: BLE001 - an outage: what was swept above stands, next time
        log.warning("lost messages not looked for: %s", one_line(exc))
    return swept


def resend_lost(settings, sessions, take_turns: bool = False) -> dict[str, list[tuple[int, str]]]:
    """While the queue is empty, send again the items queued for longer than the visibility
    timeout that no unacknowledged message names; ``{job_id: [(item_id, uri)]}`` of those
    sent. Each job's items are marked and sent in turn: a failed send leaves the jobs after it
    for the next sweep."""
    import redis

    from .inflight import named_item_ids, queued_messages

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=30)
    if take_turns and not client.set(LOST_MESSAGES_LOCK, b"1", nx=True, ex=max(1, settings.sweep_interval_s)):
        return {}
    if queued_messages(client):
        return {}
    with session_scope(sessions) as s:
        stale = stale_queued(s, settings.visibility_timeout_s)
    if not stale:
        return {}
    named = named_item_ids(settings, stale, queue=False)
    if queued_messages(client):  # sent meanwhile: it may name some of them; next time
        return {}
    resent: dict[str, list[tuple[int, str]]] = {}
    for job_id, ids in stale.items():
        with session_scope(sessions) as s:
            lost = requeue_stale(s, [i for i in ids if i not in named[job_id]], settings.visibility_timeout_s)
        for lost_job, refs in lost.items():
            _send(settings, lost_job, refs)
            resent[lost_job] = refs
    if resent:
        log.warning(
            "%d queued item(s) of %d job(s) named by no message in the broker (lost with a broker "
            "connection or its data), sent again: jobs %s",
            sum(len(r) for r in resent.values()),
            len(resent),
            ", ".join(list(resent)[:5]) + (" ..." if len(resent) > 5 else ""),
        )
    return resent


def _send(settings, job_id: str, refs: list[tuple[int, str]]) -> None:
    """A message for the job's ``(item_id, uri)`` a worker can read; an embedded job's items
    (local paths) stay "queued", never sent."""
    from ..client import client_for  # the client is the one producer of messages

    sendable = [{"item_id": i, "uri": u} for i, u in refs if u.startswith(S3_SCHEME)]
    if sendable:
        client_for(settings).enqueue(job_id, sendable)
