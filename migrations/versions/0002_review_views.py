"""Review views: stable, flat column names for downstream tools.

- ``poundcam_v_item_results``: one row per job item, joined to its analysis, with the key CAM
  statistics and heatmap keys pulled out of the JSON columns;
- ``poundcam_v_job_summary``: one row per job with its counts by state and label.

Both views have the same names, columns and meanings on PostgreSQL and SQLite (docs/schema.md);
only the JSON extraction differs (``#>>`` on JSONB, ``json_extract`` on JSON text), so the SQL
is written per dialect. Columns are only ever added at the end of a view, never renamed or
removed: tools select them by name.

A later migration that alters ``jobs``, ``job_items`` or ``analyses`` on SQLite (batch mode
copies and renames the table) must drop these views first and create them again after.

Revision ID: 0002_review_views
Revises: 0001_initial
Create Date: 2025-01-02
"""

from __future__ import annotations

from alembic import op

revision = "0002_review_views"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

ITEM_RESULTS = "poundcam_v_item_results"
JOB_SUMMARY = "poundcam_v_job_summary"
VIEWS = (ITEM_RESULTS, JOB_SUMMARY)

# (column, JSON column, path, SQL type): the values pulled out of analyses.stats and
# analyses.heatmap_keys, in view order (after the plain columns below).
JSON_COLUMNS = (
    ("real_max", "stats", ("real", "max"), "float"),
    ("fake_max", "stats", ("fake", "max"), "float"),
    ("real_mean", "stats", ("real", "mean"), "float"),
    ("fake_mean", "stats", ("fake", "mean"), "float"),
    ("real_area_half_max", "stats", ("real", "area_half_max"), "float"),
    ("fake_area_half_max", "stats", ("fake", "area_half_max"), "float"),
    ("real_entropy", "stats", ("real", "entropy"), "float"),
    ("fake_entropy", "stats", ("fake", "entropy"), "float"),
    ("fake_share", "stats", ("comparative", "fake_share"), "float"),
    ("correlation", "stats", ("comparative", "correlation"), "float"),
    ("real_peak_x", "stats", ("real", "peak", 0), "float"),
    ("real_peak_y", "stats", ("real", "peak", 1), "float"),
    ("fake_peak_x", "stats", ("fake", "peak", 0), "float"),
    ("fake_peak_y", "stats", ("fake", "peak", 1), "float"),
    ("cam_layer", "stats", ("layer",), "int"),
    ("cam_target", "stats", ("target",), "text"),
    ("cam_grid", "stats", ("grid",), "int"),
    ("heatmap_real_overlay_key", "heatmap_keys", ("real_overlay",), "text"),
    ("heatmap_fake_overlay_key", "heatmap_keys", ("fake_overlay",), "text"),
    ("heatmap_real_overlay_original_key", "heatmap_keys", ("real_overlay_original",), "text"),
    ("heatmap_fake_overlay_original_key", "heatmap_keys", ("fake_overlay_original",), "text"),
    ("heatmap_real_raw16_key", "heatmap_keys", ("real_raw16",), "text"),
    ("heatmap_fake_raw16_key", "heatmap_keys", ("fake_raw16",), "text"),
)


def _pg_json(column: str, path: tuple, kind: str) -> str:
    # #>> returns text (SQL NULL for a missing path or a JSON null).
    expr = f"a.{column} #>> '{{{','.join(str(p) for p in path)}}}'"
    return {"float": f"CAST({expr} AS DOUBLE PRECISION)", "int": f"CAST({expr} AS INTEGER)", "text": expr}[
        kind
    ]


def _sqlite_json(column: str, path: tuple, kind: str) -> str:
    # json_extract returns SQL values (REAL, INTEGER, TEXT; NULL for a missing path or null).
    jpath = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    expr = f"json_extract(a.{column}, '{jpath}')"
    return {"float": f"CAST({expr} AS REAL)", "int": f"CAST({expr} AS INTEGER)", "text": expr}[kind]


def item_results_sql(dialect: str) -> str:
    extract = _pg_json if dialect == "postgresql" else _sqlite_json
    json_cols = ",\n    ".join(
        f"{extract(col, path, kind)} AS {name}" for name, col, path, kind in JSON_COLUMNS
    )
    return f"""CREATE VIEW {ITEM_RESULTS} AS
SELECT
    i.job_id AS job_id,
    i.id AS item_id,
    i.position AS position,
    i.uri AS uri,
    i.status AS status,
    i.error_code AS error_code,
    i.error_message AS error_message,
    i.attempts AS attempts,
    i.updated_at AS item_updated_at,
    a.id AS analysis_id,
    a.sha256 AS sha256,
    a.model_id AS model_id,
    a.cam_config_id AS cam_config_id,
    a.p_fake AS p_fake,
    a.label AS label,
    a.threshold AS threshold,
    a.logit_real AS logit_real,
    a.logit_fake AS logit_fake,
    {json_cols},
    a.image_format AS image_format,
    a.width AS width,
    a.height AS height,
    a.worker AS worker,
    a.created_at AS analysed_at
FROM job_items i
LEFT OUTER JOIN analyses a ON a.id = i.analysis_id"""


def job_summary_sql(dialect: str) -> str:
    true, false = ("TRUE", "FALSE") if dialect == "postgresql" else ("1", "0")

    def count(cond: str) -> str:
        return f"COALESCE(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END), 0)"

    return f"""CREATE VIEW {JOB_SUMMARY} AS
SELECT
    j.id AS job_id,
    j.created_at AS created_at,
    COUNT(i.id) AS total,
    {count("i.status = 'queued'")} AS queued,
    {count("i.status = 'running'")} AS running,
    {count("i.status = 'done'")} AS done,
    {count("i.status = 'failed'")} AS failed,
    {count("i.status = 'done' AND a.label = 'fake'")} AS fake,
    {count("i.status = 'done' AND a.label = 'real'")} AS real,
    CASE WHEN {count("i.status IN ('queued', 'running')")} = 0 THEN {true} ELSE {false} END
        AS finished,
    MAX(CASE WHEN i.status = 'done' THEN a.p_fake END) AS max_p_fake,
    MAX(i.updated_at) AS last_update_at
FROM jobs j
LEFT OUTER JOIN job_items i ON i.job_id = j.id
LEFT OUTER JOIN analyses a ON a.id = i.analysis_id
GROUP BY j.id, j.created_at"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(item_results_sql(dialect))
    op.execute(job_summary_sql(dialect))


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
