"""poundcam.client.Client on both database backends: one engine and one Celery app per
client, idempotency keys, URI validation before anything is written, wait() with a timeout,
the job listing. Messages go to a Redis database of the tests' own, where they are counted."""

from __future__ import annotations

import threading
import time

import pytest

from poundcam.client import Client, WaitTimeout
from poundcam.db import mark_done, mark_running, upsert_analysis
from poundcam.db.migrate import upgrade
from poundcam.errors import InvalidRequestError, UnavailableError
from poundcam.settings import Settings


@pytest.fixture(scope="module")
def broker(redis_claims):
    return redis_claims.claim()


@pytest.fixture
def client(db_url, broker):
    upgrade(db_url)
    settings = Settings.from_env({}, database_url=db_url, broker_url=broker, allowed_buckets=("images",))
    with Client(settings) as c:
        yield c


def queued_messages(client: Client) -> int:
    import redis

    return int(redis.Redis.from_url(client.settings.broker_url).llen("poundcam"))


def test_one_engine_and_one_app(client):
    assert client.engine is client.engine and client.app is client.app


def test_same_key_same_job_and_one_set_of_messages(client):
    uris = [f"s3://images/{i}.jpg" for i in range(5)]
    before = queued_messages(client)
    job = client.submit(uris, key="ingest-0042", batch_size=2)
    assert queued_messages(client) - before == 3
    assert client.submit(uris, key="ingest-0042", batch_size=2) == job
    assert queued_messages(client) - before == 3  # nothing sent again
    assert client.job(job)["idempotency_key"] == "ingest-0042"
    assert client.submit(uris) != job  # no key: a new job each time
    with pytest.raises(InvalidRequestError, match="ingest-0042.*other URIs"):
        client.submit(uris[:2], key="ingest-0042")


def test_uris_are_validated_before_anything_is_written(client):
    with pytest.raises(InvalidRequestError) as info:
        client.submit(
            ["s3://images/ok.jpg", "http://example.com/a.jpg", "s3://other/a.jpg", "s3://images/"], key="bad"
        )
    text = str(info.value)
    assert text.startswith("3 invalid URI(s)")
    assert "http://example.com/a.jpg" in text and "'other' is not in POUNDCAM_ALLOWED_BUCKETS" in text
    assert client.jobs() == []
    with pytest.raises(InvalidRequestError, match="no URIs"):
        client.submit([])


def test_a_numpy_batch_size_is_a_whole_number(client):
    import numpy as np

    before = queued_messages(client)
    client.submit([f"s3://images/{i}.jpg" for i in range(4)], batch_size=np.int64(3))
    assert queued_messages(client) - before == 2


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_a_batch_size_that_sends_nothing_is_refused_before_the_job_is_made(client, batch_size):
    with pytest.raises(InvalidRequestError, match="batch_size must be a whole number of at least 1"):
        client.submit(["s3://images/a.jpg"], batch_size=batch_size)
    assert client.jobs() == []


def test_wait_returns_when_finished_and_times_out_otherwise(client):
    job = client.submit(["s3://images/a.jpg", "s3://images/b.jpg"])
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match="2 queued"):
        client.wait(job, timeout=0.3, poll_s=0.1)
    assert 0.3 <= time.monotonic() - t0 < 2.0

    def finish():
        time.sleep(0.3)
        with client.session() as s:
            ids = mark_running(s, [r["item_id"] for r in client.results(job)])
            analysis = upsert_analysis(
                s,
                {
                    "sha256": "a" * 64,
                    "model_id": "m",
                    "cam_config_id": "c",
                    "p_fake": 0.9,
                    "logit_real": 0.0,
                    "logit_fake": 1.0,
                    "label": "fake",
                    "threshold": 0.5,
                    "stats": {},
                    "heatmap_keys": {},
                },
            )
            for i in ids:
                mark_done(s, i, analysis)

    worker = threading.Thread(target=finish)
    worker.start()
    st = client.wait(job, timeout=30, poll_s=0.1)
    worker.join()
    assert st["finished"] and st["done"] == 2
    rows = client.results(job)
    assert {r["threshold"] for r in rows} == {0.5}


def test_jobs_lists_recent_jobs_with_counts(client):
    first = client.submit(["s3://images/a.jpg"])
    second = client.submit(["s3://images/b.jpg", "s3://images/c.jpg"])
    listed = client.jobs(limit=10)
    assert [j["job_id"] for j in listed] == [second, first]  # newest first
    by_id = {j["job_id"]: j for j in listed}
    assert (by_id[second]["total"], by_id[second]["queued"], by_id[second]["finished"]) == (2, 2, False)
    assert len(client.jobs(limit=1)) == 1


def test_missing_sqlite_database_is_not_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    with (
        Client(Settings.from_env({}, database_url=url)) as c,
        pytest.raises(UnavailableError, match="POUNDCAM_DATABASE_URL"),
    ):
        c.status("x")
    assert list(tmp_path.iterdir()) == []


def test_a_broker_failure_is_one_line_without_the_password(client, monkeypatch):
    """The job exists, the message says how to send it later, and a URL in the broker's error
    keeps its password hidden (the message reaches callers of the library, not only logs)."""
    from poundcam.client import EnqueueError

    def refused(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to redis://:hunter2@broker:6379/0.\nConnection refused.")

    monkeypatch.setattr(client.app, "send_task", refused)
    with pytest.raises(EnqueueError) as info:
        client.submit(["s3://images/a.png"])
    message = str(info.value)
    assert "hunter2" not in message and "\n" not in message
    assert "ConnectionError: Error 111 connecting to redis://:***@broker:6379/0.;" in message
    assert f"poundcam resend {info.value.job_id}" in message
    assert client.status(info.value.job_id)["queued"] == 1
