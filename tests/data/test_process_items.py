"""One message through ``process_items`` in this process: a local folder and both databases.

The worker-process and real-server versions live in tests/integration; these pin down the
bookkeeping of a message: counts, progress, batched writes, reuse, redelivery and retries.
"""

import hashlib
import io
import threading

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from poundcam.analysis import AnalysisOptions, Analyzer
from poundcam.constants import ErrorCode
from poundcam.db import Analysis, JobItem, create_job, item_refs, make_session_factory, session_scope
from poundcam.db.migrate import upgrade
from poundcam.pipeline import PipelineContext, RetryLater, process_items
from poundcam.storage import LocalStore, StorageError


def png(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class FlakyStore(LocalStore):
    """Heatmap uploads for keys containing ``fail_on`` raise a transient error."""

    fail_on: str | None = None

    def put(self, key, data, content_type="application/octet-stream"):
        if self.fail_on and self.fail_on in key:
            raise StorageError(ErrorCode.STORAGE_UNAVAILABLE, "store unreachable")
        return super().put(key, data, content_type)


@pytest.fixture
def setup(tmp_path, db_url, tiny_model_factory):
    images = tmp_path / "images"
    images.mkdir()
    files = {
        "a.png": png(1),
        "b.png": png(2),
        "c.png": png(3),
        "a-again.png": png(1),
        "d.png": png(4, (64, 20)),
        "e.png": png(5),
        "empty.png": b"",
        "notes.png": b"plain text, not an image\n",
    }
    for name, data in files.items():
        (images / name).write_bytes(data)
    upgrade(db_url)
    sessions = make_session_factory(db_url)
    store = FlakyStore(tmp_path / "out", read_roots=[images])
    analyzer = Analyzer(tiny_model_factory(), AnalysisOptions(batch_size=3))
    ctx = PipelineContext(
        analyzer=analyzer,
        source=store,
        sink=store,
        sessions=sessions,
        max_image_bytes=1 << 20,
        io_threads=4,
        store_threads=2,
    )
    yield ctx, store, sessions, [str(images / n) for n in files]
    ctx.close()
    analyzer.close()
    sessions.kw["bind"].dispose()


def new_job(sessions, uris):
    with session_scope(sessions) as s:
        job = create_job(s, uris)
        return [(r["item_id"], r["uri"]) for r in item_refs(s, job)]


def states(sessions, items):
    with sessions() as s:
        rows = {r.id: r for r in s.execute(sa.select(JobItem)).scalars()}
    return [(rows[i].status, rows[i].error_code) for i, _ in items]


def n_analyses(sessions):
    with sessions() as s:
        return s.execute(sa.select(sa.func.count()).select_from(Analysis)).scalar_one()


def test_a_message_is_accounted_for_item_by_item(setup):
    ctx, _, sessions, uris = setup
    items = new_job(sessions, uris)
    seen = []
    report = process_items(ctx, items, progress=seen.append)
    assert (report.done, report.failed, report.reused, report.skipped) == (6, 2, 0, 0)
    assert states(sessions, items) == [("done", None)] * 6 + [("failed", "empty"), ("failed", "not_an_image")]
    assert n_analyses(sessions) == 5  # a.png and a-again.png are one image
    assert len(seen) == 8 and sum(not o.ok for o in seen) == 2
    with sessions() as s:
        rows = s.execute(sa.select(JobItem.analysis_id).where(JobItem.status == "done")).all()
        analysis_of = [r.analysis_id for r in rows]
    assert len(set(analysis_of)) == 5

    # A redelivered message skips what is finished; a new job with the same images reuses.
    again = process_items(ctx, items)
    assert (again.done, again.failed, again.skipped) == (0, 0, 8)
    second = new_job(sessions, uris)
    report = process_items(ctx, second, progress=seen.append)
    assert (report.done, report.failed, report.reused) == (0, 2, 6)
    assert n_analyses(sessions) == 5 and len(seen) == 16


def test_progress_moves_image_by_image_not_per_database_batch(setup, monkeypatch):
    """Each image is reported as it is settled; the database batch (here 3 rows) is written
    after its images were reported, so the count grows by one, never jumps by a batch."""
    import poundcam.pipeline as pipeline

    ctx, _, sessions, uris = setup
    items = new_job(sessions, uris)
    events: list[str] = []
    real_write = pipeline._Ledger.write

    def write(ledger, c):
        events.append(f"write {len(ledger)}")
        return real_write(ledger, c)

    monkeypatch.setattr(pipeline._Ledger, "write", write)
    process_items(ctx, items, progress=lambda outcome: events.append("image"))
    assert events.count("image") == len(items)
    first_write = next(i for i, e in enumerate(events) if e.startswith("write") and e != "write 0")
    n = int(events[first_write].split()[1])
    assert events[first_write - n : first_write] == ["image"] * n  # reported before the write


class CountingStore(FlakyStore):
    """Counts the images read (from the pipeline's fetching threads)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = 0
        self._lock = threading.Lock()

    def get(self, uri, max_bytes=None):
        with self._lock:
            self.reads += 1
        return super().get(uri, max_bytes=max_bytes)


def test_a_long_message_is_fetched_a_window_ahead_not_all_at_once(setup, tmp_path):
    """Images are fetched a bounded window ahead of the analysis: a message of 120 images
    never has more than the window read beyond what is settled (the analyzer's own reading
    ahead, a chunk, ``fetch_ahead`` and the results waiting to be stored), not all 120."""
    ctx, _, sessions, _ = setup
    folder = tmp_path / "long"
    folder.mkdir()
    for i in range(120):
        (folder / f"{i}.png").write_bytes(png(100 + i, (24, 24)))
    store = CountingStore(tmp_path / "out", read_roots=[folder])
    ctx.source, ctx.fetch_ahead = store, 4
    items = new_job(sessions, [str(folder / f"{i}.png") for i in range(120)])
    settled, ahead = [], []
    process_items(
        ctx, items, progress=lambda o: (settled.append(o), ahead.append(store.reads - len(settled)))
    )
    assert len(settled) == 120 and store.reads == 120
    bs = ctx.analyzer.options.batch_size
    # fetch_ahead + 1: the fetcher starts the next fetch as it hands an image over
    reading_ahead = (ctx.analyzer.options.prefetch + 2) * bs + bs + ctx.fetch_ahead + 1 + 2 * bs
    assert max(ahead) <= reading_ahead < 60, ahead


def test_transient_upload_failure_retries_only_its_items(setup):
    ctx, store, sessions, uris = setup
    items = new_job(sessions, uris)
    store.fail_on = hashlib.sha256(png(3)).hexdigest()  # c.png's heatmaps cannot be stored
    with pytest.raises(RetryLater) as info:
        process_items(ctx, items)
    c_item = items[2][0]
    assert info.value.item_ids == [c_item]
    got = states(sessions, items)
    assert got[2] == ("running", None)
    assert got[:2] + got[3:] == [("done", None)] * 5 + [("failed", "empty"), ("failed", "not_an_image")]
    store.fail_on = None
    report = process_items(ctx, [items[2]])
    assert report.done == 1 and states(sessions, items)[2] == ("done", None)
    assert n_analyses(sessions) == 5


def test_an_interrupt_records_what_was_settled_and_leaves_the_rest_claimed(setup):
    """Ctrl-C mid-message: the items already reported (their heatmaps stored) are written as
    finished before the interrupt goes on, not analysed again later; the others stay claimed
    ("running") for the caller to give back (``poundcam analyze`` requeues them). The items
    whose heatmaps are stored by then are settled too: how many depends on the threads."""
    ctx, _, sessions, uris = setup
    items = new_job(sessions, uris)
    seen = []

    def progress(outcome):
        seen.append(outcome)
        if len(seen) == 2:  # the database batch is 3: these two are not written yet
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_items(ctx, items, progress=progress)
    got = [status for status, _ in states(sessions, items)]
    assert got.count("done") + got.count("failed") == len(seen) >= 2
    assert got.count("running") == len(items) - len(seen)  # those not reported yet, if any


def test_the_database_not_the_message_decides_what_is_processed(setup):
    ctx, _, sessions, uris = setup
    victim = new_job(sessions, uris[:2])  # another job's items
    items = new_job(sessions, uris[2:4])
    forged = [(victim[0][0], uris[4]), (10**9, uris[5]), (items[0][0], uris[5]), items[1]]
    report = process_items(ctx, forged, job_id=job_of(sessions, items[0][0]))
    # The other job's item and the id of no item change nothing and are reported; the item
    # named with another URI is read from the URI the database holds for it.
    assert sorted(report.unbacked) == sorted([victim[0][0], 10**9])
    assert (report.done, report.failed) == (2, 0)
    assert states(sessions, victim) == [("queued", None)] * 2
    with sessions() as s:
        a = s.execute(
            sa.select(Analysis.sha256)
            .join(JobItem, JobItem.analysis_id == Analysis.id)
            .where(JobItem.id == items[0][0])
        ).scalar_one()
    assert a == hashlib.sha256(png(3)).hexdigest()  # c.png, as the database says


def job_of(sessions, item_id):
    with sessions() as s:
        return s.get(JobItem, item_id).job_id


class BrokenSink(LocalStore):
    def put(self, key, data, content_type="application/octet-stream"):
        raise StorageError("not_found", "heat: NoSuchBucket")


def test_heatmaps_refused_for_good_fail_their_items_with_a_code(setup, tmp_path):
    ctx, store, sessions, uris = setup
    items = new_job(sessions, uris[:3])
    ctx.sink = BrokenSink(tmp_path / "nowhere")
    report = process_items(ctx, items)
    assert (report.done, report.failed, report.retry) == (0, 3, [])
    assert states(sessions, items) == [("failed", "heatmap_not_stored")] * 3


def test_one_object_per_image_and_none_when_off(setup, tmp_path):
    """Each analysed image writes one object, the comparative heatmap, and its maps to the
    database; with the heatmap off it writes nothing to the store and the maps still go to
    the database."""
    from poundcam.db.repository import stored_map

    ctx, store, sessions, uris = setup
    puts = []
    real_put = store.put
    store.put = lambda key, data, ct="application/octet-stream": puts.append(key) or real_put(key, data, ct)
    process_items(ctx, new_job(sessions, uris[:3]))
    assert len(puts) == 3 and all(k.endswith("/comparative.png") for k in puts)

    off = Analyzer(ctx.analyzer.model, AnalysisOptions(batch_size=3, render=False))
    ctx_off = PipelineContext(
        analyzer=off,
        source=store,
        sink=store,
        sessions=sessions,
        max_image_bytes=1 << 20,
        io_threads=2,
        store_threads=1,
    )
    try:
        puts.clear()
        report = process_items(ctx_off, new_job(sessions, uris[4:6]))
    finally:
        ctx_off.close()
        off.close()
    assert report.done == 2 and puts == []
    with sessions() as s:
        rows = s.execute(sa.select(Analysis)).scalars().all()
    assert len(rows) == 5
    for row in rows:
        grid = row.stats["grid"]
        assert stored_map(row.real_map).shape == stored_map(row.fake_map).shape == (grid, grid)
        assert set(row.heatmap_keys) <= {"comparative"}
    assert sum(not row.heatmap_keys for row in rows) == 2
