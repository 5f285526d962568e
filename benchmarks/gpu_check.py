"""Correctness of the CUDA code paths against the CPU, on a checkpoint and a few images.

    python benchmarks/gpu_check.py --ckpt last.ckpt --images DIR [--expected expected.json]

Checks: logits on CUDA (bf16 autocast) against fp32 CPU (and expected.json when given); the
maps of every CAM method (the deep relevance maps too) on CUDA against CPU (Pearson correlation,
peak agreement, largest difference over the image's larger class peak); the whole Analyzer on
CUDA (device preprocessing path, deep maps for every image) against the CPU Pillow path:
P(fake), geometry, labels, deep maps; ComparativeCAM(compile=True) on CUDA against the eager
engine there.
Prints a table and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from poundcam import ComparativeCAM, PoundNet, preprocess_image as preprocess  # noqa: E402
from poundcam.analysis import AnalysisOptions, Analyzer  # noqa: E402
from poundcam.constants import DEEP_METHOD, CamMethod, DeepMaps, values  # noqa: E402


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def scaled_diff(ref, other, cls: str) -> float:
    """The largest |difference| of class ``cls``'s maps, over the image's larger peak of its two
    class maps in ``ref``: a near-empty map (the other class holds the evidence) is not read as
    a large relative error of its own tiny peak."""
    a, b = getattr(ref, cls).cpu().float(), getattr(other, cls).cpu().float()
    scale = torch.maximum(ref.real.cpu().float().amax((1, 2)), ref.fake.cpu().float().amax((1, 2)))
    return ((a - b).abs().amax((1, 2)) / scale.clamp_min(1e-30)).max().item()


def agreement(ref, other, cls: str) -> str:
    """How class ``cls``'s maps of two CAM results agree: the lowest correlation (an all-zero
    map has none: counted in the peaks, not there), the images with the same peak cell, and the
    largest difference over the map's own peak and over the image's larger class peak."""
    a, b = getattr(ref, cls).cpu(), getattr(other, cls).cpu()
    cs = [c for c in (corr(a[i], b[i]) for i in range(a.shape[0])) if c == c]
    peaks, nz = same_peaks(a, b)
    own = ((a - b).abs().amax((1, 2)) / a.amax((1, 2)).clamp_min(1e-30)).max().item()
    return (
        f"correlation min {min(cs, default=float('nan')):.4f} ({len(cs)} maps not all zero); "
        f"same peak {peaks}/{nz}; max |d| / own peak {own:.2e}, / image peak "
        f"{scaled_diff(ref, other, cls):.2e}"
    )


def same_peaks(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """(images whose maps peak in the same cell, images whose reference map a is not all zero)."""
    nonzero = [i for i in range(a.shape[0]) if a[i].max() > 0]
    return sum(int(a[i].argmax() == b[i].argmax()) for i in nonzero), len(nonzero)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--expected")
    args = ap.parse_args()
    ok = True
    files = sorted(p for p in Path(args.images).iterdir() if p.is_file())
    cpu = PoundNet.from_checkpoint(args.ckpt)
    gpu = PoundNet.from_checkpoint(args.ckpt, device="cuda")
    x = torch.stack([preprocess(Image.open(f)) for f in files])
    with torch.no_grad():
        lc, lg = cpu(x), gpu(x.cuda()).float().cpu()
    dl = (lc - lg).abs().max().item()
    dp = (lc.softmax(-1) - lg.softmax(-1)).abs().max().item()
    print(f"logits CUDA bf16 vs CPU fp32: max |dlogit| {dl:.4f}, max |dP| {dp:.2e}")
    if args.expected:
        rows = {r["image"]: r["logits"] for r in json.loads(Path(args.expected).read_text())["results"]}
        idx = [i for i, f in enumerate(files) if f.name in rows]
        exp = torch.tensor([rows[files[i].name] for i in idx])
        print(f"logits CPU vs expected.json ({len(idx)} images): {(lc[idx] - exp).abs().max().item():.2e}")
    ok &= dp < 0.01
    for method in (*values(CamMethod), DEEP_METHOD):
        for target in ("contrastive", "logit"):
            rc = ComparativeCAM(cpu, target=target, method=method).attribute(x)
            rg = ComparativeCAM(gpu, target=target, method=method).attribute(x.cuda())
            for cls in ("real", "fake"):
                print(f"CAM {method:9s} {target:11s} {cls}: CUDA vs CPU: {agreement(rc, rg, cls)}")
    for target in ("contrastive", "logit"):
        eager = ComparativeCAM(gpu, target=target).attribute(x.cuda())
        comp = ComparativeCAM(gpu, target=target, compile=True, compile_batch=len(files) + 1).attribute(
            x.cuda()
        )
        for cls in ("real", "fake"):
            print(f"CAM {target:11s} {cls}: compiled vs eager on CUDA: {agreement(eager, comp, cls)}")
        ok &= (eager.probs - comp.probs).abs().max().item() < 0.01
    outs = {}
    for name, dev, path in (
        ("cpu-pillow", "cpu", "pillow"),
        ("cuda-device", "cuda", "device"),
        ("cuda-pillow", "cuda", "pillow"),
    ):
        model = cpu if dev == "cpu" else gpu
        options = AnalysisOptions(batch_size=4, preprocess=path, deep_maps=DeepMaps.ALL)
        with Analyzer(model, options, device=dev) as an:
            outs[name] = list(an.analyze((f.name, f.read_bytes()) for f in files))
    base = outs["cpu-pillow"]
    for name in ("cuda-device", "cuda-pillow"):
        dps, geo, deep = [], 0, []
        for a, b in zip(base, outs[name], strict=True):
            assert a.key == b.key
            if a.result is not None and b.result is not None:  # both ok
                dps.append(abs(a.result.p_fake - b.result.p_fake))
                geo += int(a.result.geometry == b.result.geometry)
                for cls in ("real", "fake"):
                    ma, mb = getattr(a.result, f"deep_{cls}_map"), getattr(b.result, f"deep_{cls}_map")
                    deep.append(corr(torch.as_tensor(ma).cpu(), torch.as_tensor(mb).cpu()))
            elif a.ok != b.ok:
                print(f"  {name}: {a.key}: ok on one path only ({a.error_code} / {b.error_code})")
                ok = False
        first = outs[name][0]
        heatmaps = sorted(first.result.heatmaps) if first.result is not None else "-"
        print(
            f"analysis {name} vs cpu-pillow: max |dP(fake)| {max(dps):.2e}, geometry equal "
            f"{geo}/{len(dps)}, deep maps' correlation min {min(deep):.4f}, heatmaps {heatmaps}"
        )
        ok &= max(dps) < 0.01 and geo == len(dps)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
