"""Delayed messages (retries wait for their ETA) are held by a worker in memory until their
time; a queue full of them must not grow a worker without bound. Celery raises a worker's
prefetch for each one it holds; with ``worker_eta_task_limit`` a worker holds at most
ETA_MESSAGES_HELD_MAX and leaves the rest in the queue (for other workers, or for later)."""

from __future__ import annotations

import time

import pytest

from benchmarks.poison import genuine_entry
from poundcam.constants import ETA_AHEAD_MAX_S
from poundcam.messaging import make_message
from workers.celery_app import ETA_MESSAGES_HELD_MAX

from .conftest import Worker, running_workers

pytestmark = pytest.mark.integration

QUEUE, UNACKED = "poundcam", "unacked"  # the queue list and kombu's hash of held messages


def test_a_worker_holds_at_most_its_limit_of_delayed_messages(
    request, tmp_path, s3_server, s3_client, redis_claims, official_dir, artifacts_dir
):
    import redis

    from poundcam.db.migrate import upgrade

    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(db_url)
    broker = redis_claims.claim()
    for bucket in ("delay-imgs", "delay-heat"):
        s3_client.create_bucket(Bucket=bucket)
    env = {
        "POUNDCAM_BROKER_URL": broker,
        "POUNDCAM_DATABASE_URL": db_url,
        "POUNDCAM_S3_ENDPOINT_URL": s3_server,
        "POUNDCAM_HEATMAP_BUCKET": "delay-heat",
        "POUNDCAM_ALLOWED_BUCKETS": "delay-imgs",
        "POUNDCAM_WEIGHTS": str(official_dir / "last.ckpt"),
        "POUNDCAM_DEVICE": "cpu",
    }
    r = redis.Redis.from_url(broker)
    n = 3 * ETA_MESSAGES_HELD_MAX
    # within the ETA allowed ahead (a retry's wait), so each is accepted and held, not refused
    delay = ETA_AHEAD_MAX_S - 60
    for k in range(n):
        message = make_message(f"delayed-{k}", [(k + 1, f"s3://delay-imgs/{k}.jpg")])
        r.lpush(QUEUE, genuine_entry(message, countdown=delay))
    with running_workers(request, [Worker(env, tmp_path, "delays")], artifacts_dir):
        deadline, last = time.monotonic() + 60, None
        while True:  # until the worker stops taking entries
            now = (r.llen(QUEUE), r.hlen(UNACKED))
            if now == last and now[1] > 0:
                break
            assert time.monotonic() < deadline, now
            last = now
            time.sleep(3)
        queued, held = now
        assert held <= ETA_MESSAGES_HELD_MAX and queued + held == n, (queued, held)
        assert queued >= n - ETA_MESSAGES_HELD_MAX
        assert r.llen("poundcam:dead-letters") == 0
