"""Shared pieces of the benchmarks: model sizes, random PoundNets, side-by-side timing, peak
memory and result files. Benchmarks compare methods measured in ONE process, interleaved, so
machine load affects all of them alike; the ratios are what counts."""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

RESULTS = Path(__file__).resolve().parent / "results"

# Vision sizes; all keep the released prompt layout (16 visual prompts, depth 8 or all blocks).
SIZES = {
    "small": dict(
        vision_width=384,
        vision_layers=6,
        patch_size=14,
        grid_size=16,
        embed_dim=256,
        text_width=256,
        text_layers=2,
        prompt_depth_vision=6,
        prompt_depth_text=2,
    ),
    "B16": dict(
        vision_width=768,
        vision_layers=12,
        patch_size=16,
        grid_size=14,
        embed_dim=512,
        text_width=512,
        text_layers=12,
    ),
    "L14": dict(
        vision_width=1024,
        vision_layers=24,
        patch_size=14,
        grid_size=16,
        embed_dim=768,
        text_width=768,
        text_layers=12,
    ),
}


def parse_args(
    description: str, default_batch_cpu: int = 8, extra: Sequence[tuple[str, dict]] = ()
) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    for flag, kw in extra:
        p.add_argument(flag, **kw)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--size", default="small", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=None, help=f"default {default_batch_cpu} on CPU, 128 on CUDA")
    p.add_argument("--iters", type=int, default=None, help="timed rounds (default 5 CPU, 20 CUDA)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    args.device = torch.device(args.device)
    if args.batch is None:
        args.batch = 128 if args.device.type == "cuda" else default_batch_cpu
    if args.iters is None:
        args.iters = 20 if args.device.type == "cuda" else 5
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def random_poundnet(size: str, device: torch.device, seed: int = 0):
    """A PoundNet of the given size with random CLIP-like weights, frozen, in eval mode."""
    from poundcam.model import PoundNet, PoundNetConfig

    cfg = PoundNetConfig(**SIZES[size], class_names=("cat", "dog"))
    torch.manual_seed(seed)
    model = PoundNet(cfg)
    init_clip_like(model)
    return model.requires_grad_(False).eval().to(device)


def init_clip_like(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(
                ("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")
            ):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            elif name == "logit_scale":
                p.fill_(float(torch.log(torch.tensor(100.0))))
            else:
                p.normal_(0, 0.02)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(fns: dict, device: torch.device, iters: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _release_free_memory() -> None:
    """Give memory that the allocator holds but nothing uses back to the system, so that the
    next peak is measured from what is really in use."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def peak_memory(fn, device: torch.device) -> tuple[int, int]:
    """(peak bytes above what was resident before the call, peak bytes in total).

    CUDA: torch.cuda.max_memory_allocated (tensors only). CPU: the peak resident set of this
    process during one call (VmHWM, reset through /proc/self/clear_refs), after the allocator
    has returned its free memory, so memory held from other methods does not hide this one's
    peak. (Not in a forked child: a child forked after OpenMP has run hangs in its first
    parallel region.)"""
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak - base, peak
    _release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    _release_free_memory()
    return (peak - base) * 1024, peak * 1024


def memory_method(device: torch.device) -> str:
    return (
        "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "peak RSS during one call of the method (VmHWM after clear_refs and malloc_trim)"
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} torch threads)"


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{payload['device']}-{payload['size']}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


class OpCounter(TorchDispatchMode):
    """Counts the tensor operations run in its ``with`` block (this thread) and the bytes they
    read and write (inputs + outputs above 4 KiB; views, which move nothing, not counted). On a
    GPU every operation is a kernel launch and eager elementwise work is bound by memory
    traffic, so these two figures, exact on any device, say what a stage will cost there."""

    _VIEWS = {
        "view",
        "_unsafe_view",
        "reshape",
        "permute",
        "slice",
        "select",
        "unbind",
        "unsqueeze",
        "squeeze",
        "expand",
        "t",
        "transpose",
        "detach",
        "alias",
        "as_strided",
        "split",
        "split_with_sizes",
        "unflatten",
        "flatten",
        "narrow",
        "lift_fresh",
    }

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.name().split("::")[-1].split(".")[0]
        if name in self._VIEWS or name.startswith("empty"):  # allocations move nothing either
            return out
        self.ops += 1
        self.bytes += sum(
            t.numel() * t.element_size()
            for t in tree_flatten((args, kwargs, out))[0]
            if isinstance(t, torch.Tensor) and t.numel() * t.element_size() > 4096
        )
        return out
