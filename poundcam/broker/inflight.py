"""Which items of a job a message already names: in the queue, or taken by a worker and not
yet acknowledged (kombu's ``unacked`` hash, which also holds messages waiting for a retry).

``poundcam resend`` sends messages only for the other queued items, so resending after a
failed submit does not double the queue. Entries are read in chunks; only those whose bytes
contain the job id (Celery copies the arguments into the ``kwargsrepr`` header) are decoded.
"""

from __future__ import annotations

import json

from ..messaging import QUEUE, parse_message
from .envelope import message_of

UNACKED_KEY = "unacked"  # kombu's Redis transport default
PRIORITY_SEP = "\x06\x16"  # kombu: "<queue><sep><priority>" for priorities 3, 6, 9
PRIORITY_STEPS = (3, 6, 9)
CHUNK = 1000


def queued_item_ids(settings, job_id: str) -> set[int]:
    """Ids of ``job_id``'s items named by a message still in the broker."""
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=30)
    needle = job_id.encode()
    found: set[int] = set()
    for key in [QUEUE] + [f"{QUEUE}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]:
        for start in range(0, client.llen(key), CHUNK):
            for raw in client.lrange(key, start, start + CHUNK - 1):
                # bytes: the client decodes no responses (str only with decode_responses)
                raw = raw if isinstance(raw, bytes) else raw.encode()
                found |= _ids_in(raw, needle, job_id, settings.max_message_bytes)
    for _, value in client.hscan_iter(UNACKED_KEY, count=CHUNK):
        if needle in value:
            try:
                envelope = json.loads(value)[0]
            except (ValueError, IndexError, KeyError, TypeError):
                continue
            found |= _ids_in(json.dumps(envelope).encode(), needle, job_id, settings.max_message_bytes)
    return found


def _ids_in(raw: bytes, needle: bytes, job_id: str, max_bytes: int) -> set[int]:
    if needle not in raw:
        return set()
    message = message_of(raw, max_bytes)
    if message is None:
        return set()
    parsed = parse_message(message)
    return {i for i, _ in parsed.items} if parsed.job_id == job_id else set()
