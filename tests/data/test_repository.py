"""Jobs, items and idempotent analyses on PostgreSQL and SQLite (both migrated to head)."""

import hashlib
import threading
import time

import pytest
import sqlalchemy as sa

from poundcam.db import (
    Analysis,
    JobItem,
    JobNotFoundError,
    create_job,
    find_analysis,
    find_analysis_ids,
    item_refs,
    job_results,
    job_status,
    mark_done,
    mark_done_many,
    mark_failed,
    mark_failed_many,
    mark_running,
    requeue,
    session_scope,
    upsert_analyses,
    upsert_analysis,
)


def record(data=b"img", model_id="pn-aaaaaaaaaaaaaaaa", cam="cam1", p_fake=0.9, **extra):
    sha = hashlib.sha256(data).hexdigest()
    rec = {
        "sha256": sha,
        "model_id": model_id,
        "cam_config_id": cam,
        "p_fake": p_fake,
        "logit_real": -1.0,
        "logit_fake": 1.2,
        "label": "fake" if p_fake >= 0.5 else "real",
        "threshold": 0.5,
        "stats": {"fake": {"max": 1.0, "top_cells": [[0, 1]]}},
        "heatmap_keys": {"fake_overlay": f"heatmaps/{model_id}/{cam}/{sha[:2]}/{sha}/f.png"},
        "image_format": "PNG",
        "width": 640,
        "height": 480,
        "geometry": {"resized": [298, 224]},
        "timings": {"model_ms": 12.5},
        "worker": "w1",
    }
    rec.update(extra)
    return rec


def count_analyses(factory) -> int:
    with factory() as s:
        return s.execute(sa.select(sa.func.count()).select_from(Analysis)).scalar_one()


def test_upsert_is_idempotent(db):
    with session_scope(db) as s:
        first = upsert_analysis(s, record())
    with session_scope(db) as s:  # a redelivery, even with different numbers, keeps the first
        again = upsert_analysis(s, record(p_fake=0.1, worker="w2"))
        assert upsert_analysis(s, record()) == first  # twice in one transaction too
    assert again == first and count_analyses(db) == 1
    with session_scope(db) as s:
        other_model = upsert_analysis(s, record(model_id="pn-bbbbbbbbbbbbbbbb"))
        other_cam = upsert_analysis(s, record(cam="cam2"))
        other_image = upsert_analysis(s, record(data=b"other"))
    assert len({first, other_model, other_cam, other_image}) == 4
    assert count_analyses(db) == 4
    with db() as s:
        row = find_analysis(s, hashlib.sha256(b"img").hexdigest(), "pn-aaaaaaaaaaaaaaaa", "cam1")
        assert row.id == first and row.p_fake == 0.9 and row.worker == "w1"
        assert row.stats == {"fake": {"max": 1.0, "top_cells": [[0, 1]]}}
        assert row.created_at is not None


def test_batched_upserts_match_single_ones(db):
    with session_scope(db) as s:
        first = upsert_analysis(s, record(b"a"))
    sparse = {k: v for k, v in record(b"c").items() if k not in ("timings", "worker")}
    with session_scope(db) as s:  # one already stored, a duplicate in the batch, sparse columns
        ids = upsert_analyses(
            s, [record(b"b"), record(b"a", p_fake=0.1), sparse, record(b"b"), record(b"d", cam="cam2")]
        )
    assert ids[1] == first and ids[0] == ids[3] and len(set(ids)) == 4
    assert count_analyses(db) == 4
    with db() as s:
        row = s.get(Analysis, ids[2])
        assert row.timings is None and row.worker is None  # absent fields stay NULL
        assert s.get(Analysis, first).p_fake == 0.9  # the stored analysis wins
        sha = {d: hashlib.sha256(d).hexdigest() for d in (b"a", b"b", b"c", b"d", b"x")}
        found = find_analysis_ids(s, list(sha.values()), "pn-aaaaaaaaaaaaaaaa", "cam1")
        assert found == {sha[b"a"]: ids[1], sha[b"b"]: ids[0], sha[b"c"]: ids[2]}
        assert find_analysis_ids(s, [], "pn-aaaaaaaaaaaaaaaa", "cam1") == {}
        assert upsert_analyses(s, []) == []


def test_batched_item_updates(db):
    with session_scope(db) as s:
        job = create_job(s, ["s3://b/0", "s3://b/1", "s3://b/2", "s3://b/3"])
        ids = [r["item_id"] for r in item_refs(s, job)]
        a = upsert_analysis(s, record())
    with session_scope(db) as s:
        mark_running(s, ids)
        mark_done_many(s, [(ids[0], a), (ids[1], a)])
        mark_failed_many(
            s,
            [
                (ids[1], "corrupt", "late failure"),
                (ids[2], "empty", "0 bytes"),
                (ids[3], "x" * 100, "m" * 5000),
            ],
        )
        mark_done_many(s, [])
        mark_failed_many(s, [])
    with db() as s:
        rows = {r.id: r for r in s.execute(sa.select(JobItem)).scalars()}
    assert [rows[i].status for i in ids] == ["done", "done", "failed", "failed"]
    assert rows[ids[1]].error_code is None and rows[ids[1]].analysis_id == a  # done stays done
    assert rows[ids[2]].error_code == "empty" and rows[ids[2]].error_message == "0 bytes"
    assert len(rows[ids[3]].error_code) == 64 and len(rows[ids[3]].error_message) == 2000


def test_upsert_rejects_incomplete_records(db):
    with session_scope(db) as s:
        with pytest.raises(ValueError, match="p_fake"):
            upsert_analysis(s, {k: v for k, v in record().items() if k != "p_fake"})
        with pytest.raises(ValueError, match="label"):
            upsert_analysis(s, record(label="maybe"))
        with pytest.raises(ValueError, match="unknown"):
            upsert_analysis(s, record(colour="red"))


def test_concurrent_upserts_give_one_row(pg_url):
    """Two connections insert the same triple while the first is uncommitted; then eight
    threads race from a barrier. Every caller gets the one row's id."""
    from poundcam.db import make_engine, make_session_factory
    from poundcam.db.migrate import upgrade

    upgrade(pg_url)
    engine = make_engine(pg_url, pool_size=10)
    factory = make_session_factory(engine)
    try:
        a, b = factory(), factory()
        a.begin()
        id_a = upsert_analysis(a, record())  # holds the unique key, uncommitted
        got = {}

        def second():
            with b.begin():
                got["b"] = upsert_analysis(b, record(worker="other"))  # waits for a

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert "b" not in got  # blocked on a's uncommitted row, not failed
        a.commit()
        t.join(10)
        assert got["b"] == id_a
        a.close(), b.close()

        barrier = threading.Barrier(8)
        ids, errors = [], []

        def race(i):
            try:
                with session_scope(factory) as s:
                    barrier.wait(5)
                    ids.append(upsert_analysis(s, record(data=b"race", worker=f"w{i}")))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(20)
        assert not errors and len(ids) == 8 and len(set(ids)) == 1
        assert count_analyses(factory) == 2
    finally:
        engine.dispose()


def test_job_lifecycle_status_and_results(db):
    uris = ["s3://in/a.jpg", "s3://in/b.jpg", "s3://in/c.jpg", "s3://in/d.jpg"]
    with session_scope(db) as s:
        job_id = create_job(s, uris, {"threshold": 0.5})
    with db() as s:
        refs = item_refs(s, job_id)
        assert [r["uri"] for r in refs] == uris
        st = job_status(s, job_id)
        assert (st["total"], st["queued"], st["running"], st["done"], st["failed"], st["finished"]) == (
            4,
            4,
            0,
            0,
            0,
            False,
        )
    ids = [r["item_id"] for r in refs]

    with session_scope(db) as s:
        assert sorted(mark_running(s, ids[:3])) == sorted(ids[:3])
        fake = upsert_analysis(s, record(b"a", p_fake=0.97))
        real = upsert_analysis(s, record(b"b", p_fake=0.2))
        mark_done(s, ids[0], fake)
        mark_done(s, ids[1], real)
        mark_failed(s, ids[2], "decode_error", "cannot identify image file " + "x" * 5000)
    with db() as s:
        st = job_status(s, job_id)
        assert (st["queued"], st["running"], st["done"], st["failed"], st["finished"]) == (1, 0, 2, 1, False)

    with session_scope(db) as s:
        # redelivery of a finished message: done/failed items are not claimed again
        assert mark_running(s, ids) == [ids[3]]
        assert mark_running(s, ids[3]) == [ids[3]]  # a retry of a running item: attempt 2
        mark_failed(s, ids[0], "late", "a stale failure never overrides done")
        mark_done(s, ids[3], fake)  # another URI with the same image bytes
    with db() as s:
        st = job_status(s, job_id)
        assert (st["done"], st["failed"], st["finished"]) == (3, 1, True)
        results = job_results(s, job_id)
    assert [r["uri"] for r in results] == uris
    a, b, c, d = results
    assert (a["status"], a["label"], a["p_fake"], a["error_code"]) == ("done", "fake", 0.97, None)
    assert a["sha256"] == hashlib.sha256(b"a").hexdigest() and a["model_id"].startswith("pn-")
    assert a["stats"]["fake"]["max"] == 1.0 and a["heatmap_keys"]["fake_overlay"].endswith(".png")
    assert a["attempts"] == 1 and d["attempts"] == 2
    assert (c["status"], c["error_code"], c["sha256"], c["p_fake"]) == ("failed", "decode_error", None, None)
    assert len(c["error_message"]) == 2000
    assert d["analysis_id"] == a["analysis_id"]

    with db() as s:
        fakes = job_results(s, job_id, label="fake")
        assert [r["uri"] for r in fakes] == [uris[0], uris[3]]
        assert [r["uri"] for r in job_results(s, job_id, min_prob=0.5)] == [uris[0], uris[3]]
        assert [r["uri"] for r in job_results(s, job_id, label="real", min_prob=0.1)] == [uris[1]]
        assert job_results(s, job_id, min_prob=0.99) == []
        with pytest.raises(ValueError):
            job_results(s, job_id, label="unknown")


def test_requeue_and_unknown_job(db):
    with session_scope(db) as s:
        job_id = create_job(s, ["s3://in/x.jpg"])
    with session_scope(db) as s:
        ids = mark_running(s, [r["item_id"] for r in item_refs(s, job_id)])
        requeue(s, ids)
    with db() as s:
        assert job_status(s, job_id)["queued"] == 1
        assert item_refs(s, job_id)[0]["uri"] == "s3://in/x.jpg"
        with pytest.raises(JobNotFoundError):
            job_status(s, "no-such-job")
        with pytest.raises(JobNotFoundError):
            job_results(s, "no-such-job")


def test_empty_job_is_finished(db):
    with session_scope(db) as s:
        job_id = create_job(s, [])
    with db() as s:
        assert job_status(s, job_id) == {
            "job_id": job_id,
            "total": 0,
            "queued": 0,
            "running": 0,
            "done": 0,
            "failed": 0,
            "finished": True,
        }


def test_database_enforces_states_and_labels(db):
    with pytest.raises(sa.exc.IntegrityError), session_scope(db) as s:
        job_id = create_job(s, ["s3://in/x.jpg"])
        s.execute(sa.text("UPDATE job_items SET status = 'lost' WHERE job_id = :j"), {"j": job_id})
    with pytest.raises(sa.exc.IntegrityError), session_scope(db) as s:
        job_id = create_job(s, ["s3://in/x.jpg", "s3://in/x.jpg"])
        s.execute(sa.text("UPDATE job_items SET position = 0 WHERE job_id = :j"), {"j": job_id})
    with session_scope(db) as s:
        analysis_id = upsert_analysis(s, record())
    with pytest.raises(sa.exc.IntegrityError), session_scope(db) as s:
        s.execute(sa.text("UPDATE analyses SET label = 'maybe' WHERE id = :i"), {"i": analysis_id})


def test_sqlite_runs_in_wal_mode(sqlite_url):
    from poundcam.db import make_engine

    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_transient_error_classification(pg_url):
    from poundcam.db import is_transient_db_error, make_engine

    engine = make_engine(pg_url.rsplit("/", 1)[0].replace("5432", "1") + "/nowhere")
    with pytest.raises(sa.exc.OperationalError) as info:
        engine.connect()
    assert is_transient_db_error(info.value)
    engine = make_engine("sqlite://")
    with pytest.raises(sa.exc.OperationalError) as info, engine.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    assert not is_transient_db_error(info.value)


def test_claims_are_scoped_to_the_job(db):
    from poundcam.db import claim_items

    with session_scope(db) as s:
        mine = create_job(s, ["s3://b/a", "s3://b/b"])
        other = create_job(s, ["s3://b/c"])
        ids = [r["item_id"] for r in item_refs(s, mine)]
        foreign = item_refs(s, other)[0]["item_id"]
        mark_done(s, ids[1], upsert_analysis(s, record()))
    with session_scope(db) as s:
        claim = claim_items(s, [ids[0], ids[1], foreign, 999999], job_id=mine)
    assert claim.uris == {ids[0]: "s3://b/a"} and claim.backed == {ids[0], ids[1]}
    with session_scope(db) as s:
        assert job_status(s, other)["queued"] == 1


def test_sweeper_requeues_abandoned_items_and_caps_attempts(db):
    import datetime

    from poundcam.constants import ErrorCode
    from poundcam.db import claim_items, sweep_abandoned

    with session_scope(db) as s:
        job = create_job(s, ["s3://b/a", "s3://b/b", "s3://b/c"])
        a, b, c = [r["item_id"] for r in item_refs(s, job)]
    for _ in range(3):  # b was claimed three times
        with session_scope(db) as s:
            claim_items(s, [b], job)
    with session_scope(db) as s:
        claim_items(s, [a, b], job)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=100)
    with session_scope(db) as s:  # not stale yet: nothing moves
        assert sweep_abandoned(s, 3600, max_attempts=4, now=later).requeued == {}
    with session_scope(db) as s:
        swept = sweep_abandoned(s, 60, max_attempts=4, now=later)
    assert swept.requeued == {job: [(a, "s3://b/a")]} and swept.failed == [b]
    with session_scope(db) as s:
        assert sweep_abandoned(s, 60, max_attempts=4, now=later).requeued == {}  # once only
        rows = {r.id: r for r in s.execute(sa.select(JobItem)).scalars()}
    assert rows[a].status == "queued" and rows[c].status == "queued"
    assert (rows[b].status, rows[b].error_code) == ("failed", ErrorCode.RETRIES_EXHAUSTED)
