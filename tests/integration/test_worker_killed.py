"""A worker killed with SIGKILL in the middle of a message: after a restart, every item is done
exactly once.

What happens underneath (Celery on Redis, acks late, solo pool): the killed worker never
acknowledged the message, so it stays in kombu's "unacked" hash. A worker restores unacked
messages older than the visibility timeout when it starts consuming (and from then on about
every 100 s), so the restarted worker gets the message again once POUNDCAM_VISIBILITY_TIMEOUT_S
has passed since the first delivery. The redelivered message skips the items already done and
re-claims the ones left "running".
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from . import corpus
from .conftest import Worker, analysis_counts, item_rows, running_workers, wait_finished

pytestmark = pytest.mark.integration

VISIBILITY_TIMEOUT_S = 5
N_IMAGES = 30
BUCKET = "fault-imgs"
UNACKED = "unacked"  # kombu's hash of delivered, unacknowledged messages


def test_sigkill_mid_message_then_restart_completes_every_item_once(
    request, tmp_path, pg_url, s3_server, s3_client, redis_claims, official_dir, artifacts_dir
):
    import redis

    from poundcam import client
    from poundcam.db import make_session_factory
    from poundcam.db.migrate import upgrade
    from poundcam.settings import Settings

    upgrade(pg_url)
    broker = redis_claims.claim()
    s3_client.create_bucket(Bucket=BUCKET)
    s3_client.create_bucket(Bucket="fault-heat")
    expected, uploads = {}, {}
    for k in range(N_IMAGES):
        data = corpus.encode(corpus.photo(160, 128, seed=7000 + k), "JPEG", quality=88)
        s3_client.put_object(Bucket=BUCKET, Key=f"{k}.jpg", Body=data)
        uri = f"s3://{BUCKET}/{k}.jpg"
        expected[uri], uploads[uri] = None, data
    s3_client.put_object(Bucket=BUCKET, Key="bad.jpg", Body=b"\xff\xd8\xff\xe0 cut short")
    expected[f"s3://{BUCKET}/bad.jpg"] = "truncated"

    env = {
        "POUNDCAM_BROKER_URL": broker,
        "POUNDCAM_DATABASE_URL": pg_url,
        "POUNDCAM_S3_ENDPOINT_URL": s3_server,
        "POUNDCAM_HEATMAP_BUCKET": "fault-heat",
        "POUNDCAM_ALLOWED_BUCKETS": BUCKET,
        "POUNDCAM_WEIGHTS": str(official_dir / "last.ckpt"),
        "POUNDCAM_DEVICE": "cpu",
        "POUNDCAM_BATCH_SIZE": "1",
        "POUNDCAM_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
    }
    sessions = make_session_factory(pg_url)
    settings = Settings.from_env(database_url=pg_url, broker_url=broker)
    r = redis.Redis.from_url(broker)
    first, second = Worker(env, tmp_path, "killed"), Worker(env, tmp_path, "restarted")

    with running_workers(request, [first], artifacts_dir):
        job_id = client.submit(list(expected), batch_size=len(expected), settings=settings)
        # kill once some items are done and others are still being worked on
        deadline = time.monotonic() + 180
        while True:
            rows = item_rows(sessions, job_id)
            done = [x for x in rows if x["status"] == "done"]
            if len(done) >= 3:
                break
            assert time.monotonic() < deadline, f"no progress: {rows}"
            assert first.alive(), first.log_tail()
            time.sleep(0.05)
        first.kill()
        killed_at = time.monotonic()
    rows = item_rows(sessions, job_id)
    done_before = {x["uri"]: x["analysis_id"] for x in rows if x["status"] == "done"}
    running = [x for x in rows if x["status"] == "running"]
    finished_before = len(rows) - len(running)
    assert 3 <= len(done_before) < N_IMAGES, "the kill did not land in the middle of the message"
    assert running, "nothing was in flight when the worker died"
    assert r.hlen(UNACKED) == 1, "the message should be delivered but unacknowledged"
    assert r.llen("poundcam") == 0

    # make sure the restarted worker's start-up scan already finds the message overdue
    time.sleep(max(0.0, killed_at + VISIBILITY_TIMEOUT_S + 1 - time.monotonic()))
    with running_workers(request, [second], artifacts_dir):
        wait_finished(sessions, job_id, 240, [second])
        # the ack follows the task's return, which follows the items' last commit
        deadline = time.monotonic() + 30
        while r.hlen(UNACKED) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.hlen(UNACKED) == 0, "the redelivered message was not acknowledged"

    rows = item_rows(sessions, job_id)
    assert {x["uri"]: (x["status"], x["error_code"]) for x in rows} == {
        u: ("done", None) if c is None else ("failed", c) for u, c in expected.items()
    }
    # items finished before the kill were neither redone nor relinked
    for x in rows:
        if x["uri"] in done_before:
            assert x["analysis_id"] == done_before[x["uri"]] and x["attempts"] == 1
    assert max(x["attempts"] for x in rows) == 2  # the in-flight ones were claimed again
    counts = analysis_counts(sessions)
    shas = {hashlib.sha256(uploads[u]).hexdigest() for u in uploads}
    assert {sha: counts.get(sha, 0) for sha in shas} == {sha: 1 for sha in shas}
    assert sum(counts.values()) == N_IMAGES
    # the restarted worker says how many it skipped
    reports = [
        json.loads(line)
        for line in second.log_path.read_text().splitlines()
        if line.startswith("{") and "already finished" in line
    ]
    assert any(f"{finished_before} already finished" in rep["message"] for rep in reports), reports
    sessions.kw["bind"].dispose()
