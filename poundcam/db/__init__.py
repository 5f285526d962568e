"""The database at the pipeline's edge: models, engines, and the queries that use them.

The schema is owned by the Alembic migrations (``poundcam db upgrade``); see
``poundcam.db.migrate``.
"""
from .engine import is_transient_db_error, make_engine, make_session_factory, session_scope
from .models import ITEM_STATES, LABELS, Analysis, Base, Job, JobItem
from .repository import (JobNotFoundError, create_job, find_analysis, find_analysis_ids,
                         item_refs, job_results, job_status, mark_done, mark_done_many,
                         mark_failed, mark_failed_many, mark_running, requeue, upsert_analyses,
                         upsert_analysis)

__all__ = ["ITEM_STATES", "LABELS", "Analysis", "Base", "Job", "JobItem", "JobNotFoundError",
           "create_job", "find_analysis", "find_analysis_ids", "is_transient_db_error",
           "item_refs", "job_results", "job_status", "make_engine", "make_session_factory",
           "mark_done", "mark_done_many", "mark_failed", "mark_failed_many", "mark_running",
           "requeue", "session_scope", "upsert_analyses", "upsert_analysis"]
