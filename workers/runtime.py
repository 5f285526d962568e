"""Per-process state of a worker: the model, analyzer, stores and sessions, loaded once."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from poundcam.metrics import WorkerMetrics
from poundcam.runtime import make_analyzer, make_context
from poundcam.settings import Settings

log = logging.getLogger(__name__)

READY_FILE = Path(os.environ.get("POUNDCAM_READY_FILE", "/tmp/poundcam-ready"))

_lock = threading.Lock()
_context = None
_metrics: WorkerMetrics | None = None


def metrics() -> WorkerMetrics:
    global _metrics
    if _metrics is None:
        _metrics = WorkerMetrics()
    return _metrics


def context():
    """The pipeline context of this process; the model is loaded on first call."""
    global _context
    with _lock:
        if _context is None:
            settings = Settings.from_env()
            analyzer = make_analyzer(settings)
            _context = make_context(settings, analyzer, observer=metrics())
            metrics().model_info.labels(model_id=analyzer.model_id,
                                        cam_config=analyzer.cam_config_id).set(1)
            READY_FILE.write_text(f"{analyzer.model_id}\n")
            log.info("worker ready: model %s, CAM %s", analyzer.model_id, analyzer.cam_config_id)
        return _context


def shutdown():
    global _context
    with _lock:
        if _context is not None:
            _context.analyzer.close()
            _context.close()
            _context = None
        READY_FILE.unlink(missing_ok=True)
