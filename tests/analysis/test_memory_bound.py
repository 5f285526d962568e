"""No input within the limits raises the analysis' peak resident memory by more than 512 MiB
above its steady state, at batch size 32 (benchmarks/memory_bench.py measures the same, 32
copies of each input in a fresh process per input kind, with the literal transform beside it)."""

from __future__ import annotations

import pytest

from benchmarks import memory_bench


@pytest.mark.slow
def test_thin_strips_and_large_images_are_analysed_in_bounded_memory(tmp_path):
    bench = memory_bench
    kinds = ["noise-65000x1", "noise-1x65000", "noise-16000x9", "photo-8000x8000"]
    paths = []
    for kind in kinds:
        paths.append(tmp_path / f"{kind}.png")
        paths[-1].write_bytes(bench.make_image(kind))
    # one process, one steady state, each kind in turn; 8 copies per batch of up to 32 (the
    # budget decodes an 8000x8000 image alone, so more copies take longer, not more memory).
    # A process over 4 GiB is stopped: the literal transform needs 17 GB for 65000x1.
    rows = bench.measure(kinds, "bounded", 32, paths, cap_bytes=4 << 30, copies=8)
    for r in rows:
        assert "over_cap_mb" not in r and "error" not in r, r
        assert r["codes"] == {"ok": 8}, r
        assert r["delta_mb"] < bench.LIMIT_MB, r
