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
    env = {**os.environ, "POUNDCAM_WEIGHTS": str(tmp_path / "missing.ckpt"),
           "POUNDCAM_BROKER_URL": redis_claims.claim(),  # an empty database of its own
           "POUNDCAM_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "POUNDCAM_METRICS_PORT": "0", "POUNDCAM_READY_FILE": str(tmp_path / "ready"),
           "POUNDCAM_HEATMAP_BUCKET": "heat"}
    proc = subprocess.run([sys.executable, "-m", "poundcam.cli", "worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "missing.ckpt: weights file not found" in proc.stderr
    assert "POUNDCAM_WEIGHTS" in proc.stderr  # says how to provide weights
    assert not (tmp_path / "ready").exists()
