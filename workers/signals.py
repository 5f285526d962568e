"""Worker start-up and shut-down: load the model before taking messages, serve metrics."""

from __future__ import annotations

import logging
import os

from celery import signals

from poundcam.logs import configure_logging

from . import runtime
from .transport import EntryGuard, install_guard

log = logging.getLogger(__name__)


@signals.setup_logging.connect
def _setup_logging(**_):
    configure_logging(json_format=True)


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
