"""Local servers for measurements and tests: free ports, a fresh PostgreSQL database, an empty
Redis database number, the ``poundcam`` command. Used by the load script and the test suite,
so both claim and clean up what they use the same way. Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import cast

# moto's server accepts any credentials; boto3 needs some.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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
                conn.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                    {"n": name},
                )
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
        raise RuntimeError(
            "no empty Redis database number (1-15) to claim"
            if number is None
            else f"Redis database {number} is claimed by someone else"
        )

    def release(self) -> None:
        for n in self.claimed:
            r = self.redis.Redis.from_url(f"{self.base}/{n}")
            if r.get(self.claim_key) == self.token.encode():
                r.flushdb()
        self.claimed.clear()


# --- a TCP proxy that can be cut -----------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target_port``. ``cut()`` resets every open connection and
    closes new ones as soon as they are accepted, until ``restore()``."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(0.2)
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self.accepted = 0
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            self.accepted += 1
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket):
        sel = selectors.DefaultSelector()
        for s in (a, b):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        peer = {a: b, b: a}
        open_ends = 2
        graceful = False
        try:
            while open_ends and not self._stop.is_set() and not self._cut.is_set():
                for key, _ in sel.select(0.2):
                    src = cast(socket.socket, key.fileobj)  # only the two sockets are registered
                    data = src.recv(65536)
                    if not data:  # half-close: pass it on, keep the other direction going
                        sel.unregister(src)
                        peer[src].shutdown(socket.SHUT_WR)
                        open_ends -= 1
                        continue
                    dst = peer[src]
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
            graceful = open_ends == 0
        except OSError:
            pass
        finally:
            sel.close()
            with self._lock:
                self._conns.difference_update((a, b))
            for s in (a, b):
                if graceful:
                    s.close()
                else:
                    _reset(s)

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.listener.close()


def _reset(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        s.close()
