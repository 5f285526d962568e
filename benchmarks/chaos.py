"""A chaos run of the distributed pipeline: one job under every fault at once.

    python benchmarks/chaos.py              # 520 images, 2 workers (about 5 minutes on 2 cores)
    python benchmarks/chaos.py --n 200      # a quicker check

In one run, against real servers (moto's S3 server reached through a TCP proxy that can be
cut, a fresh PostgreSQL database, an empty Redis database number) and real worker processes:
1. a corpus of N images: good ones, about 5% bad ones (each with the code it must get), and
   thin ones (strips a few pixels wide, which must end done or failed with a code);
2. poison entries of every kind (benchmarks/poison.py) pushed raw into the queue, half before
   the job's messages and half after;
3. forged messages for the job naming another job's items (with other URIs) and ids of no item
   (the other job's own message is held as by a busy worker, so nothing else may touch it);
4. once a quarter of the job is done, S3 cut for --cut-s seconds (every connection reset);
5. once half is done, a worker killed with SIGKILL and a replacement started.
Then it checks: every item done or failed with a code (the bad ones with theirs), one analysis
per image (no duplicates), the other job untouched, every poison entry dead-lettered with its
reason, and no worker gone except the killed one. Figures go to benchmarks/results/ as JSON and
are printed; exit code 0 when every check holds.

It reuses pipeline_load.py's corpus and servers and local_servers.py's proxy.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.local_servers import AWS_ENV, TcpProxy, fresh_database  # noqa: E402
from benchmarks.pipeline_load import (  # noqa: E402
    DEFAULT_WEIGHTS,
    RESULTS,
    Worker,
    make_corpus,
    moto_server,
    redis_database,
)
from benchmarks.poison import poison_entries  # noqa: E402

BUCKET, HEAT = "chaos-images", "chaos-heatmaps"
# Aspect ratios of 300:1; kept this small so that a run fits a shared machine whatever the
# preprocessing costs per pixel of the resized strip (each becomes about 77k x 256 pixels).
THIN_SIZES = ((600, 2), (2, 600), (1500, 5), (5, 1500))


def thin_image(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def chaos_corpus(n: int, n_thin: int) -> list[tuple[str, bytes, str | None]]:
    """[(key, bytes, expected code)]: None for good images, "any" for thin ones."""
    corpus = make_corpus(n - n_thin, bad_fraction=0.05, side=64)
    for k in range(n_thin):
        w, h = THIN_SIZES[k % len(THIN_SIZES)]
        corpus.insert(
            k * len(corpus) // n_thin, (f"thin/{k:03d}-{w}x{h}.png", thin_image(w, h, 7_000 + k), "any")
        )
    return corpus


class Run:
    """The servers, the workers and the clock of one chaos run."""

    def __init__(self, args, work: Path, s3_url: str, db_url: str, broker: str):
        from poundcam.db import make_session_factory
        from poundcam.settings import Settings

        self.args, self.work = args, work
        self.proxy = TcpProxy(int(s3_url.rsplit(":", 1)[1]))
        self.settings = Settings.from_env(
            {}, database_url=db_url, broker_url=broker, task_batch_size=args.task_batch_size
        )
        self.sessions = make_session_factory(db_url)
        self.env = {
            "POUNDCAM_BROKER_URL": broker,
            "POUNDCAM_DATABASE_URL": db_url,
            "POUNDCAM_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.proxy.port}",
            "POUNDCAM_HEATMAP_BUCKET": HEAT,
            "POUNDCAM_ALLOWED_BUCKETS": BUCKET,
            "POUNDCAM_WEIGHTS": args.weights,
            "POUNDCAM_DEVICE": "cpu",
            "POUNDCAM_BATCH_SIZE": "16",
            "POUNDCAM_VISIBILITY_TIMEOUT_S": str(args.visibility_timeout),
            "POUNDCAM_SWEEP_INTERVAL_S": str(args.visibility_timeout),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        self.workers: list[Worker] = []
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def note(self, what: str) -> None:
        self.events.append((round(time.monotonic() - self.t0, 1), what))
        print(f"[{self.events[-1][0]:7.1f}s] {what}", flush=True)

    def start_worker(self, name: str) -> Worker:
        w = Worker(name, self.env, self.work)
        w.wait_ready()
        self.workers.append(w)
        self.note(f"worker {name} ready (pid {w.proc.pid})")
        return w

    def status(self, job_id: str) -> dict:
        from poundcam import client

        return client.status(job_id, settings=self.settings)

    def wait(self, job_id: str, done_at_least: int | None, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(job_id)
            if st["finished"] if done_at_least is None else st["done"] >= done_at_least:
                return st
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id}: not there after {timeout:.0f}s: {st}")
            time.sleep(0.25)


def forge(run: Run, job_id: str, victim_refs: list[dict], own_refs: list[dict]) -> int:
    """Messages for ``job_id`` naming the victim's items (with our URIs) and ids of no item."""
    from poundcam.messaging import QUEUE, TASK_NAME, make_message, make_producer

    app = make_producer(run.settings)
    forged = 0
    for k, victim in enumerate(victim_refs):
        items = [(victim["item_id"], own_refs[k % len(own_refs)]["uri"]), (10**12 + k, own_refs[0]["uri"])]
        app.send_task(TASK_NAME, kwargs={"message": make_message(job_id, items)}, queue=QUEUE)
        forged += 1
    return forged


def account(run: Run, corpus, uris, job_id: str, victim: str) -> dict:
    import sqlalchemy as sa

    from poundcam import client
    from poundcam.db import Analysis, session_scope

    rows = client.results(job_id, settings=run.settings)
    expected = {u: c for u, (_, _, c) in zip(uris, corpus, strict=True)}
    wrong = []
    for r in rows:
        want = expected[r["uri"]]
        ok = (
            (r["status"] == "done" and r["error_code"] is None)
            if want is None
            else (r["status"] in ("done", "failed") and (r["status"] == "done") == (r["error_code"] is None))
            if want == "any"
            else (r["status"], r["error_code"]) == ("failed", want)
        )
        if not ok:
            wrong.append(
                {"uri": r["uri"], "expected": want, "status": r["status"], "error_code": r["error_code"]}
            )
    with session_scope(run.sessions) as s:
        per_sha = dict(s.execute(sa.select(Analysis.sha256, sa.func.count()).group_by(Analysis.sha256)).all())
    duplicates = {sha: n for sha, n in per_sha.items() if n != 1}
    good = {hashlib.sha256(d).hexdigest() for _, d, c in corpus if c is None}
    codes = collections.Counter(r["error_code"] for r in rows if r["error_code"])
    thin = {
        r["uri"].rsplit("/", 1)[1]: r["status"] + (f" ({r['error_code']})" if r["error_code"] else "")
        for r in rows
        if expected[r["uri"]] == "any"
    }
    victim_status = run.status(victim)
    return {
        "items": len(rows),
        "done": sum(r["status"] == "done" for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "failed_by_code": dict(codes),
        "thin": thin,
        "n_wrong": len(wrong),
        "wrong": wrong[:20],
        "analyses": sum(per_sha.values()),
        "duplicates": duplicates,
        "missing_analyses": len(good - set(per_sha)),
        "victim_job": victim_status,
        "ok": (
            len(rows) == len(uris)
            and not wrong
            and not duplicates
            and not good - set(per_sha)
            and victim_status["queued"] == victim_status["total"]
        ),
    }


def metric_total(text: str, name: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = collections.defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))] += s.value
    return dict(out)


def worker_metrics(w: Worker) -> str:
    import urllib.request

    port = w.env["POUNDCAM_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def held_job(run: Run, uris: list[str]) -> tuple[str, list[dict]]:
    """Another job, whose one message is held as by a worker that has not acknowledged it yet
    (in kombu's ``unacked`` hash, without the index entry from which kombu would restore it):
    forged messages must leave it untouched, and the sweeper, which sees its message, too.
    Made before any worker runs, so that none takes the message off the queue first."""
    import redis

    from poundcam import client
    from poundcam.broker.inflight import UNACKED_KEY
    from poundcam.db import create_job, item_refs, session_scope

    with session_scope(run.sessions) as s:
        victim = create_job(s, uris)
        refs = item_refs(s, victim)
    client.client_for(run.settings).enqueue(victim, refs)
    r = redis.Redis.from_url(run.settings.broker_url)
    raw = r.rpop("poundcam")
    if not isinstance(raw, bytes):
        raise RuntimeError(f"the held job's message is not in the queue: {raw!r}")
    r.hset(UNACKED_KEY, "chaos-held", json.dumps([json.loads(raw), "", "poundcam"]))
    return victim, refs


def scenario(run: Run, corpus, uris: list[str], poison: dict, victim: str, victim_refs: list[dict]) -> dict:
    """The faults, in order; returns what happened."""
    import redis

    from poundcam import client
    from poundcam.db import item_refs, session_scope

    r = redis.Redis.from_url(run.settings.broker_url)
    entries = list(poison.values())
    for raw, _ in entries[: len(entries) // 2]:
        r.lpush("poundcam", raw)
    t_submit = time.monotonic()
    job_id = client.submit(uris, settings=run.settings)
    with session_scope(run.sessions) as s:
        own_refs = item_refs(s, job_id)
    n_forged = forge(run, job_id, victim_refs, own_refs)
    for raw, _ in entries[len(entries) // 2 :]:
        r.lpush("poundcam", raw)
    run.note(
        f"job {job_id}: {len(uris)} items submitted, {len(entries)} poison entries and "
        f"{n_forged} forged messages queued"
    )

    run.wait(job_id, len(uris) // 4, run.args.timeout)
    run.proxy.cut()
    run.note(f"S3 cut at {run.status(job_id)['done']} done")
    time.sleep(run.args.cut_s)
    run.proxy.restore()
    run.note(f"S3 back after {run.args.cut_s:.0f}s (connections refused: {run.proxy.refused})")

    run.wait(job_id, len(uris) // 2, run.args.timeout)
    killed = run.workers[0]
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait()
    run.note(f"worker {killed.name} killed with SIGKILL at {run.status(job_id)['done']} done")
    run.start_worker("w-replacement")

    st = run.wait(job_id, None, run.args.timeout)
    seconds = time.monotonic() - t_submit
    run.note(f"job finished: {st['done']} done, {st['failed']} failed in {seconds:.0f}s")
    return {
        "job_id": job_id,
        "victim": victim,
        "seconds": seconds,
        "forged_messages": n_forged,
        "killed": killed,
        "s3_refused": run.proxy.refused,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=520, help="images in the job (default 520)")
    ap.add_argument("--thin", type=int, default=8, help="thin images among them")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--task-batch-size", type=int, default=16)
    ap.add_argument(
        "--visibility-timeout",
        type=int,
        default=30,
        help="POUNDCAM_VISIBILITY_TIMEOUT_S (and the sweep interval) of the workers",
    )
    ap.add_argument("--cut-s", type=float, default=15.0, help="how long S3 is cut")
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=None)
    ap.add_argument(
        "--pg-admin",
        default=os.environ.get("POUNDCAM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    os.environ.update(AWS_ENV)

    from poundcam.broker import deadletters
    from poundcam.db.migrate import upgrade
    from poundcam.storage.s3 import make_s3_client

    corpus = chaos_corpus(args.n, args.thin)
    poison = poison_entries()
    report: dict = {
        "benchmark": "chaos",
        "n": args.n,
        "thin": args.thin,
        "workers": args.workers,
        "poison_entries": len(poison),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    with (
        tempfile.TemporaryDirectory(prefix="poundcam-chaos-") as tmp,
        moto_server(Path(tmp)) as (s3_url, _),
        fresh_database(args.pg_admin, "poundcam_chaos_") as db_url,
        redis_database(args.redis, args.redis_db) as broker,
    ):
        s3 = make_s3_client(endpoint_url=s3_url)
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=HEAT)
        for key, data, _ in corpus:
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        uris = [f"s3://{BUCKET}/{key}" for key, _, _ in corpus]
        upgrade(db_url)
        run = Run(args, Path(tmp), s3_url, db_url, broker)
        try:
            victim, victim_refs = held_job(run, uris[:8])
            for i in range(args.workers):
                run.start_worker(f"w{i}")
            happened = scenario(run, corpus, uris, poison, victim, victim_refs)
            killed = happened.pop("killed")
            survivors = [w for w in run.workers if w is not killed]
            report["workers_alive"] = {w.name: w.proc.poll() is None for w in survivors}
            report["killed"] = {"name": killed.name, "returncode": killed.proc.returncode}
            metrics = [worker_metrics(w) for w in survivors]
            report["metrics"] = {
                name: dict(
                    sum((collections.Counter(metric_total(m, name)) for m in metrics), collections.Counter())
                )
                for name in (
                    "poundcam_dead_letters_total",
                    "poundcam_unbacked_items_total",
                    "poundcam_swept_items_total",
                )
            }
            import redis

            dead = deadletters.entries(redis.Redis.from_url(broker))
            report["dead_letters"] = dict(collections.Counter(d["reason"] for d in dead))
            want = dict(collections.Counter(reason for _, reason in poison.values()))
            report.update(
                happened,
                events=run.events,
                images_per_s=len(uris) / happened["seconds"],
                accounting=account(run, corpus, uris, happened["job_id"], happened["victim"]),
            )
            report["retries_logged"] = sum(
                w.log_path.read_text(errors="replace").count("retrying") for w in run.workers
            )
            report["ok"] = (
                report["accounting"]["ok"]
                and report["dead_letters"] == want
                and all(report["workers_alive"].values())
                and killed.proc.returncode == -signal.SIGKILL
                and happened["s3_refused"] > 0
            )  # the cut was felt
        finally:
            for w in run.workers:
                w.stop()
            run.proxy.close()
            run.sessions.kw["bind"].dispose()
            logs = Path(args.out) / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            for w in run.workers:
                with contextlib.suppress(OSError):
                    (logs / f"chaos-{w.name}.log").write_bytes(w.log_path.read_bytes())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"chaos-n{args.n}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    acc = report["accounting"]
    print(
        f"\nitems {acc['items']}: {acc['done']} done, {acc['failed']} failed "
        f"{acc['failed_by_code']}; wrong outcomes {acc['n_wrong']}; duplicate analyses "
        f"{len(acc['duplicates'])}; other job {acc['victim_job']['queued']}/"
        f"{acc['victim_job']['total']} still queued"
    )
    print(f"thin images: {acc['thin']}")
    print(
        f"dead letters {report['dead_letters']} (poison entries: {len(poison)}); metrics {report['metrics']}"
    )
    print(
        f"workers alive {report['workers_alive']}, killed {report['killed']}; "
        f"{report['images_per_s']:.1f} images/s end to end; retries logged "
        f"{report['retries_logged']}"
    )
    print(f"all checks hold: {report['ok']}\nresults: {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
