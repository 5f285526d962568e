"""Logging set-up: plain text for people, one JSON object per line for log pipelines.

JSON records carry ``job_id`` and ``items`` (item ids) when the call site passes them in
``extra``. Credentials are never logged: nothing here prints the environment or URLs with
passwords (see redact()). one_line() makes an error the one line that a failure report shows
(the CLI, the client's messages, ``poundcam explain``), redacted the same way.
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


ONE_LINE_MAX = 300  # characters of an error's line in a one-line report


def one_line(error: BaseException | str | None, default: str = "no reason given") -> str:
    """An error as one line for a report: the first line of its message that is not blank,
    runs of whitespace made one space, URL passwords hidden (redact, before anything is cut),
    at most ``ONE_LINE_MAX`` characters. For an exception, its message (that of the driver's
    error it wraps, ``.orig``, for SQLAlchemy's), or its type's name when the message is
    empty; for a text, ``default`` when it is empty."""
    if isinstance(error, BaseException):
        text = str(getattr(error, "orig", None) or error)
        default = type(error).__name__
    else:
        text = error or ""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return redact(" ".join(first.split()))[:ONE_LINE_MAX] or default


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


# Loggers whose INFO lines say nothing to an operator (Alembic lists its plugins at every
# migration, botocore says where it found credentials at every start); kept at WARNING unless
# debug logging is asked for.
QUIET_LOGGERS = ("alembic.runtime.plugins", "botocore.credentials")


class ExpectedErrors(logging.Filter):
    """Makes a record of the named loggers (and their children) whose exception is one of
    ``errors`` one line: the exception's reason appended (one_line), no traceback, and at most
    WARNING. For failures the process recovers from by design, logged by libraries that attach
    a traceback and a CRITICAL level to them (Celery and kombu on a lost broker connection):
    an operator's alert on CRITICAL must not fire for a reconnect. Installed on the handler,
    since records of child loggers do not pass their parents' filters; never under debug
    logging, which keeps the tracebacks."""

    def __init__(self, loggers: tuple[str, ...], errors: tuple[type[BaseException], ...]):
        super().__init__()
        self.loggers = loggers
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not isinstance(exc, self.errors):
            return True
        if not any(record.name == n or record.name.startswith(n + ".") for n in self.loggers):
            return True
        record.msg = f"{record.getMessage()} ({one_line(exc)})"
        record.args = None
        record.exc_info = record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def configure_logging(
    json_format: bool = False, level: int = logging.INFO, expected_errors: ExpectedErrors | None = None
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    if expected_errors is not None and level > logging.DEBUG:
        handler.addFilter(expected_errors)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
