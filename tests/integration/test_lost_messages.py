"""The sweeper sends again the queued items whose message was lost, and only those.

Real Redis (a database number of its own) and a real database; no worker listens on that
Redis database, so the messages stay where the test puts them: in the queue, or in kombu's
``unacked`` hash as a worker holding one would leave it.
"""

from __future__ import annotations

import datetime
import json

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.integration

QUEUE_KEY, UNACKED_KEY = "poundcam", "unacked"


@pytest.fixture(scope="module")
def broker(redis_claims):
    return redis_claims.claim()


@pytest.fixture
def setup(db_url, broker):
    import redis

    from poundcam.broker.sweeper import LOST_MESSAGES_LOCK
    from poundcam.db import make_session_factory
    from poundcam.db.migrate import upgrade
    from poundcam.settings import Settings

    r = redis.Redis.from_url(broker)
    r.delete(QUEUE_KEY, UNACKED_KEY, LOST_MESSAGES_LOCK)
    upgrade(db_url)
    sessions = make_session_factory(db_url)
    yield Settings.from_env(database_url=db_url, broker_url=broker), sessions, r
    sessions.kw["bind"].dispose()
    r.delete(QUEUE_KEY, UNACKED_KEY, LOST_MESSAGES_LOCK)


def _job(sessions, n: int, tag: str, age_h: float = 2.0, options=None) -> tuple[str, list[int]]:
    """A job of ``n`` queued items, last changed ``age_h`` hours ago."""
    from poundcam.db import JobItem, create_job, item_refs, session_scope

    with session_scope(sessions) as s:
        job = create_job(s, [f"s3://imgs/{tag}/{k}.jpg" for k in range(n)], options)
        ids = [r["item_id"] for r in item_refs(s, job)]
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=age_h)
        s.execute(sa.update(JobItem).where(JobItem.id.in_(ids)).values(updated_at=old))
    return job, ids


def _queued_messages(r) -> list[tuple[str, list[int]]]:
    from poundcam.broker.envelope import message_of
    from poundcam.messaging import parse_message

    out = []
    for raw in r.lrange(QUEUE_KEY, 0, -1):
        parsed = parse_message(message_of(raw, 1 << 20))
        out.append((parsed.job_id, sorted(i for i, _ in parsed.items)))
    return out


def test_only_items_no_message_names_are_sent_again(setup):
    from poundcam.broker.sweeper import resend_lost
    from poundcam.client import Client
    from poundcam.db import JobItem, session_scope

    settings, sessions, r = setup
    client = Client(settings)
    lost_job, lost_ids = _job(sessions, 5, "lost")
    waiting_job, waiting_ids = _job(sessions, 2, "waiting")  # its message is in the queue
    held_job, held_ids = _job(sessions, 2, "held")  # its message is held by a worker (unacked)
    young_job, _ = _job(sessions, 2, "young", age_h=0.1)  # queued recently: not looked at
    embedded_job, _ = _job(sessions, 2, "embedded", options={"mode": "embedded"})  # no broker's
    client.enqueue(held_job, [{"item_id": i, "uri": "s3://imgs/held"} for i in held_ids])
    raw = r.rpop(QUEUE_KEY)
    r.hset(UNACKED_KEY, "tag-1", json.dumps([json.loads(raw), "", QUEUE_KEY]))
    client.enqueue(waiting_job, [{"item_id": i, "uri": "s3://imgs/waiting"} for i in waiting_ids])
    with session_scope(sessions) as s:  # one lost item was claimed by a worker meanwhile
        s.execute(sa.update(JobItem).where(JobItem.id == lost_ids[0]).values(status="running"))

    resent = resend_lost(settings, sessions)

    assert {job: [i for i, _ in refs] for job, refs in resent.items()} == {lost_job: lost_ids[1:]}
    assert sorted(_queued_messages(r)) == sorted([(waiting_job, waiting_ids), (lost_job, lost_ids[1:])])
    assert young_job not in resent and embedded_job not in resent
    # sent once: the items are fresh again, and now named by a message anyway
    assert resend_lost(settings, sessions) == {}
    assert len(_queued_messages(r)) == 2


def test_periodic_sweeps_take_turns_reading_the_broker(setup):
    from poundcam.broker.sweeper import resend_lost

    settings, sessions, r = setup
    first_job, first_ids = _job(sessions, 2, "first")
    assert [i for i, _ in resend_lost(settings, sessions, take_turns=True)[first_job]] == first_ids
    second_job, second_ids = _job(sessions, 2, "second")
    # another worker's periodic sweep within the interval leaves the broker alone
    assert resend_lost(settings, sessions, take_turns=True) == {}
    assert 0 < r.ttl("poundcam:sweep-lost-messages") <= settings.sweep_interval_s
    # an operator's `poundcam sweep` does not wait its turn
    assert [i for i, _ in resend_lost(settings, sessions)[second_job]] == second_ids
