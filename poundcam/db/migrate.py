"""Apply the Alembic migrations in the ``migrations`` package, from a checkout or an
installed poundcam alike: ``upgrade(url)``, ``downgrade(url, revision)``, ``current(url)``."""

from __future__ import annotations

from pathlib import Path

from ..errors import PoundcamError


class MigrationError(PoundcamError):
    """A migration could not run: an unknown revision, or a database at an unknown one."""


def migrations_dir() -> Path:
    """The folder of the ``migrations`` package (a regular or a namespace package)."""
    import migrations

    for entry in getattr(migrations, "__path__", ()):
        if (Path(entry) / "env.py").is_file():
            return Path(entry).resolve()
    raise RuntimeError(f"the migrations package at {list(migrations.__path__)} has no env.py")


def alembic_config(url: str | None = None, connection=None):
    """An Alembic Config built in code (no ini file needed); ``url`` or ``connection`` is
    handed to migrations/env.py, which otherwise reads POUNDCAM_DATABASE_URL."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        cfg.attributes["url"] = url
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate ``url`` (default: POUNDCAM_DATABASE_URL) up to ``revision``."""
    from alembic import command
    from alembic.util import CommandError

    try:
        command.upgrade(alembic_config(url or _env_url()), revision)
    except CommandError as exc:
        raise MigrationError(f"cannot upgrade to {revision!r}: {exc}") from exc


def downgrade(url: str | None, revision: str) -> None:
    """Migrate ``url`` (None: POUNDCAM_DATABASE_URL) down to ``revision`` ("base": empty)."""
    from alembic import command
    from alembic.util import CommandError

    try:
        command.downgrade(alembic_config(url or _env_url()), revision)
    except CommandError as exc:
        raise MigrationError(f"cannot downgrade to {revision!r}: {exc}") from exc


def current(url: str | None = None) -> tuple[str, ...]:
    """The revisions the database is at (empty: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    from .engine import make_engine

    cfg_url = url or _env_url()
    engine = make_engine(cfg_url)
    try:
        with engine.connect() as conn:
            return tuple(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _env_url() -> str:
    from ..settings import Settings

    return Settings.from_env().database_url
