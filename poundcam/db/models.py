"""The tables: jobs, their items (one per source URI) and analyses.

An analysis is identified by (sha256 of the image bytes, model id, CAM config id); a job item
links a source URI to the analysis it produced, or records why it failed. The schema itself is
created by the Alembic migrations in migrations/; these models must match them (a test compares
the two).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..constants import CAM_CONFIG_ID_MAX, ITEM_STATES, LABELS, ItemState

# JSONB on PostgreSQL (queryable, indexable), JSON text elsewhere.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# A CAM grid map [grid][grid] of float32 values: real[][] on PostgreSQL, a JSON array of rows
# elsewhere (each value the shortest decimal that reads back as the same float32).
MapType = sa.JSON().with_variant(postgresql.ARRAY(sa.REAL(), dimensions=2), "postgresql")
# 64-bit ids on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, allowed: tuple[str, ...]) -> str:
    """The SQL of a CHECK constraint: ``column IN ('a', 'b')``. The migrations spell their
    constraints out; a test checks that they match these."""
    quoted = ", ".join(f"'{value}'" for value in allowed)
    return f"{column} IN ({quoted})"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_job_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_job_id)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), default=utcnow, server_default=sa.func.now()
    )
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    total_items: Mapped[int | None] = mapped_column(sa.Integer)
    # the caller's key: submitting again with it returns this job (unique where set)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200))

    __table_args__ = (sa.Index(None, "created_at"), sa.Index(None, "idempotency_key", unique=True))


class Analysis(Base):
    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    model_id: Mapped[str] = mapped_column(sa.String(64))
    cam_config_id: Mapped[str] = mapped_column(sa.String(CAM_CONFIG_ID_MAX))
    p_fake: Mapped[float] = mapped_column(sa.Float)
    logit_real: Mapped[float] = mapped_column(sa.Float)
    logit_fake: Mapped[float] = mapped_column(sa.Float)
    label: Mapped[str] = mapped_column(sa.String(8))
    threshold: Mapped[float] = mapped_column(sa.Float)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType)
    heatmap_keys: Mapped[dict[str, Any]] = mapped_column(JSONType)
    image_format: Mapped[str | None] = mapped_column(sa.String(16))
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    geometry: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    worker: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), default=utcnow, server_default=sa.func.now()
    )
    # The raw maps (NULL for analyses stored before they were kept; migration 0004).
    real_map: Mapped[list[Any] | None] = mapped_column(MapType)
    fake_map: Mapped[list[Any] | None] = mapped_column(MapType)
    # The deep maps (attention relevance), same form; NULL unless the image was chosen for
    # them (POUNDCAM_DEEP_MAPS) or `poundcam explain` computed them; migration 0005.
    deep_real_map: Mapped[list[Any] | None] = mapped_column(MapType)
    deep_fake_map: Mapped[list[Any] | None] = mapped_column(MapType)

    __table_args__ = (
        # The identity of an analysis; its index also serves lookups by sha256 alone.
        sa.UniqueConstraint("sha256", "model_id", "cam_config_id"),
        sa.CheckConstraint(one_of("label", LABELS), name="label"),
        sa.Index(None, "label", "p_fake"),
        sa.Index(None, "created_at"),
    )


class JobItem(Base):
    __tablename__ = "job_items"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    uri: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(
        sa.String(16), default=ItemState.QUEUED.value, server_default=ItemState.QUEUED.value
    )
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    analysis_id: Mapped[int | None] = mapped_column(IdType, sa.ForeignKey("analyses.id", ondelete="SET NULL"))
    # This job's decision on the analysis: its label at the threshold in force when the item was
    # done. An analysis reused from another job brings its P(fake), not that job's label (0007).
    label: Mapped[str | None] = mapped_column(sa.String(8))
    threshold: Mapped[float | None] = mapped_column(sa.Float)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )

    __table_args__ = (
        # One row per position in a job; its index serves "the items of a job, in order".
        sa.UniqueConstraint("job_id", "position"),
        sa.CheckConstraint(one_of("status", ITEM_STATES), name="status"),
        sa.Index(None, "job_id", "status"),
        sa.Index(None, "analysis_id"),
    )
