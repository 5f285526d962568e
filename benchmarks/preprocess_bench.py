"""Preprocessing throughput and parity, measured side by side in one run.

    python benchmarks/preprocess_bench.py                   # CPU, 32 generated 1080p JPEGs
    python benchmarks/preprocess_bench.py --device cuda --n 2048 --batch-size 128 --model vit-l

Rows (images/s on the same generated 1080p JPEGs):
  pillow-processes   the Pillow path (poundcam.preprocess.decode + poundcam.preprocess.transform)
                     on all cores, one process per core (results not sent back: an upper
                     bound for that path)
  pillow-threads     the Pillow path as DevicePreprocessor(force="pillow") runs it (threads)
  device             DevicePreprocessor(force="device"): the batched device path, its quality-90
                     re-encode by the JPEG codec (nvJPEG on CUDA, libjpeg-turbo on the CPU)
  device-tensor      the same with roundtrip="tensor" (poundcam.preprocess.jpeg_tensor: the re-encode as
                     tensor math); device-tensor-compiled (--compiled-roundtrip): that function
                     through torch.compile(dynamic=False), compiled for the corpus's one
                     size in the warm-up (dynamic shapes took over 10 minutes to compile)
  model+cam          ComparativeCAM.attribute on already preprocessed batches (no I/O)
  analysis           poundcam.analysis.Analyzer.analyze end to end: preprocess (--preprocess,
                     default auto: device on CUDA, Pillow on the CPU) + model + both CAMs +
                     overlays + statistics + PNG files; with its time per image by stage;
                     analysis-tensor: the same with roundtrip="tensor", measured on a GPU
                     and wherever the device-tensor row beat the device row
  analysis-no-render the same without heatmaps (what rendering costs)
Ratios: device / pillow-processes, analysis / model+cam (target on an H200 with ViT-L: 0.8).
Also the device path's stages one by one (decode, encode, copy to the host, decode again, the
tensor re-encode instead, resize + crop): ms per image, and the tensor operations (kernel
launches on a GPU) and bytes read + written per image, which are exact on any device.
--profile: torch.profiler over the analysis on 2 batches, on a GPU for both re-encodes (top
operations by device and CPU time, Chrome traces next to the results).

Parity (--parity, on by default): the device path against the Pillow path on the official
fixture's images (as JPEGs), on a varied generated JPEG set (sizes, subsampling, quality,
grayscale, progressive, EXIF orientation) and on the 1080p set (its first 256), for both
re-encodes (codec, tensor): largest absolute difference of the normalized tensor, share of
crop pixels that differ, geometry mismatches, and the largest |delta P(fake)| of the fixture
model and of a random tiny model.

Writes JSON to benchmarks/results/ (ignored by git).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks import jpeg_corpus  # noqa: E402
from benchmarks.common import OpCounter  # noqa: E402
from poundcam.model.random_weights import TINY_CONFIG, random_poundnet  # noqa: E402
from poundcam.preprocess.batched import DevicePreprocessor  # noqa: E402
from poundcam.preprocess.transform import CLIP_STD  # noqa: E402

FIXTURE = HERE.parent / "tests" / "fixtures" / "poundnet-official-tiny"


# --- the Pillow path in worker processes ------------------------------------------------------


def _pool_init():
    torch.set_num_threads(1)
    import poundcam.preprocess.decode  # noqa: F401  (import cost outside the timed part)
    import poundcam.preprocess.transform  # noqa: F401  (likewise)


def _pillow_one(data: bytes) -> tuple[int, int]:
    from poundcam.preprocess.decode import decode_image
    from poundcam.preprocess.transform import preprocess_with_geometry

    tensor, geom, _ = preprocess_with_geometry(decode_image(data).image)
    return geom.crop_left, geom.crop_top


def bench_pillow_processes(datas: list[bytes], workers: int) -> float:
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_init) as pool:
        list(pool.map(_pillow_one, datas[:workers], chunksize=1))  # start and warm every worker
        t0 = time.perf_counter()
        list(pool.map(_pillow_one, datas, chunksize=max(1, len(datas) // (workers * 4))))
        return len(datas) / (time.perf_counter() - t0)


@contextlib.contextmanager
def compiled_roundtrip():
    """poundcam.preprocess.jpeg_tensor's arithmetic (lossy_roundtrip, one graph) through
    torch.compile while the block runs, static shapes: one compilation per input size (with
    dynamic shapes its compilation took over 10 minutes on a CPU, against 6 s static)."""
    import poundcam.preprocess.jpeg_tensor as jr

    original = jr.lossy_roundtrip
    jr.lossy_roundtrip = torch.compile(original, dynamic=False)
    try:
        yield
    finally:
        jr.lossy_roundtrip = original


def bench_preprocessor(
    datas: list[bytes], device: str, force: str, threads: int, batch_size: int, roundtrip: str = "codec"
) -> float:
    with DevicePreprocessor(device, threads=threads, force=force, roundtrip=roundtrip) as pre:
        pre.preprocess_batch(datas[:batch_size])  # warm-up (CUDA contexts, codec handles)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(datas), batch_size):
            batch = pre.preprocess_batch(datas[i : i + batch_size])
            assert all(it.ok for it in batch), [it for it in batch if not it.ok]
        _sync(device)  # on a GPU the last batches are still queued when the loop ends
        return len(datas) / (time.perf_counter() - t0)


def device_stage_times(datas: list[bytes], device: str, batch_size: int) -> dict[str, dict]:
    """Each stage of the device path run one after another on whole batches, the device
    synchronized between them (the preprocessor overlaps nothing either): ms per image, and,
    counted on one batch, tensor operations (kernel launches on a GPU) and MB read + written
    per image (common.OpCounter)."""
    from poundcam.preprocess import batched as dt
    from poundcam.preprocess.jpeg_tensor import jpeg_roundtrip_tensors
    from poundcam.preprocess.transform import geometry_for

    dev = torch.device(device)
    names = ("decode", "encode", "to_host", "decode_again", "tensor_roundtrip", "resize_crop")
    times = dict.fromkeys(names, 0.0)
    counts = {k: OpCounter() for k in names}

    def timed(counters, name, fn, *a, **kw):
        _sync(device)
        t0 = time.perf_counter()
        with counters[name] if counters else contextlib.nullcontext():
            out = fn(*a, **kw)
        _sync(device)
        times[name] += time.perf_counter() - t0
        return out

    def run_batch(batch, counters=None):
        raw = [dt.byte_tensor(d) for d in batch]
        first = timed(counters, "decode", dt.decode_jpegs, raw, device=dev)
        encoded = timed(counters, "encode", dt.encode_jpegs, first)
        host = timed(counters, "to_host", dt.to_host, encoded)
        second = timed(counters, "decode_again", dt.decode_jpegs, host, device=dev)
        timed(counters, "tensor_roundtrip", jpeg_roundtrip_tensors, first)
        geoms = [geometry_for(im.shape[2], im.shape[1]) for im in second]
        timed(counters, "resize_crop", dt.resize_crops, second, geoms)

    counted = datas[:batch_size]
    run_batch(counted, counts)  # warm-up (codec handles, kernels) and the operation counts
    for k in times:
        times[k] = 0.0
    for i in range(0, len(datas), batch_size):
        run_batch(datas[i : i + batch_size])
    n, m = len(datas), len(counted)
    return {
        k: {"ms": times[k] / n * 1e3, "ops": counts[k].ops / m, "mb": counts[k].bytes / m / 1e6}
        for k in names
    }


# --- models -----------------------------------------------------------------------------------


def load_model(spec: str, device: str):
    from poundcam import PoundNet

    if spec == "fixture":
        model = PoundNet.from_checkpoint(FIXTURE / "last.ckpt")
    elif spec == "vit-l":
        model = random_poundnet(0)  # the released architecture, random weights
    elif spec == "tiny":
        model = random_poundnet(0, **TINY_CONFIG)
    else:
        model = PoundNet.from_checkpoint(spec)
    return model.to(device).eval()


def _sync(device: str):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench_model_cam(model, datas, device, batch_size) -> float:
    from poundcam.cam import ComparativeCAM

    cam = ComparativeCAM(model)
    with DevicePreprocessor(device, force="pillow" if device == "cpu" else "device") as pre:
        x = pre.preprocess_batch(datas[:batch_size]).tensor
    cam.attribute(x)  # warm-up
    _sync(device)
    n = 0
    t0 = time.perf_counter()
    # at least the corpus and at least 2 s, so that a fast model is not timed on a few batches
    while n < len(datas) or time.perf_counter() - t0 < 2.0:
        cam.attribute(x)
        n += x.shape[0]
    _sync(device)
    return n / (time.perf_counter() - t0)


def bench_analysis(
    model, datas, device, batch_size, threads, preprocess="auto", render=True, roundtrip="codec"
) -> tuple[float | str, dict]:
    """Analyzer.analyze end to end (preprocess + model + both CAMs + statistics + PNG files):
    (images/s, seconds per stage per image from Analyzer.stage_times())."""
    try:
        from poundcam.analysis import AnalysisOptions, Analyzer
    except ImportError as exc:  # the analysis module is not part of this checkout
        return f"not measured: poundcam.analysis unavailable ({exc})", {}
    opts = AnalysisOptions(
        batch_size=batch_size,
        decode_threads=threads,
        preprocess=preprocess,
        render=render,
        jpeg_roundtrip=roundtrip,
    )
    with Analyzer(model, opts, device=device) as analyzer:
        list(analyzer.analyze((i, d) for i, d in enumerate(datas[:batch_size])))  # warm-up
        _sync(device)
        analyzer.reset_stage_times()
        t0 = time.perf_counter()
        outcomes = list(analyzer.analyze(enumerate(datas)))
        rate = len(datas) / (time.perf_counter() - t0)
        stages = analyzer.stage_times()
        path = analyzer.preprocess_path
    bad = [o for o in outcomes if not o.ok]
    if bad:
        return f"not measured: {len(bad)} items failed ({bad[0].error_code}: {bad[0].error_message})", {}
    n = max(stages.pop("items", 0), 1)
    per_image: dict[str, float | str] = {k: v / n for k, v in stages.items()}
    per_image["path"] = path
    return rate, per_image


def profile_analysis(
    model,
    datas,
    device,
    batch_size,
    threads,
    out_dir: Path,
    preprocess="auto",
    roundtrip="codec",
    rows: int = 15,
) -> Path:
    """torch.profiler over Analyzer.analyze on two batches (threads started inside, so their
    operations are recorded too): the operations that took the most device time (on a GPU) and
    the most CPU time, and a Chrome trace (gzip) in ``out_dir``."""
    import gzip

    from torch.profiler import ProfilerActivity, profile

    from poundcam.analysis import AnalysisOptions, Analyzer

    on_cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    opts = AnalysisOptions(
        batch_size=batch_size, decode_threads=threads, preprocess=preprocess, jpeg_roundtrip=roundtrip
    )
    sample = datas[: 2 * batch_size]
    with profile(activities=activities) as prof:
        with Analyzer(model, opts, device=device) as analyzer:
            outcomes = list(analyzer.analyze(enumerate(sample)))
        _sync(device)
    print(
        f"\nprofile of the analysis ({len(sample)} images, {roundtrip} re-encode, "
        f"{sum(o.ok for o in outcomes)} ok)"
    )
    averages = prof.key_averages()
    if on_cuda:
        print(averages.table(sort_by="self_cuda_time_total", row_limit=rows))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows))
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw, path = out_dir / f"trace-{stamp}.json", out_dir / f"trace-{stamp}.json.gz"
    prof.export_chrome_trace(str(raw))
    with open(raw, "rb") as src, gzip.open(path, "wb") as dst:
        dst.write(src.read())
    raw.unlink()
    print(f"trace: {path}")
    return path


# --- parity -----------------------------------------------------------------------------------

ROUNDTRIPS = ("codec", "tensor")


class ParityRow(TypedDict):
    paths: dict[str, int]  # images per path the device preprocessor took
    tensor_max_abs: float
    tensor_max_levels: float
    pixels_differing: float
    geometry_mismatches: int
    p_fake_max_abs: dict[str, float]  # per model
    images: int


def parity(named: list[tuple[str, bytes]], device: str, models: dict) -> dict[str, ParityRow]:
    """Per re-encode (codec, tensor): the device path against the Pillow path, which runs once
    for both."""
    datas = [d for _, d in named]
    rows: dict[str, ParityRow] = {
        rt: {
            "paths": {},
            "tensor_max_abs": 0.0,
            "tensor_max_levels": 0.0,
            "pixels_differing": 0.0,
            "geometry_mismatches": 0,
            "p_fake_max_abs": {},
            "images": len(datas),
        }
        for rt in ROUNDTRIPS
    }
    counts = {rt: [0, 0] for rt in ROUNDTRIPS}  # values differing, values
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    def p_fake(model, tensor):
        return model(tensor.to(device)).float().softmax(-1)[:, 1]

    with contextlib.ExitStack() as stack:
        pil = stack.enter_context(DevicePreprocessor(device, force="pillow"))
        devs = {
            rt: stack.enter_context(DevicePreprocessor(device, force="device", roundtrip=rt))
            for rt in ROUNDTRIPS
        }
        for i in range(0, len(datas), 32):
            b = pil.preprocess_batch(datas[i : i + 32])
            with torch.no_grad():
                pb = {name: p_fake(model, b.tensor) for name, model in models.items()}
            for rt, dev in devs.items():
                r, a = rows[rt], dev.preprocess_batch(datas[i : i + 32])
                for x in a.ok:
                    r["paths"][x.path] = r["paths"].get(x.path, 0) + 1
                r["geometry_mismatches"] += sum(
                    x.geometry != y.geometry for x, y in zip(a.ok, b.ok, strict=True)
                )
                diff = (a.tensor - b.tensor).abs()
                r["tensor_max_abs"] = max(r["tensor_max_abs"], diff.max().item())
                levels = diff * std * 255
                r["tensor_max_levels"] = max(r["tensor_max_levels"], round(levels.max().item(), 3))
                counts[rt][0] += int((levels > 0.5).sum())
                counts[rt][1] += levels.numel()
                with torch.no_grad():
                    for name, model in models.items():
                        d = (p_fake(model, a.tensor) - pb[name]).abs().max().item()
                        r["p_fake_max_abs"][name] = max(r["p_fake_max_abs"].get(name, 0.0), d)
    for rt, (n_diff, n_pix) in counts.items():
        rows[rt]["pixels_differing"] = n_diff / max(n_pix, 1)
    return rows


# --- main -------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    ap.add_argument("--n", type=int, default=32, help="generated 1080p JPEGs (default 32)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="threads / processes for CPU work (default: all cores)",
    )
    ap.add_argument("--quality", type=int, default=90, help="quality of the generated JPEGs")
    ap.add_argument(
        "--model",
        default="fixture",
        help="model for the model+cam and analysis rows: fixture (official tiny), "
        "vit-l (released architecture, random weights), tiny, or a checkpoint",
    )
    ap.add_argument("--no-analysis", action="store_true", help="skip model+cam and analysis")
    ap.add_argument(
        "--no-render-row", action="store_true", help="skip the analysis row without heatmap rendering"
    )
    ap.add_argument(
        "--preprocess",
        default="auto",
        choices=("auto", "device", "pillow"),
        help="preprocessing path of the analysis rows (default auto: device on CUDA, Pillow on the CPU)",
    )
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument(
        "--compiled-roundtrip",
        action="store_true",
        help="add the device-tensor-compiled row (torch.compile of the re-encode)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also profile the analysis on 2 batches: top operations by device and "
        "CPU time, and a Chrome trace next to the results",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    device = args.device

    t0 = time.perf_counter()
    datas = jpeg_corpus.full_hd_jpegs(args.n, seed=0, quality=args.quality, workers=args.threads)
    print(
        f"{args.n} generated 1920x1080 JPEGs, mean {np.mean([len(d) for d in datas]) / 1e3:.0f} KB "
        f"({time.perf_counter() - t0:.1f} s to generate)",
        flush=True,
    )

    rates: dict[str, float] = {}  # the rows measured whatever happens
    analysis_rates: dict[str, float | str] = {}  # or why the row was not measured
    stages: dict[str, dict] = {}
    rates["pillow-processes"] = bench_pillow_processes(datas, args.threads)
    rates["pillow-threads"] = bench_preprocessor(datas, device, "pillow", args.threads, args.batch_size)
    rates["device"] = bench_preprocessor(datas, device, "device", args.threads, args.batch_size)
    rates["device-tensor"] = bench_preprocessor(
        datas, device, "device", args.threads, args.batch_size, roundtrip="tensor"
    )
    if args.compiled_roundtrip:
        with compiled_roundtrip():
            rates["device-tensor-compiled"] = bench_preprocessor(
                datas, device, "device", args.threads, args.batch_size, roundtrip="tensor"
            )
    tensor_wins = rates["device-tensor"] > rates["device"]
    device_stages = device_stage_times(datas, device, args.batch_size)
    if not args.no_analysis:
        model = load_model(args.model, device)
        rates["model+cam"] = bench_model_cam(model, datas, device, args.batch_size)
        analysis_rates["analysis"], stages["analysis"] = bench_analysis(
            model, datas, device, args.batch_size, args.threads, args.preprocess
        )
        if not args.no_render_row:
            analysis_rates["analysis-no-render"], stages["analysis-no-render"] = bench_analysis(
                model, datas, device, args.batch_size, args.threads, args.preprocess, render=False
            )
        on_cuda = torch.device(device).type == "cuda"
        if tensor_wins or on_cuda:  # on a GPU the two re-encodes share it differently with the model
            analysis_rates["analysis-tensor"], stages["analysis-tensor"] = bench_analysis(
                model, datas, device, args.batch_size, args.threads, args.preprocess, roundtrip="tensor"
            )
        if args.profile:
            for roundtrip in ("codec", "tensor") if on_cuda else ("codec",):
                profile_analysis(
                    model,
                    datas,
                    device,
                    args.batch_size,
                    args.threads,
                    args.out,
                    args.preprocess,
                    roundtrip=roundtrip,
                )

    ratios = {}
    if isinstance(rates.get("device"), float):
        ratios["device / pillow-processes"] = rates["device"] / rates["pillow-processes"]
        ratios["device / pillow-threads"] = rates["device"] / rates["pillow-threads"]
        for name in ("device-tensor", "device-tensor-compiled"):
            if name in rates:
                ratios[f"{name} / device"] = rates[name] / rates["device"]
    for name in ("analysis", "analysis-no-render", "analysis-tensor"):
        if isinstance(analysis_rate := analysis_rates.get(name), float) and "model+cam" in rates:
            ratios[f"{name} / model+cam"] = analysis_rate / rates["model+cam"]
    images_per_s = {**rates, **analysis_rates}  # in the order they were measured

    print(
        f"\ndevice {device} ({_device_name(device)}), {args.threads} CPU threads, "
        f"batch {args.batch_size}, model {args.model}"
    )
    print(f"{'path':<24}{'images/s':>12}")
    for name, rate in images_per_s.items():
        print(f"{name:<24}{rate:>12.1f}" if isinstance(rate, float) else f"{name:<24}  {rate}")
    for name, value in ratios.items():
        print(f"{name:<36}{value:>8.2f}x")
    print(
        "\ndevice path by stage, per image (batches run stage after stage, synchronized; "
        "operations = kernel launches on a GPU, MB = bytes read + written)"
    )
    print(f"  {'stage':<18}{'ms':>9}{'ops':>8}{'MB':>9}")
    for k, v in device_stages.items():
        print(f"  {k:<18}{v['ms']:>9.3f}{v['ops']:>8.2f}{v['mb']:>9.1f}")
    for name, per_image in stages.items():
        if per_image:
            print(
                f"\n{name} ({per_image['path']} preprocessing): ms per image by stage "
                "(preprocess: the background thread; encode, wait_encode: summed over the "
                "pool's threads; the others: the device thread)"
            )
            print("  " + "  ".join(f"{k} {v * 1e3:.2f}" for k, v in per_image.items() if k != "path"))

    parity_rows: dict[str, ParityRow] = {}
    if not args.no_parity:
        models = {"fixture": load_model("fixture", device), "random-tiny": load_model("tiny", device)}
        sets = {
            "fixture": jpeg_corpus.fixture_jpegs(FIXTURE / "images"),
            "varied": jpeg_corpus.varied_jpegs(seed=0),
            # at most 256 of them: the Pillow side of the comparison runs at ~30 images/s
            "1080p": list(zip(map(str, range(len(datas))), datas, strict=True))[:256],
        }
        print(
            f"\n{'parity set':<16}{'images':>7}{'max|dx|':>10}{'levels':>8}{'px differ':>11}"
            f"{'geom!=':>8}{'dP fixture':>12}{'dP random':>11}  paths"
        )
        for name, named in sets.items():
            for roundtrip, r in parity(named, device, models).items():
                key = f"{name}/{roundtrip}"
                parity_rows[key] = r
                print(
                    f"{key:<16}{r['images']:>7}{r['tensor_max_abs']:>10.4f}"
                    f"{r['tensor_max_levels']:>8.2f}{r['pixels_differing']:>11.2e}"
                    f"{r['geometry_mismatches']:>8}{r['p_fake_max_abs']['fixture']:>12.2e}"
                    f"{r['p_fake_max_abs']['random-tiny']:>11.2e}  {r['paths']}"
                )

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"preprocess-{torch.device(device).type}-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "device": device,
                "device_name": _device_name(device),
                "host": platform.node(),
                "cpu_count": os.cpu_count(),
                "threads": args.threads,
                "n": args.n,
                "batch_size": args.batch_size,
                "model": args.model,
                "quality": args.quality,
                "mean_bytes": float(np.mean([len(d) for d in datas])),
                "torch": torch.__version__,
                "images_per_s": images_per_s,
                "ratios": ratios,
                "device_path_stages_per_image": device_stages,
                "analysis_stages_s_per_image": stages,
                "parity": parity_rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {path}")
    return 0


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
