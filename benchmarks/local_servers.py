"""Local servers for measurements and tests: free ports, a fresh PostgreSQL database, an empty
Redis database number, the ``poundcam`` command. Used by the load script and the test suite,
so both claim and clean up what they use the same way. Imports nothing heavy.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

# moto's server accepts any credentials; boto3 needs some.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f}s")


def poundcam_cmd() -> list[str]:
    """The ``poundcam`` command of this interpreter's environment."""
    exe = shutil.which("poundcam", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "poundcam.cli"]


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str = "poundcam_"):
    """A new PostgreSQL database next to ``admin_url``'s, dropped at the end; yields its URL."""
    import sqlalchemy as sa

    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :n"), {"n": name})
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


class RedisDatabases:
    """Claims Redis database numbers for one user (highest first), each only if it is empty,
    with a key naming the claimant; flushes each at claim and at release (FLUSHDB of that
    number only, never FLUSHALL, and only while the claim is still ours)."""

    def __init__(self, base_url: str, claim_key: str, hold_s: int = 6 * 3600):
        import redis

        self.redis = redis
        self.base = base_url.rsplit("/", 1)[0] if base_url.count("/") > 2 else base_url
        self.claim_key, self.hold_s = claim_key, hold_s
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.claimed: list[int] = []

    def claim(self, number: int | None = None) -> str:
        """The URL of a claimed database: ``number`` (empty or not) or the highest empty one."""
        for n in [number] if number is not None else range(15, 0, -1):
            if n in self.claimed:
                continue
            r = self.redis.Redis.from_url(f"{self.base}/{n}")
            if number is None and r.dbsize() != 0:
                continue
            if not r.set(self.claim_key, self.token, nx=True, ex=self.hold_s):
                continue
            if number is None and r.dbsize() != 1:  # someone started using it meanwhile
                r.delete(self.claim_key)
                continue
            r.flushdb()
            r.set(self.claim_key, self.token, ex=self.hold_s)
            self.claimed.append(n)
            return f"{self.base}/{n}"
        raise RuntimeError("no empty Redis database number (1-15) to claim" if number is None
                           else f"Redis database {number} is claimed by someone else")

    def release(self) -> None:
        for n in self.claimed:
            r = self.redis.Redis.from_url(f"{self.base}/{n}")
            if r.get(self.claim_key) == self.token.encode():
                r.flushdb()
        self.claimed.clear()
