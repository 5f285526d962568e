"""Raw queue entries a hostile or broken producer could push, each with the reason a worker
must dead-letter it for; and forged (well-formed) messages. Shared by the integration tests
and benchmarks/chaos.py.
"""

from __future__ import annotations

import base64
import json
import pickle

from poundcam.broker import envelope
from poundcam.messaging import QUEUE, TASK_NAME, celery_config, make_message


def genuine_entry(message: dict | None = None, **options) -> bytes:
    """``message`` (default: a one-item message) as our producer writes it into the Redis list,
    sent with Celery's ``options`` (e.g. ``countdown``); made with kombu's in-memory transport,
    which uses the same envelope as its Redis transport."""
    from celery import Celery

    from poundcam.settings import Settings

    app = Celery("poison-producer")
    app.conf.update(celery_config(Settings.from_env({})))
    app.conf.broker_url = "memory://"
    if message is None:
        message = make_message("00000000-0000-0000-0000-000000000000", [(1, "s3://x/y")])
    with app.connection_for_write() as conn:
        sent = app.send_task(TASK_NAME, kwargs={"message": message}, queue=QUEUE, connection=conn, **options)
        # kombu's in-memory broker is one per process: messages other code sent to it before
        # (a client under test) come out first; this entry is the one with the id just sent
        while (payload := conn.default_channel._get(QUEUE))["headers"]["id"] != sent.id:
            pass
    return json.dumps(payload).encode()


def edit(raw: bytes, change) -> bytes:
    env = json.loads(raw)
    change(env)
    return json.dumps(env).encode()


def with_body(raw: bytes, body) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return edit(raw, lambda e: e.update(body=base64.b64encode(data).decode()))


def poison_entries(max_message_bytes: int = 1 << 20) -> dict[str, tuple[bytes, str]]:
    """``{name: (raw entry, dead-letter reason)}``: one entry of every kind."""
    g = genuine_entry()
    pickled = base64.b64encode(pickle.dumps(((), {"message": {}}, {}))).decode()
    return {
        "not_json": (b"\x80\x81 this is not json", envelope.NOT_JSON),
        "json_list": (b"[1, 2, 3]", envelope.BAD_ENVELOPE),
        "json_string": (b'"hello"', envelope.BAD_ENVELOPE),
        "no_properties": (b'{"body": "e30=", "headers": {}}', envelope.BAD_ENVELOPE),
        "bad_base64": (edit(g, lambda e: e.update(body="!!! not base64 !!!")), envelope.BAD_BODY_ENCODING),
        "not_three_parts": (with_body(g, {"message": {}}), envelope.BAD_BODY),
        "unknown_task": (edit(g, lambda e: e["headers"].update(task="os.system")), envelope.UNKNOWN_TASK),
        "pickle": (
            edit(
                g,
                lambda e: e.update(
                    {
                        "content-type": "application/x-python-serialize",
                        "content-encoding": "binary",
                        "body": pickled,
                    }
                ),
            ),
            envelope.UNSUPPORTED_CONTENT,
        ),
        "yaml": (
            edit(g, lambda e: e.update({"content-type": "application/x-yaml"})),
            envelope.UNSUPPORTED_CONTENT,
        ),
        "extra_arguments": (with_body(g, [["rm"], {"message": {}}, {}]), envelope.BAD_ARGUMENTS),
        "callback": (
            with_body(g, [[], {"message": make_message("j", [])}, {"callbacks": [{"task": "x"}]}]),
            envelope.BAD_ARGUMENTS,
        ),
        "bad_message": (with_body(g, [[], {"message": {"job": 1}}, {}]), envelope.BAD_MESSAGE),
        "bad_eta": (edit(g, lambda e: e["headers"].update(eta="soon")), envelope.BAD_ENVELOPE),
        # held in the worker's memory for ever (Celery raises its prefetch for each)
        "far_eta": (
            edit(g, lambda e: e["headers"].update(eta="2999-01-01T00:00:00+00:00")),
            envelope.BAD_ENVELOPE,
        ),
        # Celery cannot convert it, and drops the message with its items left queued
        "eta_out_of_range": (
            edit(g, lambda e: e["headers"].update(eta="0001-01-01T00:00:00+14:00")),
            envelope.BAD_ENVELOPE,
        ),
        # Celery drops an expired message unseen, its items left queued
        "expired": (
            edit(g, lambda e: e["headers"].update(expires="2000-01-01T00:00:00+00:00")),
            envelope.BAD_ENVELOPE,
        ),
        "job_id_nul": (
            with_body(g, [[], {"message": make_message("job\x00", [])}, {}]),
            envelope.BAD_MESSAGE,
        ),
        "job_id_surrogate": (
            with_body(g, [[], {"message": make_message("job\ud800", [])}, {}]),
            envelope.BAD_MESSAGE,
        ),
        "oversized": (g + b" " * max_message_bytes, envelope.OVERSIZED),
    }
