"""A bound on the memory that images being decoded hold at once.

Each Pillow-path input reserves an estimate of its working memory (``decode_cost``, from the
size its header declares, before any pixel is decoded) and holds it until its crop and display
image are made. Inputs wait, first come first served, while the reservations would pass the
budget; an input whose estimate alone is over the budget waits until it can hold the whole
budget, then runs alone. So a batch of large images is decoded one or a few at a time, and
many small ones in parallel, whatever the number of threads.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import sys
import threading

MiB = 1024 * 1024
DEFAULT_BUDGET = 256 * MiB
TRANSFORM_BYTES = 48 * MiB  # the transform's bands, JPEG buffers and display image, at most
_PILLOW_BYTES_PER_PIXEL = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "I;16N": 2,
    "LA": 4,
    "La": 4,
    "PA": 4,
}


def decode_cost(width: int, height: int, mode: str) -> int:
    """Estimated peak bytes of decoding a ``mode`` image of width x height and making its crop:
    Pillow's decoded frame (4 bytes per pixel for most modes), the RGB copy when the mode is
    not RGB, and the transform's working memory."""
    pixels = width * height
    frame = _PILLOW_BYTES_PER_PIXEL.get(mode, 4) * pixels
    rgb = 0 if mode == "RGB" else 4 * pixels
    return frame + rgb + TRANSFORM_BYTES


@functools.cache
def return_freed_memory() -> bool:
    """Make glibc give large freed blocks back to the system (once per process; True if set).

    glibc raises its mmap threshold after a large block is freed, so later large blocks (a
    decoded frame is 16 MB blocks in Pillow) come from per-thread heaps that keep their memory
    after it is freed: with N decoding threads, N frames' worth stays resident although only one
    is alive. A fixed threshold of 1 MiB keeps such blocks mapped on their own and unmapped when
    freed, so resident memory follows what the budget lets live (measured: a 4000x4000 PNG
    decoded 16 times, one at a time over 4 threads, peaked at 378 MB instead of 147 MB)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


class MemoryBudget:
    """Reservations of bytes against a fixed budget, granted in arrival order."""

    def __init__(self, budget: int = DEFAULT_BUDGET):
        if budget <= 0:
            raise ValueError("the memory budget must be positive")
        self.budget = budget
        self._used = 0
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used

    def acquire(self, nbytes: int) -> int:
        """Wait until ``nbytes`` (at most the whole budget) can be held; returns what is held."""
        need = max(0, min(int(nbytes), self.budget))
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                self._cond.wait_for(lambda: self._queue[0] is ticket and self._used + need <= self.budget)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()
            self._used += need
        return need

    def release(self, nbytes: int) -> None:
        with self._cond:
            self._used -= nbytes
            self._cond.notify_all()

    def lease(self) -> Lease:
        """A reservation that is made later (``Lease.acquire``) and ends with the lease.
        The first lease fixes glibc's mmap threshold (``return_freed_memory``): only processes
        that decode with Pillow pay for it, not a device path whose buffers it makes page
        faults of (every host block over 1 MiB mapped and zeroed anew)."""
        return_freed_memory()
        return Lease(self)


class Lease:
    """``with budget.lease() as lease: ...; lease.acquire(n); ...`` releases on exit."""

    def __init__(self, budget: MemoryBudget):
        self._budget = budget
        self.held = 0

    def acquire(self, nbytes: int) -> None:
        self.held += self._budget.acquire(nbytes)

    def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            self._budget.release(held)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
