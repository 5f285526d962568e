"""The deep maps in ``poundcam_v_map_cells``, beside the fast maps.

``poundcam_v_map_cells`` (0004) gains rows whose ``map`` is ``deep_real`` or ``deep_fake``: one
per cell of ``analyses.deep_real_map`` / ``deep_fake_map`` (0005), where they were computed. Its
columns and its ``real`` / ``fake`` rows are unchanged, so a query that filters on ``map`` reads
what it read before. The downgrade restores 0004's view.

Revision ID: 0006_deep_map_cells
Revises: 0005_deep_maps
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0006_deep_map_cells"
down_revision = "0005_deep_maps"
branch_labels = None
depends_on = None

MAPS = ("real", "fake", "deep_real", "deep_fake")


def _v0004() -> ModuleType:
    """0004's module (the cells view it created; revision files are not importable by name)."""
    path = Path(__file__).with_name("0004_raw_maps.py")
    spec = importlib.util.spec_from_file_location("poundcam_migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    v0004 = _v0004()
    op.execute(f"DROP VIEW IF EXISTS {v0004.MAP_CELLS}")
    op.execute(v0004.map_cells_sql(dialect, MAPS))


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    v0004 = _v0004()
    op.execute(f"DROP VIEW IF EXISTS {v0004.MAP_CELLS}")
    op.execute(v0004.map_cells_sql(dialect))
