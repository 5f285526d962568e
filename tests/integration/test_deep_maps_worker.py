"""Deep maps in the distributed pipeline: two `poundcam worker` processes with
POUNDCAM_DEEP_MAPS=flagged analyse a job submitted through the client, and PostgreSQL holds
deep maps for exactly the images over the threshold, equal to the library's relevance maps of
the same images, under a configuration id that names the setting and the threshold; the same
images submitted again add no analyses.

The threshold is chosen from P(fake) computed here first (the official tiny checkpoint, the
Pillow path the CPU workers take), in the widest gap of the middle of the sorted values, so
that the selection does not depend on rounding differences between processes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sqlalchemy as sa
import torch

from . import corpus
from .conftest import Worker, analysis_counts, item_rows, running_workers, wait_finished

pytestmark = pytest.mark.integration

BUCKET, HEAT = "deep-imgs", "deep-heat"
JOB_TIMEOUT = 240
MIN_EACH_SIDE = 3  # images at least, under and over the threshold


def _images(official_dir) -> dict[str, bytes]:
    """The official fixture's images and a few synthetic photos (P(fake) far apart)."""
    images = {f"fixture/{k}": v for k, v in corpus.fixture_images(official_dir).items()}
    for k in range(4):
        images[f"photo/{k}.png"] = corpus.encode(corpus.photo(160, 128, seed=900 + k), "PNG")
    return images


def _threshold(p_fake: list[float]) -> float:
    """Two significant digits in the widest gap (by ratio) between consecutive sorted values,
    with MIN_EACH_SIDE values on each side at least."""
    p = sorted(p_fake)
    lo, hi = max(
        ((p[i - 1], p[i]) for i in range(MIN_EACH_SIDE, len(p) - MIN_EACH_SIDE + 1)),
        key=lambda pair: pair[1] / pair[0],
    )
    threshold = float(f"{math.sqrt(lo * hi):.2g}")
    assert lo * 1.5 < threshold < hi / 1.5, (lo, threshold, hi)  # far from both neighbours
    return threshold


def _job_rows(engine, job_id: str) -> list[dict]:
    """The job's items as the review view gives them (PostgreSQL)."""
    query = sa.text(
        "SELECT uri, status, error_code, analysis_id, sha256, model_id, cam_config_id, p_fake, "
        "label, threshold, real_map, deep_real_map, deep_fake_map "
        "FROM poundcam_v_item_results WHERE job_id = :job ORDER BY position"
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query, {"job": job_id})]


def test_workers_store_deep_maps_of_the_flagged_images_only(
    request, tmp_path, pg_url, s3_server, s3_client, redis_claims, official_dir, official_model, artifacts_dir
):
    from poundcam import client
    from poundcam.analysis import AnalysisOptions, Analyzer, fast_config_id, threshold_text
    from poundcam.cam import ComparativeCAM
    from poundcam.db import make_session_factory
    from poundcam.db.migrate import upgrade
    from poundcam.db.repository import stored_map
    from poundcam.preprocess.decode import decode_image
    from poundcam.preprocess.transform import preprocess
    from poundcam.settings import Settings

    images = _images(official_dir)
    s3_client.create_bucket(Bucket=BUCKET)
    s3_client.create_bucket(Bucket=HEAT)
    uris = {}
    for key, data in images.items():
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=data)
        uris[f"s3://{BUCKET}/{key}"] = key

    # what the library gives here: P(fake) (to choose the threshold) and the relevance maps
    fast_options = AnalysisOptions(
        preprocess="pillow", render=False, decode_threads=2, batch_size=len(images)
    )
    with Analyzer(official_model, fast_options, device="cpu") as analyzer:
        here = {o.key: o.result for o in analyzer.analyze(list(images.items()))}
    threshold = _threshold([r.p_fake for r in here.values()])
    flagged = {k for k, r in here.items() if r.p_fake >= threshold}
    assert MIN_EACH_SIDE <= len(flagged) <= len(images) - MIN_EACH_SIDE
    x = torch.stack([preprocess(decode_image(images[k]).image) for k in images])
    relevance = ComparativeCAM(official_model, method="relevance").attribute(x)
    expected = {k: (relevance.real[i].numpy(), relevance.fake[i].numpy()) for i, k in enumerate(images)}
    with Analyzer(
        official_model, AnalysisOptions(deep_maps="flagged", threshold=threshold), device="cpu"
    ) as analyzer:
        config_id, fast_id, model_id = analyzer.cam_config_id, analyzer.cam.config_id, analyzer.model_id
    assert config_id == f"{fast_id}.deep-flagged-{threshold_text(threshold)}"

    upgrade(pg_url)
    broker = redis_claims.claim()
    env = {
        "POUNDCAM_BROKER_URL": broker,
        "POUNDCAM_DATABASE_URL": pg_url,
        "POUNDCAM_S3_ENDPOINT_URL": s3_server,
        "POUNDCAM_HEATMAP_BUCKET": HEAT,
        "POUNDCAM_ALLOWED_BUCKETS": BUCKET,
        "POUNDCAM_WEIGHTS": str(official_dir / "last.ckpt"),
        "POUNDCAM_DEVICE": "cpu",
        "POUNDCAM_BATCH_SIZE": "4",
        "POUNDCAM_DEEP_MAPS": "flagged",
        "POUNDCAM_THRESHOLD": str(threshold),
        "OMP_NUM_THREADS": "1",
    }
    workers = [Worker(env, tmp_path, "deep1"), Worker(env, tmp_path, "deep2")]
    sessions = make_session_factory(pg_url)
    engine = sessions.kw["bind"]
    settings = Settings.from_env(environ={}, database_url=pg_url, broker_url=broker)
    try:
        with running_workers(request, workers, artifacts_dir):
            # messages of 3 items: both workers take some
            job_id = client.submit(list(uris), batch_size=3, settings=settings)
            wait_finished(sessions, job_id, JOB_TIMEOUT, workers)
            rows = _job_rows(engine, job_id)
            assert [(r["status"], r["error_code"]) for r in rows] == [("done", None)] * len(images)
            assert all(r["model_id"] == model_id for r in rows)
            assert {r["cam_config_id"] for r in rows} == {config_id}
            assert fast_config_id(config_id) == fast_id
            for r in rows:
                key = uris[r["uri"]]
                assert r["threshold"] == pytest.approx(threshold)
                assert r["p_fake"] == pytest.approx(here[key].p_fake, rel=1e-4)
                if key not in flagged:
                    assert r["label"] == "real" and r["deep_real_map"] is None and r["deep_fake_map"] is None
                    continue
                assert r["label"] == "fake"
                grid = stored_map(r["real_map"]).shape
                for stored, want in zip((r["deep_real_map"], r["deep_fake_map"]), expected[key], strict=True):
                    deep = stored_map(stored)
                    assert deep.shape == grid == want.shape
                    scale = float(np.abs(want).max())
                    assert scale > 0
                    assert np.allclose(deep, want, rtol=1e-4, atol=1e-5 * scale), (
                        key,
                        np.abs(deep - want).max(),
                    )

            # the same images again: every item links to the analysis made the first time
            counts = analysis_counts(sessions)
            assert sum(counts.values()) == len(images)
            again = client.submit(list(uris), batch_size=3, settings=settings)
            wait_finished(sessions, again, JOB_TIMEOUT, workers)
            assert analysis_counts(sessions) == counts
            first = {r["uri"]: r["analysis_id"] for r in item_rows(sessions, job_id)}
            assert {r["uri"]: (r["status"], r["analysis_id"]) for r in item_rows(sessions, again)} == {
                u: ("done", a) for u, a in first.items()
            }
    finally:
        engine.dispose()
