"""A worker that cannot load its model exits at once with the reason, taking no messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_worker_without_weights_exits_with_reason(tmp_path, redis_claims):
    env = {
        **os.environ,
        "POUNDCAM_WEIGHTS": str(tmp_path / "missing.ckpt"),
        "POUNDCAM_BROKER_URL": redis_claims.claim(),  # an empty database of its own
        "POUNDCAM_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "POUNDCAM_METRICS_PORT": "0",
        "POUNDCAM_READY_FILE": str(tmp_path / "ready"),
        "POUNDCAM_HEATMAP_BUCKET": "heat",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "poundcam.cli", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "missing.ckpt: weights file not found" in proc.stderr
    assert "POUNDCAM_WEIGHTS" in proc.stderr  # says how to provide weights
    assert not (tmp_path / "ready").exists()


@pytest.mark.integration
def test_worker_that_cannot_write_heatmaps_claims_nothing(
    tmp_path, redis_claims, s3_server, s3_client, official_dir
):
    """A missing heatmap bucket is found at start: the worker exits with the reason and the
    waiting message stays in the queue for a worker that can process it."""
    import redis

    from poundcam import client
    from poundcam.db.migrate import upgrade
    from poundcam.settings import Settings

    s3_client.create_bucket(Bucket="ready-imgs")
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(db_url)
    broker = redis_claims.claim()
    job = client.submit(
        ["s3://ready-imgs/a.png"], settings=Settings.from_env({}, database_url=db_url, broker_url=broker)
    )
    env = {
        **os.environ,
        "POUNDCAM_WEIGHTS": str(official_dir / "last.ckpt"),
        "POUNDCAM_BROKER_URL": broker,
        "POUNDCAM_DATABASE_URL": db_url,
        "POUNDCAM_METRICS_PORT": "0",
        "POUNDCAM_READY_FILE": str(tmp_path / "ready"),
        "POUNDCAM_S3_ENDPOINT_URL": s3_server,
        "POUNDCAM_ALLOWED_BUCKETS": "ready-imgs",
        "POUNDCAM_HEATMAP_BUCKET": "no-such-heatmap-bucket",
        "POUNDCAM_DEVICE": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "poundcam.cli", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "no-such-heatmap-bucket" in proc.stderr and "cannot start" in proc.stderr
    assert not (tmp_path / "ready").exists()
    assert redis.Redis.from_url(broker).llen("poundcam") == 1
    assert (
        client.status(job, settings=Settings.from_env({}, database_url=db_url, broker_url=broker))["queued"]
        == 1
    )
