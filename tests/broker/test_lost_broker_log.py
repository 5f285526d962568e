"""A lost broker connection is logged by the worker as one WARNING line with its reason."""

from __future__ import annotations

import json
import logging

import pytest
import redis


@pytest.fixture
def worker_logging(capsys):
    """The worker's logging set-up (workers.signals), restored afterwards; yields a function
    that returns the JSON records written so far."""
    from workers.signals import _setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def records():
        return [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    def setup(level=logging.INFO):
        _setup_logging(loglevel=level)
        return records

    yield setup
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def _lost_connection() -> redis.exceptions.ConnectionError:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as exc:
            raise redis.exceptions.ConnectionError("Error while reading from 127.0.0.1:6379") from exc
    except redis.exceptions.ConnectionError as exc:
        return exc


def _log_like_kombu(exc: BaseException) -> None:
    # kombu's Message.ack_log_error, through Celery's request logger
    try:
        raise exc
    except type(exc):
        logging.getLogger("celery.worker.request").critical(
            "Couldn't ack %r, reason:%r", "tag-1", "network:ConnectionError", exc_info=True
        )


def test_a_lost_broker_is_one_warning_line_with_the_reason(worker_logging):
    records = worker_logging()
    _log_like_kombu(_lost_connection())
    [rec] = records()
    assert rec["level"] == "WARNING"
    assert "exc" not in rec
    assert rec["message"] == (
        "Couldn't ack 'tag-1', reason:'network:ConnectionError' (Error while reading from 127.0.0.1:6379)"
    )


def test_debug_logging_keeps_the_traceback(worker_logging):
    records = worker_logging(logging.DEBUG)
    _log_like_kombu(_lost_connection())
    [rec] = [r for r in records() if r["logger"] == "celery.worker.request"]
    assert rec["level"] == "CRITICAL"
    assert "ConnectionResetError" in rec["exc"]


def test_other_failures_keep_their_level_and_traceback(worker_logging):
    records = worker_logging()
    _log_like_kombu(ValueError("a bug"))  # not a lost connection
    try:
        raise ConnectionResetError(104, "reset")
    except ConnectionResetError:
        # a lost connection, but not from the broker's libraries
        logging.getLogger("poundcam.storage").error("upload failed", exc_info=True)
    celery_rec, own_rec = records()
    assert celery_rec["level"] == "CRITICAL" and "ValueError: a bug" in celery_rec["exc"]
    assert own_rec["level"] == "ERROR" and "ConnectionResetError" in own_rec["exc"]
