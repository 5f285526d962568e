"""The dead-letter list: queue entries a worker refused, kept with their reason.

One Redis list (:data:`DEAD_LETTER_KEY`, in the broker's database) of JSON records, newest
first, at most ``POUNDCAM_DEAD_LETTER_MAX`` of them (the oldest are dropped). A record keeps
the entry's bytes (base64) so that it can be put back on the queue once whatever refused it
is fixed; an oversized entry keeps only its first :data:`KEPT_PREFIX_BYTES` and cannot be
requeued.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from ..errors import PoundcamError
from ..messaging import QUEUE
from .envelope import OVERSIZED

DEAD_LETTER_KEY = "poundcam:dead-letters"
KEPT_PREFIX_BYTES = 4096


class DeadLetterError(PoundcamError):
    """A dead letter does not exist or cannot be requeued."""


def make_record(raw: bytes, reason: str, detail: str, queue: str = QUEUE) -> dict[str, Any]:
    """The record stored for a refused entry."""
    kept = raw[:KEPT_PREFIX_BYTES] if reason == OVERSIZED else raw
    return {
        "id": uuid.uuid4().hex,
        "reason": reason,
        "detail": detail,
        "queue": queue,
        "at": time.time(),
        "size": len(raw),
        "truncated": len(kept) < len(raw),
        "raw": base64.b64encode(kept).decode("ascii"),
    }


def push(client, record: dict[str, Any], max_entries: int) -> None:
    """Store ``record`` (newest first) and drop what exceeds ``max_entries``."""
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(DEAD_LETTER_KEY, json.dumps(record, separators=(",", ":")))
        pipe.ltrim(DEAD_LETTER_KEY, 0, max_entries - 1)
        pipe.execute()


def entries(client) -> list[dict[str, Any]]:
    """Every record, newest first (a record that is not JSON is shown as such, not skipped)."""
    out = []
    for raw in client.lrange(DEAD_LETTER_KEY, 0, -1):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            record = {"id": None, "reason": "unreadable_record", "detail": "", "raw": None}
        record["_stored"] = raw
        out.append(record)
    return out


def find(client, record_id: str) -> dict[str, Any]:
    """The record with ``record_id`` (or a unique prefix of it)."""
    matches = [r for r in entries(client) if r.get("id") and r["id"].startswith(record_id)]
    if len(matches) != 1:
        raise DeadLetterError(
            f"no dead letter {record_id!r}"
            if not matches
            else f"{record_id!r} matches {len(matches)} dead letters"
        )
    return matches[0]


def raw_bytes(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record.get("raw") or "")


def requeue(client, record: dict[str, Any]) -> None:
    """Put the entry back at the tail of its queue and remove it from the list."""
    if record.get("truncated") or record.get("raw") is None:
        raise DeadLetterError(f"dead letter {record.get('id')} was not kept whole; it cannot be requeued")
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(record.get("queue") or QUEUE, raw_bytes(record))
        pipe.lrem(DEAD_LETTER_KEY, 1, record["_stored"])
        pipe.execute()


def purge(client, record: dict[str, Any] | None = None) -> int:
    """Remove one record, or all of them; returns how many were removed."""
    if record is not None:
        return int(client.lrem(DEAD_LETTER_KEY, 1, record["_stored"]))
    with client.pipeline(transaction=True) as pipe:
        pipe.llen(DEAD_LETTER_KEY)
        pipe.delete(DEAD_LETTER_KEY)
        n, _ = pipe.execute()
    return int(n)
