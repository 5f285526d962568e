"""The review report of a large job: its size and how fast Chromium opens it.

Builds a job of ``--items`` distinct photographs (crops, flips and colour shifts of
matplotlib's sample portrait) with evidence maps drawn by the renderer the analysis uses
(smooth random maps: the report's cost does not depend on the model), writes the report the
way ``poundcam report`` does (embedded thumbnails), and opens it in headless Chromium next to
the same page with one item, in one run:

- size: bytes of the page, per item, against the stored PNGs it shows;
- open time: the page's own clock at the load event (navigation to every visible picture
  decoded, ``data-opened-ms``), and the browser's wall time for the page against the one-item
  page (the difference is what the items cost).

    python benchmarks/report_bench.py --items 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]


def photo_variants(n: int, seed: int = 0):
    """``n`` distinct photographs (bytes as PNG) from one portrait."""
    from matplotlib import cbook

    rng = np.random.default_rng(seed)
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        base = im.convert("RGB")
    for _ in range(n):
        w, h = rng.integers(280, 512), rng.integers(280, 600)
        x, y = rng.integers(0, 512 - w + 1), rng.integers(0, 600 - h + 1)
        im = base.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        shift = rng.integers(-30, 30, 3)
        arr = np.clip(np.asarray(im, dtype=np.int16) + shift, 0, 255).astype(np.uint8)
        yield Image.fromarray(arr)


def smooth_map(rng, grid: int = 16) -> np.ndarray:
    m = np.zeros((grid, grid))
    for _ in range(3):
        cx, cy, s = rng.uniform(0, grid, 2).tolist() + [rng.uniform(1.5, 4)]
        yy, xx = np.mgrid[:grid, :grid]
        m += rng.uniform(0.2, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    return m * rng.uniform(0.05, 0.3)


def make_job(n: int, folder: Path) -> list[dict]:
    """Records shaped like ``job_results``, their originals and heatmaps in ``folder``."""
    import hashlib

    import torch

    from poundcam.cam.render import render_heatmaps
    from poundcam.preprocess.transform import crop_image

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    rows = []
    for i, im in enumerate(photo_variants(n)):
        path = folder / "images" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        crop, geometry = crop_image(im)
        real, fake = smooth_map(rng), smooth_map(rng)
        keys = {}
        for name, png in render_heatmaps(real, fake, crop, im, geometry).items():
            key = f"heatmaps/{sha[:2]}/{sha}/{name}.png"
            (folder / key).parent.mkdir(parents=True, exist_ok=True)
            (folder / key).write_bytes(png)
            keys[name] = key
        p = float(rng.uniform())
        rows.append(
            {
                "item_id": i + 1,
                "position": i,
                "uri": str(path),
                "status": "done",
                "error_code": None,
                "error_message": None,
                "attempts": 1,
                "analysis_id": i + 1,
                "sha256": sha,
                "p_fake": p,
                "threshold": 0.5,
                "label": "fake" if p >= 0.5 else "real",
                "model_id": "pn-bench",
                "cam_config_id": "hirescam-bench",
                "width": im.width,
                "height": im.height,
                "stats": {
                    "real": {"max": float(real.max()), "area_half_max": 0.1, "peak": [10, 20]},
                    "fake": {"max": float(fake.max()), "area_half_max": 0.1, "peak": [30, 40]},
                    "comparative": {"fake_share": 0.5, "correlation": 0.0},
                },
                "heatmap_keys": keys,
            }
        )
    return rows


def open_in_chromium(chromium: str, page: Path, profile: Path) -> tuple[float, int]:
    """(wall seconds of a headless Chromium that loads ``page`` and dumps its DOM, the page's
    own milliseconds to its load event)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - t0
    found = re.search(r'data-opened-ms="(\d+)"', proc.stdout)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"chromium failed on {page}: {proc.stderr[-1000:]}")
    return wall, int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="Chromium opens per page")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from poundcam.report import EmbeddedImages, build_report
    from poundcam.storage import LocalStore

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        rows = make_job(args.items, folder)
        t_job = time.perf_counter() - t0
        store = LocalStore(folder, read_roots=[folder / "images"])
        source = EmbeddedImages(lambda k: store.get(store.uri_for(k)), store.get)
        t0 = time.perf_counter()
        big = build_report(rows, source=source, job_id="bench", workers=args.workers)
        t_build = time.perf_counter() - t0
        small = build_report(rows[:1], source=source, job_id="bench")
        pages = {"items": folder / "big.html", "one": folder / "one.html"}
        pages["items"].write_text(big, encoding="utf-8")
        pages["one"].write_text(small, encoding="utf-8")
        stored = sum((folder / k).stat().st_size for r in rows for k in r["heatmap_keys"].values())
        size = pages["items"].stat().st_size
        result = {
            "items": args.items,
            "report_bytes": size,
            "bytes_per_item": size / args.items,
            "stored_png_bytes_per_item": stored / args.items,
            "build_seconds": t_build,
            "job_seconds": t_job,
            "machine": f"{platform.machine()}, {platform.node()}",
        }
        if chromium:
            walls: dict[str, list[float]] = {k: [] for k in pages}
            own: dict[str, list[int]] = {k: [] for k in pages}
            for r in range(args.repeats):  # alternated, side by side
                for name, page in pages.items():
                    wall, ms = open_in_chromium(chromium, page, folder / f"profile-{name}-{r}")
                    walls[name].append(wall)
                    own[name].append(ms)
            result.update(
                {
                    "open_ms_page_clock": {k: sorted(v)[len(v) // 2] for k, v in own.items()},
                    "chromium_wall_s": {k: sorted(v)[len(v) // 2] for k, v in walls.items()},
                }
            )
            w = result["chromium_wall_s"]
            result["wall_ratio_items_vs_one"] = w["items"] / w["one"]
    print(
        f"{args.items} items: report {size / 1e6:.1f} MB ({size / args.items / 1e3:.1f} kB "
        f"per item; stored PNGs {stored / args.items / 1e3:.0f} kB per item), built in "
        f"{t_build:.1f} s"
    )
    if chromium:
        o, w = result["open_ms_page_clock"], result["chromium_wall_s"]
        print(
            f"opened in Chromium: load event at {o['items'] / 1e3:.2f} s (one item: "
            f"{o['one'] / 1e3:.2f} s); browser wall {w['items']:.2f} s vs {w['one']:.2f} s "
            f"(x{result['wall_ratio_items_vs_one']:.2f})"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"report_bench-{args.items}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
