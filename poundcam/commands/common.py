"""What several commands share: the ``--db`` option and the settings and client it selects."""

from __future__ import annotations

import argparse


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """``--db URL``: the database a command reads or writes, instead of POUNDCAM_DATABASE_URL."""
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="database URL (default POUNDCAM_DATABASE_URL, else sqlite:///./poundcam.db)",
    )


def settings_for(args: argparse.Namespace, **overrides):
    """Settings from the environment with the command line's ``--db`` and ``overrides``."""
    from ..settings import Settings

    if getattr(args, "db", None):
        overrides["database_url"] = args.db
    return Settings.from_env(**overrides)


def client_for(args: argparse.Namespace, **overrides):
    """A :class:`poundcam.client.Client` on :func:`settings_for`'s settings."""
    from ..client import Client

    return Client(settings_for(args, **overrides))
