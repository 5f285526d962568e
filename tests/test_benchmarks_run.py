"""The benchmark scripts run to the end on the CPU at their smallest settings.

Their numbers are not checked here (targets live in the benchmarks' own output); this keeps
the scripts working: a benchmark that hangs or crashes is found by the suite, not on a GPU
machine with minutes of device time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(tmp_path, *args: str, timeout: float = 240) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.parametrize("script", ["model_bench.py", "cam_bench.py"])
def test_side_by_side_benchmarks_run(tmp_path, script):
    # two torch threads: OpenMP must have run before anything a benchmark does after it
    out = run_script(
        tmp_path,
        f"benchmarks/{script}",
        "--batch",
        "2",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--threads",
        "2",
        timeout=180,
    )
    assert "wrote" in out
    if script == "cam_bench.py":
        for method in ("forward", "cam_contrastive", "cam_logit", "pytorch_grad_cam"):
            assert method in out


def test_preprocess_benchmark_runs(tmp_path):
    out = run_script(
        tmp_path,
        "benchmarks/preprocess_bench.py",
        "--n",
        "4",
        "--batch-size",
        "2",
        "--no-parity",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    )
    assert "device / pillow-processes" in out and "analysis / model+cam" in out


def test_legend_benchmark_runs(tmp_path):
    out = run_script(
        tmp_path,
        "benchmarks/legend_bench.py",
        "--n",
        "20",
        "--rounds",
        "1",
        "--png-n",
        "2",
        "--widths",
        "200,512",
    )
    assert "text line from cells: yes" in out and "20/20" in out and "wrote" in out


@pytest.mark.integration
def test_load_script_accounts_for_every_item(tmp_path, redis_url):
    base = redis_url.rsplit("/", 1)[0]
    out = run_script(
        tmp_path,
        "benchmarks/pipeline_load.py",
        "--n",
        "24",
        "--bad-fraction",
        "0.2",
        "--batch-size",
        "4",
        "--task-batch-size",
        "6",
        "--redis",
        base,
        "--out",
        str(tmp_path),
        timeout=400,
    )
    assert "accounted for: True" in out
    assert "2.00 per analysed image (1.00 GET + 1.00 PUT)" in out  # one ranged GET, one PUT
    assert "1.00 per image" in out  # a reused image: its GET
    assert "| Per million analysed images |" in out and "CPU ms per image in the workers" in out


@pytest.mark.integration
def test_chaos_run_holds_at_its_smallest(tmp_path, redis_url):
    base = redis_url.rsplit("/", 1)[0]
    # one worker (and its replacement after the SIGKILL): two model loads instead of three
    out = run_script(
        tmp_path,
        "benchmarks/chaos.py",
        "--n",
        "40",
        "--thin",
        "2",
        "--workers",
        "1",
        "--cut-s",
        "4",
        "--redis",
        base,
        "--out",
        str(tmp_path),
        "--timeout",
        "400",
        timeout=600,
    )
    assert "all checks hold: True" in out


def test_cost_table_in_the_docs_is_the_benchmarks():
    """docs/operations.md shows the table benchmarks/costs.py renders for the recorded run."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.costs import cost_table

    doc = (ROOT / "docs" / "operations.md").read_text()
    assert cost_table() in doc
