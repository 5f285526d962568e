"""The dead-letter list: queue entries a worker refused, kept with their reason.

One Redis list (:data:`DEAD_LETTER_KEY`, in the broker's database) of JSON records, newest
first, at most ``POUNDCAM_DEAD_LETTER_MAX`` of them and ``POUNDCAM_DEAD_LETTER_MAX_BYTES`` of
records (the oldest are dropped; the newest is always kept). :data:`SIZE_KEY` holds the bytes
of the list, kept by the scripts below in the same atomic step as each change of the list
(counted again from the list where it is missing). A record keeps the entry's bytes (base64)
so that it can be put back on the queue once whatever refused it is fixed; an oversized entry
keeps only its first :data:`KEPT_PREFIX_BYTES` and cannot be requeued.
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
SIZE_KEY = "poundcam:dead-letters:bytes"
KEPT_PREFIX_BYTES = 4096

# Lua, run atomically by Redis. Both start by making the count right where it cannot be: an
# empty list counts 0 (the list was deleted by hand), and a missing count is made from the
# list a hundred records at a time (a list left by an earlier version; one reply of the whole
# list could be gigabytes inside Redis).
_COUNT = """
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], 0)
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  local total, i = 0, 0
  while true do
    local part = redis.call('LRANGE', KEYS[1], i, i + 99)
    if #part == 0 then break end
    for _, r in ipairs(part) do total = total + string.len(r) end
    i = i + 100
  end
  redis.call('SET', KEYS[2], total)
end
"""
# ARGV: the record, the most records, the most bytes. Returns how many old records were dropped.
_PUSH = (
    _COUNT
    + """
redis.call('LPUSH', KEYS[1], ARGV[1])
local total = redis.call('INCRBY', KEYS[2], string.len(ARGV[1]))
local n = redis.call('LLEN', KEYS[1])
local dropped = 0
while n > 1 and (n > tonumber(ARGV[2]) or total > tonumber(ARGV[3])) do
  total = redis.call('DECRBY', KEYS[2], string.len(redis.call('RPOP', KEYS[1])))
  n = n - 1
  dropped = dropped + 1
end
if n == 1 then redis.call('SET', KEYS[2], string.len(ARGV[1])) end
return dropped
"""
)
# ARGV: the stored record, and the entry to put back on the queue KEYS[3] (if any). Returns
# 1 if the record was there (and the entry put back), 0 if another call took it first.
_TAKE = (
    _COUNT
    + """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('DECRBY', KEYS[2], string.len(ARGV[1]))
if KEYS[3] then redis.call('LPUSH', KEYS[3], ARGV[2]) end
return 1
"""
)


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


def push(client, record: dict[str, Any], max_entries: int, max_bytes: int) -> int:
    """Store ``record`` (newest first) and drop the oldest records beyond ``max_entries`` or
    ``max_bytes``; returns how many were dropped."""
    stored = json.dumps(record, separators=(",", ":"))
    return int(client.eval(_PUSH, 2, DEAD_LETTER_KEY, SIZE_KEY, stored, max_entries, max_bytes))


def stored_bytes(client) -> int:
    """The bytes of the records in the list (as counted by the scripts)."""
    return int(client.get(SIZE_KEY) or 0)


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
    queue = record.get("queue") or QUEUE
    if not client.eval(_TAKE, 3, DEAD_LETTER_KEY, SIZE_KEY, queue, record["_stored"], raw_bytes(record)):
        raise DeadLetterError(f"dead letter {record.get('id')} is gone (requeued or purged meanwhile)")


def purge(client, record: dict[str, Any] | None = None) -> int:
    """Remove one record, or all of them; returns how many were removed."""
    if record is not None:
        return int(client.eval(_TAKE, 2, DEAD_LETTER_KEY, SIZE_KEY, record["_stored"]))
    with client.pipeline(transaction=True) as pipe:
        pipe.llen(DEAD_LETTER_KEY)
        pipe.delete(DEAD_LETTER_KEY, SIZE_KEY)
        n, _ = pipe.execute()
    return int(n)
