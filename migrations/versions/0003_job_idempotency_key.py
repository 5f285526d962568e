"""Jobs may carry the caller's idempotency key: submitting again with the same key returns
the job created the first time instead of a second one. Unique where set (NULL for jobs
submitted without a key, which both backends allow any number of times).

Adding and dropping a nullable, unreferenced column needs no table copy on SQLite (3.35+
drops columns in place), so the review views stay in place.

Revision ID: 0003_job_idempotency_key
Revises: 0002_review_views
Create Date: 2025-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_job_idempotency_key"
down_revision = "0002_review_views"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.create_index("ix_jobs_idempotency_key", "jobs", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_idempotency_key", table_name="jobs")
    # Plain ALTER TABLE on both backends: batch mode would copy the table under the views.
    op.execute("ALTER TABLE jobs DROP COLUMN idempotency_key")
