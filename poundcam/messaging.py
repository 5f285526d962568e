"""The message contract between producers (client, CLI) and workers.

A message is the JSON payload ``{"job_id": str, "items": [{"item_id": int, "uri": str}, ...]}``
sent as the keyword argument ``message`` of the Celery task ``poundcam.analyze`` on the queue
``poundcam``. Messages carry references, never image bytes; JSON only, never pickle.

A message is a pointer, not an authority: a worker processes only the items the database
holds for the message's job, read from the URIs the database records for them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

QUEUE = "poundcam"
TASK_NAME = "poundcam.analyze"
MAX_JOB_ID_CHARS = 36  # the jobs.id column
MAX_ITEM_ID = 2**63 - 1  # the job_items.id column (BIGINT)


class MessageError(ValueError):
    """A message that does not follow the contract."""


def make_message(job_id: str, items: list[tuple[int, str]]) -> dict[str, Any]:
    """``enqueued_at`` (epoch seconds) lets workers measure how long messages wait."""
    return {
        "job_id": job_id,
        "items": [{"item_id": int(i), "uri": str(u)} for i, u in items],
        "enqueued_at": time.time(),
    }


@dataclasses.dataclass(frozen=True)
class ParsedMessage:
    """A message as a worker reads it: the job, the ``(item_id, uri)`` pairs it names, a
    description of each entry of ``items`` too malformed to name an item, and when it was
    enqueued (epoch seconds; None when absent or not a finite number)."""

    job_id: str
    items: list[tuple[int, str]]
    invalid: list[str]
    enqueued_at: float | None = None


def parse_message(message: Any) -> ParsedMessage:
    """Read a message; a malformed item entry is set aside, not a reason to refuse the rest.

    Raises:
        MessageError: the message itself does not follow the contract (no job id, no list).
    """
    if not isinstance(message, dict):
        raise MessageError("message must be a JSON object")
    job_id, items = message.get("job_id"), message.get("items")
    if (
        not isinstance(job_id, str)
        or not job_id
        or len(job_id) > MAX_JOB_ID_CHARS
        or not (job_id.isascii() and job_id.isprintable())
    ):
        raise MessageError(
            f"message.job_id must be a non-empty string of at most {MAX_JOB_ID_CHARS} "
            "printable ASCII characters"
        )
    if not isinstance(items, list):
        raise MessageError("message.items must be a list")
    out, invalid = [], []
    for n, item in enumerate(items):
        item_id = item.get("item_id") if isinstance(item, dict) else None
        if type(item_id) is not int or not 1 <= item_id <= MAX_ITEM_ID:
            invalid.append(f"items[{n}]: no item_id from 1 to {MAX_ITEM_ID}")
            continue
        uri = item.get("uri")
        out.append((item_id, uri if isinstance(uri, str) else ""))
    return ParsedMessage(job_id, out, invalid, _epoch_seconds(message.get("enqueued_at")))


def _epoch_seconds(value: Any) -> float | None:
    """``enqueued_at`` as a finite float, or None (it only feeds a metric: a bad one is ignored)."""
    if type(value) not in (int, float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return seconds if math.isfinite(seconds) else None


def celery_config(settings) -> dict[str, Any]:
    """Celery settings shared by producers and workers."""
    return {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        "task_routes": {TASK_NAME: {"queue": QUEUE}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Must exceed the worst time a message can take, or Redis redelivers it meanwhile.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }


def make_producer(settings):
    """A Celery app that only sends messages (ingestion services, the CLI)."""
    from celery import Celery

    app = Celery("poundcam-producer")
    app.conf.update(celery_config(settings))
    return app
