"""`poundcam ...`: the command-line entry point.

Each command group lives in its own module under poundcam/commands/ and registers its
sub-commands with ``register(subparsers)``; a handler returns the process exit code.

Failures are handled here, once for every command: an expected failure (a
:class:`~poundcam.errors.PoundcamError`, or one of the library exceptions in ``EXPLAIN`` such
as an unreachable database or broker) is printed as one line, ``poundcam: error: ...``, and the
process exits with the error's ``exit_code`` (2, or 75 when a service is unavailable and a
later try may succeed). ``--debug`` prints the traceback before that line. Any other exception
is a bug, and its traceback is printed as Python does.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from .errors import PoundcamError, UnavailableError
from .logs import configure_logging, one_line, redact

COMMAND_MODULES = (
    "poundcam.commands.model",
    "poundcam.commands.db",
    "poundcam.commands.pipeline",
    "poundcam.commands.queue",
    "poundcam.commands.review",
    "poundcam.commands.metrics",
    "poundcam.commands.render",
    "poundcam.commands.explain",
    "poundcam.commands.calibrate",
)

USAGE_EXIT = 2
UNAVAILABLE_EXIT = UnavailableError.exit_code


# What a database error's reason says -> what to do about it (PostgreSQL's and SQLite's words).
DATABASE_HINTS = (
    (r'database "[^"]*" does not exist', "; create the database, then `poundcam db upgrade`"),
    (r'relation "[^"]*" does not exist|no such table', "; `poundcam db upgrade` creates the tables"),
    (r'role "[^"]*" does not exist|password authentication failed', "; check the user and password"),
    (r"(?i)connection refused|timeout expired|timed out", "; is the server up?"),
)


def _database(exc: BaseException) -> tuple[str, int]:
    reason = one_line(exc)
    hint = next((h for pattern, h in DATABASE_HINTS if re.search(pattern, reason)), "")
    return f"database: {reason} (check POUNDCAM_DATABASE_URL or --db{hint})", UNAVAILABLE_EXIT


def _not_a_database(exc: BaseException) -> tuple[str, int] | None:
    """A file that SQLite cannot read as a database (any other DatabaseError is a bug)."""
    reason = one_line(exc)
    if "file is not a database" not in reason:
        return None
    return f"database: {reason} (check POUNDCAM_DATABASE_URL or --db)", USAGE_EXIT


def _broker(exc: BaseException) -> tuple[str, int]:
    return (f"cannot reach the broker: {one_line(exc)} (check POUNDCAM_BROKER_URL)", UNAVAILABLE_EXIT)


def _s3(exc: BaseException) -> tuple[str, int]:
    return (
        f"S3: {one_line(exc)} (check POUNDCAM_S3_ENDPOINT_URL and the AWS_* credentials)",
        UNAVAILABLE_EXIT,
    )


def _os_error(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}", USAGE_EXIT
    return one_line(exc), USAGE_EXIT


# Library exceptions that are expected failures, by the qualified name of a class in their MRO
# (names, so that the CLI imports none of these libraries to recognize them). The first class
# of an exception's MRO found here whose function explains it does (a function may decline with
# None: the next class of the MRO is tried).
EXPLAIN: dict[str, Callable[[BaseException], tuple[str, int] | None]] = {
    "sqlalchemy.exc.OperationalError": _database,
    "sqlalchemy.exc.InterfaceError": _database,
    "sqlalchemy.exc.ProgrammingError": _database,
    "sqlalchemy.exc.DatabaseError": _not_a_database,
    "kombu.exceptions.OperationalError": _broker,
    "redis.exceptions.ConnectionError": _broker,
    "redis.exceptions.TimeoutError": _broker,
    "botocore.exceptions.NoCredentialsError": _s3,
    "botocore.exceptions.EndpointConnectionError": _s3,
    "builtins.OSError": _os_error,
}


def explain(exc: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` for an expected failure; None for a bug."""
    if isinstance(exc, PoundcamError):
        return redact(str(exc)) or type(exc).__name__, exc.exit_code
    for cls in type(exc).__mro__:
        how = EXPLAIN.get(f"{cls.__module__}.{cls.__qualname__}")
        explained = how(exc) if how is not None else None
        if explained is not None:
            return explained
    return None


class OneLineErrors(argparse.ArgumentParser):
    """argparse with its usage errors as the one line of every expected failure: argparse
    prints the whole usage (a dozen lines for ``analyze``) above the reason. The subcommands'
    parsers are of this class too (argparse makes them of their parent's)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("poundcam").strip()
        where = f"{command}: " if command else ""
        self.exit(USAGE_EXIT, f"poundcam: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="poundcam", description="PoundNet real/fake detection with faithful comparative CAMs."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of a failure, not only its one-line reason"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command group not installed in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`poundcam ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process the pipe ended
    except Exception as exc:
        explained = explain(exc)
        if explained is None:
            raise  # a bug: its traceback is what a report needs
        message, code = explained
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        print(f"poundcam: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
