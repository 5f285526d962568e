"""Engines and sessions: PostgreSQL in production, SQLite embedded.

SQLite runs in WAL mode with a busy timeout so that readers (a reviewer's query) do not block
the writer and two writers wait for each other instead of failing; PostgreSQL connections are
checked before use so that a restarted server costs a reconnect, not an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from ..logs import one_line, redact
from ..settings import SettingsError

SQLITE_BUSY_TIMEOUT_S = 30.0


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for ``url`` with the settings poundcam relies on; ``kwargs`` go to
    ``sqlalchemy.create_engine``. ``postgres://``, a common spelling that SQLAlchemy no longer
    reads, is read as ``postgresql://``.

    Raises:
        poundcam.settings.SettingsError: ``url`` is not a database URL SQLAlchemy can use.
    """
    parsed = database_url(url)
    try:
        return _make_engine(parsed, **kwargs)
    except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:  # no such driver installed
        raise _unusable(url, exc) from None


def database_url(url: str | URL) -> URL:
    """``url`` parsed, ``postgres://`` read as ``postgresql://``.

    Raises:
        poundcam.settings.SettingsError: not a URL, or not of SQLite or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise _unusable(url, exc) from None
    if parsed.get_backend_name() == "postgres":  # postgres://, postgres+psycopg2://
        parsed = parsed.set(drivername="postgresql" + parsed.drivername[len("postgres") :])
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise _unusable(url, f"{parsed.get_backend_name()} is not supported")
    return parsed


def _unusable(url, why) -> SettingsError:
    return SettingsError(
        f"database URL {redact(str(url))!r} cannot be used: {one_line(why)} "
        "(POUNDCAM_DATABASE_URL or --db: sqlite:///PATH or postgresql://USER@HOST/DATABASE)"
    )


def _make_engine(parsed: URL, **kwargs) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, **kwargs.pop("connect_args", {})}
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        in_memory = parsed.database in (None, "", ":memory:")
        _configure_sqlite(engine, wal=not in_memory)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


def _configure_sqlite(engine: Engine, wal: bool) -> None:
    busy_ms = int(SQLITE_BUSY_TIMEOUT_S * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        try:
            if wal:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()


def make_session_factory(engine_or_url: Engine | str) -> sessionmaker[Session]:
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error."""
    with factory() as session, session.begin():
        yield session


def is_transient_db_error(exc: BaseException) -> bool:
    """Whether a database error is worth retrying: a lost or refused connection, a server
    restarting, a lock or serialization conflict. Integrity and programming errors are not."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        orig = getattr(exc, "orig", None)
        if type(orig).__module__.startswith("sqlite3"):  # also "no such table", syntax errors
            text = str(orig).lower()
            return "locked" in text or "busy" in text or "disk i/o" in text
        return True
    if isinstance(exc, sa.exc.TimeoutError):  # pool exhausted
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        pgcode = getattr(getattr(exc, "orig", None), "pgcode", None)
        return pgcode in ("40001", "40P01")  # serialization failure, deadlock
    return False


def sqlite_file(url: str) -> str | None:
    """The file an SQLite URL names; None for other databases and in-memory SQLite."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") in ("true", "1") or parsed.database.startswith("file:"):
        return parsed.database.removeprefix("file:").split("?", 1)[0]
    return parsed.database


def require_database(url: str) -> None:
    """Fail, creating nothing, when ``url`` names an SQLite file that does not exist (SQLite
    would create an empty one on connecting). Other databases are checked on connecting.

    Raises:
        UnavailableError: naming the URL and POUNDCAM_DATABASE_URL.
    """
    from pathlib import Path

    from ..errors import UnavailableError
    from ..logs import redact

    path = sqlite_file(url)
    if path is not None and not Path(path).is_file():
        raise UnavailableError(
            f"no database at {redact(url)} ({Path(path).resolve()} does not exist); set "
            "POUNDCAM_DATABASE_URL or --db to the job's database, or create one with "
            "`poundcam db upgrade`"
        )


def explain_db_error(url: str, exc: BaseException):
    """An :class:`UnavailableError` naming ``url`` for a database error that means the
    database is unreachable or has no poundcam schema; None for other errors."""
    from ..errors import UnavailableError
    from ..logs import one_line, redact

    if not isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.ProgrammingError)):
        return None
    reason = one_line(exc)
    lowered = reason.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return UnavailableError(
            f"database {redact(url)} has no poundcam tables ({reason}); run `poundcam db "
            "upgrade`, or set POUNDCAM_DATABASE_URL or --db to the job's database"
        )
    return UnavailableError(f"database {redact(url)}: {reason} (check POUNDCAM_DATABASE_URL or --db)")
