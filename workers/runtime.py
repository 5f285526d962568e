"""Per-process state of a worker: the model, analyzer, stores and sessions, loaded once, and
checked before the worker takes any message."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import sqlalchemy as sa

from poundcam.metrics import WorkerMetrics
from poundcam.runtime import make_analyzer, make_context
from poundcam.settings import Settings

from .loop import Heartbeat

log = logging.getLogger(__name__)

PROBE_KEY = ".poundcam-write-check"  # under the heatmap prefix

_lock = threading.Lock()
_settings: Settings | None = None
_context = None
_metrics: WorkerMetrics | None = None
_heartbeat: Heartbeat | None = None


def settings() -> Settings:
    """The settings of this process, read from the environment once."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def metrics() -> WorkerMetrics:
    global _metrics
    if _metrics is None:
        _metrics = WorkerMetrics()
    return _metrics


def heartbeat() -> Heartbeat:
    global _heartbeat
    if _heartbeat is None:
        _heartbeat = Heartbeat(settings().heartbeat_file)
    return _heartbeat


class _Observer:
    """The pipeline's observer: metrics, and a heartbeat as items finish (a long message runs
    inside the consumer loop, whose own timer waits meanwhile)."""

    def __init__(self, worker_metrics: WorkerMetrics, beat: Heartbeat):
        self.metrics, self.heartbeat = worker_metrics, beat

    def item(self, outcome: str, code: str | None = None) -> None:
        self.metrics.item(outcome, code)
        self.heartbeat.beat()

    def batch(self, seconds: float, n: int) -> None:
        self.metrics.batch(seconds, n)
        self.heartbeat.beat()

    def unbacked(self, n: int) -> None:
        self.metrics.unbacked(n)


def context():
    """The pipeline context of this process; the model is loaded and the stores and database
    checked on first call (any failure raises: the worker must not take messages)."""
    global _context
    with _lock:
        if _context is None:
            analyzer = make_analyzer(settings())
            ctx = make_context(settings(), analyzer, observer=_Observer(metrics(), heartbeat()))
            try:
                check_ready(ctx)
            except BaseException:
                ctx.close()
                analyzer.close()
                raise
            _context = ctx
            metrics().model_info.labels(model_id=analyzer.model_id, cam_config=analyzer.cam_config_id).set(1)
            Path(settings().ready_file).write_text(f"{analyzer.model_id}\n")
            log.info("worker ready: model %s, CAM %s", analyzer.model_id, analyzer.cam_config_id)
        return _context


def check_ready(ctx) -> None:
    """The database answers and the stores can be read and written, or raise."""
    with ctx.sessions() as s:
        s.execute(sa.text("SELECT 1"))
    ctx.source.check(ctx.heatmap_prefix + PROBE_KEY)
    if ctx.sink is not ctx.source:
        ctx.sink.check(ctx.heatmap_prefix + PROBE_KEY)


def sweep_once() -> None:
    """The periodic sweep (a consumer timer): logs instead of raising."""
    from poundcam.broker.sweeper import sweep

    if _context is None:
        return
    try:
        swept = sweep(settings(), _context.sessions, take_turns=True)
    except Exception as exc:  # noqa: BLE001 - an outage; the next sweep tries again
        log.warning("sweep failed: %s", exc)
        return
    metrics().swept_items.labels(outcome="requeued").inc(sum(len(v) for v in swept.requeued.values()))
    metrics().swept_items.labels(outcome="failed").inc(len(swept.failed))
    metrics().swept_items.labels(outcome="resent").inc(sum(len(v) for v in swept.resent.values()))


def shutdown():
    global _context
    with _lock:
        if _context is not None:
            _context.analyzer.close()
            _context.close()
            _context = None
        Path(settings().ready_file).unlink(missing_ok=True)
        heartbeat().stop()
