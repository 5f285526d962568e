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


def _job(sessions, n: int, tag: str, age_h: float = 2.0, scheme: str = "s3://imgs/") -> tuple[str, list[int]]:
    """A job of ``n`` queued items, last changed ``age_h`` hours ago."""
    from poundcam.db import JobItem, create_job, item_refs, session_scope

    with session_scope(sessions) as s:
        job = create_job(s, [f"{scheme}{tag}/{k}.jpg" for k in range(n)])
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
    lost_job, lost_ids = _job(sessions, 5, "lost")
    held_job, held_ids = _job(sessions, 2, "held")  # its message is held by a worker (unacked)
    young_job, _ = _job(sessions, 2, "young", age_h=0.1)  # queued recently: not looked at
    local_job, _ = _job(sessions, 2, "local", scheme="/home/alice/")  # an embedded job's paths
    Client(settings).enqueue(held_job, [{"item_id": i, "uri": "s3://imgs/held"} for i in held_ids])
    raw = r.rpop(QUEUE_KEY)
    r.hset(UNACKED_KEY, "tag-1", json.dumps([json.loads(raw), "", QUEUE_KEY]))
    with session_scope(sessions) as s:  # one lost item was claimed by a worker meanwhile
        s.execute(sa.update(JobItem).where(JobItem.id == lost_ids[0]).values(status="running"))

    resent = resend_lost(settings, sessions)

    assert {job: [i for i, _ in refs] for job, refs in resent.items()} == {lost_job: lost_ids[1:]}
    assert _queued_messages(r) == [(lost_job, lost_ids[1:])]
    assert young_job not in resent and local_job not in resent
    # sent once: the items are fresh again (and named by a message in the queue anyway)
    r.delete(QUEUE_KEY)
    assert resend_lost(settings, sessions) == {}


def test_a_queue_that_is_not_empty_is_not_read(setup):
    """Messages move while a queue is read by position: the look-up waits until it is empty."""
    from poundcam.broker.sweeper import resend_lost
    from poundcam.client import Client

    settings, sessions, r = setup
    lost_job, lost_ids = _job(sessions, 3, "lost-behind-a-queue")
    waiting_job, waiting_ids = _job(sessions, 2, "waiting")
    Client(settings).enqueue(waiting_job, [{"item_id": i, "uri": "s3://imgs/waiting"} for i in waiting_ids])
    assert resend_lost(settings, sessions) == {}
    r.delete(QUEUE_KEY)  # the queue drained (its items would be running or done by now)
    assert lost_job in resend_lost(settings, sessions)


def test_periodic_sweeps_take_turns(setup):
    from poundcam.broker.sweeper import LOST_MESSAGES_LOCK, resend_lost

    settings, sessions, r = setup
    first_job, first_ids = _job(sessions, 2, "first")
    assert [i for i, _ in resend_lost(settings, sessions, take_turns=True)[first_job]] == first_ids
    second_job, second_ids = _job(sessions, 2, "second")
    r.delete(QUEUE_KEY)
    # another worker's periodic sweep within the interval leaves the broker alone
    assert resend_lost(settings, sessions, take_turns=True) == {}
    assert 0 < r.ttl(LOST_MESSAGES_LOCK) <= settings.sweep_interval_s
    # an operator's `poundcam sweep` does not wait its turn
    assert [i for i, _ in resend_lost(settings, sessions)[second_job]] == second_ids


def test_an_embedded_jobs_items_are_never_sent_to_the_broker(setup):
    """An analyze run killed mid-job leaves its items running: the sweeper puts them back to
    queued, sends nothing (no worker can read local paths), and resend refuses the job."""
    from poundcam.broker.sweeper import sweep
    from poundcam.client import Client
    from poundcam.db import JobItem, session_scope
    from poundcam.errors import InvalidRequestError

    settings, sessions, r = setup
    job, ids = _job(sessions, 3, "killed", scheme="/home/alice/")
    with session_scope(sessions) as s:
        s.execute(
            sa.update(JobItem)
            .where(JobItem.id.in_(ids))
            .values(status="running", attempts=1, updated_at=JobItem.updated_at)
        )
    swept = sweep(settings, sessions)
    assert [i for i, _ in swept.requeued[job]] == ids and swept.resent == {}
    assert r.llen(QUEUE_KEY) == 0
    with pytest.raises(InvalidRequestError, match="local paths"):
        Client(settings).resend(job)
    assert r.llen(QUEUE_KEY) == 0
