"""The Celery application of the workers.

Broker: Redis, through a transport that dead-letters entries a worker cannot run
(workers/transport.py). JSON only; acks late and rejects on worker loss, so a message whose
worker dies is delivered again (analyses are idempotent); prefetch 1, so a busy worker holds
one message. Delayed messages (retries wait for their ETA) are held in memory until their
time, at most ETA_MESSAGES_HELD_MAX of them: Celery raises the prefetch for each, without
bound unless limited, and the queue check refuses an ETA further ahead than any retry waits.
The consumer loop also keeps a heartbeat and runs the sweeper (workers/loop.py).
"""

from __future__ import annotations

from celery import Celery

from poundcam.messaging import QUEUE, TASK_NAME, celery_config
from poundcam.settings import Settings

from .loop import LoopDuties

ETA_MESSAGES_HELD_MAX = 16  # delayed messages a worker holds (each <= POUNDCAM_MAX_MESSAGE_BYTES)

app = Celery("poundcam")
app.conf.update(celery_config(Settings.from_env()))
app.conf.update(
    worker_concurrency=1,
    worker_pool="solo",
    worker_eta_task_limit=ETA_MESSAGES_HELD_MAX,
    worker_send_task_events=True,
    # Celery 6's default, chosen now: with the solo pool no task runs while the consumer handles
    # a lost connection, so nothing is cancelled; False only adds a deprecation warning per loss.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    task_send_sent_event=True,
    # every queue entry is checked before kombu parses it (workers/transport.py)
    broker_transport="workers.transport:GuardedTransport",
)
app.conf.imports = ("workers.tasks", "workers.signals")
app.steps["consumer"].add(LoopDuties)

__all__ = ["QUEUE", "TASK_NAME", "app"]
