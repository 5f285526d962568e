"""Worker start-up and shut-down: load the model before taking messages, serve metrics."""

from __future__ import annotations

import logging
import os

import redis
from celery import signals

from poundcam.logs import ExpectedErrors, configure_logging

from . import runtime
from .transport import EntryGuard, install_guard

log = logging.getLogger(__name__)


# A lost broker connection (a Redis restart or failover, a network cut) is one the worker
# recovers from: Celery reconnects, and a message it could not acknowledge is delivered again
# and finds its items finished. Celery and kombu log it with a traceback, "Couldn't ack" at
# CRITICAL; here it is one WARNING line with the reason (tracebacks stay under --loglevel DEBUG).
LOST_BROKER = ExpectedErrors(
    loggers=("celery", "kombu"),
    errors=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, TimeoutError),
)


@signals.setup_logging.connect
def _setup_logging(loglevel=logging.INFO, **_):
    configure_logging(json_format=True, level=loglevel or logging.INFO, expected_errors=LOST_BROKER)


@signals.worker_init.connect
def _serve_metrics(**_):
    settings = runtime.settings()
    install_guard(EntryGuard(settings, on_refused=runtime.metrics().dead_letter))
    runtime.metrics().serve(settings.metrics_port)


@signals.worker_ready.connect
def _warm_up(**_):
    """Load the model now, not on the first message. A worker that cannot load its model
    (missing weights, a bad checkpoint) exits at once with the reason, instead of taking
    messages it cannot process; the orchestrator sees it and it never becomes ready."""
    try:
        runtime.context()
    except Exception as exc:
        log.critical("cannot start: %s", exc)
        logging.shutdown()
        os._exit(3)


@signals.worker_process_init.connect
def _warm_up_child(**_):  # prefork pools: each child loads its own model
    runtime.context()


@signals.worker_shutdown.connect
def _shutdown(**_):
    runtime.shutdown()
