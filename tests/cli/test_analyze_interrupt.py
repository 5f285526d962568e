"""Ctrl-C (or SIGTERM) during ``poundcam analyze``: the run was the only owner of its claimed items, so it
gives them back ("queued", never left "running"), says which job and how far it got in one
line, and exits 130. Run as a user runs it: the ``poundcam`` command in a subprocess, sent
SIGINT once it has analysed something. A run that fails otherwise once its job exists gives
its items back too (in this process: the failure is a stand-in store's)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from benchmarks.local_servers import poundcam_cmd

IMAGES = 200  # far more than the run can finish between the first result seen and the signal


def counts(db_url: str) -> dict[str, int]:
    """Items by state (empty while the database or its tables are not there yet)."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT status, count(*) FROM job_items GROUP BY status")).all())
    except sa.exc.OperationalError:
        return {}
    finally:
        engine.dispose()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_an_interrupted_run_gives_its_items_back_and_names_its_job(tmp_path, official_dir, signum):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
    db_file = tmp_path / "results.db"
    db_url = f"sqlite:///{db_file}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POUNDCAM_", "HF_"))}
    proc = subprocess.Popen(
        poundcam_cmd()
        + ["analyze", str(images), "--db", db_url, "--out", str(tmp_path / "out")]
        + ["--device", "cpu", "--batch-size", "2", "--weights", str(official_dir / "last.ckpt")],
        cwd=tmp_path,
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT, and the ignoring is inherited: not here
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 90  # the start (PyTorch, the model) on a loaded machine
        while not counts(db_url).get("done") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()  # still analysing: the signal lands mid-run
        assert counts(db_url).get("done"), "nothing analysed in 90 s"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""
    lines = [ln for ln in err.splitlines() if "poundcam analyze: " in ln]
    started = [ln for ln in lines if ln.startswith("poundcam analyze: job ")]
    assert len(started) == 1 and started[0].endswith(f": {IMAGES} image(s)"), err
    job_id = started[0].split()[3].rstrip(":")
    (line,) = [ln for ln in lines if "interrupted" in ln]
    final = counts(db_url)
    assert "running" not in final, final  # given back: nothing looks taken
    assert final["done"] > 0 and final["queued"] > 0 and sum(final.values()) == IMAGES
    assert line.startswith(f"poundcam analyze: interrupted: job {job_id}: ")
    assert f": {final['done']}/{IMAGES} analysed, " in line
    assert f"{final['queued']} queued again" in line and f"poundcam results {job_id}" in line


def test_a_run_that_fails_after_its_job_exists_gives_its_items_back(
    tmp_path, official_dir, monkeypatch, capsys
):
    """Any other failure once the job exists (here the heatmap folder failing twice, which
    the run retries once) is the usual one line, and leaves no item "running" either."""
    from poundcam.cli import main
    from poundcam.constants import ErrorCode
    from poundcam.storage import LocalStore, StorageError

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (i * 60, 0, 0)).save(images / f"{i}.png")

    def put(self, key, data, content_type="application/octet-stream"):
        raise StorageError(ErrorCode.STORAGE_UNAVAILABLE, "the disk went away")

    monkeypatch.setattr(LocalStore, "put", put)
    db_url = f"sqlite:///{tmp_path / 'results.db'}"
    args = ["analyze", str(images), "--db", db_url, "--out", str(tmp_path / "out"), "--device", "cpu"]
    rc = main([*args, "--weights", str(official_dir / "last.ckpt")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.splitlines()[-1].startswith("poundcam: error: 3 item(s) hit a transient storage failure")
    assert counts(db_url) == {"queued": 3}
