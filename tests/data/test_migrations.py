"""Migrations on both backends: empty -> head -> base -> head, and head matches the models."""

import pytest
import sqlalchemy as sa

from poundcam.db import make_engine
from poundcam.db.migrate import current, downgrade, head, migrations_dir, upgrade

TABLES = {"jobs", "job_items", "analyses"}
INDEXES = {
    "ix_jobs_created_at",
    "ix_analyses_label_p_fake",
    "ix_analyses_created_at",
    "ix_job_items_job_id_status",
    "ix_job_items_analysis_id",
}


def _schema(url):
    engine = make_engine(url)
    try:
        insp = sa.inspect(engine)
        tables = set(insp.get_table_names()) - {"alembic_version"}
        indexes = {ix["name"] for t in tables for ix in insp.get_indexes(t)}
        uniques = {uq["name"] for t in tables for uq in insp.get_unique_constraints(t)}
        return tables, indexes, uniques
    finally:
        engine.dispose()


def _diff(url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from poundcam.db.models import Base

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_up_down_up(db_url):
    assert current(db_url) == ()
    upgrade(db_url)
    assert current(db_url) == (head(),)
    tables, indexes, uniques = _schema(db_url)
    assert tables == TABLES
    assert indexes >= INDEXES
    assert {"uq_analyses_sha256_model_id_cam_config_id", "uq_job_items_job_id_position"} <= uniques
    assert _diff(db_url) == []  # the reviewed migration and the models agree

    downgrade(db_url, "base")
    assert current(db_url) == ()
    assert _schema(db_url)[0] == set()

    upgrade(db_url)
    assert current(db_url) == (head(),)
    assert _schema(db_url)[0] == TABLES


def test_environment_url_and_cli(sqlite_url, monkeypatch, capsys):
    import argparse

    from poundcam.commands import db as db_commands

    monkeypatch.setenv("POUNDCAM_DATABASE_URL", sqlite_url)
    parser = argparse.ArgumentParser()
    db_commands.register(parser.add_subparsers())
    from poundcam.errors import UnavailableError

    with pytest.raises(UnavailableError, match="no database at"):  # reading creates nothing
        args = parser.parse_args(["db", "current"])
        args.handler(args)
    for argv, expected in (
        (["db", "upgrade"], head()),
        (["db", "current"], "up to date"),
        (["db", "downgrade", "base"], "database at base"),
        (["db", "upgrade", "--revision", head()], head()),
    ):
        args = parser.parse_args(argv)
        assert args.handler(args) == 0
        assert expected in capsys.readouterr().out
    assert current() == (head(),)


def test_migrations_ship_as_package_data():
    here = migrations_dir()
    assert (here / "env.py").is_file() and (here / "script.py.mako").is_file()
    assert (here / "alembic.ini").is_file() and list((here / "versions").glob("0001_*.py"))


def test_offline_sql_renders(capsys):
    from alembic import command

    from poundcam.db.migrate import alembic_config

    command.upgrade(alembic_config("postgresql://u@h/db"), "head", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE analyses" in sql and "JSONB" in sql
    assert "CREATE INDEX ix_analyses_label_p_fake" in sql
