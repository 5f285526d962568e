"""Prometheus metrics: a worker's, served on POUNDCAM_METRICS_PORT (0: off), and the queue's,
served by ``poundcam queue-exporter``.

Worker (one series per worker process):

poundcam_items_total{outcome,error_code}  items finished, by outcome (done/failed) and code
poundcam_images_analyzed_total            images the model analysed (throughput: rate() of it)
poundcam_batch_seconds                    wall time of one message's analysis
poundcam_queue_wait_seconds               time from enqueue to the start of processing
poundcam_gpu_memory_bytes                 peak device memory allocated (CUDA only)
poundcam_model_info{model_id,cam_config}  1 for the loaded model (count(): the workers)
poundcam_dead_letters_total{reason}       queue entries refused and dead-lettered, by reason
poundcam_unbacked_items_total             item ids in messages that the database does not back
poundcam_swept_items_total{outcome}       items the sweeper requeued or failed (abandoned while
                                          running) or resent (queued, their message lost)

Queue (one exporter; read from the broker at each scrape). It is not a worker metric because
the fleet scales to zero: with no worker running, the queue is exactly what must be seen.

poundcam_queue_messages                   messages waiting in the queue (each up to
                                          POUNDCAM_TASK_BATCH_SIZE image references)
poundcam_broker_up                        1 if the broker answered the last scrape, else 0

``METRIC_TYPES`` lists every metric exported, by name and type; the dashboards name only these
(a test checks).
"""

from __future__ import annotations

import logging

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

disable_created_metrics()  # the *_created series only clutter dashboards

# Every metric poundcam exports (the name Prometheus shows, without _bucket/_sum/_count): type.
METRIC_TYPES = {
    "poundcam_items_total": "counter",
    "poundcam_images_analyzed_total": "counter",
    "poundcam_batch_seconds": "histogram",
    "poundcam_queue_wait_seconds": "histogram",
    "poundcam_gpu_memory_bytes": "gauge",
    "poundcam_model_info": "gauge",
    "poundcam_dead_letters_total": "counter",
    "poundcam_unbacked_items_total": "counter",
    "poundcam_swept_items_total": "counter",
    "poundcam_queue_messages": "gauge",
    "poundcam_broker_up": "gauge",
}

log = logging.getLogger(__name__)

BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.items = Counter(
            "poundcam_items_total",
            "Items finished by outcome and error code",
            ["outcome", "error_code"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "poundcam_batch_seconds",
            "Wall time of one message's analysis",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "poundcam_queue_wait_seconds",
            "Time from enqueue to processing",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        # A counter, so that rate() gives the throughput over any window and an idle fleet
        # shows zero (a gauge of each worker's last rate kept showing the last busy value).
        self.images = Counter("poundcam_images_analyzed", "Images the model analysed", registry=registry)
        self.gpu_memory = Gauge(
            "poundcam_gpu_memory_bytes", "Peak device memory allocated", registry=registry
        )
        self.model_info = Gauge(
            "poundcam_model_info", "The loaded model", ["model_id", "cam_config"], registry=registry
        )
        self.dead_letters = Counter(
            "poundcam_dead_letters_total",
            "Queue entries refused and dead-lettered, by reason",
            ["reason"],
            registry=registry,
        )
        self.unbacked_items = Counter(
            "poundcam_unbacked_items_total",
            "Item ids in messages that the database does not back",
            registry=registry,
        )
        self.swept_items = Counter(
            "poundcam_swept_items_total",
            "Items the sweeper requeued or failed (abandoned while running) or resent (message lost)",
            ["outcome"],
            registry=registry,
        )

    # the pipeline's observer interface
    def item(self, outcome: str, code: str | None = None) -> None:
        self.items.labels(outcome=outcome, error_code=code or "").inc()

    def dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason=reason).inc()

    def unbacked(self, n: int) -> None:
        self.unbacked_items.inc(n)

    def batch(self, seconds: float, n: int) -> None:
        self.batch_seconds.observe(seconds)
        self.images.inc(n)
        try:
            import torch

            if torch.cuda.is_available():
                self.gpu_memory.set(torch.cuda.max_memory_allocated())
        except Exception:  # metrics never break the work
            pass

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port)
            log.info("metrics on :%d/metrics", port)


class QueueCollector:
    """Reads the queue's length from the Redis broker at each scrape (``LLEN``, with a short
    timeout). A broker that does not answer gives ``poundcam_broker_up 0`` and no length,
    never a stale one.

    Args:
        broker_url: the ``redis://`` broker URL (POUNDCAM_BROKER_URL).
        queue: the Celery queue, whose Redis list has the same name.
        timeout_s: socket timeout of one scrape's request.
    """

    def __init__(self, broker_url: str, queue: str = "poundcam", timeout_s: float = 2.0):
        import redis

        self.queue = queue
        self.client = redis.Redis.from_url(
            broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("poundcam_broker_up", "1 if the broker answered the last scrape")
        try:
            length = int(self.client.llen(self.queue))
        except Exception as exc:  # noqa: BLE001 - an unreachable broker is a value, not a crash
            log.warning("queue length unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("poundcam_queue_messages", "Messages waiting in the queue", value=length)


def serve_queue_metrics(
    broker_url: str, port: int, queue: str = "poundcam", registry: CollectorRegistry | None = None
) -> CollectorRegistry:
    """Serve the queue's metrics on ``port`` (in a thread); returns the registry used."""
    registry = registry or CollectorRegistry()
    registry.register(QueueCollector(broker_url, queue))
    start_http_server(port, registry=registry)
    log.info("queue metrics on :%d/metrics", port)
    return registry
