"""Security properties that no schema checks: no pickle on the wire, credentials never in
logs, object keys validated before anything is written or read."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = sorted(p for folder in ("poundcam", "workers", "migrations") for p in (ROOT / folder).rglob("*.py"))
# The one place that unpickles: checkpoint files, through torch.load(weights_only=True) with
# an allow-list (poundcam/model/safe_pickle.py). Nothing that travels between processes.
PICKLE_ALLOWED = {"poundcam/model/safe_pickle.py"}
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_no_pickle_in_code_outside_checkpoint_loading():
    assert len(CODE) > 20
    offenders = []
    for path in CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            if set(names) & UNSAFE_MODULES and _rel(path) not in PICKLE_ALLOWED:
                offenders.append(f"{_rel(path)}:{node.lineno} imports {names}")
            # Celery/kombu serializer settings given as a literal anywhere: json only.
            if isinstance(node, ast.Constant) and node.value in ("pickle", "application/x-python-serialize"):
                offenders.append(f"{_rel(path)}:{node.lineno} names the {node.value!r} serializer")
            # torch.load without weights_only=True would unpickle arbitrary objects.
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                if not (
                    isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                ):
                    offenders.append(f"{_rel(path)}:{node.lineno} torch.load without weights_only=True")
    assert offenders == []


def test_celery_speaks_json_only():
    from poundcam.messaging import celery_config, make_producer
    from poundcam.settings import Settings

    conf = celery_config(Settings.from_env({}))
    assert conf["task_serializer"] == "json"
    assert conf["accept_content"] == ["json"]
    assert conf["result_serializer"] == "json"
    producer = make_producer(Settings.from_env({}))
    assert producer.conf.task_serializer == "json"
    assert list(producer.conf.accept_content) == ["json"]


def test_worker_app_speaks_json_only():
    from workers.celery_app import app

    assert app.conf.task_serializer == "json"
    assert list(app.conf.accept_content) == ["json"]
    assert app.conf.result_serializer == "json"


@pytest.mark.parametrize(
    "text, secret",
    [
        ("postgresql://poundcam:s3cr3t-pw@db.internal:5432/poundcam", "s3cr3t-pw"),
        ("connecting to postgresql://u:p%40ss@h/db failed", "p%40ss"),
        ("amqp://guest:hunter2@rabbit//", "hunter2"),
    ],
)
def test_redact_hides_url_passwords(text, secret):
    from poundcam.logs import redact

    out = redact(text)
    assert secret not in out and "***" in out


def test_redact_hides_password_of_url_without_user():
    from poundcam.logs import redact

    assert "hunter2" not in redact("broker redis://:hunter2@redis:6379/0 unreachable")


def test_one_line_is_the_first_line_redacted_then_cut():
    """One function makes every one-line error report (CLI, client, explain, database)."""
    import sqlalchemy as sa

    from poundcam.logs import ONE_LINE_MAX, one_line

    url = "postgresql://poundcam:s3cr3t-pw@db.internal:5432/poundcam"
    assert one_line(ConnectionError(f"\n  could not   connect to {url}\ndetail")) == (
        "could not connect to postgresql://poundcam:***@db.internal:5432/poundcam"
    )
    wrapped = sa.exc.OperationalError("SELECT 1", {}, ConnectionError(f"no route to {url}"))
    assert one_line(wrapped) == "no route to postgresql://poundcam:***@db.internal:5432/poundcam"
    assert one_line(TimeoutError()) == "TimeoutError"
    assert one_line("  \n source changed\n trace") == "source changed"
    assert one_line(None) == one_line("") == "no reason given"
    # a URL across the cut: hidden before the line is cut, so no part of the password shows
    long = one_line(ValueError("x" * (ONE_LINE_MAX - 30) + f" {url}"))
    assert len(long) == ONE_LINE_MAX and "s3cr" not in long and long.endswith("poundcam:***@db.")


WORKER_LOGGING = """
import logging, sys
from workers.signals import _setup_logging
_setup_logging()  # what the Celery setup_logging signal runs in a worker
url = sys.argv[1]
log = logging.getLogger("workers.tasks")
log.warning("database %s unreachable", url, extra={"job_id": "j1", "items": [1, 2]})
try:
    raise ConnectionError(f"could not connect to {url}")
except ConnectionError:
    log.exception("batch failed")
"""


def test_worker_log_lines_redact_database_passwords():
    """A worker process's log lines (its own logging set-up, JSON on stderr) with a database
    URL in the message and in a traceback."""
    import subprocess
    import sys

    url = "postgresql://poundcam:s3cr3t-pw@db.internal:5432/poundcam"
    proc = subprocess.run(
        [sys.executable, "-c", WORKER_LOGGING, url], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    assert lines[0]["message"] == ("database postgresql://poundcam:***@db.internal:5432/poundcam unreachable")
    assert lines[0]["job_id"] == "j1" and lines[0]["items"] == [1, 2]
    assert "poundcam:***@db.internal" in lines[1]["exc"]


def test_settings_repr_is_not_logged_by_the_worker():
    """Settings carry the database and broker URLs; the worker's start-up never logs them."""
    src = "\n".join(
        (ROOT / p).read_text()
        for p in ("workers/signals.py", "workers/runtime.py", "workers/tasks.py", "poundcam/runtime.py")
    )
    for pattern in ("database_url)", "broker_url)", "settings)", "os.environ)"):
        assert f"log.info({pattern}" not in src.replace(" ", "")


@pytest.mark.parametrize(
    "args",
    [
        ("heatmaps/", "a" * 64, "..", "cam", "fake_overlay"),
        ("heatmaps/", "a" * 64, "model", "../../etc", "fake_overlay"),
        ("heatmaps/", "a" * 64, "model", "cam", "../fake_overlay"),
        ("heatmaps/", "a" * 64, "model", "cam", "fake/overlay"),
        ("heatmaps/", "a" * 64, "model", "cam", ".hidden"),
        ("heatmaps/", "../" + "a" * 61, "model", "cam", "fake_overlay"),
        ("heatmaps/", "A" * 64, "model", "cam", "fake_overlay"),
        ("/abs/", "a" * 64, "model", "cam", "fake_overlay"),
        ("../up/", "a" * 64, "model", "cam", "fake_overlay"),
        ("heatmaps/", "a" * 64, "model\n", "cam", "fake_overlay"),
        ("heatmaps/", "a" * 64, "", "cam", "fake_overlay"),
    ],
)
def test_heatmap_keys_are_validated(args):
    from poundcam.constants import ErrorCode
    from poundcam.storage import StorageError, heatmap_key

    with pytest.raises(StorageError) as info:
        heatmap_key(*args)
    assert info.value.code == ErrorCode.INVALID_KEY


def test_heatmap_key_shape():
    from poundcam.storage import heatmap_key

    sha = "0f" * 32
    assert (
        heatmap_key("heatmaps", sha, "pn-1", "gradcam-ln_1-L9-contrastive", "fake_overlay")
        == f"heatmaps/pn-1/gradcam-ln_1-L9-contrastive/0f/{sha}/fake_overlay.png"
    )


@pytest.mark.parametrize(
    "key", ["../x.png", "a/../../x.png", "/etc/passwd", "a//b.png", "a\\b.png", "a/\x00.png", "a/"]
)
def test_stores_refuse_unsafe_keys(key, tmp_path):
    from poundcam.constants import ErrorCode
    from poundcam.storage import LocalStore, StorageError

    store = LocalStore(tmp_path / "root")
    for op in (lambda: store.put(key, b"x"), lambda: store.uri_for(key), lambda: store.presigned_url(key)):
        with pytest.raises(StorageError) as info:
            op()
        assert info.value.code == ErrorCode.INVALID_KEY
    assert not any((tmp_path).rglob("x.png"))
