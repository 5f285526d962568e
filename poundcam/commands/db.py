"""Database commands: `poundcam db upgrade|downgrade|current` on POUNDCAM_DATABASE_URL."""

from __future__ import annotations

import argparse

from .common import add_db_option


def register(sub) -> None:
    p = sub.add_parser(
        "db",
        help="apply or inspect database migrations",
        description="Alembic migrations of the database at POUNDCAM_DATABASE_URL (or --db).",
    )
    add_db_option(p)
    # --db is also taken after the action (``poundcam db upgrade --db URL``); there it must not
    # reset a --db given before the action, hence no default of its own
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help="database URL")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    up = dbsub.add_parser("upgrade", parents=[after], help="migrate up (default: to the latest revision)")
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    up.set_defaults(handler=_upgrade)

    down = dbsub.add_parser("downgrade", parents=[after], help="migrate down to REVISION ('base': empty)")
    down.add_argument("revision", help="target revision, e.g. base or -1")
    down.set_defaults(handler=_downgrade)

    cur = dbsub.add_parser("current", parents=[after], help="print the revision the database is at")
    cur.set_defaults(handler=_current)


def _url(args) -> str:
    from ..settings import Settings

    return args.db or Settings.from_env().database_url


def _upgrade(args) -> int:
    from ..db.migrate import current, upgrade

    url = _url(args)
    upgrade(url, args.revision)
    print(f"database at {', '.join(current(url)) or 'base'}")
    return 0


def _downgrade(args) -> int:
    from ..db.migrate import current, downgrade

    url = _url(args)
    downgrade(url, args.revision)
    print(f"database at {', '.join(current(url)) or 'base'}")
    return 0


def _current(args) -> int:
    from ..db import require_database
    from ..db.migrate import current, head

    url = _url(args)
    require_database(url)  # reading: a missing SQLite file is an error, not a new empty one
    revs = current(url)
    latest = head()
    state = "up to date" if revs == (latest,) else f"head is {latest}"
    print(f"{', '.join(revs) or 'base'} ({state})")
    return 0
