"""Jobs, job items and analyses.

An analysis is unique on (sha256, model_id, cam_config_id): the identity that makes re-delivery
and resubmission idempotent. Indexes serve what reviewers and the pipeline ask:
- job_items (job_id, position) unique: the items of a job, in order;
- job_items (job_id, status): job status counts;
- job_items (analysis_id): which submissions led to an analysis;
- analyses (sha256, model_id, cam_config_id) unique: also every lookup by sha256 alone;
- analyses (label, p_fake): "fakes above P";
- analyses (created_at), jobs (created_at): by time.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("total_items", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])

    op.create_table(
        "analyses",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("cam_config_id", sa.String(64), nullable=False),
        sa.Column("p_fake", sa.Float(), nullable=False),
        sa.Column("logit_real", sa.Float(), nullable=False),
        sa.Column("logit_fake", sa.Float(), nullable=False),
        sa.Column("label", sa.String(8), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("stats", JSON, nullable=False),
        sa.Column("heatmap_keys", JSON, nullable=False),
        sa.Column("image_format", sa.String(16), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("geometry", JSON, nullable=True),
        sa.Column("timings", JSON, nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_analyses"),
        sa.UniqueConstraint(
            "sha256", "model_id", "cam_config_id", name="uq_analyses_sha256_model_id_cam_config_id"
        ),
        sa.CheckConstraint("label IN ('real', 'fake')", name=op.f("ck_analyses_label")),
    )
    op.create_index("ix_analyses_label_p_fake", "analyses", ["label", "p_fake"])
    op.create_index("ix_analyses_created_at", "analyses", ["created_at"])

    op.create_table(
        "job_items",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), server_default="queued", nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("analysis_id", ID, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_items"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_items_job_id_jobs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["analysis_id"], ["analyses.id"], name="fk_job_items_analysis_id_analyses", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("job_id", "position", name="uq_job_items_job_id_position"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed')", name=op.f("ck_job_items_status")
        ),
    )
    op.create_index("ix_job_items_job_id_status", "job_items", ["job_id", "status"])
    op.create_index("ix_job_items_analysis_id", "job_items", ["analysis_id"])


def downgrade() -> None:
    op.drop_index("ix_job_items_analysis_id", table_name="job_items")
    op.drop_index("ix_job_items_job_id_status", table_name="job_items")
    op.drop_table("job_items")
    op.drop_index("ix_analyses_created_at", table_name="analyses")
    op.drop_index("ix_analyses_label_p_fake", table_name="analyses")
    op.drop_table("analyses")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_table("jobs")
