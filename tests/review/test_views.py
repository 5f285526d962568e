"""The review views on both backends: created by the migration, filled through the repository
functions, same columns and values on PostgreSQL and SQLite, removed by the downgrade."""

from __future__ import annotations

import sqlalchemy as sa

from poundcam.db import (
    create_job,
    make_engine,
    make_session_factory,
    mark_done,
    mark_failed,
    mark_running,
    session_scope,
    upsert_analysis,
)
from poundcam.db.migrate import current, downgrade, upgrade

ITEM_COLUMNS = [
    "job_id",
    "item_id",
    "position",
    "uri",
    "status",
    "error_code",
    "error_message",
    "attempts",
    "item_updated_at",
    "analysis_id",
    "sha256",
    "model_id",
    "cam_config_id",
    "p_fake",
    "label",
    "threshold",
    "logit_real",
    "logit_fake",
    "real_max",
    "fake_max",
    "real_mean",
    "fake_mean",
    "real_area_half_max",
    "fake_area_half_max",
    "real_entropy",
    "fake_entropy",
    "fake_share",
    "correlation",
    "real_peak_x",
    "real_peak_y",
    "fake_peak_x",
    "fake_peak_y",
    "cam_layer",
    "cam_target",
    "cam_grid",
    "heatmap_real_overlay_key",
    "heatmap_fake_overlay_key",
    "heatmap_real_overlay_original_key",
    "heatmap_fake_overlay_original_key",
    "heatmap_real_raw16_key",
    "heatmap_fake_raw16_key",
    "image_format",
    "width",
    "height",
    "worker",
    "analysed_at",
    "heatmap_key",
    "real_map",
    "fake_map",
    "deep_real_map",
    "deep_fake_map",
]
GRID = 16
SUMMARY_COLUMNS = [
    "job_id",
    "created_at",
    "total",
    "queued",
    "running",
    "done",
    "failed",
    "fake",
    "real",
    "finished",
    "max_p_fake",
    "last_update_at",
]
NAMES = (
    "real_overlay",
    "fake_overlay",
    "real_overlay_original",
    "fake_overlay_original",
    "real_raw16",
    "fake_raw16",
)


def _stats(fake_max: float, peak) -> dict:
    cls = {
        "max": fake_max,
        "mean": fake_max / 4,
        "area_half_max": 0.125,
        "entropy": 0.8,
        "peak": peak,
        "centroid": peak,
        "peak_cell": [1, 2],
    }
    real = {
        "max": 0.5,
        "mean": 0.1,
        "area_half_max": 0.25,
        "entropy": 0.9,
        "peak": [10.0, 20.0],
        "centroid": [11.0, 21.0],
        "peak_cell": [0, 0],
    }
    return {
        "real": real,
        "fake": cls,
        "comparative": {"correlation": None, "fake_share": 0.75},
        "grid": 16,
        "layer": 23,
        "target": "contrastive",
    }


def _maps(fake_peak: tuple[int, int] | None):
    """Float32 maps of GRID x GRID: real evidence at the centre, fake at ``fake_peak``."""
    import numpy as np

    real = np.zeros((GRID, GRID), np.float32)
    fake = np.zeros((GRID, GRID), np.float32)
    real[8, 8] = 0.1  # not exactly representable: float32 round trip
    if fake_peak is not None:
        fake[fake_peak] = 1.7
        fake[fake_peak[0], (fake_peak[1] + 1) % GRID] = 0.3
        fake[6, 6] = 0.2  # in the central half
    return real, fake


def _analysis(sha_char: str, p_fake: float, label: str, peak, fake_peak=None) -> dict:
    sha = sha_char * 64
    real, fake = _maps(fake_peak)
    return {
        "sha256": sha,
        "model_id": "m" * 16,
        "cam_config_id": "c" * 12,
        "p_fake": p_fake,
        "logit_real": 0.0,
        "logit_fake": 1.0,
        "label": label,
        "threshold": 0.5,
        "stats": _stats(2.0 * p_fake, peak),
        "heatmap_keys": {n: f"heatmaps/{sha[:2]}/{sha}/{n}.png" for n in NAMES},
        "image_format": "JPEG",
        "width": 640,
        "height": 480,
        "worker": "w1",
        "real_map": real,
        "fake_map": fake,
    }


def _fill(url: str) -> tuple[str, str]:
    """Job A: fake done, real done, a failure, one queued; job B: no items."""
    sessions = make_session_factory(url)
    with session_scope(sessions) as s:
        job = create_job(s, ["s3://img/a.jpg", "s3://img/b'<x>.png", "s3://img/c.jpg", "s3://img/d.jpg"])
        empty = create_job(s, [])
        ids = mark_running(s, _item_ids(s, job)[:3])
        a = upsert_analysis(s, _analysis("a", 0.9, "fake", [100.5, 200.25], fake_peak=(1, 2)))
        b = upsert_analysis(s, _analysis("b", 0.2, "real", None))  # an all-zero fake map
        mark_done(s, ids[0], a)
        mark_done(s, ids[1], b)
        mark_failed(s, ids[2], "decode_failed", "not an image")
    sessions.kw["bind"].dispose()
    return job, empty


def _item_ids(s, job):
    from poundcam.db import JobItem

    return list(
        s.execute(sa.select(JobItem.id).where(JobItem.job_id == job).order_by(JobItem.position)).scalars()
    )


def _query(url: str, sql: str, **params):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql), params)
            return list(result.keys()), [dict(r._mapping) for r in result]
    finally:
        engine.dispose()


def _views(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_view_names())
    finally:
        engine.dispose()


def test_views_up_query_down(db_url):
    upgrade(db_url)
    assert {"poundcam_v_item_results", "poundcam_v_job_summary"} <= _views(db_url)
    job, empty = _fill(db_url)

    cols, rows = _query(
        db_url, "SELECT * FROM poundcam_v_item_results WHERE job_id = :j ORDER BY position", j=job
    )
    assert cols == ITEM_COLUMNS
    assert [r["status"] for r in rows] == ["done", "done", "failed", "queued"]
    fake, real, failed, queued = rows
    assert fake["label"] == "fake" and abs(fake["p_fake"] - 0.9) < 1e-9
    assert fake["fake_max"] == 1.8 and fake["real_max"] == 0.5
    assert fake["fake_mean"] == 0.45 and fake["real_entropy"] == 0.9
    assert fake["fake_share"] == 0.75 and fake["correlation"] is None
    assert (fake["fake_peak_x"], fake["fake_peak_y"]) == (100.5, 200.25)
    assert (fake["real_peak_x"], fake["real_peak_y"]) == (10.0, 20.0)
    assert (fake["cam_layer"], fake["cam_target"], fake["cam_grid"]) == (23, "contrastive", 16)
    assert fake["heatmap_fake_overlay_key"] == f"heatmaps/aa/{'a' * 64}/fake_overlay.png"
    assert fake["heatmap_real_raw16_key"].endswith("/real_raw16.png")
    assert (fake["image_format"], fake["width"], fake["height"]) == ("JPEG", 640, 480)
    assert fake["attempts"] == 1 and fake["analysed_at"] is not None
    assert real["uri"] == "s3://img/b'<x>.png" and real["label"] == "real"
    assert real["fake_peak_x"] is None and real["fake_peak_y"] is None  # JSON null -> NULL
    assert failed["error_code"] == "decode_failed" and failed["analysis_id"] is None
    assert failed["p_fake"] is None and failed["heatmap_fake_overlay_key"] is None
    assert queued["attempts"] == 0 and queued["label"] is None
    # the maps, as JSON arrays of rows on both backends, float32 values exactly
    import json

    import numpy as np

    for row, peak in ((fake, (1, 2)), (real, None)):
        maps = {
            k: json.loads(row[k]) if isinstance(row[k], str) else row[k] for k in ("real_map", "fake_map")
        }
        want_real, want_fake = _maps(peak)
        assert np.array_equal(np.asarray(maps["real_map"], np.float32), want_real)
        assert np.array_equal(np.asarray(maps["fake_map"], np.float32), want_fake)
    assert failed["real_map"] is None and fake["heatmap_key"] is None
    _, cells = _query(
        db_url,
        "SELECT map, grid_row, grid_col, value FROM poundcam_v_map_cells "
        "WHERE analysis_id = :a AND value > 0 ORDER BY map, grid_row, "
        "grid_col",
        a=fake["analysis_id"],
    )
    assert [(c["map"], c["grid_row"], c["grid_col"]) for c in cells] == [
        ("fake", 1, 2),
        ("fake", 1, 3),
        ("fake", 6, 6),
        ("real", 8, 8),
    ]
    assert np.float32(cells[0]["value"]) == np.float32(1.7)

    # What a reviewer runs: fakes above a probability, strongest first, with their heatmaps.
    _, top = _query(
        db_url,
        "SELECT uri, p_fake, heatmap_fake_overlay_key FROM "
        "poundcam_v_item_results WHERE label = 'fake' AND p_fake >= :p "
        "ORDER BY p_fake DESC",
        p=0.5,
    )
    assert [r["uri"] for r in top] == ["s3://img/a.jpg"]

    cols, summary = _query(db_url, "SELECT * FROM poundcam_v_job_summary ORDER BY total DESC")
    assert cols == SUMMARY_COLUMNS
    by_id = {r["job_id"]: r for r in summary}
    s = by_id[job]
    assert (s["total"], s["queued"], s["running"], s["done"], s["failed"]) == (4, 1, 0, 2, 1)
    assert (s["fake"], s["real"]) == (1, 0 + 1)
    assert not s["finished"] and abs(s["max_p_fake"] - 0.9) < 1e-9
    e = by_id[empty]
    assert (e["total"], e["queued"], e["done"], e["fake"], e["real"]) == (0, 0, 0, 0, 0)
    assert e["finished"] and e["max_p_fake"] is None
    # `real` and `finished` read unquoted, as tools write them.
    _, unq = _query(
        db_url, "SELECT real, fake, finished FROM poundcam_v_job_summary WHERE job_id = :j", j=job
    )
    assert unq == [{"real": 1, "fake": 1, "finished": False}]

    downgrade(db_url, "0003_job_idempotency_key")
    cols, _ = _query(db_url, "SELECT * FROM poundcam_v_item_results")
    assert cols == ITEM_COLUMNS[:-5]  # 0002's view again
    assert "poundcam_v_map_cells" not in _views(db_url)
    upgrade(db_url)
    cols, rows = _query(
        db_url, "SELECT * FROM poundcam_v_item_results WHERE job_id = :j ORDER BY position", j=job
    )
    assert cols == ITEM_COLUMNS and rows[0]["fake_map"] is None  # the data went with 0004
    assert rows[0]["deep_fake_map"] is None

    downgrade(db_url, "0001_initial")
    assert current(db_url) == ("0001_initial",)
    assert _views(db_url) == set()
    upgrade(db_url)
    assert {"poundcam_v_item_results", "poundcam_v_job_summary"} <= _views(db_url)


def test_finished_when_nothing_waits(db_url):
    upgrade(db_url)
    sessions = make_session_factory(db_url)
    with session_scope(sessions) as s:
        job = create_job(s, ["s3://img/x.jpg"])
        (item,) = mark_running(s, _item_ids(s, job))
        mark_failed(s, item, "not_found", "gone")
    sessions.kw["bind"].dispose()
    _, rows = _query(
        db_url, "SELECT finished, failed, total FROM poundcam_v_job_summary WHERE job_id = :j", j=job
    )
    assert rows == [{"finished": True, "failed": 1, "total": 1}]


def test_documented_queries_run(db_url):
    """Every query in docs/schema.md runs on both backends against the views."""
    import re
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text()
    block = re.search(r"```sql\n(.*?)```", doc, re.S).group(1)
    queries = [q.strip() for q in block.split(";") if q.strip()]
    assert len(queries) >= 5
    upgrade(db_url)
    job, _ = _fill(db_url)
    since = datetime.now(timezone.utc) - timedelta(days=1)
    results = []
    for q in queries:
        sql = "\n".join(line for line in q.splitlines() if not line.startswith("--"))
        params = {k: v for k, v in (("job", job), ("since", since)) if f":{k}" in sql}
        results.append(_query(db_url, sql, **params)[1])
    assert results[0] == [{"total": 4, "done": 2, "failed": 1, "waiting": 1, "finished": False}]
    assert [r["uri"] for r in results[1]] == ["s3://img/a.jpg"]
    assert results[2] == [{"error_code": "decode_failed", "n": 1, "example": "s3://img/c.jpg"}]
    maps, top_left, central = results[-3:]
    assert [r["position"] for r in maps] == [0, 1] and all(r["cam_grid"] == GRID for r in maps)
    assert [(r["position"], r["grid_row"], r["grid_col"]) for r in top_left] == [(0, 1, 2)]
    assert [r["position"] for r in central] == [0]
    assert abs(central[0]["central_share"] - 0.2 / 2.2) < 1e-6


def _deep_and_fast(db_url, real_offset: float):
    """A job of two done items: one analysis with deep maps (real: the fast real map +
    ``real_offset``; fake: peak at (3, 4)), one without. (job, deep id, fast id, deep maps)."""
    import numpy as np

    sessions = make_session_factory(db_url)
    deep_real, deep_fake = _maps((3, 4))
    deep_real = deep_real + np.float32(real_offset)
    with session_scope(sessions) as s:
        job = create_job(s, ["s3://img/deep.jpg", "s3://img/fast.jpg"])
        ids = mark_running(s, _item_ids(s, job))
        deep = upsert_analysis(
            s,
            {
                **_analysis("d", 0.9, "fake", [1.0, 2.0], fake_peak=(1, 2)),
                "deep_real_map": deep_real,
                "deep_fake_map": deep_fake,
            },
        )
        fast = upsert_analysis(s, _analysis("f", 0.1, "real", None))
        mark_done(s, ids[0], deep)
        mark_done(s, ids[1], fast)
    sessions.kw["bind"].dispose()
    return job, deep, fast, deep_real, deep_fake


def test_deep_maps_in_the_view_and_down_to_0004(db_url):
    """0005: the deep maps are stored beside the fast ones and read back exactly through the
    item view; its downgrade removes them (and only them), the upgrade adds them again empty."""
    import json

    import numpy as np

    upgrade(db_url)
    job, deep, fast, deep_real, deep_fake = _deep_and_fast(db_url, real_offset=0.7)

    sql = "SELECT * FROM poundcam_v_item_results WHERE job_id = :j ORDER BY position"
    cols, rows = _query(db_url, sql, j=job)
    assert cols == ITEM_COLUMNS
    got = {
        k: json.loads(rows[0][k]) if isinstance(rows[0][k], str) else rows[0][k]
        for k in ("deep_real_map", "deep_fake_map", "fake_map")
    }
    assert np.array_equal(np.asarray(got["deep_real_map"], np.float32), deep_real)
    assert np.array_equal(np.asarray(got["deep_fake_map"], np.float32), deep_fake)
    assert np.array_equal(np.asarray(got["fake_map"], np.float32), _maps((1, 2))[1])
    assert rows[1]["deep_real_map"] is None and rows[1]["deep_fake_map"] is None

    downgrade(db_url, "0004_raw_maps")
    assert current(db_url) == ("0004_raw_maps",)
    cols, rows = _query(db_url, sql, j=job)
    assert cols == ITEM_COLUMNS[:-2] and rows[0]["fake_map"] is not None  # 0004's view again
    upgrade(db_url)
    cols, rows = _query(db_url, sql, j=job)
    assert cols == ITEM_COLUMNS and rows[0]["deep_real_map"] is None  # the data went with 0005


def test_deep_map_cells_beside_the_fast_ones_and_down_to_0005(db_url):
    """0006: the cells view also walks the deep maps (``deep_real``, ``deep_fake``) where they
    were computed; the fast maps' rows are unchanged; the downgrade restores 0004's view."""
    import numpy as np

    upgrade(db_url)
    job, deep, fast, deep_real, deep_fake = _deep_and_fast(db_url, real_offset=0.25)

    sql = (
        "SELECT analysis_id, map, grid_row, grid_col, value FROM poundcam_v_map_cells "
        "WHERE analysis_id IN (:d, :f)"
    )
    _, cells = _query(db_url, sql, d=deep, f=fast)
    by_map: dict = {}
    for c in cells:
        by_map.setdefault((c["analysis_id"], c["map"]), {})[(c["grid_row"], c["grid_col"])] = c["value"]
    assert set(by_map) == {(deep, m) for m in ("real", "fake", "deep_real", "deep_fake")} | {
        (fast, "real"),
        (fast, "fake"),
    }
    for name, want in (("deep_real", deep_real), ("deep_fake", deep_fake), ("fake", _maps((1, 2))[1])):
        got = np.zeros_like(want)
        for (r, c), v in by_map[(deep, name)].items():
            got[r, c] = v
        assert len(by_map[(deep, name)]) == want.size and np.array_equal(got, want), name

    downgrade(db_url, "0005_deep_maps")
    _, cells = _query(db_url, sql, d=deep, f=fast)
    assert {c["map"] for c in cells} == {"real", "fake"}
    assert len(cells) == 4 * GRID * GRID
    upgrade(db_url)
    _, cells = _query(db_url, sql, d=deep, f=fast)
    assert {c["map"] for c in cells} == {"real", "fake", "deep_real", "deep_fake"}


def test_each_job_keeps_its_own_decision_and_down_to_0006(db_url):
    """0007: an analysis shared by two jobs carries each job's label at its own threshold in
    both views; items done before 0007 keep the label they showed (the analysis's);
    the downgrade restores the analysis's label."""
    upgrade(db_url, "0006_deep_map_cells")
    sessions = make_session_factory(db_url)
    with session_scope(sessions) as s:  # done before 0007: no decision of the item's own
        old_job = create_job(s, ["s3://img/shared.jpg"])
        shared = upsert_analysis(s, _analysis("s", 0.3, "real", None))
        s.execute(
            sa.text("UPDATE job_items SET status = 'done', analysis_id = :a WHERE job_id = :j"),
            {"a": shared, "j": old_job},
        )
    sessions.kw["bind"].dispose()
    upgrade(db_url)
    sessions = make_session_factory(db_url)
    with session_scope(sessions) as s:  # the same image, decided at 0.25: fake here
        new_job = create_job(s, ["s3://img/shared-again.jpg"])
        mark_done(s, mark_running(s, _item_ids(s, new_job))[0], shared, "fake", 0.25)
    sessions.kw["bind"].dispose()

    items = "SELECT label, threshold FROM poundcam_v_item_results WHERE job_id = :j"
    summary = "SELECT fake, real FROM poundcam_v_job_summary WHERE job_id = :j"
    assert _query(db_url, items, j=old_job)[1] == [{"label": "real", "threshold": 0.5}]
    assert _query(db_url, items, j=new_job)[1] == [{"label": "fake", "threshold": 0.25}]
    assert _query(db_url, summary, j=old_job)[1] == [{"fake": 0, "real": 1}]
    assert _query(db_url, summary, j=new_job)[1] == [{"fake": 1, "real": 0}]
    assert _query(db_url, "SELECT * FROM poundcam_v_item_results")[0] == ITEM_COLUMNS

    downgrade(db_url, "0006_deep_map_cells")
    assert _query(db_url, items, j=new_job)[1] == [{"label": "real", "threshold": 0.5}]
    assert _query(db_url, summary, j=new_job)[1] == [{"fake": 0, "real": 1}]
    upgrade(db_url)
