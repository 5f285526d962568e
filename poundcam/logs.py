"""Logging set-up: plain text for people, one JSON object per line for log pipelines.

JSON records carry ``job_id`` and ``items`` (item ids) when the call site passes them in
``extra``. Credentials are never logged: nothing here prints the environment or URLs with
passwords (see redact()).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_EXTRA = ("job_id", "items", "item_id", "uri", "error_code")
_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")


def redact(text: str) -> str:
    """Hide passwords in URLs such as postgresql://user:secret@host/db."""
    return _CREDENTIALS.sub(r"\1***@", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in _EXTRA:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(json_format: bool = False, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
