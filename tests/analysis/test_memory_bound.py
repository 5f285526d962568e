"""No input within the limits raises the analysis' peak resident memory by more than 512 MiB
above its steady state, at batch size 32 (benchmarks/memory_bench.py measures the same in a
fresh process per input kind, with the literal transform beside it)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def memory_bench():
    name = "_poundcam_memory_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "memory_bench.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def check(kind: str, tmp_path) -> None:
    bench = memory_bench()
    path = tmp_path / f"{kind}.png"
    path.write_bytes(bench.make_image(kind))
    # a process that passes 4 GiB is stopped: the literal transform needs 17 GB for 65000x1
    r = bench.measure(kind, "bounded", 32, path, cap_bytes=4 << 30)
    assert "over_cap_mb" not in r and "error" not in r, r
    assert r["codes"] == {"ok": 32}, r
    assert r["delta_mb"] < bench.LIMIT_MB, r


@pytest.mark.parametrize("kind", ["noise-65000x1", "noise-1x65000", "noise-16000x9"])
def test_thin_strips_are_analysed_in_bounded_memory(kind, tmp_path):
    check(kind, tmp_path)


@pytest.mark.slow
def test_large_images_are_analysed_in_bounded_memory(tmp_path):
    check("photo-8000x8000", tmp_path)
