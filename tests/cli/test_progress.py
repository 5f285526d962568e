"""The analyze progress bar (tqdm) on a terminal: one update per image with the rate and an
ETA, and a log record written during the run comes out whole, on a line of its own."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import struct
import sys
import termios
import threading
import time

from tqdm.contrib.logging import logging_redirect_tqdm

from poundcam.commands.pipeline import Progress
from poundcam.logs import configure_logging


class _Outcome:
    def __init__(self, ok: bool):
        self.ok = ok


def test_progress_per_image_with_rate_eta_and_logs_above_it(monkeypatch):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    tty = os.fdopen(slave, "w", buffering=1)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: _drain(master, chunks), daemon=True)
    reader.start()
    monkeypatch.setattr(sys, "stderr", tty)
    configure_logging()
    progress = Progress(4)
    with logging_redirect_tqdm():
        for n, outcome in enumerate((_Outcome(True), _Outcome(False), None, _Outcome(True))):
            time.sleep(0.15)  # the bar redraws at most every 0.1 s
            progress(outcome)  # None: analysed before, counted, not failed
            if n == 0:
                logging.getLogger("poundcam.test").warning("disk %s is slow", "/data")
    progress.close()
    tty.close()
    reader.join(timeout=5)
    text = b"".join(chunks).decode()
    screens = [s for s in re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)) if s]
    assert "WARNING poundcam.test: disk /data is slow" in screens  # whole, on its own line
    final = [s for s in screens if "4/4" in s][-1]
    assert "img/s" in final and "1 failed" in final and "<" in final  # rate, failures, ETA
    assert all(any(f"{n}/4" in s for s in screens) for n in range(1, 5))  # each image shown


def _drain(fd: int, out: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            return
        if not data:
            return
        out.append(data)
