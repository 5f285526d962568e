"""What the consumer loop itself does besides taking messages: a heartbeat and the sweeper.

Both run on the consumer's own timer, so they stop when the loop stops. The heartbeat file is
what the liveness probe checks (its age): a worker whose loop is wedged stops touching it even
though its metrics thread still answers. While a message runs (the solo pool runs it inside
the loop), the pipeline touches the heartbeat as items finish (``runtime`` wires it in).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from celery import bootsteps

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10.0


class Heartbeat:
    """Touches a file, at most once per ``min_interval_s``."""

    def __init__(self, path: str | os.PathLike, min_interval_s: float = 1.0):
        self.path = Path(path)
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last < self.min_interval_s:
            return
        self._last = now
        try:
            self.path.touch()
        except OSError as exc:  # a full or read-only /tmp: the probe will say so
            log.warning("heartbeat %s not written: %s", self.path, exc)

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)


class LoopDuties(bootsteps.StartStopStep):
    """A consumer step: the heartbeat every few seconds, the sweeper every few minutes."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.timers: list = []

    def start(self, c):
        from . import runtime

        settings = runtime.settings()
        heartbeat = runtime.heartbeat()
        heartbeat.beat()
        self.timers = [c.timer.call_repeatedly(HEARTBEAT_INTERVAL_S, heartbeat.beat)]
        if settings.sweep_interval_s:
            self.timers.append(c.timer.call_repeatedly(settings.sweep_interval_s, runtime.sweep_once))

    def stop(self, c):
        for entry in self.timers:
            entry.cancel()
        self.timers = []

    shutdown = stop
