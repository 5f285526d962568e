"""Each job item keeps its own decision: ``job_items.label`` and ``job_items.threshold``.

An analysis is shared by every job that submits the same image bytes with the same model and
CAM configuration, but the decision threshold belongs to the run: a job analysed at another
threshold must not inherit the first job's label. The item now records the label at the
threshold in force when it was done, from the analysis's P(fake).

- ``job_items.label``, ``job_items.threshold``: NULL until the item is done. Items done before
  keep NULL and show the linked analysis's label, as they did: every reader falls back to it.
  (Not copied here: analyses never change, and filling every done row would hold the table's
  exclusive lock through a rewrite of all of it, blocking the workers, for nothing.)
- ``poundcam_v_item_results`` and ``poundcam_v_job_summary`` read the item's label and threshold
  (the analysis's where the item has none: an item done before this revision, or by a writer
  of an earlier version during a rolling upgrade). Their columns keep their names, order and
  meanings.

The downgrade restores the views of 0005 and 0002 and drops the columns.

Revision ID: 0007_item_decision
Revises: 0006_deep_map_cells
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0007_item_decision"
down_revision = "0006_deep_map_cells"
branch_labels = None
depends_on = None

COLUMNS = (("label", sa.String(8)), ("threshold", sa.Float()))
# The item's decision where it has one, else the analysis's.
DECISION = {name: f"COALESCE(i.{name}, a.{name})" for name, _ in COLUMNS}


def _revision(filename: str) -> ModuleType:
    """An earlier revision's module (the view SQL it created; revision files are not
    importable by name)."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"poundcam_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replace_once(sql: str, old: str, new: str) -> str:
    assert sql.count(old) == 1, f"the earlier view changed shape: {old!r}"
    return sql.replace(old, new)


def item_results_sql(dialect: str) -> str:
    """0005's item view with the item's decision in place of the analysis's."""
    sql = _revision("0005_deep_maps.py").item_results_sql(dialect)
    for name, _ in COLUMNS:
        sql = _replace_once(sql, f"a.{name} AS {name},", f"{DECISION[name]} AS {name},")
    return sql


def job_summary_sql(dialect: str) -> str:
    """0002's job summary counting labels by the item's decision."""
    sql = _revision("0002_review_views.py").job_summary_sql(dialect)
    for label in ("fake", "real"):
        sql = _replace_once(sql, f"a.label = '{label}'", f"{DECISION['label']} = '{label}'")
    return sql


def _views():
    v0002 = _revision("0002_review_views.py")
    return v0002.ITEM_RESULTS, v0002.JOB_SUMMARY


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    item_results, job_summary = _views()
    op.execute(f"DROP VIEW IF EXISTS {job_summary}")
    op.execute(f"DROP VIEW IF EXISTS {item_results}")
    for name, type_ in COLUMNS:  # nullable, no default: no rewrite of the table
        op.add_column("job_items", sa.Column(name, type_, nullable=True))
    op.execute(item_results_sql(dialect))
    op.execute(job_summary_sql(dialect))


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    item_results, job_summary = _views()
    op.execute(f"DROP VIEW IF EXISTS {job_summary}")
    op.execute(f"DROP VIEW IF EXISTS {item_results}")
    for name, _ in reversed(COLUMNS):
        op.drop_column("job_items", name)  # SQLite >= 3.35 drops a column in place
    op.execute(_revision("0005_deep_maps.py").item_results_sql(dialect))
    op.execute(_revision("0002_review_views.py").job_summary_sql(dialect))
