"""The message contract between producers (client, CLI) and workers.

A message is the JSON payload ``{"job_id": str, "items": [{"item_id": int, "uri": str}, ...]}``
sent as the keyword argument ``message`` of the Celery task ``poundcam.analyze`` on the queue
``poundcam``. Messages carry references, never image bytes; JSON only, never pickle.
"""
from __future__ import annotations

import time
from typing import Any

QUEUE = "poundcam"
TASK_NAME = "poundcam.analyze"


class MessageError(ValueError):
    """A message that does not follow the contract."""


def make_message(job_id: str, items: list[tuple[int, str]]) -> dict[str, Any]:
    """``enqueued_at`` (epoch seconds) lets workers measure how long messages wait."""
    return {"job_id": job_id, "items": [{"item_id": int(i), "uri": str(u)} for i, u in items],
            "enqueued_at": time.time()}


def parse_message(message: Any) -> tuple[str, list[tuple[int, str]]]:
    if not isinstance(message, dict):
        raise MessageError("message must be a JSON object")
    job_id, items = message.get("job_id"), message.get("items")
    if not isinstance(job_id, str) or not job_id:
        raise MessageError("message.job_id must be a non-empty string")
    if not isinstance(items, list):
        raise MessageError("message.items must be a list")
    out = []
    for n, item in enumerate(items):
        if (not isinstance(item, dict) or not isinstance(item.get("item_id"), int)
                or not isinstance(item.get("uri"), str)):
            raise MessageError(f"message.items[{n}] must be {{item_id: int, uri: str}}")
        out.append((item["item_id"], item["uri"]))
    return job_id, out


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
