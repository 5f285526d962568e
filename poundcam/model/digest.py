"""The sha256 of a file, read in chunks (checkpoints are gigabytes); no PyTorch needed."""

from __future__ import annotations

import hashlib
from pathlib import Path


def digest_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """The lowercase hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
