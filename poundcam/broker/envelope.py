"""Checks a raw entry of the Redis queue list before kombu and Celery parse it.

kombu's Redis transport and Celery's consumer end the worker process on some malformed
entries (not JSON, a JSON list, a body that is not base64, a body that is not Celery's
three-part body), and silently drop others (a content type they do not accept). Every entry a
worker takes from the queue is checked here first, against the one shape our producers send:
Celery's message protocol 2, JSON, one ``poundcam.analyze`` call with ``message`` as its only
argument. Anything else is refused with a reason from :data:`REASONS` and goes to the
dead-letter list (:mod:`poundcam.broker.deadletters`) instead of the worker.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
import time
from typing import Any

from ..constants import ETA_AHEAD_MAX_S, DeadLetterReason, values
from ..messaging import TASK_NAME, MessageError, parse_message

# Why an entry was refused (poundcam.constants.DeadLetterReason).
OVERSIZED = DeadLetterReason.OVERSIZED.value
NOT_JSON = DeadLetterReason.NOT_JSON.value
BAD_ENVELOPE = DeadLetterReason.BAD_ENVELOPE.value
BAD_BODY_ENCODING = DeadLetterReason.BAD_BODY_ENCODING.value
UNSUPPORTED_CONTENT = DeadLetterReason.UNSUPPORTED_CONTENT_TYPE.value
BAD_BODY = DeadLetterReason.BAD_BODY.value
UNKNOWN_TASK = DeadLetterReason.UNKNOWN_TASK.value
BAD_ARGUMENTS = DeadLetterReason.BAD_ARGUMENTS.value
BAD_MESSAGE = DeadLetterReason.BAD_MESSAGE.value
REASONS = values(DeadLetterReason)

# Parts of the embedded workflow that would make Celery send further tasks.
_EMBED_WORKFLOW = ("callbacks", "errbacks", "chain", "chord")


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why an entry cannot be delivered: a reason from :data:`REASONS` and a short detail."""

    reason: str
    detail: str


class _Refused(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.refusal = Refusal(reason, detail[:300])


def check_entry(raw: bytes | str, max_bytes: int) -> Refusal | None:
    """``None`` if ``raw`` is a message a worker can run, else why not.

    Args:
        raw: the entry exactly as it was in the Redis list.
        max_bytes: the largest entry accepted.

    Returns:
        ``None`` for a deliverable entry, otherwise the :class:`Refusal`.
    """
    try:
        _check(raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw, max_bytes)
    except _Refused as exc:
        return exc.refusal
    return None


def message_of(raw: bytes, max_bytes: int) -> dict | None:
    """The ``message`` argument of a deliverable entry, else ``None``."""
    try:
        return _check(raw, max_bytes)
    except _Refused:
        return None


def _check(raw: bytes, max_bytes: int) -> dict:
    if len(raw) > max_bytes:
        raise _Refused(OVERSIZED, f"{len(raw)} bytes, over the limit of {max_bytes}")
    envelope = _json(raw, NOT_JSON, "the entry")
    _check_envelope(envelope)
    body = _decode_body(envelope)
    headers = envelope["headers"]
    if headers.get("task") != TASK_NAME:
        raise _Refused(UNKNOWN_TASK, f"task {_short(headers.get('task'))}, not {TASK_NAME!r}")
    _check_headers(headers)
    args, kwargs, embed = _three_parts(body)
    _check_arguments(args, kwargs, embed)
    try:
        parse_message(kwargs["message"])
    except MessageError as exc:
        raise _Refused(BAD_MESSAGE, str(exc)) from None
    return kwargs["message"]


def _json(data: bytes, reason: str, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Refused(reason, f"{what} is not UTF-8 JSON: {exc}") from None


def _check_envelope(envelope: Any) -> None:
    if not isinstance(envelope, dict):
        raise _Refused(BAD_ENVELOPE, f"a JSON {type(envelope).__name__}, not an object")
    props, headers = envelope.get("properties"), envelope.get("headers")
    if not isinstance(props, dict) or not isinstance(headers, dict):
        raise _Refused(BAD_ENVELOPE, "properties and headers must be objects")
    if not isinstance(props.get("delivery_tag"), str) or not props["delivery_tag"]:
        raise _Refused(BAD_ENVELOPE, "properties.delivery_tag must be a non-empty string")
    info = props.get("delivery_info")
    if not isinstance(info, dict) or not all(
        isinstance(info.get(k), str) for k in ("exchange", "routing_key")
    ):
        raise _Refused(BAD_ENVELOPE, "properties.delivery_info needs exchange and routing_key")
    priority = props.get("priority")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 255):
        raise _Refused(BAD_ENVELOPE, "properties.priority must be an integer 0-255")
    if not isinstance(envelope.get("body"), str):
        raise _Refused(BAD_ENVELOPE, "body must be a string")
    if "compression" in headers:  # kombu would decompress before any limit applies
        raise _Refused(BAD_ENVELOPE, "compressed bodies are not accepted")


def _decode_body(envelope: dict) -> Any:
    content_type = envelope.get("content-type")
    if content_type != "application/json":
        raise _Refused(UNSUPPORTED_CONTENT, f"content type {_short(content_type)}")
    if envelope.get("content-encoding") != "utf-8":
        raise _Refused(UNSUPPORTED_CONTENT, f"content encoding {_short(envelope.get('content-encoding'))}")
    if envelope["properties"].get("body_encoding") != "base64":
        raise _Refused(BAD_BODY_ENCODING, "properties.body_encoding must be base64")
    try:
        data = base64.b64decode(envelope["body"].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise _Refused(BAD_BODY_ENCODING, f"the body is not base64: {exc}") from None
    return _json(data, BAD_BODY, "the body")


def _check_headers(headers: dict) -> None:
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        raise _Refused(BAD_ENVELOPE, "headers.id must be a non-empty string")
    if headers.get("expires") is not None:
        # Celery drops an expired message unseen, and its items would stay queued
        raise _Refused(BAD_ENVELOPE, "headers.expires is not accepted (our producers never set it)")
    if headers.get("eta") is not None:
        _check_eta(headers["eta"])
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list)
        and len(limits) == 2
        and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0) for v in limits
        )
    ):
        raise _Refused(BAD_ENVELOPE, "headers.timelimit must be [soft, hard] seconds")
    retries = headers.get("retries")
    if retries is not None and (type(retries) is not int or retries < 0):
        raise _Refused(BAD_ENVELOPE, "headers.retries must be a non-negative integer")
    for name in ("shadow", "root_id", "parent_id", "group", "argsrepr", "kwargsrepr", "origin"):
        if headers.get(name) is not None and not isinstance(headers[name], str):
            raise _Refused(BAD_ENVELOPE, f"headers.{name} must be a string")


def _check_eta(value: Any) -> None:
    """An ETA that Celery's worker can read, at most ETA_AHEAD_MAX_S ahead: the worker holds a
    delayed message in memory until its time (our retries wait at most RETRY_DELAY_MAX_S), and
    drops one whose time it cannot convert, items and all."""
    from celery.utils.time import maybe_iso8601  # the parser the worker uses

    if not isinstance(value, str):
        raise _Refused(BAD_ENVELOPE, "headers.eta is not an ISO 8601 time")
    try:
        eta = maybe_iso8601(value)
        if eta is None:
            raise ValueError("no time given")
        if eta.tzinfo is None:  # Celery reads a naive ETA as UTC
            eta = eta.replace(tzinfo=datetime.timezone.utc)
    except (ValueError, OverflowError):
        raise _Refused(BAD_ENVELOPE, "headers.eta is not an ISO 8601 time") from None
    try:
        stamp = eta.astimezone().timestamp()  # the worker's conversion (to the system zone)
    except (OverflowError, ValueError, OSError):
        raise _Refused(BAD_ENVELOPE, "headers.eta is out of range") from None
    ahead = stamp - time.time()
    if ahead > ETA_AHEAD_MAX_S:
        raise _Refused(
            BAD_ENVELOPE, f"headers.eta is {ahead:.0f} s ahead, more than the {ETA_AHEAD_MAX_S:.0f} s allowed"
        )


def _three_parts(body: Any) -> tuple[Any, Any, Any]:
    if not isinstance(body, list) or len(body) != 3:
        raise _Refused(BAD_BODY, "the body is not Celery's [args, kwargs, embed]")
    return body[0], body[1], body[2]


def _check_arguments(args: Any, kwargs: Any, embed: Any) -> None:
    if args != [] or not isinstance(kwargs, dict) or set(kwargs) != {"message"}:
        raise _Refused(BAD_ARGUMENTS, "the task takes exactly one argument, message=...")
    if not isinstance(embed, dict) or any(embed.get(k) for k in _EMBED_WORKFLOW):
        raise _Refused(BAD_ARGUMENTS, "callbacks, errbacks, chains and chords are not accepted")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
