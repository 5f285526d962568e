"""Prometheus metrics of a worker, served on POUNDCAM_METRICS_PORT (0: off).

poundcam_items_total{outcome,error_code}  items finished, by outcome (done/failed) and code
poundcam_batch_seconds                    wall time of one message's analysis
poundcam_queue_wait_seconds               time from enqueue to the start of processing
poundcam_images_per_second                rate of the last message
poundcam_gpu_memory_bytes                 peak device memory allocated (CUDA only)
poundcam_model_info{model_id,cam_config}  1 for the loaded model
"""
from __future__ import annotations

import logging

from prometheus_client import (REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, start_http_server)

disable_created_metrics()  # the *_created series only clutter dashboards

log = logging.getLogger(__name__)

BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.items = Counter("poundcam_items_total", "Items finished by outcome and error code",
                             ["outcome", "error_code"], registry=registry)
        self.batch_seconds = Histogram("poundcam_batch_seconds", "Wall time of one message's analysis",
                                       buckets=BATCH_BUCKETS, registry=registry)
        self.queue_wait = Histogram("poundcam_queue_wait_seconds", "Time from enqueue to processing",
                                    buckets=WAIT_BUCKETS, registry=registry)
        self.images_per_second = Gauge("poundcam_images_per_second", "Images/s of the last message",
                                       registry=registry)
        self.gpu_memory = Gauge("poundcam_gpu_memory_bytes", "Peak device memory allocated",
                                registry=registry)
        self.model_info = Gauge("poundcam_model_info", "The loaded model", ["model_id", "cam_config"],
                                registry=registry)

    # the pipeline's observer interface
    def item(self, outcome: str, code: str | None = None) -> None:
        self.items.labels(outcome=outcome, error_code=code or "").inc()

    def batch(self, seconds: float, n: int) -> None:
        self.batch_seconds.observe(seconds)
        if seconds > 0:
            self.images_per_second.set(n / seconds)
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
