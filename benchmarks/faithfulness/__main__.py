"""python -m benchmarks.faithfulness [--quick] [--artifact KIND] [--out DIR] [--no-docs] [--threads N]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .data import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "faithfulness"
DOCS = ROOT / "docs" / "faithfulness"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.faithfulness", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the small profile the tests use")
    ap.add_argument(
        "--artifact",
        choices=ARTIFACTS,
        default=ARTIFACTS[0],
        help=f"the planted artifact (default {ARTIFACTS[0]}); docs/faithfulness.md describes each",
    )
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default {RESULTS}/<profile>)")
    ap.add_argument("--no-docs", action="store_true", help="do not copy tables and figures into docs/")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument(
        "--export",
        type=Path,
        default=None,
        help="also write the detector as a poundcam .safetensors export here",
    )
    args = ap.parse_args(argv)

    from .evaluate import evaluate
    from .report import checks, write
    from .settings import profile_for

    torch.set_num_threads(args.threads)
    profile = profile_for("quick" if args.quick else "full", args.artifact)
    out = args.out or RESULTS / profile.name
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    res = evaluate(profile, RESULTS / "cache", log=log)
    # the first artifact's tables and figures in docs/faithfulness/, another's in a folder of its own
    docs = DOCS if args.artifact == ARTIFACTS[0] else DOCS / args.artifact
    docs = None if (args.no_docs or args.quick) else docs
    paths = write(res, out, profile.n_examples, docs_dir=docs)
    if args.export:
        from poundcam.model import PoundNet, export_safetensors

        src = RESULTS / "cache" / res["detector"]["training"]["weights"]
        export_safetensors(PoundNet.from_checkpoint(src), args.export)
        log(f"exported the detector to {args.export}")
    print(paths["markdown"].read_text())
    failed = [c for c in checks(res) if not c[1]]
    log(f"wrote {out}" + (f" and {docs}" if docs else "") + f"; {len(failed)} target(s) not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
