"""`poundcam queue-exporter`: the queue's length for Prometheus, from the broker."""

from __future__ import annotations

import threading

from .common import port


def register(sub) -> None:
    p = sub.add_parser(
        "queue-exporter",
        help="serve the queue's length as Prometheus metrics",
        description="Serve poundcam_queue_messages and poundcam_broker_up on PORT/metrics, read "
        "from POUNDCAM_BROKER_URL at each scrape. One per fleet: workers scale to "
        "zero, so the queue cannot be measured by them.",
    )
    p.add_argument("--port", type=port, default=9809, help="HTTP port (default 9809)")
    p.set_defaults(handler=_queue_exporter)


def _queue_exporter(args) -> int:
    from ..messaging import QUEUE
    from ..metrics import serve_queue_metrics
    from ..settings import Settings

    settings = Settings.from_env()
    serve_queue_metrics(settings.broker_url, args.port, queue=QUEUE)  # logs where it serves
    threading.Event().wait()  # serve until stopped (SIGTERM, Ctrl-C)
    return 0
