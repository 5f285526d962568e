"""The deep maps of both classes in ``analyses``, and in the review view.

- ``analyses.deep_real_map``, ``analyses.deep_fake_map``: attention relevance through every
  block (``ComparativeCAM(method="relevance")``, docs/cam.md), in the form of the fast maps of
  0004 (``real[][]`` on PostgreSQL, a JSON array of rows on SQLite). NULL unless the image was
  chosen for them (POUNDCAM_DEEP_MAPS).
- ``poundcam_v_item_results`` gains, at its end, ``deep_real_map`` and ``deep_fake_map`` in the
  portable form of 0004's maps (a JSON array of rows: ``json`` on PostgreSQL, JSON text on
  SQLite).

The existing columns of the item view keep their names, order and meanings (the view is
created again with the new columns added at its end). The downgrade drops the new columns and
restores the item view of 0004.

Revision ID: 0005_deep_maps
Revises: 0004_raw_maps
Create Date: 2025-01-05
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0005_deep_maps"
down_revision = "0004_raw_maps"
branch_labels = None
depends_on = None

DEEP_COLUMNS = ("deep_real_map", "deep_fake_map")


def _v0004() -> ModuleType:
    """0004's module (the item view it created; revision files are not importable by name)."""
    path = Path(__file__).with_name("0004_raw_maps.py")
    spec = importlib.util.spec_from_file_location("poundcam_migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def item_results_sql(dialect: str) -> str:
    """0004's item view with ``deep_real_map`` and ``deep_fake_map`` added at its end."""
    if dialect == "postgresql":
        added = [f"array_to_json(a.{c}) AS {c}" for c in DEEP_COLUMNS]
    else:
        added = [f"a.{c} AS {c}" for c in DEEP_COLUMNS]
    base = _v0004().item_results_sql(dialect)
    last = " AS fake_map\nFROM"
    assert base.count(last) == 1, "0004's item view changed shape"
    return base.replace(last, " AS fake_map,\n    " + ",\n    ".join(added) + "\nFROM")


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    old = _v0004()
    op.execute(f"DROP VIEW IF EXISTS {old._v0002().ITEM_RESULTS}")
    for c in DEEP_COLUMNS:
        op.add_column("analyses", sa.Column(c, old._map_type(dialect), nullable=True))
    op.execute(item_results_sql(dialect))


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    old = _v0004()
    op.execute(f"DROP VIEW IF EXISTS {old._v0002().ITEM_RESULTS}")
    for c in reversed(DEEP_COLUMNS):
        op.drop_column("analyses", c)  # SQLite >= 3.35 drops a column in place
    op.execute(old.item_results_sql(dialect))
