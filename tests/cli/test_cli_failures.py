"""Expected failures of the CLI are one line on stderr and a non-zero exit; ``--debug`` adds
the traceback; nothing is created on the way to such a failure. Run as a user runs them: the
``poundcam`` command in a subprocess, in an empty folder, without POUNDCAM_* variables."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.local_servers import poundcam_cmd


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POUNDCAM_", "HF_"))}
    return subprocess.run(
        poundcam_cmd() + list(args), cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("poundcam: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ("results", "JOB"),
        ("status", "JOB"),
        ("jobs",),
        ("report", "JOB", "--out", "r.html"),
        ("db", "current"),
    ],
)
def test_missing_database_names_url_and_variable_and_creates_nothing(tmp_path, command):
    proc = run(*command, cwd=tmp_path)
    assert proc.returncode == 75, proc.stderr
    line = one_error_line(proc)
    assert "sqlite:///./poundcam.db" in line and "POUNDCAM_DATABASE_URL" in line
    assert list(tmp_path.iterdir()) == []  # no empty poundcam.db, no report


def test_database_without_tables_says_how_to_create_them(tmp_path):
    (tmp_path / "empty.db").write_bytes(b"")
    proc = run("results", "JOB", "--db", f"sqlite:///{tmp_path / 'empty.db'}", cwd=tmp_path)
    assert proc.returncode == 75
    line = one_error_line(proc)
    assert "poundcam db upgrade" in line and "empty.db" in line


def test_unknown_job_is_one_line_and_debug_adds_the_traceback(tmp_path):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    assert run("db", "--db", db, "upgrade", cwd=tmp_path).returncode == 0
    proc = run("status", "nope", "--db", db, cwd=tmp_path)
    assert proc.returncode == 2
    assert "no job 'nope'" in one_error_line(proc)
    debug = run("--debug", "status", "nope", "--db", db, cwd=tmp_path)
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "JobNotFoundError" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1] == one_error_line(proc)


@pytest.mark.parametrize(
    "args, says",
    [
        (("jobs", "--db", "garbage"), "database URL 'garbage' cannot be used"),
        (("jobs", "--db", "mysql://u:secret@h/d"), "mysql is not supported"),
        (("jobs", "--db", "postgresql+pg8000://u@h/d"), "No module named 'pg8000'"),
    ],
)
def test_a_database_url_that_cannot_be_used_is_one_line(tmp_path, args, says):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert says in line and "secret" not in line and "POUNDCAM_DATABASE_URL" in line


def test_postgres_urls_are_read_as_postgresql_with_their_driver():
    from poundcam.db.engine import database_url

    assert database_url("postgres://u@h/d").drivername == "postgresql"
    assert database_url("postgres+psycopg://u@h/d?sslmode=require").render_as_string() == (
        "postgresql+psycopg://u@h/d?sslmode=require"
    )
    assert database_url("sqlite:///x.db").drivername == "sqlite"


def test_quiet_loggers_speak_again_in_debug_logging():
    import logging

    from poundcam.logs import QUIET_LOGGERS, configure_logging

    try:
        configure_logging(level=logging.INFO)
        assert all(logging.getLogger(n).level == logging.WARNING for n in QUIET_LOGGERS)
        configure_logging(level=logging.DEBUG)
        assert all(logging.getLogger(n).level == logging.DEBUG for n in QUIET_LOGGERS)
    finally:
        configure_logging(level=logging.WARNING)


@pytest.mark.parametrize(
    "args, says",
    [
        (("submit", "s3://b/a.jpg", "--batch-size", "-3"), "'-3' is not a positive number"),
        (("status", "JOB", "--wait", "-5"), "'-5' is not 0 or more seconds"),
        (("jobs", "--limit", "-1"), "'-1' is not a positive number"),
        (("queue-exporter", "--port", "99999"), "'99999' is not a port number"),
    ],
)
def test_option_values_that_make_no_sense_are_refused_by_the_command_line(tmp_path, args, says):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr


def test_the_command_line_and_the_database_commands_start_without_pytorch(tmp_path):
    """`poundcam --help`, `status`, `jobs`: no PyTorch import (seconds at every start)."""
    import sys

    db = f"sqlite:///{tmp_path / 'p.db'}"
    assert run("db", "upgrade", "--db", db, cwd=tmp_path).returncode == 0
    code = (
        "import sys\n"
        "from poundcam.cli import build_parser, main\n"
        "build_parser().format_help()\n"
        f"main(['jobs', '--db', {db!r}])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_db_takes_its_url_before_or_after_the_action_and_logs_only_the_migrations(tmp_path):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    up = run("db", "upgrade", "--db", db, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "Running upgrade" in up.stderr and "plugin" not in up.stderr
    assert run(
        "db", "--db", f"sqlite:///{tmp_path / 'other.db'}", "current", "--db", db, cwd=tmp_path
    ).stdout.endswith("(up to date)\n")
    swept = run("sweep", "--db", db, "--json", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout) == {
        "requeued": 0,
        "jobs": [],
        "failed": [],
        "resent": 0,
        "resent_jobs": [],
    }


def test_unreachable_database_server_is_one_line(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/poundcam"
    proc = run("jobs", "--db", url, cwd=tmp_path)
    assert proc.returncode == 75
    line = one_error_line(proc)
    assert "127.0.0.1" in line and "POUNDCAM_DATABASE_URL" in line


def test_unreadable_uri_file_is_one_line(tmp_path):
    proc = run("submit", "--from-file", "absent.txt", cwd=tmp_path)
    assert proc.returncode == 2
    assert "absent.txt" in one_error_line(proc)


@pytest.mark.slow
def test_unreachable_weights_fail_fast_before_creating_anything(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(images / "a.png")
    work = tmp_path / "work"
    work.mkdir()
    t0 = time.monotonic()
    proc = run(
        "analyze",
        str(images),
        cwd=work,
        POUNDCAM_CACHE_DIR=str(tmp_path / "cache"),
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        HF_HOME=str(tmp_path / "hf"),
    )
    elapsed = time.monotonic() - t0
    print(f"analyze with unreachable weights: {elapsed:.1f} s")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("poundcam: error: ") and "POUNDCAM_WEIGHTS" in lines[-1]
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr
    # at most the download attempt and the error, each once
    assert len(lines) <= 3 and len(set(lines)) == len(lines), proc.stderr
    # no wall-clock bound here: on a loaded machine interpreter start-up alone varies by seconds;
    # the bound that matters (one Hub request, at most its timeout, no retries) is the next test's
    assert list(work.iterdir()) == []  # no poundcam.db, no poundcam-out/


def test_a_silent_hub_costs_one_request_and_at_most_its_timeout(tmp_path):
    """A Hub that accepts connections and never answers: one request, given up after
    HUB_TIMEOUT_S (4 s), not retried (a retry would add another timeout and a back-off)."""
    import threading

    import huggingface_hub  # noqa: F401 - imported before the clock starts

    from poundcam.errors import WeightsNotFoundError
    from poundcam.model.weights import HUB_TIMEOUT_S, resolve_weights

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)  # read nothing, answer nothing

    threading.Thread(target=accept, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(WeightsNotFoundError, match="POUNDCAM_WEIGHTS"):
            resolve_weights(
                "hf://nebula/PoundNet/run/last.ckpt",
                cache_dir=tmp_path,
                hf_endpoint=f"http://127.0.0.1:{server.getsockname()[1]}",
            )
        elapsed = time.monotonic() - t0
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert len(held) == 1  # no retry
    assert HUB_TIMEOUT_S <= elapsed < 2 * HUB_TIMEOUT_S, elapsed


def test_a_worker_with_a_bad_setting_says_so_in_one_line(tmp_path):
    proc = run("worker", cwd=tmp_path, POUNDCAM_BATCH_SIZE="-1")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "POUNDCAM_BATCH_SIZE" in lines[0], proc.stderr


def test_a_missing_postgresql_database_says_to_create_it(tmp_path, pg_url):
    import uuid

    from sqlalchemy.engine import make_url

    # the server of the tests' database, a database name it does not have
    url = make_url(pg_url).set(database=f"poundcam_missing_{uuid.uuid4().hex[:8]}")
    url = url.render_as_string(hide_password=False)
    proc = run("db", "upgrade", "--db", url, cwd=tmp_path)
    assert proc.returncode == 75, proc.stderr
    line = one_error_line(proc)
    assert "does not exist" in line and "create the database" in line, line


@pytest.mark.parametrize(
    "args, reason",
    [
        (("analyze", "x", "--batch-size", "-1"), "--batch-size"),
        (("analyze", "x", "--threshold", "2"), "--threshold"),
        (("status",), "job_id"),
        (("nosuch",), "nosuch"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, reason):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert reason in line and "--help" in line, line


def _one_image(tmp_path: Path) -> Path:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64)).save(images / "a.png")
    return images


@pytest.mark.parametrize(
    "where, code, says",
    [
        (("--out", "{blocker}/out"), 2, "heatmaps to {blocker}/out: Not a directory (check --out"),
        (("--db", "sqlite:///{blocker}/p.db"), 75, "database: unable to open database file"),
    ],
)
def test_analyze_checks_its_heatmap_folder_and_database_before_the_model(tmp_path, where, code, says):
    """Where the results cannot be written fails before the model is loaded (a ViT-L, after
    its download): the weights given here would fail to load, so the error seen is the
    folder's or the database's; and the run leaves nothing behind (a default ./poundcam-out
    made before the database failed is removed again)."""
    images = _one_image(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, not a folder")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    work = tmp_path / "work"
    work.mkdir()
    args = [a.format(blocker=blocker) for a in where]
    proc = run("analyze", str(images), *args, "--weights", str(tmp_path / "bad.ckpt"), cwd=work)
    assert proc.returncode == code, proc.stderr
    assert says.format(blocker=blocker) in one_error_line(proc)
    assert "loading model" not in proc.stderr
    assert list(work.iterdir()) == []


def test_analyze_whose_model_fails_to_load_leaves_only_the_migrated_database(tmp_path):
    """The folder and the database come before the model; if the model then fails, the empty
    folder this run made goes again, and the database stays: migrated, without a job (as `poundcam
    db upgrade` leaves it; another run may be using it already)."""
    images = _one_image(tmp_path)
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    work = tmp_path / "work"
    work.mkdir()
    proc = run("analyze", str(images), "--weights", str(tmp_path / "bad.ckpt"), cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert "not a PyTorch checkpoint" in proc.stderr.splitlines()[-1]
    assert [p.name for p in work.iterdir()] == ["poundcam.db"]
    jobs = run("jobs", "--json", cwd=work)
    assert jobs.returncode == 0 and json.loads(jobs.stdout) == [], jobs.stderr


def test_a_file_that_is_not_a_database_is_one_line(tmp_path):
    (tmp_path / "notes.db").write_text("not a database, some notes\n" * 100)
    proc = run("jobs", "--db", f"sqlite:///{tmp_path / 'notes.db'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "not a database" in one_error_line(proc)


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path, official_dir):
    proc = subprocess.Popen(
        poundcam_cmd() + ["model-info", str(official_dir / "last.ckpt")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head` that has read all it wanted, before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == "", err
