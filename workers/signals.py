"""Worker start-up and shut-down: load the model before taking messages, serve metrics."""
from __future__ import annotations

import logging

from celery import signals

from poundcam.logs import configure_logging
from poundcam.settings import Settings

from . import runtime

log = logging.getLogger(__name__)


@signals.setup_logging.connect
def _setup_logging(**_):
    configure_logging(json_format=True)


@signals.worker_init.connect
def _serve_metrics(**_):
    runtime.metrics().serve(Settings.from_env().metrics_port)


@signals.worker_ready.connect
def _warm_up(**_):
    runtime.context()  # load the model now, not on the first message


@signals.worker_process_init.connect
def _warm_up_child(**_):  # prefork pools: each child loads its own model
    runtime.context()


@signals.worker_shutdown.connect
def _shutdown(**_):
    runtime.shutdown()
