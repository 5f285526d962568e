"""Real servers and real worker processes for the integration tests.

- ``redis_claims`` (tests/conftest.py): Redis database numbers of their own.
- ``MotoServer``: moto's S3 server as a subprocess that a test can pause (SIGSTOP) and resume.
- ``TcpProxy`` (from benchmarks/local_servers.py, shared with the chaos run): a TCP proxy
  between a worker and a server, which a test can cut (every connection reset, new ones closed
  at once) and restore: an outage without touching the server.
- ``Worker``: ``poundcam worker`` as a subprocess, started with its own environment, ready when
  its ready file appears, stopped with SIGTERM (or killed with SIGKILL); its log is printed when
  a test failed while it ran.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from benchmarks import local_servers
from benchmarks.local_servers import AWS_ENV, TcpProxy, free_port, poundcam_cmd, wait_for_port  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("POUNDCAM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- PostgreSQL ------------------------------------------------------------------------------


def fresh_database():
    """A new PostgreSQL database (dropped at the end); yields its URL."""
    return local_servers.fresh_database(PG_ADMIN_URL, "poundcam_it_")


def with_port(url: str, port: int) -> str:
    """``url`` (SQLAlchemy or http) pointed at 127.0.0.1:``port``."""
    from sqlalchemy.engine import make_url

    if url.startswith("http"):
        return f"http://127.0.0.1:{port}"
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


# --- S3 ----------------------------------------------------------------------------------------


class MotoServer:
    """moto's S3 server in a subprocess of its own, so that it can be paused."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")  # noqa: SIM115 - the server's log, closed in stop()
        # moto's server behind a layer that counts requests on the server's side
        cmd = [sys.executable, "-m", "benchmarks.s3_server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **AWS_ENV}
        )
        wait_for_port(self.port)

    def requests(self, reset: bool = False) -> dict:
        """Requests served so far, counted by the server: ``{"total", "by_method",
        "by_bucket": {bucket: {method: n}}}``; ``reset`` starts the count again."""
        from benchmarks.s3_server import fetch_counts

        return fetch_counts(self.url, reset=reset)

    def client(self):
        from poundcam.storage.s3 import make_s3_client

        with _aws_env():
            return make_s3_client(endpoint_url=self.url)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def _aws_env():
    """The fake AWS credentials in this process's environment, for a client made inside."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        yield


# --- the worker process ----------------------------------------------------------------------------


class Worker:
    """``poundcam worker`` in a subprocess."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str = "w1"):
        self.name = name
        self.ready_file = workdir / f"{name}.ready"
        self.heartbeat_file = workdir / f"{name}.heartbeat"
        self.log_path = workdir / f"{name}.log"
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            **AWS_ENV,
            **env,
            "POUNDCAM_READY_FILE": str(self.ready_file),
            "POUNDCAM_HEARTBEAT_FILE": str(self.heartbeat_file),
            "POUNDCAM_METRICS_PORT": str(self.metrics_port),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 180.0) -> Worker:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process, without waiting for it to be ready."""
        self.ready_file.unlink(missing_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the worker's log, closed in stop()
        self.proc = subprocess.Popen(
            poundcam_cmd() + ["worker", "--name", f"{self.name}-{uuid.uuid4().hex[:6]}@%h"],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 180.0) -> Worker:
        """Wait until the ready file appears; raise with the log's tail if the process exits or
        ``timeout`` passes first."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"worker not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no ack, nothing cleaned up."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (Celery's warm shutdown), SIGKILL if it does not end within ``timeout``."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return None if self.proc is None else self.proc.returncode

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 120) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()


@contextlib.contextmanager
def running_workers(request, workers: list[Worker], artifacts: Path | None = None):
    """Start ``workers`` (side by side: all launched, then each waited for); stop them at the
    end; print their logs if a test failed meanwhile."""
    failed_before = request.session.testsfailed
    try:
        for w in workers:
            w.launch()
        for w in workers:
            w.wait_ready()
        yield workers
    finally:
        for w in workers:
            w.stop()
        failed = request.session.testsfailed > failed_before or sys.exc_info()[0] is not None
        for w in workers:
            if artifacts is not None:
                with contextlib.suppress(OSError):
                    shutil.copy(w.log_path, artifacts / f"integration-{w.log_path.name}")
            if failed:
                sys.stderr.write(
                    f"\n----- log of worker {w.name} (pid {w.pid if w.proc else '-'}) -----\n{w.log_tail()}\n"
                )


# --- database helpers used by the tests ---------------------------------------------------------------


def wait_finished(sessions, job_id: str, timeout: float, workers: list[Worker] = ()) -> dict:
    from poundcam.db import job_status, session_scope

    deadline = time.monotonic() + timeout
    while True:
        with session_scope(sessions) as s:
            st = job_status(s, job_id)
        if st["finished"]:
            return st
        for w in workers:
            if not w.alive():
                raise AssertionError(f"worker {w.name} died:\n{w.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not finished after {timeout:.0f}s: {st}")
        time.sleep(0.3)


def item_rows(sessions, job_id: str) -> list[dict]:
    import sqlalchemy as sa

    from poundcam.db import JobItem, session_scope

    with session_scope(sessions) as s:
        rows = (
            s.execute(sa.select(JobItem).where(JobItem.job_id == job_id).order_by(JobItem.position))
            .scalars()
            .all()
        )
        return [
            {
                "id": r.id,
                "uri": r.uri,
                "status": r.status,
                "error_code": r.error_code,
                "error_message": r.error_message,
                "attempts": r.attempts,
                "analysis_id": r.analysis_id,
            }
            for r in rows
        ]


def analysis_counts(sessions) -> dict[str, int]:
    """Analyses per sha256."""
    import sqlalchemy as sa

    from poundcam.db import Analysis, session_scope

    with session_scope(sessions) as s:
        return {
            sha: n
            for sha, n in s.execute(sa.select(Analysis.sha256, sa.func.count()).group_by(Analysis.sha256))
        }
