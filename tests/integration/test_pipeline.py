"""The distributed pipeline end to end, with real servers and a real worker process.

One worker serves this module. It reaches Redis, PostgreSQL and the S3 server (moto, in a
subprocess) through TCP proxies the tests can cut, so that outages happen without touching the
servers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from . import corpus
from .conftest import (
    AWS_ENV,
    MotoServer,
    TcpProxy,
    Worker,
    analysis_counts,
    fresh_database,
    item_rows,
    poundcam_cmd,
    running_workers,
    wait_finished,
    with_port,
)

pytestmark = pytest.mark.integration

IMAGES, HEAT, OTHER = "imgs", "heat", "other"
JOB_TIMEOUT = 240


@dataclass
class Stack:
    db_url: str  # direct, for the tests
    broker_url: str  # direct, for the producers
    moto: MotoServer
    s3: object  # boto3 client, direct
    db_proxy: TcpProxy  # between the worker and PostgreSQL
    s3_proxy: TcpProxy  # between the worker and S3
    broker_proxy: TcpProxy  # between the worker and Redis
    worker: Worker
    sessions: object
    settings: object  # producer settings (direct database)
    model_id: str = ""
    uploads: dict = field(default_factory=dict)  # uri -> bytes

    def put(self, key: str, data: bytes, bucket: str = IMAGES) -> str:
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        uri = f"s3://{bucket}/{key}"
        self.uploads[uri] = data
        return uri

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            **AWS_ENV,
            "POUNDCAM_DATABASE_URL": self.db_url,
            "POUNDCAM_BROKER_URL": self.broker_url,
        }
        proc = subprocess.run(
            poundcam_cmd() + list(args), env=env, capture_output=True, text=True, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"poundcam {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def stack(request, redis_claims, artifacts_dir, tmp_path_factory):
    from sqlalchemy.engine import make_url

    from poundcam.db import make_session_factory
    from poundcam.db.migrate import upgrade
    from poundcam.settings import Settings

    work = tmp_path_factory.mktemp("pipeline")
    moto = MotoServer(work / "moto.log")
    try:
        s3 = moto.client()
        for b in (IMAGES, HEAT, OTHER):
            s3.create_bucket(Bucket=b)
        with fresh_database() as db_url:
            upgrade(db_url)
            db_proxy = TcpProxy(make_url(db_url).port or 5432)
            s3_proxy = TcpProxy(moto.port)
            broker = redis_claims.claim()
            broker_proxy = TcpProxy(make_url(broker).port or 6379)
            worker = Worker(
                {
                    "POUNDCAM_BROKER_URL": with_port(broker, broker_proxy.port),
                    "POUNDCAM_DATABASE_URL": with_port(db_url, db_proxy.port),
                    "POUNDCAM_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_proxy.port}",
                    "POUNDCAM_HEATMAP_BUCKET": HEAT,
                    "POUNDCAM_ALLOWED_BUCKETS": IMAGES,
                    "POUNDCAM_WEIGHTS": str(corpus_weights(request)),
                    "POUNDCAM_DEVICE": "cpu",
                    "POUNDCAM_MAX_IMAGE_BYTES": str(corpus.MAX_IMAGE_BYTES),
                    "POUNDCAM_MAX_IMAGE_PIXELS": str(corpus.MAX_IMAGE_PIXELS),
                },
                work,
                name="pipeline",
            )
            sessions = make_session_factory(db_url)
            settings = Settings.from_env(database_url=db_url, broker_url=broker)
            try:
                with running_workers(request, [worker], artifacts_dir):
                    st = Stack(
                        db_url,
                        broker,
                        moto,
                        s3,
                        db_proxy,
                        s3_proxy,
                        broker_proxy,
                        worker,
                        sessions,
                        settings,
                        model_id=worker.ready_file.read_text().strip(),
                    )
                    yield st
            finally:
                sessions.kw["bind"].dispose()
                db_proxy.close()
                s3_proxy.close()
                broker_proxy.close()
    finally:
        moto.stop()


def corpus_weights(request) -> Path:
    return request.getfixturevalue("official_dir") / "last.ckpt"


def metric_samples(text: str, name: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def item_deltas(before: str, after: str) -> dict[tuple[str, str], float]:
    b, a = (metric_samples(t, "poundcam_items_total") for t in (before, after))
    out = {}
    for labels, value in a.items():
        d = value - b.get(labels, 0.0)
        if d:
            lab = dict(labels)
            out[(lab["outcome"], lab["error_code"])] = d
    return out


# --- the end-to-end job ---------------------------------------------------------------------------


@dataclass
class E2E:
    job_id: str
    expected: dict  # uri -> None (done) or error code
    rows: list
    metrics_before: str
    metrics_after: str
    s3_requests: dict  # what the S3 server served for the job, counted on its side


@pytest.fixture(scope="module")
def e2e(stack, official_dir) -> E2E:
    expected: dict[str, str | None] = {}
    for name, data in corpus.fixture_images(official_dir).items():
        expected[stack.put(f"fixture/{name}", data)] = None
    for name, data in corpus.good_images(seed=1).items():
        expected[stack.put(f"good/{name}", data)] = None
    for name, (data, code) in corpus.bad_images(seed=1).items():
        expected[stack.put(f"bad/{name}", data)] = code
    expected[stack.put("bad/too_large.png", corpus.too_large_image())] = "too_large"
    stack.s3.put_object(Bucket=OTHER, Key="elsewhere.png", Body=corpus.good_images()["photo.jpg"])
    expected[f"s3://{OTHER}/elsewhere.png"] = "uri_not_allowed"
    # (a local path is refused at submit now; test_forged_messages... has the worker refuse it)
    expected[f"s3://{IMAGES}/missing/no-such-key.png"] = "not_found"

    before = stack.worker.metrics()
    stack.moto.requests(reset=True)
    env = {
        **os.environ,
        **AWS_ENV,
        "POUNDCAM_DATABASE_URL": stack.db_url,
        "POUNDCAM_BROKER_URL": stack.broker_url,
    }
    proc = subprocess.run(
        poundcam_cmd() + ["submit", "--json", "--batch-size", "5", "--from-file", "-"],
        input="\n".join(expected) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["items"] == len(expected)
    job_id = out["job_id"]
    wait_finished(stack.sessions, job_id, JOB_TIMEOUT, [stack.worker])
    # the counters move just after the database rows: give them a moment
    deadline = time.monotonic() + 15
    while True:
        after = stack.worker.metrics()
        if sum(item_deltas(before, after).values()) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return E2E(job_id, expected, item_rows(stack.sessions, job_id), before, after, stack.moto.requests())


def test_every_item_is_done_or_failed_with_its_code(e2e):
    got = {r["uri"]: (r["status"], r["error_code"]) for r in e2e.rows}
    want = {uri: ("done", None) if code is None else ("failed", code) for uri, code in e2e.expected.items()}
    assert got == want
    for r in e2e.rows:
        if r["status"] == "failed":
            assert r["error_message"], r
            assert r["analysis_id"] is None
        else:
            assert r["analysis_id"] is not None


def test_heatmaps_are_pngs_in_s3_under_the_recorded_keys(stack, e2e):
    from poundcam import client
    from poundcam.storage import heatmap_key

    records = {r["uri"]: r for r in client.results(e2e.job_id, settings=stack.settings)}
    done = [uri for uri, code in e2e.expected.items() if code is None]
    assert done
    names = {"comparative"}  # one object per analysed image
    for uri in done:
        rec = records[uri]
        assert rec["sha256"] == hashlib.sha256(stack.uploads[uri]).hexdigest()
        assert rec["model_id"] == stack.model_id
        assert 0.0 <= rec["p_fake"] <= 1.0 and rec["label"] in ("real", "fake")
        assert set(rec["heatmap_keys"]) == names
        for name, key in rec["heatmap_keys"].items():
            assert key == heatmap_key("heatmaps/", rec["sha256"], rec["model_id"], rec["cam_config_id"], name)
            obj = stack.s3.get_object(Bucket=HEAT, Key=key)
            assert obj["ContentType"] == "image/png"
            png = obj["Body"].read()
            assert png[:8] == b"\x89PNG\r\n\x1a\n", key
            bit_depth = png[24]  # IHDR: length, type, width, height, then the bit depth
            with Image.open(io.BytesIO(png)) as im:
                im.load()
                if name.endswith("raw16"):
                    assert bit_depth == 16 and im.mode.startswith("I"), (key, im.mode)
                    g = struct.unpack(">II", png[16:24])
                    assert g[0] == g[1] and g[0] > 1  # the CAM grid, square
                else:
                    assert bit_depth == 8 and im.mode in ("RGB", "RGBA"), (key, im.mode)


def test_s3_requests_per_image(e2e):
    """Counted by the S3 server: one ranged GET per fetched image (no HEAD) and one PUT per
    analysed image, so at most 2 requests per analysed image."""
    analysed = sum(code is None for code in e2e.expected.values())
    fetched = sum(uri.startswith(f"s3://{IMAGES}/") for uri in e2e.expected)
    got = e2e.s3_requests["by_bucket"]
    assert got == {IMAGES: {"GET": fetched}, HEAT: {"PUT": analysed}}, got
    assert e2e.s3_requests["total"] <= 2 * analysed + (fetched - analysed)


def test_resubmitting_creates_no_new_analyses(stack, e2e):
    from poundcam import client

    before = analysis_counts(stack.sessions)
    objects = stack.s3.list_objects_v2(Bucket=HEAT).get("KeyCount")
    stack.moto.requests(reset=True)
    job2 = client.submit(list(e2e.expected), batch_size=7, settings=stack.settings)
    assert job2 != e2e.job_id
    wait_finished(stack.sessions, job2, JOB_TIMEOUT, [stack.worker])
    assert analysis_counts(stack.sessions) == before
    # a reused image costs one request, its GET; nothing is written
    fetched = sum(uri.startswith(f"s3://{IMAGES}/") for uri in e2e.expected)
    assert stack.moto.requests()["by_bucket"] == {IMAGES: {"GET": fetched}}
    assert stack.s3.list_objects_v2(Bucket=HEAT).get("KeyCount") == objects
    assert all(n == 1 for n in before.values())
    first = {r["uri"]: r for r in e2e.rows}
    for r in item_rows(stack.sessions, job2):
        assert (r["status"], r["error_code"], r["analysis_id"]) == (
            first[r["uri"]]["status"],
            first[r["uri"]]["error_code"],
            first[r["uri"]]["analysis_id"],
        ), r["uri"]


def test_status_and_results_commands(stack, e2e):
    from concurrent.futures import ThreadPoolExecutor

    from poundcam import client

    n = len(e2e.expected)
    n_done = sum(code is None for code in e2e.expected.values())
    probs = sorted(
        r["p_fake"] for r in client.results(e2e.job_id, settings=stack.settings) if r["p_fake"] is not None
    )
    cut = probs[len(probs) // 2]
    calls = {  # each command starts a Python process: run them side by side
        "status": ("status", e2e.job_id, "--json"),
        "json": ("results", e2e.job_id, "--format", "json"),
        "csv": ("results", e2e.job_id, "--format", "csv"),
        "fake": ("results", e2e.job_id, "--format", "json", "--label", "fake"),
        "min_prob": ("results", e2e.job_id, "--format", "json", "--min-prob", repr(cut)),
        "table": ("results", e2e.job_id),
    }
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {k: pool.submit(stack.cli, *args) for k, args in calls.items()}
        out = {k: f.result().stdout for k, f in futures.items()}

    st = json.loads(out["status"])
    assert st["finished"] is True
    assert (st["total"], st["done"], st["failed"], st["queued"], st["running"]) == (
        n,
        n_done,
        n - n_done,
        0,
        0,
    )

    doc = json.loads(out["json"])
    assert doc["job_id"] == e2e.job_id
    rows = doc["results"]
    assert [r["uri"] for r in rows] == list(e2e.expected)
    by_uri = {r["uri"]: r for r in rows}
    for uri, code in e2e.expected.items():
        assert by_uri[uri]["error_code"] == code
        assert (by_uri[uri]["p_fake"] is None) == (code is not None)
        assert (by_uri[uri]["model_id"] == stack.model_id) == (code is None)

    table = list(csv.DictReader(io.StringIO(out["csv"])))
    assert [r["uri"] for r in table] == list(e2e.expected)
    assert {
        "status",
        "error_code",
        "error_message",
        "sha256",
        "p_fake",
        "threshold",
        "label",
        "model_id",
        "heatmap_comparative",
        "fake_share",
    } <= set(table[0])
    for r in table:
        assert r["status"] == ("done" if e2e.expected[r["uri"]] is None else "failed")

    fake = {r["uri"] for r in json.loads(out["fake"])["results"]}
    assert fake == {r["uri"] for r in rows if r["label"] == "fake"}
    real = {r["uri"] for r in client.results(e2e.job_id, label="real", settings=stack.settings)}
    assert real == {r["uri"] for r in rows if r["label"] == "real"}
    assert real | fake == {u for u, c in e2e.expected.items() if c is None} and not real & fake

    above = {r["uri"] for r in json.loads(out["min_prob"])["results"]}
    assert above == {r["uri"] for r in rows if r["p_fake"] is not None and r["p_fake"] >= cut}
    assert 0 < len(above) < n_done
    lines = out["table"].splitlines()
    assert lines[0].split()[0] == "uri" and len(lines) == n + 1


def test_metrics_count_the_job(stack, e2e):
    want: dict[tuple[str, str], float] = {}
    for code in e2e.expected.values():
        key = ("done", "") if code is None else ("failed", code)
        want[key] = want.get(key, 0) + 1
    assert item_deltas(e2e.metrics_before, e2e.metrics_after) == want
    info = metric_samples(e2e.metrics_after, "poundcam_model_info")
    assert [dict(k)["model_id"] for k, v in info.items() if v == 1] == [stack.model_id]
    assert metric_samples(e2e.metrics_after, "poundcam_batch_seconds_count")


# --- outages ----------------------------------------------------------------------------------------


def _outage_job(stack, tag: str, n_good: int = 24):
    """A job of new images (never analysed before) plus two bad items."""
    from poundcam import client

    expected = {}
    for k in range(n_good):
        img = corpus.photo(120 + k % 5 * 16, 100 + k % 3 * 20, seed=hash((tag, k)) % 100_000)
        expected[stack.put(f"{tag}/{k}.jpg", corpus.encode(img, "JPEG", quality=85))] = None
    expected[stack.put(f"{tag}/page.png", b"<html><body>not an image</body></html>")] = "not_an_image"
    expected[f"s3://{IMAGES}/{tag}/missing.jpg"] = "not_found"
    job_id = client.submit(list(expected), batch_size=4, settings=stack.settings)
    return job_id, expected


def _wait_done_at_least(stack, job_id: str, n: int, timeout: float = 120):
    from poundcam import client

    deadline = time.monotonic() + timeout
    while client.status(job_id, settings=stack.settings)["done"] < n:
        assert time.monotonic() < deadline, f"job {job_id}: fewer than {n} done after {timeout}s"
        assert stack.worker.alive(), stack.worker.log_tail()
        time.sleep(0.05)


def _assert_exactly_once(stack, job_id: str, expected: dict):
    rows = item_rows(stack.sessions, job_id)
    assert {r["uri"]: (r["status"], r["error_code"]) for r in rows} == {
        u: ("done", None) if c is None else ("failed", c) for u, c in expected.items()
    }
    counts = analysis_counts(stack.sessions)
    for uri, code in expected.items():
        if code is None:
            assert counts[hashlib.sha256(stack.uploads[uri]).hexdigest()] == 1, uri


def test_database_outage_loses_nothing(stack):
    job_id, expected = _outage_job(stack, "db-outage")
    _wait_done_at_least(stack, job_id, 1)
    stack.db_proxy.cut()
    time.sleep(5)
    stack.db_proxy.restore()
    assert stack.db_proxy.refused > 0, "the worker never noticed the outage"
    wait_finished(stack.sessions, job_id, JOB_TIMEOUT, [stack.worker])
    _assert_exactly_once(stack, job_id, expected)


def test_s3_outage_loses_nothing(stack):
    job_id, expected = _outage_job(stack, "s3-outage")
    _wait_done_at_least(stack, job_id, 1)
    stack.moto.pause()  # the server hangs: requests stall
    time.sleep(3)
    stack.moto.resume()
    _wait_done_at_least(stack, job_id, 3)
    stack.s3_proxy.cut()  # the server is gone: connections are reset
    time.sleep(5)
    stack.s3_proxy.restore()
    assert stack.s3_proxy.refused > 0, "the worker never noticed the outage"
    wait_finished(stack.sessions, job_id, JOB_TIMEOUT, [stack.worker])
    _assert_exactly_once(stack, job_id, expected)


def _log_records_since(worker, offset: int) -> list[dict]:
    """The worker's JSON log records written after byte ``offset`` of its log."""
    with open(worker.log_path, "rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_broker_outage_loses_nothing_and_logs_no_traceback(stack):
    job_id, expected = _outage_job(stack, "broker-outage")
    log_start = stack.worker.log_path.stat().st_size
    _wait_done_at_least(stack, job_id, 1)
    stack.broker_proxy.cut()  # Redis is gone: connections reset, new ones refused
    time.sleep(5)
    stack.broker_proxy.restore()
    assert stack.broker_proxy.refused > 0, "the worker never noticed the outage"
    # A message taken off the list as the connection broke is lost (kombu#1733); the sweeper
    # sends its items again after the visibility timeout, an operator at once with resend
    print(stack.cli("resend", job_id).stdout.strip())
    wait_finished(stack.sessions, job_id, JOB_TIMEOUT, [stack.worker])
    _assert_exactly_once(stack, job_id, expected)
    # A lost broker is an expected failure: one line each, no traceback, and the worker says so
    records = _log_records_since(stack.worker, log_start)
    loud = [r for r in records if "exc" in r or r["level"] == "CRITICAL" or r["logger"] == "py.warnings"]
    assert not loud, json.dumps(loud[:2], indent=1)
    assert any("broker" in r["message"].lower() or "redis" in r["message"].lower() for r in records), records


# --- what producers and stale state cannot do to a worker -------------------------------------------


def _counter_deltas(before: str, after: str, name: str, label: str | None) -> dict:
    b, a = (metric_samples(t, name) for t in (before, after))
    out = {}
    for labels, value in a.items():
        if value - b.get(labels, 0.0):
            out[dict(labels).get(label) if label else None] = value - b.get(labels, 0.0)
    return out


def _small_job_uris(stack, tag: str, n: int = 3) -> list[str]:
    return [
        stack.put(
            f"{tag}/{k}.jpg",
            corpus.encode(corpus.photo(96 + 8 * k, 80, seed=hash((tag, k)) % 100_000), "JPEG", quality=85),
        )
        for k in range(n)
    ]


def test_poison_entries_are_dead_lettered_and_the_same_worker_goes_on(stack):
    import collections

    import redis

    from benchmarks.poison import poison_entries
    from poundcam import client
    from poundcam.broker import deadletters

    r = redis.Redis.from_url(stack.broker_url)
    deadletters.purge(r)
    pid = stack.worker.pid
    before = stack.worker.metrics()
    poison = poison_entries()
    for raw, _ in poison.values():  # ahead of the real message: BRPOP takes the oldest first
        r.lpush("poundcam", raw)
    uris = _small_job_uris(stack, "after-poison")
    job_id = client.submit(uris, settings=stack.settings)
    st = wait_finished(stack.sessions, job_id, JOB_TIMEOUT, [stack.worker])
    assert st["done"] == len(uris)
    assert stack.worker.alive() and stack.worker.pid == pid

    reasons = collections.Counter(reason for _, reason in poison.values())
    records = deadletters.entries(r)
    assert collections.Counter(rec["reason"] for rec in records) == reasons
    deadline = time.monotonic() + 15
    while _counter_deltas(before, stack.worker.metrics(), "poundcam_dead_letters_total", "reason") != reasons:
        assert time.monotonic() < deadline, stack.worker.metrics()
        time.sleep(0.2)
    refused = [
        line
        for line in stack.worker.log_path.read_text(errors="replace").splitlines()
        if "queue entry refused" in line
    ]
    assert len(refused) == len(poison) and max(map(len, refused)) < 2500

    out = stack.cli("dead-letters", "list").stdout
    assert f"{len(poison)} dead letter(s)" in out
    unknown = next(rec for rec in records if rec["reason"] == "unknown_task")
    assert "os.system" in stack.cli("dead-letters", "show", unknown["id"][:10]).stdout
    stack.cli("dead-letters", "requeue", unknown["id"])  # refused again, under a new id
    deadline = time.monotonic() + 30
    while not any(
        rec["reason"] == "unknown_task" and rec["id"] != unknown["id"] for rec in deadletters.entries(r)
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    big = next(rec for rec in records if rec["reason"] == "oversized")
    proc = stack.cli("dead-letters", "requeue", big["id"], check=False)
    assert proc.returncode != 0 and "cannot be requeued" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{len(poison)} dead letter(s) deleted" in stack.cli("dead-letters", "purge", "--all").stdout
    assert deadletters.entries(r) == [] and stack.worker.pid == pid
    # the consumer loop keeps its heartbeat (what the liveness probe reads) while idle
    time.sleep(11)
    assert time.time() - stack.worker.heartbeat_file.stat().st_mtime < 11


def test_forged_messages_change_only_what_the_database_backs(stack):
    from poundcam.db import create_job, item_refs, job_status, session_scope
    from poundcam.messaging import QUEUE, TASK_NAME, make_message, make_producer

    victim_uris = _small_job_uris(stack, "victim", 2)
    own_uris = _small_job_uris(stack, "forger", 2)
    with session_scope(stack.sessions) as s:  # jobs without messages of their own
        victim = create_job(s, victim_uris)
        # a local path, which the client refuses at submit: a forged producer's job has one
        own = create_job(s, own_uris + ["/etc/hostname"])
        victim_ids = [r["item_id"] for r in item_refs(s, victim)]
        own_ids = [r["item_id"] for r in item_refs(s, own)]
    message = make_message(
        own,
        [
            (victim_ids[0], own_uris[0]),
            (10**12, own_uris[0]),
            (own_ids[0], victim_uris[1]),
            (own_ids[1], own_uris[1]),
            (own_ids[2], "/etc/hostname"),
        ],
    )
    message["items"].append({"item_id": "7; DROP TABLE jobs", "uri": 3})
    message["items"].append({"item_id": 2**63, "uri": own_uris[0]})  # beyond the id column
    message["enqueued_at"] = 10**400  # beyond any float: ignored, not a reason to drop the rest
    before = stack.worker.metrics()
    make_producer(stack.settings).send_task(TASK_NAME, kwargs={"message": message}, queue=QUEUE)
    wait_finished(stack.sessions, own, JOB_TIMEOUT, [stack.worker])
    with session_scope(stack.sessions) as s:
        assert job_status(s, victim)["queued"] == 2  # untouched
    rows = {r["id"]: r for r in item_rows(stack.sessions, own)}
    assert [(rows[i]["status"], rows[i]["error_code"]) for i in own_ids] == [
        ("done", None),
        ("done", None),
        ("failed", "uri_not_allowed"),
    ]
    from poundcam import client

    by_id = {r["item_id"]: r for r in client.results(own, settings=stack.settings)}
    # read from the URI the database holds, not the one the message named
    assert by_id[own_ids[0]]["sha256"] == hashlib.sha256(stack.uploads[own_uris[0]]).hexdigest()
    deadline = time.monotonic() + 15
    while _counter_deltas(before, stack.worker.metrics(), "poundcam_unbacked_items_total", None) != {
        None: 4.0
    }:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _stale_job(stack, tag: str, n: int, **values) -> tuple[str, list[int]]:
    """A job of ``n`` new images whose items last changed two hours ago (with ``values`` set),
    and no message for them anywhere."""
    import datetime

    import sqlalchemy as sa

    from poundcam.db import JobItem, create_job, item_refs, session_scope

    uris = _small_job_uris(stack, tag, n)
    with session_scope(stack.sessions) as s:
        job = create_job(s, uris)
        ids = [r["item_id"] for r in item_refs(s, job)]
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
        s.execute(sa.update(JobItem).where(JobItem.id.in_(ids)).values(updated_at=old, **values))
    return job, ids


def test_the_sweeper_gives_back_abandoned_items(stack):
    import sqlalchemy as sa

    from poundcam.db import JobItem, session_scope

    job, ids = _stale_job(stack, "abandoned", 3, status="running", attempts=1)
    with session_scope(stack.sessions) as s:  # claimed too often already; still two hours old
        s.execute(
            sa.update(JobItem).where(JobItem.id == ids[2]).values(attempts=5, updated_at=JobItem.updated_at)
        )
    out = json.loads(stack.cli("sweep", "--json").stdout)
    assert out["requeued"] == 2 and out["failed"] == [ids[2]]
    wait_finished(stack.sessions, job, JOB_TIMEOUT, [stack.worker])
    rows = item_rows(stack.sessions, job)
    assert [(r["status"], r["error_code"]) for r in rows] == [
        ("done", None),
        ("done", None),
        ("failed", "retries_exhausted"),
    ]


def test_the_sweeper_sends_again_queued_items_whose_message_was_lost(stack):
    job, _ = _stale_job(stack, "lost-message", 2)
    out = json.loads(stack.cli("sweep", "--json").stdout)
    assert out["resent"] == 2 and out["resent_jobs"] == [job]
    st = wait_finished(stack.sessions, job, JOB_TIMEOUT, [stack.worker])
    assert st["done"] == 2


def test_submit_with_the_broker_down_prints_the_job_and_resend_recovers(stack):
    from .conftest import free_port

    uris = _small_job_uris(stack, "broker-down", 2)
    env = {
        **os.environ,
        **AWS_ENV,
        "POUNDCAM_DATABASE_URL": stack.db_url,
        "POUNDCAM_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    proc = subprocess.run(
        poundcam_cmd() + ["submit", *uris], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "not enqueued" in line]
    assert len(lines) == 1, proc.stderr
    job_id = lines[0].split("job ", 1)[1].split()[0]
    assert job_id in proc.stdout  # the job id alone on stdout, for scripts
    assert "sent 1 message(s)" in stack.cli("resend", job_id).stdout
    assert "sent 0 message(s)" in stack.cli("resend", job_id).stdout  # already in the queue
    st = wait_finished(stack.sessions, job_id, JOB_TIMEOUT, [stack.worker])
    assert st["done"] == 2
