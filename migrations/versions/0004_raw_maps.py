"""The raw maps of both classes in ``analyses``, and in the review views.

- ``analyses.real_map``, ``analyses.fake_map``: the CAM grid maps, float32 values, rows of
  the grid (``[row][col]``, row 0 at the top of the model's input crop): ``real[][]`` on
  PostgreSQL, a JSON array of rows on SQLite. NULL for analyses stored before this revision.
- ``poundcam_v_item_results`` gains, at its end, ``heatmap_key`` (the one heatmap object of
  an analysis) and ``real_map``, ``fake_map`` in one portable form, a JSON array of rows
  (``json`` on PostgreSQL, JSON text on SQLite).
- ``poundcam_v_map_cells``: one row per grid cell of each stored map (``analysis_id``,
  ``map`` = 'real' | 'fake', ``grid_row``, ``grid_col``, ``value``), so that the same SQL asks
  where the evidence lies on both backends.

The existing columns of the item view keep their names, order and meanings (the view is
created again with the new columns added at its end). The downgrade drops the new view and
columns and restores the item view of 0002.

Revision ID: 0004_raw_maps
Revises: 0003_job_idempotency_key
Create Date: 2025-01-04
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_raw_maps"
down_revision = "0003_job_idempotency_key"
branch_labels = None
depends_on = None

MAP_CELLS = "poundcam_v_map_cells"
MAP_COLUMNS = ("real_map", "fake_map")


def _v0002():
    """0002's module (the view SQL it created; revision files are not importable by name)."""
    path = Path(__file__).with_name("0002_review_views.py")
    spec = importlib.util.spec_from_file_location("poundcam_migration_0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _map_type(dialect: str):
    return postgresql.ARRAY(sa.REAL(), dimensions=2) if dialect == "postgresql" else sa.JSON()


def item_results_sql(dialect: str) -> str:
    """0002's item view with ``heatmap_key``, ``real_map`` and ``fake_map`` added at its end."""
    if dialect == "postgresql":
        added = [
            "a.heatmap_keys #>> '{comparative}' AS heatmap_key",
            *(f"array_to_json(a.{c}) AS {c}" for c in MAP_COLUMNS),
        ]
    else:
        added = [
            "json_extract(a.heatmap_keys, '$.comparative') AS heatmap_key",
            *(f"a.{c} AS {c}" for c in MAP_COLUMNS),
        ]
    base = _v0002().item_results_sql(dialect)
    last = "    a.created_at AS analysed_at\nFROM"
    assert last in base, "0002's item view changed shape"
    return base.replace(last, "    a.created_at AS analysed_at,\n    " + ",\n    ".join(added) + "\nFROM")


def map_cells_sql(dialect: str, maps: tuple[str, ...] = ("real", "fake")) -> str:
    """The cells view over the map columns ``<name>_map`` of ``analyses``, one ``map`` value
    per name (a later revision passes more names)."""
    parts = []
    for name in maps:
        col = f"a.{name}_map"
        if dialect == "postgresql":
            parts.append(f"""SELECT a.id AS analysis_id, '{name}' AS map, r.i - 1 AS grid_row,
    c.j - 1 AS grid_col, {col}[r.i][c.j] AS value
FROM analyses a
CROSS JOIN LATERAL generate_subscripts({col}, 1) AS r(i)
CROSS JOIN LATERAL generate_subscripts({col}, 2) AS c(j)""")
        else:
            parts.append(f"""SELECT a.id AS analysis_id, '{name}' AS map,
    CAST(r.key AS INTEGER) AS grid_row, CAST(c.key AS INTEGER) AS grid_col,
    CAST(c.value AS REAL) AS value
FROM analyses a, json_each({col}) AS r, json_each(r.value) AS c""")
    return f"CREATE VIEW {MAP_CELLS} AS\n" + "\nUNION ALL\n".join(parts)


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    old = _v0002()
    op.execute(f"DROP VIEW IF EXISTS {old.ITEM_RESULTS}")
    for c in MAP_COLUMNS:
        op.add_column("analyses", sa.Column(c, _map_type(dialect), nullable=True))
    op.execute(item_results_sql(dialect))
    op.execute(map_cells_sql(dialect))


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    old = _v0002()
    op.execute(f"DROP VIEW IF EXISTS {MAP_CELLS}")
    op.execute(f"DROP VIEW IF EXISTS {old.ITEM_RESULTS}")
    for c in reversed(MAP_COLUMNS):
        op.drop_column("analyses", c)  # SQLite >= 3.35 drops a column in place
    op.execute(old.item_results_sql(dialect))
