"""Shared fixtures: the official tiny checkpoint, random tiny PoundNets, and real servers on
localhost (an S3 server in moto's server mode, PostgreSQL and Redis from the machine)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import torch

from benchmarks.local_servers import AWS_ENV, RedisDatabases, free_port, fresh_database

# Two cores shared by the suite's own worker processes: one intra-op thread per process avoids
# oversubscription that slows small models by an order of magnitude.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
# Made by the authors' implementation with tiny random weights: the parity reference (data).
OFFICIAL_TINY = ROOT / "tests" / "fixtures" / "poundnet-official-tiny"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    if not (OFFICIAL_TINY / "last.ckpt").is_file():
        pytest.fail(f"official fixture missing from the checkout: {OFFICIAL_TINY}")
    return OFFICIAL_TINY


@pytest.fixture(scope="session")
def official_model(official_dir):
    from poundcam import PoundNet

    return PoundNet.from_checkpoint(official_dir / "last.ckpt")


def make_tiny_model(seed: int = 0, **overrides):
    """A random PoundNet of small widths; ``overrides`` are PoundNetConfig fields."""
    from poundcam.model.random_weights import TINY_CONFIG, random_poundnet

    return random_poundnet(seed, **{**TINY_CONFIG, **overrides})


@pytest.fixture
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``make_tiny_model`` for tests in subfolders (which cannot import this conftest)."""
    return make_tiny_model


@pytest.fixture(scope="session")
def s3_server():
    """An S3 server (moto's server mode) on localhost; yields its endpoint URL.

    Clients reach it over HTTP through boto3, exactly as they would reach AWS."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # session-scoped, so the function-scoped ``monkeypatch`` fixture cannot serve
    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_client(s3_server):
    from poundcam.storage.s3 import make_s3_client

    return make_s3_client(endpoint_url=s3_server)


@pytest.fixture
def bucket(s3_client) -> str:
    name = f"pc-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


PG_ADMIN_URL = os.environ.get("POUNDCAM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database created for one test and dropped after it."""
    import sqlalchemy as sa

    try:
        with fresh_database(PG_ADMIN_URL, "poundcam_test_") as url:
            yield url
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'poundcam.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """An empty database on each backend: a SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = os.environ.get("POUNDCAM_TEST_REDIS", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {url}: {exc}")
    return url


CLAIM_KEY = "poundcam-test:claim"


class RedisClaim(RedisDatabases):
    """Empty Redis database numbers (highest first) for this test session, each claimed only
    if it is empty, flushed at the start and at the end (FLUSHDB of that number only; never
    FLUSHALL)."""

    def __init__(self, base_url: str):
        super().__init__(base_url, CLAIM_KEY)

    def claim(self, number: int | None = None) -> str:
        try:
            return super().claim(number)
        except RuntimeError as exc:
            pytest.fail(f"{exc} for the tests")


@pytest.fixture(scope="session")
def redis_claims(redis_url):
    claims = RedisClaim(redis_url)
    yield claims
    claims.release()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
