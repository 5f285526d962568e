"""Load test of the distributed pipeline against the analysis path alone, side by side.

    python benchmarks/pipeline_load.py            # 2,000 images (the default)
    python benchmarks/pipeline_load.py --n 200    # a quick check
    python benchmarks/pipeline_load.py --model B16  # ViT-B/16 PoundNet, random weights

What it does, in one run on this machine:
1. generates N small images (JPEG and PNG, every one different), about 5% of them bad
   (empty, truncated, corrupt, HTML, text, SVG), each bad one with the error code it must get;
2. starts an S3 server (moto's server mode, a subprocess), uploads them; creates a fresh
   PostgreSQL database (migrated) and takes an empty Redis database number;
3. analysis only: ``poundcam.analysis.Analyzer`` on the same bytes in this process: images/s;
4. pipeline: starts ``--workers`` real ``poundcam worker`` processes, submits the job with
   ``poundcam.client.submit`` and waits until it is finished: images/s from submit to finished;
5. checks that every item is accounted for (done + failed == total; the bad ones failed with
   their codes, the good ones done; exactly one analysis per image) and reports the ratio
   pipeline / analysis-only (target >= 0.75). Results go to benchmarks/results/ as JSON.

The official tiny fixture (the default) costs about a thousandth of the released ViT-L/14's
compute, so with it the ratio mostly measures the per-image S3 requests; ``--model SIZE`` runs
the PoundNet architecture at a real size with random weights (the same compute as trained
ones) to measure the pipeline against an analysis of realistic cost.

Both sides use the whole machine: the analysis-only run uses every core; the workers split
them (``--worker-threads``, default cores / workers, per worker). Exit code 0 when every item
is accounted for (the ratio is reported, not enforced), 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import SIZES, random_poundnet  # noqa: E402
from benchmarks.costs import cost_table  # noqa: E402
from benchmarks.local_servers import (  # noqa: E402
    AWS_ENV,
    RedisDatabases,
    free_port,
    fresh_database,
    poundcam_cmd,
    wait_for_port,
)
from benchmarks.s3_server import fetch_counts  # noqa: E402

DEFAULT_WEIGHTS = ROOT / "tests" / "fixtures" / "poundnet-official-tiny" / "last.ckpt"
RESULTS = ROOT / "benchmarks" / "results"
BUCKET, HEAT = "load-images", "load-heatmaps"
CLAIM_KEY = "poundcam-bench:claim"
TARGET_RATIO = 0.75


# --- images -----------------------------------------------------------------------------------


def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    f = rng.uniform(4, 14, 3)
    img = np.stack(
        [np.sin(x / f[c] + seed) * 60 + np.cos(y / f[(c + 1) % 3]) * 60 + 128 for c in range(3)], axis=-1
    )
    img += rng.normal(0, 10, img.shape)
    cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(8, 40)
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def bad_image(k: int) -> tuple[bytes, str]:
    """The k-th bad file: the six kinds in turn, every one different."""
    kind = k % 6
    if kind == 0:
        return b"", "empty"
    if kind == 1:
        jpeg = _encode(photo(96, 96, 10_000_000 + k), "JPEG", quality=90)
        return jpeg[: len(jpeg) // 2], "truncated"
    if kind == 2:
        png = bytearray(_encode(photo(64, 64, 20_000_000 + k), "PNG"))
        i = png.find(b"IDAT")
        png[i + 8 : i + 40] = bytes(range(32))
        return bytes(png), "corrupt"
    if kind == 3:
        return f"<!DOCTYPE html><html><body>page {k}</body></html>".encode(), "not_an_image"
    if kind == 4:
        return f"plain text, not an image ({k})\n".encode() * 8, "not_an_image"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{k}" height="9"/>'.encode(), "not_an_image")


def make_corpus(n: int, bad_fraction: float, side: int) -> list[tuple[str, bytes, str | None]]:
    """[(key, bytes, expected error code or None)]; bad ones spread evenly."""
    every = max(2, round(1 / bad_fraction)) if bad_fraction > 0 else n + 1
    out: list[tuple[str, bytes, str | None]] = []
    for k in range(n):
        if k % every == every - 1:
            data, code = bad_image(k // every)
            out.append((f"bad/{k:05d}", data, code))
            continue
        w = side + (k % 5) * 16
        h = side + (k % 3) * 24
        img = photo(w, h, k)
        if k % 2:
            out.append((f"good/{k:05d}.png", _encode(img, "PNG"), None))
        else:
            out.append((f"good/{k:05d}.jpg", _encode(img, "JPEG", quality=85), None))
    return out


# --- servers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_server(workdir: Path):
    """Yields (endpoint URL, pid)."""
    port = free_port()
    # moto's server behind a layer that counts the requests on the server's side
    cmd = [sys.executable, "-m", "benchmarks.s3_server", "-H", "127.0.0.1", "-p", str(port)]
    with open(workdir / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **AWS_ENV}
        )
        try:
            wait_for_port(port)
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()


@contextlib.contextmanager
def redis_database(base: str, number: int | None):
    """An empty Redis database number (the one given, or the highest empty one), flushed
    before and after; never FLUSHALL."""
    claims = RedisDatabases(base, CLAIM_KEY, hold_s=3 * 3600)
    try:
        url = claims.claim(number)
    except RuntimeError as exc:
        raise SystemExit(f"{exc} (pass --redis-db)") from None
    try:
        yield url
    finally:
        claims.release()


class Worker:
    def __init__(self, name: str, env: dict, workdir: Path):
        self.name, self.workdir = name, workdir
        self.ready = workdir / f"{name}.ready"
        self.log_path = workdir / f"{name}.log"
        self.env = {
            **os.environ,
            **AWS_ENV,
            **env,
            "POUNDCAM_READY_FILE": str(self.ready),
            "POUNDCAM_HEARTBEAT_FILE": str(workdir / f"{name}.heartbeat"),
            "POUNDCAM_METRICS_PORT": str(free_port()),
        }
        cmd = poundcam_cmd() + [
            "worker",
            "--name",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel",
            "WARNING",
        ]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - the worker's log, closed when it stops
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker {self.name} did not start; log:\n"
                    + self.log_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def random_checkpoint(size: str, folder: Path) -> Path:
    """The PoundNet architecture at ``size`` with random CLIP-like weights, as a poundcam
    safetensors export that workers load like any checkpoint."""
    import torch

    from poundcam.model.checkpoint import export_safetensors, model_id

    model = random_poundnet(size, torch.device("cpu"))
    model.model_id = model_id(model.state_dict())
    return export_safetensors(model, folder / f"poundnet-{size}-random.safetensors")


# --- the two measurements -------------------------------------------------------------------------


def load_analyzer(weights: str, batch_size: int):
    from poundcam.runtime import make_analyzer
    from poundcam.settings import Settings

    settings = Settings.from_env(weights=weights, batch_size=batch_size)  # POUNDCAM_DEVICE too
    return make_analyzer(settings)


def analysis_only(analyzer, corpus) -> dict:
    """``Analyzer.analyze`` over the corpus in this process (the model already loaded)."""
    list(analyzer.analyze([(i, corpus[i][1]) for i in range(min(8, len(corpus)))]))  # warm-up
    cpu0 = cpu_seconds(os.getpid())
    t0 = time.perf_counter()
    outcomes = list(analyzer.analyze((i, data) for i, (_, data, _) in enumerate(corpus)))
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(os.getpid()) - cpu0
    ok = sum(o.ok for o in outcomes)
    wrong = [corpus[o.key][0] for o in outcomes if (o.error_code if not o.ok else None) != corpus[o.key][2]]
    return {
        "seconds": seconds,
        "images_per_s": len(corpus) / seconds,
        "cpu_seconds": cpu,
        "ok": ok,
        "failed": len(outcomes) - ok,
        "unexpected_outcomes": wrong[:20],
        "model_id": analyzer.model_id,
        "cam_config_id": analyzer.cam_config_id,
        "device": str(analyzer.device),
    }


def pipeline(corpus, uris: list[str], settings, sessions, workers: list[Worker], timeout: float) -> dict:
    from poundcam import client

    t0 = time.perf_counter()
    job_id = client.submit(uris, settings=settings)
    t_sent = time.perf_counter() - t0
    deadline = time.monotonic() + timeout
    while True:
        st = client.status(job_id, settings=settings)
        if st["finished"]:
            break
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(
                    f"worker {w.name} died:\n" + w.log_path.read_text(errors="replace")[-4000:]
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"job not finished after {timeout:.0f}s: {st}")
        time.sleep(0.25)
    seconds = time.perf_counter() - t0
    return {
        "job_id": job_id,
        "seconds": seconds,
        "submit_seconds": t_sent,
        "images_per_s": len(uris) / seconds,
        "status": st,
    }


def account(corpus, uris, job_id: str, settings, sessions) -> dict:
    """Every item accounted for: the right outcome each, one analysis per image."""
    import sqlalchemy as sa

    from poundcam import client
    from poundcam.db import Analysis, session_scope

    rows = client.results(job_id, settings=settings)
    expected = {uri: code for uri, (_, _, code) in zip(uris, corpus, strict=True)}
    by_uri = {r["uri"]: r for r in rows}
    wrong = [
        {
            "uri": u,
            "expected": c,
            "status": by_uri.get(u, {}).get("status"),
            "error_code": by_uri.get(u, {}).get("error_code"),
        }
        for u, c in expected.items()
        if u not in by_uri
        or (by_uri[u]["status"], by_uri[u]["error_code"]) != (("done", None) if c is None else ("failed", c))
    ]
    with session_scope(sessions) as s:
        per_sha = dict(s.execute(sa.select(Analysis.sha256, sa.func.count()).group_by(Analysis.sha256)).all())
    good_shas = {hashlib.sha256(d).hexdigest() for _, d, c in corpus if c is None}
    duplicates = {sha: n for sha, n in per_sha.items() if n != 1}
    missing = sorted(good_shas - set(per_sha))
    done = sum(r["status"] == "done" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    codes: dict[str, int] = {}
    for r in rows:
        if r["error_code"]:
            codes[r["error_code"]] = codes.get(r["error_code"], 0) + 1
    return {
        "total": len(uris),
        "items": len(rows),
        "done": done,
        "failed": failed,
        "failed_by_code": codes,
        "wrong_outcomes": wrong[:20],
        "n_wrong": len(wrong),
        "analyses": sum(per_sha.values()),
        "duplicate_analyses": duplicates,
        "missing_analyses": missing[:20],
        "ok": (
            len(rows) == len(uris)
            and done + failed == len(uris)
            and not wrong
            and not duplicates
            and not missing
        ),
    }


def stored(s3, db_url: str, analyses: int) -> dict:
    """Bytes the run left behind: heatmap objects in S3, tables and indexes in PostgreSQL."""
    import sqlalchemy as sa

    from poundcam.db import make_engine

    sizes = [
        o["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=HEAT)
        for o in page.get("Contents", [])
    ]
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            db = {
                t: int(conn.execute(sa.text(f"SELECT pg_total_relation_size('{t}')")).scalar_one())
                for t in ("analyses", "job_items")
            }
            items = int(conn.execute(sa.text("SELECT COUNT(*) FROM job_items")).scalar_one())
    finally:
        engine.dispose()
    return {
        "heatmap_objects": len(sizes),
        "heatmap_bytes": sum(sizes),
        "analyses": analyses,
        "job_items": items,
        "db_bytes": db,
    }


def measured_per_image(report: dict, acc: dict) -> dict:
    """The figures per image the cost table takes (benchmarks/costs.py)."""
    pipe, reuse, st = report["pipeline"], report["reuse"], report["storage"]
    by_method = pipe["s3_requests"]["by_method"]
    done = max(1, acc["done"])
    fetched = sum(by_method.get(m, 0) for m in ("GET", "HEAD"))
    return {
        "s3_get_per_analysed": fetched / max(1, acc["total"]),
        "s3_put_per_analysed": by_method.get("PUT", 0) / done,
        "s3_requests_per_analysed": fetched / max(1, acc["total"]) + by_method.get("PUT", 0) / done,
        "s3_requests_per_reused": reuse["s3_requests"]["total"] / max(1, acc["total"]),
        "heatmap_bytes_per_analysed": st["heatmap_bytes"] / done,
        "db_rows_per_image": (st["analyses"] + st["job_items"]) / done,
        "db_bytes_per_image": sum(st["db_bytes"].values()) / done,
    }


# --- main ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="images (default 2000)")
    ap.add_argument("--bad-fraction", type=float, default=0.05)
    ap.add_argument("--side", type=int, default=128, help="base image side in pixels")
    ap.add_argument(
        "--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint (default: the official tiny fixture)"
    )
    ap.add_argument(
        "--model",
        choices=("checkpoint", *sorted(SIZES)),
        default="checkpoint",
        help="'checkpoint': --weights; a size: the PoundNet architecture at that size "
        "with random weights (same compute as trained weights), written to a "
        "temporary safetensors file for every process",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--worker-threads", type=int, default=None, help="torch threads per worker (default: cores / workers)"
    )
    ap.add_argument("--batch-size", type=int, default=32, help="images per model batch")
    ap.add_argument("--task-batch-size", type=int, default=32, help="images per message")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server (no db)")
    ap.add_argument(
        "--redis-db", type=int, default=None, help="Redis database number (default: the highest empty one)"
    )
    ap.add_argument(
        "--pg-admin",
        default=os.environ.get("POUNDCAM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    os.environ.update(AWS_ENV)
    cores = os.cpu_count() or 1
    worker_threads = args.worker_threads or max(1, cores // args.workers)
    report: dict = {
        "benchmark": "pipeline_load",
        "n": args.n,
        "workers": args.workers,
        "worker_threads": worker_threads,
        "batch_size": args.batch_size,
        "task_batch_size": args.task_batch_size,
        "weights": args.weights,
        "machine": {"cpus": cores, "platform": platform.platform(), "python": platform.python_version()},
        "target_ratio": TARGET_RATIO,
    }
    with contextlib.suppress(Exception):
        report["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    model_dir = tempfile.TemporaryDirectory(prefix="poundcam-load-model-")
    if args.model != "checkpoint":
        args.weights = str(random_checkpoint(args.model, Path(model_dir.name)))
        report.update(model=args.model, weights=f"random {args.model}")

    t = time.perf_counter()
    corpus = make_corpus(args.n, args.bad_fraction, args.side)
    n_bad = sum(c is not None for _, _, c in corpus)
    report.update(
        n_bad=n_bad,
        generate_seconds=time.perf_counter() - t,
        mean_bytes=int(np.mean([len(d) for _, d, _ in corpus])),
    )
    print(f"generated {args.n} images ({n_bad} bad) in {report['generate_seconds']:.1f}s", flush=True)

    analyzer = load_analyzer(args.weights, args.batch_size)
    print("analysis only (before the pipeline) ...", flush=True)
    before = analysis_only(analyzer, corpus)
    print(f"  {before['images_per_s']:.2f} images/s ({before['seconds']:.1f}s)", flush=True)

    from poundcam.db import make_session_factory
    from poundcam.db.migrate import upgrade
    from poundcam.settings import Settings
    from poundcam.storage.s3 import make_s3_client

    with (
        tempfile.TemporaryDirectory(prefix="poundcam-load-") as tmp,
        moto_server(Path(tmp)) as (s3_url, moto_pid),
        fresh_database(args.pg_admin, "poundcam_load_") as db_url,
        redis_database(args.redis, args.redis_db) as broker,
    ):
        work = Path(tmp)
        s3 = make_s3_client(endpoint_url=s3_url)
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=HEAT)
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda item: s3.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]), corpus))
        report["upload_seconds"] = time.perf_counter() - t
        uris = [f"s3://{BUCKET}/{key}" for key, _, _ in corpus]
        upgrade(db_url)
        env = {
            "POUNDCAM_BROKER_URL": broker,
            "POUNDCAM_DATABASE_URL": db_url,
            "POUNDCAM_S3_ENDPOINT_URL": s3_url,
            "POUNDCAM_HEATMAP_BUCKET": HEAT,
            "POUNDCAM_ALLOWED_BUCKETS": BUCKET,
            "POUNDCAM_WEIGHTS": args.weights,
            "POUNDCAM_BATCH_SIZE": str(args.batch_size),
            "POUNDCAM_TASK_BATCH_SIZE": str(args.task_batch_size),
            "OMP_NUM_THREADS": str(worker_threads),
            "MKL_NUM_THREADS": str(worker_threads),
        }
        print(f"starting {args.workers} workers ({worker_threads} threads each) ...", flush=True)
        t = time.perf_counter()
        workers = [Worker(f"w{i}", env, work) for i in range(args.workers)]
        try:
            for w in workers:
                w.wait_ready()
            report["worker_start_seconds"] = time.perf_counter() - t
            settings = Settings.from_env(
                database_url=db_url, broker_url=broker, task_batch_size=args.task_batch_size
            )
            sessions = make_session_factory(db_url)
            print("pipeline ...", flush=True)
            pids = {"s3_server": [moto_pid], "workers": [w.proc.pid for w in workers]}
            fetch_counts(s3_url, reset=True)
            cpu0 = {k: sum(map(cpu_seconds, v)) for k, v in pids.items()}
            report["pipeline"] = pipe = pipeline(corpus, uris, settings, sessions, workers, args.timeout)
            # where the machine's time went (the S3 server runs here, not in a data centre)
            pipe["cpu_seconds"] = {k: sum(map(cpu_seconds, v)) - cpu0[k] for k, v in pids.items()}
            pipe["core_seconds_available"] = pipe["seconds"] * cores
            pipe["s3_requests"] = fetch_counts(s3_url)
            print(f"  {pipe['images_per_s']:.2f} images/s ({pipe['seconds']:.1f}s)", flush=True)
            report["accounting"] = acc = account(corpus, uris, pipe["job_id"], settings, sessions)
            report["storage"] = stored(s3, db_url, acc["analyses"])
            fetch_counts(s3_url, reset=True)  # after the listing above
            print("resubmission (every image reused) ...", flush=True)
            report["reuse"] = reuse = pipeline(corpus, uris, settings, sessions, workers, args.timeout)
            reuse["s3_requests"] = fetch_counts(s3_url)
            print(f"  {reuse['images_per_s']:.2f} images/s ({reuse['seconds']:.1f}s)", flush=True)
            sessions.kw["bind"].dispose()
        finally:
            for w in workers:
                w.stop()
            logs = Path(args.out) / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            for w in workers:
                with contextlib.suppress(OSError):
                    shutil.copy(w.log_path, logs / f"pipeline_load-{w.name}.log")

    # The machine may be shared: measure the analysis alone again after the pipeline and
    # compare with the mean of both runs (each run is reported).
    print("analysis only (after the pipeline) ...", flush=True)
    after = analysis_only(analyzer, corpus)
    analyzer.close()
    model_dir.cleanup()
    print(f"  {after['images_per_s']:.2f} images/s ({after['seconds']:.1f}s)", flush=True)
    base = {
        "images_per_s": (before["images_per_s"] + after["images_per_s"]) / 2,
        "before": before,
        "after": after,
    }
    report["analysis_only"] = base
    report["ratio"] = pipe["images_per_s"] / base["images_per_s"]
    cpu_pipe = sum(pipe["cpu_seconds"].values())
    report["cpu_seconds_per_image"] = {
        "analysis_only": (before["cpu_seconds"] + after["cpu_seconds"]) / (2 * args.n),
        "pipeline_workers": pipe["cpu_seconds"]["workers"] / args.n,
        "pipeline_workers_and_s3_server": cpu_pipe / args.n,
    }
    report["cpu_seconds_per_image"]["workers_outside_analysis"] = (
        report["cpu_seconds_per_image"]["pipeline_workers"] - report["cpu_seconds_per_image"]["analysis_only"]
    )
    report["meets_target"] = report["ratio"] >= TARGET_RATIO
    report["per_image"] = per_image = measured_per_image(report, acc)
    report["load_average"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pipeline_load-n{args.n}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nmodel: {report.get('model', args.weights)}")
    print(
        f"analysis only: {base['images_per_s']:.2f} images/s (before {before['images_per_s']:.2f}, "
        f"after {after['images_per_s']:.2f}); pipeline "
        f"({args.workers} workers): {pipe['images_per_s']:.2f} images/s; ratio "
        f"{report['ratio']:.2f} (target >= {TARGET_RATIO})"
    )
    cpu = pipe["cpu_seconds"]
    per = report["cpu_seconds_per_image"]
    print(
        f"pipeline CPU: workers {cpu['workers']:.0f}s, S3 server {cpu['s3_server']:.0f}s of "
        f"{pipe['core_seconds_available']:.0f} core-seconds; CPU ms per image: analysis only "
        f"{1000 * per['analysis_only']:.0f}, pipeline workers {1000 * per['pipeline_workers']:.0f} "
        f"(+ S3 server {1000 * (per['pipeline_workers_and_s3_server'] - per['pipeline_workers']):.0f})"
    )
    print(
        f"CPU ms per image in the workers outside the analysis: "
        f"{1000 * per['workers_outside_analysis']:.1f} (workers {1000 * per['pipeline_workers']:.1f} "
        f"- analysis only {1000 * per['analysis_only']:.1f})"
    )
    print(
        f"S3 requests, counted by the server: {pipe['s3_requests']['by_method']} for "
        f"{acc['done']} analysed and {acc['failed']} failed images: "
        f"{per_image['s3_requests_per_analysed']:.2f} per analysed image "
        f"({per_image['s3_get_per_analysed']:.2f} GET + {per_image['s3_put_per_analysed']:.2f} PUT); "
        f"resubmitted (every image reused): {reuse['s3_requests']['by_method']}, "
        f"{per_image['s3_requests_per_reused']:.2f} per image"
    )
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in report['load_average'])}")
    print("\n" + cost_table(per_image) + "\n")
    print(
        f"items: {acc['items']}/{acc['total']}, {acc['done']} done, {acc['failed']} failed "
        f"{acc['failed_by_code']}; analyses {acc['analyses']}; wrong outcomes {acc['n_wrong']}; "
        f"duplicates {len(acc['duplicate_analyses'])}; accounted for: {acc['ok']}"
    )
    print(f"results: {path}")
    return 0 if acc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
