"""The comparative heatmap's legend strip: its text line put together from cells drawn once
(``render.legend_rows``) against the same line drawn by Pillow's ImageDraw.text
(``render.draw_legend_rows``, how every legend was drawn before), side by side in one process,
in interleaved rounds; and the whole ``comparative_png`` of one image with either legend, so
the legend's share of the file shows. Both hold the GIL from start to end (the deflate in
``comparative_png`` releases it), so the time per legend is the time other threads of the
analysis wait. Every legend of the run is also checked pixel for pixel against Pillow's.

Target: the cells >= 10x faster than Pillow's text drawing at every width.

    python benchmarks/legend_bench.py
    python benchmarks/legend_bench.py --widths 200,512 --n 200 --rounds 3

Widths: an analysed image's heatmap is ``heatmap_width`` wide, 200 to 512 pixels (its
``display_size``, longest side at most 512, on a canvas at least 200 wide); wider ones are
there for any other caller.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import common  # noqa: E402

SPEED_VS_PILLOW = 10.0


def per_call(fns: dict, args: list[tuple], rounds: int) -> dict[str, float]:
    """Seconds per call of each function over ``args``: the median of ``rounds`` rounds, each
    calling the functions in turn on every argument (a shared machine's load falls on all)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up: caches (base rows, cells), first allocations
        for a in args[:20]:
            fn(*a)
    clock = time.perf_counter
    for _ in range(rounds):
        spent = dict.fromkeys(fns, 0.0)
        for a in args:
            for name, fn in fns.items():
                t = clock()
                fn(*a)
                spent[name] += clock() - t
        for name, s in spent.items():
            times[name].append(s / len(args))
    return {k: statistics.median(v) for k, v in times.items()}


def heatmap_rows(width: int, height: int, seed: int = 0):
    """The comparative heatmap of one generated photograph-like image (smooth shading and
    texture, evidence in the crop) as ``comparative_png`` gets it: scanlines and maps."""
    from poundcam.cam import render
    from poundcam.preprocess.geometry import geometry_for

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    img = np.stack([128 + 60 * np.sin(xx / (17 + 9 * c) + yy / (23 + 5 * c)) for c in range(3)], axis=-1)
    img += rng.normal(0, 6, img.shape)
    display = torch.from_numpy(np.clip(img, 0, 255).astype(np.uint8)).permute(2, 0, 1)
    real = torch.from_numpy(rng.random((16, 16), dtype=np.float32) * 0.1)
    fake = torch.from_numpy(rng.random((16, 16), dtype=np.float32) * 0.2)
    geometry = geometry_for(width, height)
    assert render.display_size(geometry) == (width, height)
    rows = render.comparative_scanlines(real[None], fake[None], [display], [geometry])[0].numpy()
    return rows, real, fake


def main() -> None:
    from poundcam.cam import render

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="200,224,400,512,1000,1920", help="legend widths (comma-separated)")
    p.add_argument("--n", type=int, default=1000, help="P(fake) and scale pairs per round")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (the median is reported)")
    p.add_argument("--png-n", type=int, default=100, help="comparative_png calls per round")
    args = p.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    rng = np.random.default_rng(0)
    values = list(zip(rng.random(args.n).tolist(), (10 ** rng.uniform(-6, 1, args.n)).tolist(), strict=True))

    def pillow(width: int, p_fake: float, scale: float) -> np.ndarray:
        return render.draw_legend_rows(width, render.legend_text(p_fake, scale))

    cells_in_use = render._legend_glyphs() is not None
    rows = [["legend width", "Pillow µs", "cells µs", "ratio", "identical"]]
    legend: dict[int, dict[str, float]] = {}
    for width in widths:
        calls = [(width, pf, s) for pf, s in values]
        t = per_call({"pillow": pillow, "cells": render.legend_rows}, calls, args.rounds)
        same = sum(np.array_equal(render.legend_rows(*c), pillow(*c)) for c in calls)
        legend[width] = {**t, "ratio": t["pillow"] / t["cells"], "identical": same / len(calls)}
        rows.append(
            [
                str(width),
                f"{t['pillow'] * 1e6:.1f}",
                f"{t['cells'] * 1e6:.1f}",
                f"{t['pillow'] / t['cells']:.1f}x",
                f"{same}/{len(calls)}",
            ]
        )

    png_rows = [["comparative_png", "Pillow legend ms", "cells legend ms", "ratio", "legend's share"]]
    png: dict[str, dict[str, float]] = {}
    for width, height in [(512, 384), (384, 512), (300, 200)]:
        scanlines, real, fake = heatmap_rows(width, height)
        png_calls = [(scanlines, real, fake, pf) for pf, _ in values[: args.png_n]]

        def with_pillow_legend(*a, cells_legend=render.legend_rows):
            render.legend_rows = pillow  # comparative_png looks it up at each call
            try:
                return render.comparative_png(*a)
            finally:
                render.legend_rows = cells_legend

        t = per_call({"pillow": with_pillow_legend, "cells": render.comparative_png}, png_calls, args.rounds)
        if width not in legend:  # the legend alone at this width, for its share
            fns = {"pillow": pillow, "cells": render.legend_rows}
            legend[width] = per_call(fns, [(width, pf, s) for pf, s in values], args.rounds)
        before, after = legend[width]["pillow"], legend[width]["cells"]
        key = f"{width}x{height}"
        png[key] = {**t, "ratio": t["pillow"] / t["cells"]}
        png_rows.append(
            [
                f"{key} (+{render.LEGEND_HEIGHT} legend rows)",
                f"{t['pillow'] * 1e3:.3f}",
                f"{t['cells'] * 1e3:.3f}",
                f"{t['pillow'] / t['cells']:.2f}x",
                f"{before / t['pillow']:.0%} -> {after / t['cells']:.0%}",
            ]
        )

    checks = {w: legend[w]["ratio"] >= SPEED_VS_PILLOW and legend[w]["identical"] == 1.0 for w in widths}
    payload = {
        "benchmark": "legend_bench",
        "device": "cpu",
        "device_name": common.device_name(torch.device("cpu")),
        "size": "legend",
        "n": args.n,
        "rounds": args.rounds,
        "cells_in_use": cells_in_use,
        "legend_seconds_per_call": legend,
        "comparative_png_seconds_per_call": png,
        "target_speed_vs_pillow": SPEED_VS_PILLOW,
        "meets_targets": checks,
    }
    path = common.write_result("legend_bench", payload)
    print(f"{payload['device_name']}; {args.n} P(fake)/scale pairs, median of {args.rounds} rounds")
    print("text line from cells: " + ("yes" if cells_in_use else "NO (with this Pillow, all are Pillow's)"))
    print(common.table(rows))
    print()
    print(common.table(png_rows))
    print(
        "legend: "
        + ", ".join(f"{w} {'OK' if ok else 'BELOW TARGET'}" for w, ok in checks.items())
        + f" (target: cells >= {SPEED_VS_PILLOW:g}x Pillow, every legend identical)"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
