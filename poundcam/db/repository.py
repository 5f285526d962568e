"""The queries the pipeline and reviewers need, on PostgreSQL and SQLite alike.

Functions take a Session and never commit: the caller owns the transaction (see
``session_scope``). Every write here is safe to repeat: a redelivered message or a retried
batch leaves the same rows behind.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..constants import ITEM_STATES, LABELS, S3_SCHEME, ErrorCode, ItemState
from ..errors import PoundcamError
from .models import Analysis, Job, JobItem, new_job_id, utcnow

MAX_ERROR_MESSAGE = 2000

ANALYSIS_REQUIRED = (
    "sha256",
    "model_id",
    "cam_config_id",
    "p_fake",
    "logit_real",
    "logit_fake",
    "label",
    "threshold",
    "stats",
    "heatmap_keys",
)
ANALYSIS_OPTIONAL = (
    "image_format",
    "width",
    "height",
    "geometry",
    "timings",
    "worker",
    "real_map",
    "fake_map",
    "deep_real_map",
    "deep_fake_map",
)
MAPS = ("real_map", "fake_map", "deep_real_map", "deep_fake_map")
_IDENTITY = ("sha256", "model_id", "cam_config_id")
# The Core tables behind the ORM classes, as Tables (``__table__`` is typed as a FromClause).
_ANALYSES = Analysis.metadata.tables[Analysis.__tablename__]
_ITEMS = JobItem.metadata.tables[JobItem.__tablename__]
# The keys of a job_results record, in order: the one record shape of every output.
RESULT_FIELDS = (
    "item_id",
    "position",
    "uri",
    "status",
    "error_code",
    "error_message",
    "attempts",
    "analysis_id",
    "sha256",
    "p_fake",
    "threshold",
    "label",
    "model_id",
    "cam_config_id",
    "width",
    "height",
    "stats",
    "heatmap_keys",
)


class JobNotFoundError(PoundcamError):
    """No job has the given id."""


# --- analyses ------------------------------------------------------------------------------


def _analysis_values(record: Mapping[str, Any], dialect: str) -> dict[str, Any]:
    missing = [k for k in ANALYSIS_REQUIRED if record.get(k) is None]
    if missing:
        raise ValueError(f"analysis record lacks {', '.join(missing)}")
    unknown = set(record) - set(ANALYSIS_REQUIRED) - set(ANALYSIS_OPTIONAL) - {"created_at"}
    if unknown:
        raise ValueError(f"analysis record has unknown field(s) {', '.join(sorted(unknown))}")
    if record["label"] not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {record['label']!r}")
    values = {k: record[k] for k in (*ANALYSIS_REQUIRED, *ANALYSIS_OPTIONAL) if k in record}
    for k in ("p_fake", "logit_real", "logit_fake", "threshold"):
        values[k] = float(values[k])
    values.setdefault("created_at", record.get("created_at") or utcnow())
    for k in MAPS:
        if values.get(k) is not None:
            values[k] = _map_value(values[k], dialect)
    return values


def _map_value(grid: Any, dialect: str) -> list[list[float]]:
    """A [grid][grid] map as rows of floats that hold float32 values: as they are for
    PostgreSQL's real[][], via their shortest decimal for the JSON text of other backends."""
    a = np.asarray(grid, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.isfinite(a).all():
        raise ValueError(f"a map must be a finite square grid, not an array of shape {a.shape}")
    if dialect == "postgresql":
        return a.tolist()
    return [[float(v) for v in row] for row in a.astype(str)]


def stored_map(value: Any) -> np.ndarray | None:
    """A map column's value (either backend) as a float32 array [grid, grid]; None if absent."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return np.asarray(value, dtype=np.float32)


def upsert_analysis(session: Session, record: Mapping[str, Any]) -> int:
    """Insert the analysis unless one with the same (sha256, model_id, cam_config_id) exists;
    return the id of the row that holds it. Concurrent calls for the same triple (two workers,
    a redelivered message) end with one row, and both get its id."""
    return upsert_analyses(session, [record])[0]


UPSERT_CHUNK = 100  # rows per INSERT statement (well under SQLite's bound-parameter limit)


def upsert_analyses(session: Session, records: Iterable[Mapping[str, Any]]) -> list[int]:
    """:func:`upsert_analysis` for many records in few statements: the ids, in order."""
    dialect = session.get_bind().dialect.name
    rows = [_analysis_values(r, dialect) for r in records]
    if not rows:
        return []
    table = _ANALYSES
    for start in range(0, len(rows), UPSERT_CHUNK):
        chunk = rows[start : start + UPSERT_CHUNK]
        if dialect in ("postgresql", "sqlite"):
            from sqlalchemy.dialects import postgresql, sqlite

            # A multi-row VALUES needs one column set: one statement per set present.
            by_columns: dict[tuple, list] = {}
            for row in chunk:
                by_columns.setdefault(tuple(sorted(row)), []).append(row)
            for group in by_columns.values():
                if dialect == "postgresql":
                    session.execute(
                        postgresql.insert(table)
                        .values(group)
                        .on_conflict_do_nothing(index_elements=list(_IDENTITY))
                    )
                else:
                    session.execute(
                        sqlite.insert(table)
                        .values(group)
                        .on_conflict_do_nothing(index_elements=list(_IDENTITY))
                    )
        else:  # any other backend: a savepoint per row absorbs the duplicate
            for row in chunk:
                try:
                    with session.begin_nested():
                        session.execute(sa.insert(table).values(**row))
                except sa.exc.IntegrityError:
                    pass
    ids: dict[tuple, int] = {}
    for model_id, cam_config_id in {(r["model_id"], r["cam_config_id"]) for r in rows}:
        shas = [r["sha256"] for r in rows if (r["model_id"], r["cam_config_id"]) == (model_id, cam_config_id)]
        for sha, analysis_id in find_analysis_ids(session, shas, model_id, cam_config_id).items():
            ids[(sha, model_id, cam_config_id)] = analysis_id
    return [ids[(r["sha256"], r["model_id"], r["cam_config_id"])] for r in rows]


def find_analysis(session: Session, sha256: str, model_id: str, cam_config_id: str) -> Analysis | None:
    return session.execute(
        sa.select(Analysis).where(
            Analysis.sha256 == sha256, Analysis.model_id == model_id, Analysis.cam_config_id == cam_config_id
        )
    ).scalar_one_or_none()


def find_analysis_ids(
    session: Session, sha256s: Iterable[str], model_id: str, cam_config_id: str
) -> dict[str, int]:
    """``{sha256: analysis id}`` for those of ``sha256s`` already analysed with this model and
    CAM configuration, in one query per 500 hashes."""
    return {sha: a.id for sha, a in find_known(session, sha256s, model_id, cam_config_id).items()}


class Known(NamedTuple):
    id: int
    p_fake: float


def find_known(
    session: Session, sha256s: Iterable[str], model_id: str, cam_config_id: str
) -> dict[str, Known]:
    """``{sha256: (analysis id, its P(fake))}`` for those of ``sha256s`` already analysed with
    this model and CAM configuration, in one query per 500 hashes."""
    shas = sorted(set(sha256s))
    t = _ANALYSES
    found: dict[str, Known] = {}
    for start in range(0, len(shas), 500):
        rows = session.execute(
            sa.select(t.c.sha256, t.c.id, t.c.p_fake).where(
                t.c.sha256.in_(shas[start : start + 500]),
                t.c.model_id == model_id,
                t.c.cam_config_id == cam_config_id,
            )
        )
        found.update((sha, Known(analysis_id, p_fake)) for sha, analysis_id, p_fake in rows)
    return found


# --- jobs and items ------------------------------------------------------------------------


def create_job(
    session: Session,
    uris: Iterable[str],
    options: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    key: str | None = None,
) -> str:
    """A job with one queued item per URI (in order); returns the job id. ``key`` is the
    caller's idempotency key (unique: a second job with it fails with an IntegrityError; see
    :func:`find_job_by_key`)."""
    uris = [str(u) for u in uris]
    job_id = job_id or new_job_id()
    session.add(Job(id=job_id, options=dict(options or {}), total_items=len(uris), idempotency_key=key))
    session.flush()
    if uris:
        now = utcnow()
        session.execute(
            sa.insert(_ITEMS),
            [
                {
                    "job_id": job_id,
                    "position": i,
                    "uri": u,
                    "status": ItemState.QUEUED,
                    "attempts": 0,
                    "updated_at": now,
                }
                for i, u in enumerate(uris)
            ],
        )
    return job_id


def item_refs(session: Session, job_id: str, status: str | None = ItemState.QUEUED) -> list[dict]:
    """``[{"item_id", "uri"}]`` of a job's items in order (by default the queued ones): what a
    task message carries."""
    q = sa.select(JobItem.id, JobItem.uri).where(JobItem.job_id == job_id)
    if status is not None:
        q = q.where(JobItem.status == status)
    rows = session.execute(q.order_by(JobItem.position)).all()
    return [{"item_id": r.id, "uri": r.uri} for r in rows]


def _ids(item_ids: int | Iterable[int]) -> list[int]:
    return [int(item_ids)] if isinstance(item_ids, int) else [int(i) for i in item_ids]


def mark_running(session: Session, item_ids: int | Iterable[int]) -> list[int]:
    """Claim items for processing: queued or running (a redelivery) -> running, attempts + 1.
    Returns the ids claimed; items already done or failed are left alone and not returned."""
    ids = _ids(item_ids)
    if not ids:
        return []
    t = _ITEMS
    claimable = t.c.status.in_((ItemState.QUEUED, ItemState.RUNNING))
    session.execute(
        sa.update(t)
        .where(t.c.id.in_(ids), claimable)
        .values(status=ItemState.RUNNING, attempts=t.c.attempts + 1, updated_at=utcnow())
    )
    return list(
        session.execute(sa.select(t.c.id).where(t.c.id.in_(ids), t.c.status == ItemState.RUNNING)).scalars()
    )


@dataclasses.dataclass
class Claim:
    """What :func:`claim_items` found: the items claimed, with the URI the database holds for
    each, and the ids that belong to the job at all (claimed or already finished)."""

    uris: dict[int, str]
    backed: set[int]


def claim_items(session: Session, item_ids: Iterable[int], job_id: str | None = None) -> Claim:
    """:func:`mark_running` for the items of ``job_id`` among ``item_ids`` (any job's if
    ``job_id`` is None). Ids of another job, or of no item, are neither claimed nor backed."""
    ids = sorted(set(_ids(item_ids)))
    t = _ITEMS
    scope = [t.c.id.in_(ids)] + ([t.c.job_id == job_id] if job_id is not None else [])
    if not ids:
        return Claim({}, set())
    claimable = t.c.status.in_((ItemState.QUEUED, ItemState.RUNNING))
    session.execute(
        sa.update(t)
        .where(*scope, claimable)
        .values(status=ItemState.RUNNING, attempts=t.c.attempts + 1, updated_at=utcnow())
    )
    rows = session.execute(sa.select(t.c.id, t.c.uri, t.c.status).where(*scope)).all()
    return Claim({r.id: r.uri for r in rows if r.status == ItemState.RUNNING}, {r.id for r in rows})


class Done(NamedTuple):
    """An item done: the analysis it produced or reused, and this job's decision on it (the
    label at the threshold in force; None leaves the analysis's own to the readers)."""

    item_id: int
    analysis_id: int
    label: str | None = None
    threshold: float | None = None


def mark_done(
    session: Session, item_id: int, analysis_id: int, label: str | None = None, threshold: float | None = None
) -> None:
    """The item produced ``analysis_id``. Done is final: it also overrides an earlier failure."""
    mark_done_many(session, [Done(item_id, analysis_id, label, threshold)])


def mark_done_many(session: Session, done: Iterable[Done | tuple]) -> None:
    """:func:`mark_done` for each :class:`Done` (or tuple of its fields), in one statement."""
    rows = []
    for d in (Done(*x) for x in done):
        if (d.label is None) != (d.threshold is None):
            raise ValueError("an item's decision needs its label and its threshold, or neither")
        if d.label is not None and d.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, not {d.label!r}")
        rows.append(
            {
                "b_id": int(d.item_id),
                "b_analysis": int(d.analysis_id),
                "b_label": d.label,
                "b_threshold": None if d.threshold is None else float(d.threshold),
            }
        )
    if rows:
        t = _ITEMS
        session.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("b_id"))
            .values(
                status=ItemState.DONE,
                analysis_id=sa.bindparam("b_analysis"),
                label=sa.bindparam("b_label"),
                threshold=sa.bindparam("b_threshold"),
                error_code=None,
                error_message=None,
                updated_at=utcnow(),
            ),
            rows,
        )


def mark_failed(session: Session, item_id: int, code: str, message: str) -> None:
    """Record a permanent failure with its error code; an item already done stays done."""
    mark_failed_many(session, [(item_id, code, message)])


def mark_failed_many(
    session: Session, failures: Iterable[tuple[int, str, str]], job_id: str | None = None
) -> None:
    """:func:`mark_failed` for ``(item_id, code, message)`` triples, in one statement; with
    ``job_id``, only items of that job change."""
    rows = [
        {"b_id": int(i), "b_code": str(c)[:64], "b_message": str(m)[:MAX_ERROR_MESSAGE]}
        for i, c, m in failures
    ]
    if rows:
        t = _ITEMS
        scope = [t.c.job_id == job_id] if job_id is not None else []
        session.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("b_id"), t.c.status != ItemState.DONE, *scope)
            .values(
                status=ItemState.FAILED,
                error_code=sa.bindparam("b_code"),
                error_message=sa.bindparam("b_message"),
                updated_at=utcnow(),
            ),
            rows,
        )


@dataclasses.dataclass
class Sweep:
    """Items :func:`sweep_abandoned` gave back: ``{job_id: [(item_id, uri)]}`` requeued, and
    the ids failed for having been claimed too often; and the queued items whose message was
    lost, sent again (``poundcam.broker.sweeper``)."""

    requeued: dict[str, list[tuple[int, str]]]
    failed: list[int]
    resent: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)


def stale_queued(
    session: Session, older_than_s: float, now: datetime | None = None, limit: int = 10000
) -> dict[str, list[int]]:
    """``{job_id: [item_id]}`` of at most ``limit`` items "queued" and unchanged for more than
    ``older_than_s`` seconds, of those a worker can read (``s3://``: an embedded job's local
    paths are never sent to the broker): waiting in a queue, or named by no message any more
    (the caller asks the broker which)."""
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    t = _ITEMS
    rows = session.execute(
        sa.select(t.c.id, t.c.job_id)
        .where(t.c.status == ItemState.QUEUED, t.c.updated_at < cutoff, t.c.uri.startswith(S3_SCHEME))
        .order_by(t.c.id)
        .limit(limit)
    ).all()
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r.job_id, []).append(r.id)
    return out


def requeue_stale(
    session: Session, item_ids: Iterable[int], older_than_s: float, now: datetime | None = None
) -> dict[str, list[tuple[int, str]]]:
    """Of ``item_ids``, those still "queued" and stale (see :func:`stale_queued`), marked as
    queued now; ``{job_id: [(item_id, uri)]}``, the items to send again. Each row changes only
    if it is still queued and stale when updated, so sweepers running at once never send the
    same item twice, and an item a worker claimed meanwhile is left to it."""
    ids = _ids(item_ids)
    if not ids:
        return {}
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    t = _ITEMS
    stale = (t.c.id.in_(ids), t.c.status == ItemState.QUEUED, t.c.updated_at < cutoff)
    return _update_refs(session, stale, {})


def _update_refs(session: Session, where: tuple, values: dict[str, Any]) -> dict[str, list[tuple[int, str]]]:
    """Update the items ``where`` holds with ``values`` (and ``updated_at`` now); returns those
    it changed, ``{job_id: [(item_id, uri)]}`` in id order."""
    t = _ITEMS
    out: dict[str, list[tuple[int, str]]] = {}
    for r in session.execute(
        sa.update(t)
        .where(*where)
        .values(**values, updated_at=utcnow())
        .returning(t.c.id, t.c.job_id, t.c.uri)
    ):
        out.setdefault(r.job_id, []).append((r.id, r.uri))
    for refs in out.values():
        refs.sort()
    return out


def sweep_abandoned(
    session: Session, older_than_s: float, max_attempts: int, now: datetime | None = None, limit: int = 10000
) -> Sweep:
    """Give back items left "running" for more than ``older_than_s`` seconds (their worker is
    gone): back to queued, or failed with ``retries_exhausted`` once claimed ``max_attempts``
    times. Each row changes only if it is still running and stale when updated, so sweepers
    running at once never give back the same item twice."""
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    t = _ITEMS
    stale = (t.c.status == ItemState.RUNNING, t.c.updated_at < cutoff)
    rows = session.execute(sa.select(t.c.id, t.c.attempts).where(*stale).order_by(t.c.id).limit(limit)).all()
    exhausted = [r.id for r in rows if r.attempts >= max_attempts]
    back = [r.id for r in rows if r.attempts < max_attempts]
    failed = (
        list(
            session.execute(
                sa.update(t)
                .where(t.c.id.in_(exhausted), *stale)
                .values(
                    status=ItemState.FAILED,
                    error_code=ErrorCode.RETRIES_EXHAUSTED,
                    updated_at=utcnow(),
                    error_message=f"abandoned while running, {max_attempts} attempts used",
                )
                .returning(t.c.id)
            ).scalars()
        )
        if exhausted
        else []
    )
    requeued = _update_refs(session, (t.c.id.in_(back), *stale), {"status": ItemState.QUEUED}) if back else {}
    return Sweep(requeued, sorted(failed))


def requeue(session: Session, item_ids: int | Iterable[int], job_id: str | None = None) -> None:
    """Running items back to queued (a batch given back after a transient failure); with
    ``job_id``, only items of that job change."""
    ids = _ids(item_ids)
    if ids:
        t = _ITEMS
        scope = [t.c.job_id == job_id] if job_id is not None else []
        session.execute(
            sa.update(t)
            .where(t.c.id.in_(ids), t.c.status == ItemState.RUNNING, *scope)
            .values(status=ItemState.QUEUED, updated_at=utcnow())
        )


def find_job_by_key(session: Session, key: str) -> str | None:
    """The id of the job submitted with idempotency key ``key``, if any."""
    return session.execute(sa.select(Job.id).where(Job.idempotency_key == key)).scalar()


def job_uris(session: Session, job_id: str) -> list[str]:
    """The URIs of a job's items, in submission order."""
    return list(
        session.execute(
            sa.select(JobItem.uri).where(JobItem.job_id == job_id).order_by(JobItem.position)
        ).scalars()
    )


# --- what reviewers ask ---------------------------------------------------------------------


def job_info(session: Session, job_id: str) -> dict[str, Any]:
    """``{"job_id", "created_at", "options", "idempotency_key", "total"}`` of one job."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    return {
        "job_id": job.id,
        "created_at": job.created_at,
        "options": dict(job.options or {}),
        "idempotency_key": job.idempotency_key,
        "total": job.total_items,
    }


def list_jobs(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """The ``limit`` most recent jobs, newest first, each with its counts by state:
    ``{"job_id", "created_at", "mode", "total", "queued", "running", "done", "failed",
    "finished"}``."""
    jobs = session.execute(
        sa.select(Job.id, Job.created_at, Job.options, Job.total_items)
        .order_by(Job.created_at.desc(), Job.id)
        .limit(int(limit))
    ).all()
    counts: dict[str, dict[str, int]] = {j.id: dict.fromkeys(ITEM_STATES, 0) for j in jobs}
    if jobs:
        rows = session.execute(
            sa.select(JobItem.job_id, JobItem.status, sa.func.count())
            .where(JobItem.job_id.in_(list(counts)))
            .group_by(JobItem.job_id, JobItem.status)
        )
        for job_id, status, n in rows:
            counts[job_id][status] = int(n)
    out = []
    for j in jobs:
        c = counts[j.id]
        out.append(
            {
                "job_id": j.id,
                "created_at": j.created_at,
                "mode": (j.options or {}).get("mode", "distributed"),
                "total": sum(c.values()),
                **c,
                "finished": c[ItemState.QUEUED] == 0 and c[ItemState.RUNNING] == 0,
            }
        )
    return out


def job_status(session: Session, job_id: str) -> dict[str, Any]:
    """``{"job_id", "total", "queued", "running", "done", "failed", "finished"}``."""
    if session.get(Job, job_id) is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    counts = dict.fromkeys(ITEM_STATES, 0)
    rows = session.execute(
        sa.select(JobItem.status, sa.func.count()).where(JobItem.job_id == job_id).group_by(JobItem.status)
    )
    for status, n in rows:
        counts[status] = int(n)
    total = sum(counts.values())
    return {
        "job_id": job_id,
        "total": total,
        **counts,
        "finished": counts[ItemState.QUEUED] == 0 and counts[ItemState.RUNNING] == 0,
    }


def job_results(
    session: Session, job_id: str, label: str | None = None, min_prob: float | None = None
) -> list[dict[str, Any]]:
    """One record per item, in submission order. ``label`` / ``min_prob`` (on P(fake)) keep
    only analysed items that match. Every record has the same keys (RESULT_FIELDS); those of
    the analysis are None for an item not analysed."""
    if session.get(Job, job_id) is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    a = Analysis
    # the item's decision; the analysis's for an item done without one (an earlier writer)
    decided_label = sa.func.coalesce(JobItem.label, a.label)
    q = (
        sa.select(
            JobItem.id,
            JobItem.position,
            JobItem.uri,
            JobItem.status,
            JobItem.error_code,
            JobItem.error_message,
            JobItem.attempts,
            a.id.label("analysis_id"),
            a.sha256,
            a.p_fake,
            sa.func.coalesce(JobItem.threshold, a.threshold).label("threshold"),
            decided_label.label("label"),
            a.model_id,
            a.cam_config_id,
            a.width,
            a.height,
            a.stats,
            a.heatmap_keys,
        )
        .select_from(JobItem)
        .outerjoin(a, JobItem.analysis_id == a.id)
        .where(JobItem.job_id == job_id)
    )
    if label is not None:
        q = q.where(decided_label == label)
    if min_prob is not None:
        q = q.where(a.p_fake >= float(min_prob))
    out = []
    for r in session.execute(q.order_by(JobItem.position)):
        out.append(
            {
                "item_id": r.id,
                "position": r.position,
                "uri": r.uri,
                "status": r.status,
                "error_code": r.error_code,
                "error_message": r.error_message,
                "attempts": r.attempts,
                "analysis_id": r.analysis_id,
                "sha256": r.sha256,
                "p_fake": r.p_fake,
                "threshold": r.threshold,
                "label": r.label,
                "model_id": r.model_id,
                "cam_config_id": r.cam_config_id,
                "width": r.width,
                "height": r.height,
                "stats": r.stats,
                "heatmap_keys": r.heatmap_keys,
            }
        )
    return out


def analyses_for_rendering(session: Session, target: str) -> list[dict[str, Any]]:
    """What ``poundcam render`` draws from: for an analysis id or a job id, one record per
    analysis (``analysis_id``, ``sha256``, ``p_fake``, ``model_id``, ``cam_config_id``,
    ``real_map``, ``fake_map``, ``deep_real_map``, ``deep_fake_map`` as float32 arrays or None,
    ``uri``: a source the image was submitted as), in job order for a job.

    Raises:
        JobNotFoundError: ``target`` is neither an analysis id nor a job id.
    """
    a, i = Analysis, JobItem
    cols = (
        a.id,
        a.sha256,
        a.p_fake,
        a.model_id,
        a.cam_config_id,
        a.real_map,
        a.fake_map,
        a.deep_real_map,
        a.deep_fake_map,
        i.uri,
    )
    if target.isdigit():
        latest = sa.select(sa.func.max(i.id)).where(i.analysis_id == int(target)).scalar_subquery()
        q = sa.select(*cols).select_from(a).outerjoin(i, i.id == latest).where(a.id == int(target))
    else:
        if session.get(Job, target) is None:
            raise JobNotFoundError(f"no analysis or job {target!r}")
        q = (
            sa.select(*cols)
            .select_from(i)
            .join(a, a.id == i.analysis_id)
            .where(i.job_id == target, i.status == "done")
            .order_by(i.position)
        )
    rows, seen = [], set()
    for r in session.execute(q):
        if r.id in seen:  # a job may hold the same image twice
            continue
        seen.add(r.id)
        rows.append(
            {
                "analysis_id": r.id,
                "sha256": r.sha256,
                "p_fake": r.p_fake,
                "model_id": r.model_id,
                "cam_config_id": r.cam_config_id,
                "real_map": stored_map(r.real_map),
                "fake_map": stored_map(r.fake_map),
                "deep_real_map": stored_map(r.deep_real_map),
                "deep_fake_map": stored_map(r.deep_fake_map),
                "uri": r.uri,
            }
        )
    if not rows and target.isdigit():
        raise JobNotFoundError(f"no analysis or job {target!r}")
    return rows


def store_deep_maps(session: Session, analysis_id: int, real: Any, fake: Any) -> None:
    """Store the deep maps of an analysis computed after it (``poundcam explain``), replacing
    any stored before; each a finite square grid of the size of its fast maps.

    Raises:
        JobNotFoundError: no analysis has this id.
        ValueError: a map is not a finite square grid of the fast maps' size.
    """
    row = session.get(Analysis, int(analysis_id))
    if row is None:
        raise JobNotFoundError(f"no analysis {analysis_id!r}")
    dialect = session.get_bind().dialect.name
    values = {"deep_real_map": _map_value(real, dialect), "deep_fake_map": _map_value(fake, dialect)}
    fast = stored_map(row.real_map)
    if fast is not None and any(len(v) != fast.shape[0] for v in values.values()):
        raise ValueError(f"the deep maps' grid differs from the fast maps' ({fast.shape[0]})")
    t = _ANALYSES
    session.execute(sa.update(t).where(t.c.id == int(analysis_id)).values(**values))
