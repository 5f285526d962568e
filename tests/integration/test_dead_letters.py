"""The dead-letter list in a real Redis: bounded in records and in bytes, its byte count kept
in step with every push, requeue and purge, and counted again where it is missing."""

from __future__ import annotations

import json

import pytest
import redis

from poundcam.broker import deadletters
from poundcam.broker.envelope import BAD_MESSAGE, OVERSIZED


@pytest.fixture(scope="module")
def client(redis_claims):
    return redis.Redis.from_url(redis_claims.claim())


def _sizes(client) -> list[int]:
    return [len(r) for r in client.lrange(deadletters.DEAD_LETTER_KEY, 0, -1)]


def _record(n: int, size: int = 1000) -> dict:
    return deadletters.make_record(b"x" * size + str(n).encode(), BAD_MESSAGE, f"entry {n}")


def test_the_list_keeps_at_most_its_bytes_and_records_newest_first(client):
    deadletters.purge(client)
    one = len(json.dumps(_record(0), separators=(",", ":")))
    dropped = [deadletters.push(client, _record(n), 100, 5 * one + one // 2) for n in range(12)]
    assert dropped == [0] * 5 + [1] * 7
    kept = deadletters.entries(client)
    assert [r["detail"] for r in kept] == [f"entry {n}" for n in range(11, 6, -1)]
    assert deadletters.stored_bytes(client) == sum(_sizes(client)) <= 5 * one + one // 2
    # the record limit still holds, and the newest is kept even when it alone is over budget
    for n in range(3):
        deadletters.push(client, _record(100 + n), 2, 10**9)
    assert len(_sizes(client)) == 2
    deadletters.push(client, _record(200, size=50_000), 100, 1000)
    assert [r["detail"] for r in deadletters.entries(client)] == ["entry 200"]
    assert deadletters.stored_bytes(client) == sum(_sizes(client))


def test_requeue_and_purge_keep_the_count_and_a_record_is_taken_once(client):
    deadletters.purge(client)
    queue = "poundcam-dead-letter-test"
    client.delete(queue)
    for n in range(3):
        deadletters.push(client, _record(n), 100, 10**9)
    first, second, third = deadletters.entries(client)
    deadletters.requeue(client, {**first, "queue": queue})
    assert client.lrange(queue, 0, -1) == [deadletters.raw_bytes(first)]
    with pytest.raises(deadletters.DeadLetterError, match="is gone"):
        deadletters.requeue(client, {**first, "queue": queue})
    assert client.llen(queue) == 1
    assert deadletters.purge(client, second) == 1 and deadletters.purge(client, second) == 0
    assert deadletters.stored_bytes(client) == sum(_sizes(client)) == len(third["_stored"])
    big = deadletters.make_record(b"y" * 10_000, OVERSIZED, "too big")
    deadletters.push(client, big, 100, 10**9)
    with pytest.raises(deadletters.DeadLetterError, match="not kept whole"):
        deadletters.requeue(client, deadletters.entries(client)[0])
    assert deadletters.purge(client) == 2
    assert deadletters.stored_bytes(client) == 0 and not client.exists(deadletters.SIZE_KEY)
    client.delete(queue)


def test_a_list_deleted_by_hand_counts_from_zero_again(client):
    deadletters.purge(client)
    for n in range(3):
        deadletters.push(client, _record(n), 100, 10**9)
    client.delete(deadletters.DEAD_LETTER_KEY)  # the count survives the list
    deadletters.push(client, _record(3), 100, 10**9)
    assert deadletters.stored_bytes(client) == sum(_sizes(client)) and len(_sizes(client)) == 1
    deadletters.purge(client)


def test_a_missing_count_is_made_again_from_the_list(client):
    deadletters.purge(client)
    for n in range(250):  # more than one chunk of the recount
        deadletters.push(client, _record(n, size=100), 1000, 10**9)
    client.delete(deadletters.SIZE_KEY)  # a list left by an earlier version, without its count
    deadletters.push(client, _record(250, size=100), 1000, 10**9)
    assert deadletters.stored_bytes(client) == sum(_sizes(client)) and len(_sizes(client)) == 251
    deadletters.purge(client)
