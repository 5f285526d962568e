"""Peak memory of the analysis per kind of input, bounded transform and literal transform side by side.

    python benchmarks/memory_bench.py [--batch-size 32] [--cap-gb 6] [--kinds ...] [--modes ...]

For each input kind, a fresh process builds ``poundcam.analysis.Analyzer`` (a tiny random
PoundNet, the CPU, the Pillow path, overlays rendered, batches of ``--batch-size``), analyses
one batch of ordinary photos to reach its steady state, then one batch made of ``--batch-size``
copies of the input; it reports its resident memory at steady state and the peak above it
(VmHWM after resetting it; the inputs' bytes are loaded before the steady state is read).

Modes: ``bounded`` is the product as it is; ``literal`` swaps in the transform done literally on
the whole image (``transform.reference_crop``), keeps each batch's decoded originals and lets
every thread decode at once: how the analysis behaved before its memory was bounded. A process
that passes ``--cap-gb`` of resident memory is stopped and reported as over the cap.

Kinds: noise PNGs of 65000x1, 1x65000 and 16000x9 pixels (RGB) and 8000x8000 PNGs (RGB, a
smooth image with fine detail, 43 MiB: under the 50 MiB byte limit).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("noise-65000x1", "noise-1x65000", "noise-16000x9", "photo-8000x8000")
MODES = ("literal", "bounded")
LIMIT_MB = 512  # the bound on the peak above steady state at batch size 32


def make_image(kind: str) -> bytes:
    """The PNG bytes of one input kind (deterministic)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    if kind.startswith("noise-"):
        w, h = (int(v) for v in kind.split("-")[1].split("x"))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    else:
        w, h = (int(v) for v in kind.rsplit("-", 1)[1].split("x"))
        small = Image.fromarray(rng.integers(0, 256, (h // 64, w // 64, 3), dtype=np.uint8), "RGB")
        image = small.resize((w, h), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def photos(n: int) -> list[bytes]:
    """n ordinary inputs (1600x1200 JPEGs) for the steady state."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (75, 100, 3), dtype=np.uint8), "RGB")
        buf = io.BytesIO()
        small.resize((1600, 1200), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def _status(field: str, pid: int | str = "self") -> int:
    """A /proc status field in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def child(kinds: list[str], mode: str, batch_size: int, paths: list[str], copies: int) -> list[dict]:
    """Measurements in this (fresh) process: one steady state, then each kind in turn."""
    import torch

    from poundcam.analysis import AnalysisOptions, Analyzer
    from poundcam.model.random_weights import TINY_CONFIG, random_poundnet
    from poundcam.preprocess import transform
    from poundcam.preprocess.budget import MemoryBudget

    torch.set_num_threads(2)
    datas = [Path(p).read_bytes() for p in paths]
    warm = photos(batch_size)
    options = AnalysisOptions(batch_size=batch_size, preprocess="pillow", render=True, decode_threads=4)
    rows = []
    with Analyzer(random_poundnet(0, **TINY_CONFIG), options, device="cpu") as analyzer:
        if mode == "literal":
            transform.crop_image = transform.reference_crop
            analyzer._pre.original_view = None
            analyzer._pre.budget = MemoryBudget(1 << 62)
        for _ in range(2):
            list(analyzer.analyze(enumerate(warm)))
        for kind, data in zip(kinds, datas, strict=True):
            gc.collect()
            steady = _status("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            t0 = time.perf_counter()
            outcomes = list(analyzer.analyze((i, data) for i in range(copies)))
            seconds = time.perf_counter() - t0
            peak = _status("VmHWM")
            codes: dict[str, int] = {}
            for o in outcomes:
                codes[o.error_code or "ok"] = codes.get(o.error_code or "ok", 0) + 1
            rows.append(
                {
                    "kind": kind,
                    "mode": mode,
                    "batch_size": batch_size,
                    "copies": copies,
                    "bytes": len(data),
                    "steady_mb": steady / 2**20,
                    "peak_mb": peak / 2**20,
                    "delta_mb": (peak - steady) / 2**20,
                    "codes": codes,
                    "seconds": seconds,
                }
            )
    return rows


def measure(
    kinds: list[str],
    mode: str,
    batch_size: int,
    paths: list[Path],
    cap_bytes: int,
    copies: int | None = None,
    timeout: float = 3600,
) -> list[dict]:
    """Runs ``child`` in a new process, stopping it if its resident memory passes the cap."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    copies = batch_size if copies is None else copies
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            str(batch_size),
            str(copies),
            *(f"{k}={p}" for k, p in zip(kinds, paths, strict=True)),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start, over = time.monotonic(), False
    while proc.poll() is None:
        try:
            if _status("VmRSS", proc.pid) > cap_bytes:
                over = True
                proc.kill()
                break
        except (FileNotFoundError, KeyError, ProcessLookupError):
            pass
        if time.monotonic() - start > timeout:
            proc.kill()
            break
        time.sleep(0.02)
    out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    rows = [json.loads(ln) for ln in lines]
    done = {r["kind"] for r in rows}
    for kind in kinds:
        if kind in done:
            continue
        if over:
            rows.append({"kind": kind, "mode": mode, "over_cap_mb": cap_bytes / 2**20})
            over = False  # the kind being measured when the process was stopped
        else:
            rows.append({"kind": kind, "mode": mode, "error": (err or out or "no output")[-2000:]})
    return rows


def _row(r: dict) -> str:
    if "over_cap_mb" in r:
        cap = f"> {r['over_cap_mb']:.0f}"
        return f"{r['kind']:<22} {r['mode']:<8} {'':>9} {cap:>10}   stopped at the cap"
    if "error" in r:
        return f"{r['kind']:<22} {r['mode']:<8} error: {r['error'].strip().splitlines()[-1]}"
    codes = ", ".join(f"{k} {v}" for k, v in sorted(r["codes"].items()))
    return (
        f"{r['kind']:<22} {r['mode']:<8} {r['steady_mb']:>9.0f} {r['delta_mb']:>10.0f}   "
        f"{codes}; {r['seconds']:.1f} s"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cap-gb", type=float, default=6.0)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="poundcam-memory-") as tmp:
        print(
            f"batch size {args.batch_size}; peak resident memory above steady state, "
            f"MiB (bound: {LIMIT_MB}); cap {args.cap_gb:g} GB"
        )
        print(f"{'input':<22} {'mode':<8} {'steady':>9} {'peak-steady':>10}   outcomes")
        # a fresh process per input and mode: a stopped process loses only its own row
        for kind in args.kinds:
            path = Path(tmp) / f"{kind}.png"
            path.write_bytes(make_image(kind))
            for mode in args.modes:
                for r in measure([kind], mode, args.batch_size, [path], int(args.cap_gb * 2**30)):
                    results.append(r)
                    print(_row(r), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, bs, n = sys.argv[2:5]
        pairs = [a.split("=", 1) for a in sys.argv[5:]]
        for row in child([k for k, _ in pairs], mode, int(bs), [p for _, p in pairs], int(n)):
            print(json.dumps(row), flush=True)
        sys.exit(0)
    sys.exit(main())
