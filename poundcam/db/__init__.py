"""The database at the pipeline's edge: models, engines, and the queries that use them.

The schema is owned by the Alembic migrations (``poundcam db upgrade``); see
``poundcam.db.migrate``.
"""
from ..constants import ITEM_STATES, LABELS
from .engine import (
    explain_db_error,
    is_transient_db_error,
    make_engine,
    make_session_factory,
    require_database,
    session_scope,
)
from .models import Analysis, Base, Job, JobItem
from .repository import (
    RESULT_FIELDS,
    Claim,
    JobNotFoundError,
    Sweep,
    analyses_for_rendering,
    claim_items,
    create_job,
    find_analysis,
    find_analysis_ids,
    find_job_by_key,
    item_refs,
    job_info,
    job_results,
    job_status,
    job_uris,
    list_jobs,
    mark_done,
    mark_done_many,
    mark_failed,
    mark_failed_many,
    mark_running,
    requeue,
    store_deep_maps,
    sweep_abandoned,
    upsert_analyses,
    upsert_analysis,
)

__all__ = ["ITEM_STATES", "LABELS", "RESULT_FIELDS", "Analysis", "Base",
           "Claim", "Job", "JobItem", "JobNotFoundError", "Sweep", "analyses_for_rendering",
           "claim_items",
           "create_job", "explain_db_error", "find_analysis",
           "find_analysis_ids", "find_job_by_key", "is_transient_db_error", "item_refs",
           "job_info", "job_results", "job_status", "job_uris", "list_jobs", "make_engine",
           "make_session_factory", "require_database", "store_deep_maps", "sweep_abandoned",
           "mark_done", "mark_done_many", "mark_failed", "mark_failed_many", "mark_running",
           "requeue", "session_scope", "upsert_analyses", "upsert_analysis"]
