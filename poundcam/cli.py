"""`poundcam ...`: the command-line entry point.

Each command group lives in its own module under poundcam/commands/ and registers its
sub-commands with ``register(subparsers)``; a handler returns the process exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import PoundcamError
from .logs import configure_logging

COMMAND_MODULES = (
    "poundcam.commands.model",
    "poundcam.commands.db",
    "poundcam.commands.pipeline",
    "poundcam.commands.review",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poundcam",
        description="PoundNet real/fake detection with faithful comparative CAMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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
    except PoundcamError as exc:
        print(f"poundcam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
