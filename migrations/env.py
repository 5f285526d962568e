"""Alembic environment: the database URL comes from, in order, a connection or URL handed
over by poundcam.db.migrate (``config.attributes``), ``-x url=...``, the ini's
``sqlalchemy.url``, then the settings' ``database_url`` (POUNDCAM_DATABASE_URL)."""

from __future__ import annotations

from alembic import context

from poundcam.db.engine import make_engine
from poundcam.db.models import Base
from poundcam.settings import Settings

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    return (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or Settings.from_env().database_url
    )


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite alters tables by copying them
        **kwargs,
    )


def run_offline() -> None:
    _configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
