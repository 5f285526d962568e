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
items stay "queued" and no message names them. Items queued and unchanged for longer than the
visibility timeout are looked up in the broker (the queue and the unacknowledged messages,
``inflight.named_item_ids``); those no message names are sent again. A long queue is normal,
so that look-up reads the whole queue: the workers' periodic sweeps take turns through a Redis
lock, so that one of them, at most once per ``POUNDCAM_SWEEP_INTERVAL_S``, reads it.

Run by every worker every ``POUNDCAM_SWEEP_INTERVAL_S`` and by ``poundcam sweep``; sweepers
running at once are safe (each row changes once).
"""

from __future__ import annotations

import logging

from ..db import Sweep, requeue_stale, session_scope, stale_queued, sweep_abandoned

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
    from ..client import client_for  # the client is the one producer of messages

    with session_scope(sessions) as s:
        swept = sweep_abandoned(s, settings.visibility_timeout_s, settings.max_attempts)
    for job_id, refs in swept.requeued.items():
        log.warning(
            "job %s: %d item(s) abandoned while running, requeued",
            job_id,
            len(refs),
            extra={"job_id": job_id},
        )
        client_for(settings).enqueue(job_id, [{"item_id": i, "uri": u} for i, u in refs])
    if swept.failed:
        log.warning(
            "%d item(s) abandoned too often, failed with retries_exhausted: %s",
            len(swept.failed),
            swept.failed[:20],
        )
    swept.resent = resend_lost(settings, sessions, take_turns)
    return swept


def resend_lost(settings, sessions, take_turns: bool = False) -> dict[str, list[tuple[int, str]]]:
    """Send again the items queued for longer than the visibility timeout that no message in
    the broker names; ``{job_id: [(item_id, uri)]}`` of those sent."""
    from ..client import client_for
    from .inflight import named_item_ids

    with session_scope(sessions) as s:
        stale = stale_queued(s, settings.visibility_timeout_s)
    if not stale or (take_turns and not _my_turn(settings)):
        return {}
    named = named_item_ids(settings, stale)
    lost = [i for job_id, ids in stale.items() for i in ids if i not in named[job_id]]
    with session_scope(sessions) as s:
        resent = requeue_stale(s, lost, settings.visibility_timeout_s)
    for job_id, refs in resent.items():
        log.warning(
            "job %s: %d queued item(s) named by no message in the broker (lost with a broker "
            "connection or its data), sent again",
            job_id,
            len(refs),
            extra={"job_id": job_id},
        )
        client_for(settings).enqueue(job_id, [{"item_id": i, "uri": u} for i, u in refs])
    return resent


def _my_turn(settings) -> bool:
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=30)
    return bool(client.set(LOST_MESSAGES_LOCK, b"1", nx=True, ex=max(1, settings.sweep_interval_s)))
