"""Which items of some jobs a message already names: in the queue, or taken by a worker and
not yet acknowledged (kombu's ``unacked`` hash, which also holds messages waiting for a retry).

``poundcam resend`` and the sweeper send messages only for the other queued items, so
resending does not double the queue. Entries are read in chunks; only those whose bytes
contain one of the job ids (Celery copies the arguments into the ``kwargsrepr`` header) are
decoded. One call reads the whole queue once, however many jobs it asks about.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..messaging import QUEUE, parse_message
from .envelope import message_of

UNACKED_KEY = "unacked"  # kombu's Redis transport default
PRIORITY_SEP = "\x06\x16"  # kombu: "<queue><sep><priority>" for priorities 3, 6, 9
PRIORITY_STEPS = (3, 6, 9)
CHUNK = 1000


def queued_item_ids(settings, job_id: str) -> set[int]:
    """Ids of ``job_id``'s items named by a message still in the broker."""
    return named_item_ids(settings, [job_id])[job_id]


QUEUE_KEYS = (QUEUE, *(f"{QUEUE}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS))


def queued_messages(client) -> int:
    """Messages waiting in the queue (every priority)."""
    return sum(int(client.llen(key)) for key in QUEUE_KEYS)


def named_item_ids(settings, job_ids: Iterable[str], queue: bool = True) -> dict[str, set[int]]:
    """``{job_id: ids of its items named by a message still in the broker}`` for each job: in
    the queue (skipped with ``queue=False``) or unacknowledged. The queue is read in chunks by
    position while producers push and workers pop, so a message that moves during the reading
    can be missed and its items sent again (idempotent: no second analysis, though a worker may
    analyse them twice). The sweeper reads the queue only while it is empty."""
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=30)
    found: dict[str, set[int]] = {j: set() for j in job_ids}
    needles = [j.encode() for j in found]
    max_bytes = settings.max_message_bytes
    for key in QUEUE_KEYS if queue else ():
        for start in range(0, client.llen(key), CHUNK):
            for raw in client.lrange(key, start, start + CHUNK - 1):
                # bytes: the client decodes no responses (str only with decode_responses)
                raw = raw if isinstance(raw, bytes) else raw.encode()
                if any(n in raw for n in needles):
                    _add_named(found, message_of(raw, max_bytes))
    for _, value in client.hscan_iter(UNACKED_KEY, count=CHUNK):
        if any(n in value for n in needles):
            try:
                envelope = json.loads(value)[0]
            except (ValueError, IndexError, KeyError, TypeError):
                continue
            _add_named(found, message_of(json.dumps(envelope).encode(), max_bytes))
    return found


def _add_named(found: dict[str, set[int]], message: dict | None) -> None:
    if message is None:
        return
    parsed = parse_message(message)
    if parsed.job_id in found:
        found[parsed.job_id].update(i for i, _ in parsed.items)
