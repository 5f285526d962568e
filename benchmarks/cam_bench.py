"""ComparativeCAM against the plain PoundNet forward and against pytorch-grad-cam computing the
same two maps (two GradCAM calls, one per class, at ln_1 of the last block), side by side in one
process on one device and batch size. Prints images/s, peak memory and the ratios.

Targets: ComparativeCAM (both maps) >= 0.85x the forward's images/s and >= 5x pytorch-grad-cam;
peak memory <= 2x the forward's (peak above the resident weights and input). The attention
relevance rows (--relevance: ``method="relevance"``, gradient-weighted attention through every
block) have their own: a cost below 4x the forward's (images/s > 0.25x).

    python benchmarks/cam_bench.py --size L14 --batch 2 --iters 3 --relevance --no-library

    python benchmarks/cam_bench.py                                  # CPU, small ViT
    python benchmarks/cam_bench.py --device cuda --size L14 --batch 128
    python benchmarks/cam_bench.py --device cuda --size L14 --batch 128 --compile

--compile adds ComparativeCAM(compile=True) rows (its no-autograd part through torch.compile;
compilation happens in the warm-up, outside the timed rounds). --no-library leaves out
pytorch-grad-cam (slow at ViT-L/14 shapes on a CPU); --only ROW,ROW measures just those rows
beside the forward.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

SPEED_VS_FORWARD = 0.85
RELEVANCE_COST_VS_FORWARD = 4.0
SPEED_VS_LIBRARY = 5.0
MEMORY_VS_FORWARD = 2.0


def main() -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from poundcam import ComparativeCAM

    args = common.parse_args(
        __doc__.splitlines()[0],
        default_batch_cpu=4,
        extra=[
            ("--compile", dict(action="store_true", help="also ComparativeCAM(compile=True)")),
            ("--relevance", dict(action="store_true", help="also ComparativeCAM(method='relevance')")),
            ("--no-library", dict(action="store_true", help="leave out pytorch-grad-cam")),
            (
                "--only",
                dict(
                    default=None,
                    help="comma-separated rows to "
                    "measure besides the forward, e.g. "
                    "relevance_contrastive,cam_contrastive",
                ),
            ),
        ],
    )
    device = args.device
    model = common.random_poundnet(args.size, device)
    cfg = model.config
    x = torch.randn(args.batch, 3, cfg.image_size, cfg.image_size, device=device)
    g, sl = model.visual.grid_size, model.visual.patch_token_slice()

    def to_grid(t):
        # pytorch-grad-cam hands activations and gradients to numpy, which has no bfloat16
        t = t[:, sl].float()
        return t.reshape(t.shape[0], *g, t.shape[-1]).permute(0, 3, 1, 2)

    library_layer = [model.visual.transformer.resblocks[-1].ln_1]
    # GradCAM: what pytorch-grad-cam computes below (HiResCAM, the default, costs the same)
    contrastive = ComparativeCAM(model, target="contrastive", method="gradcam")
    logit = ComparativeCAM(model, target="logit", method="gradcam")
    with torch.inference_mode():
        model.text_features()  # computed once per model, as in service

    def forward():
        with torch.inference_mode():
            return model(x)

    def cam_contrastive():
        return contrastive.attribute(x)

    def cam_logit():
        return logit.attribute(x)

    def grad_cam_library():
        xg = x.clone().requires_grad_(True)  # its graph must start at the input: weights are frozen
        # its hooks stay on the layer while it exists (copying every activation to the host):
        # they must not slow the other methods down
        with GradCAM(model, library_layer, reshape_transform=to_grid) as library:
            real = library(xg, targets=[ClassifierOutputTarget(0)] * args.batch)
            fake = library(xg, targets=[ClassifierOutputTarget(1)] * args.batch)
        return real, fake

    methods = {"forward": forward, "cam_contrastive": cam_contrastive, "cam_logit": cam_logit}
    if args.relevance:
        relevance = {t: ComparativeCAM(model, target=t, method="relevance") for t in ("contrastive", "logit")}
        methods["relevance_contrastive"] = lambda: relevance["contrastive"].attribute(x)
        methods["relevance_logit"] = lambda: relevance["logit"].attribute(x)
    if args.compile:
        compiled = {
            t: ComparativeCAM(model, target=t, method="gradcam", compile=True)
            for t in ("contrastive", "logit")
        }
        methods["cam_contrastive_compiled"] = lambda: compiled["contrastive"].attribute(x)
        methods["cam_logit_compiled"] = lambda: compiled["logit"].attribute(x)
    if not args.no_library:
        methods["pytorch_grad_cam"] = grad_cam_library
    if args.only:
        keep = {"forward", *args.only.split(",")}
        unknown = keep - set(methods)
        if unknown:
            raise SystemExit(f"--only: unknown rows {sorted(unknown)}; rows: {sorted(methods)}")
        methods = {k: v for k, v in methods.items() if k in keep}
    for fn in methods.values():  # one-time allocations (kernels, caches) are not a method's peak
        fn()
    memory = {k: common.peak_memory(fn, device) for k, fn in methods.items()}
    secs = common.time_side_by_side(methods, device, args.iters, args.warmup)
    ips = {k: args.batch / v for k, v in secs.items()}
    fwd_mem = max(memory["forward"][0], 1)
    rows = [
        [
            "method",
            "images/s",
            "x forward",
            "cost x forward",
            "x grad-cam",
            "peak MiB (above base)",
            "x fwd mem",
            "peak MiB total",
        ]
    ]
    ratios = {}
    library = ips.get("pytorch_grad_cam")
    for k in methods:
        r = {
            "vs_forward": ips[k] / ips["forward"],
            "cost_vs_forward": ips["forward"] / ips[k],
            "vs_pytorch_grad_cam": ips[k] / library if library else None,
            "memory_vs_forward": memory[k][0] / fwd_mem,
        }
        ratios[k] = r
        vs_library = f"{r['vs_pytorch_grad_cam']:.2f}" if library else "-"
        rows.append(
            [
                k,
                f"{ips[k]:.2f}",
                f"{r['vs_forward']:.3f}",
                f"{r['cost_vs_forward']:.2f}",
                vs_library,
                f"{memory[k][0] / 2**20:.0f}",
                f"{r['memory_vs_forward']:.2f}",
                f"{memory[k][1] / 2**20:.0f}",
            ]
        )
    checks = {}
    for k in (k for k in methods if k.startswith("cam_")):
        checks[k] = {
            "speed_vs_forward": ratios[k]["vs_forward"] >= SPEED_VS_FORWARD,
            "memory_vs_forward": ratios[k]["memory_vs_forward"] <= MEMORY_VS_FORWARD,
        }
        if library:
            checks[k]["speed_vs_pytorch_grad_cam"] = ratios[k]["vs_pytorch_grad_cam"] >= SPEED_VS_LIBRARY
    for k in (k for k in methods if k.startswith("relevance_")):
        checks[k] = {"cost_vs_forward": ratios[k]["cost_vs_forward"] < RELEVANCE_COST_VS_FORWARD}
    payload = {
        "benchmark": "cam_bench",
        "device": device.type,
        "device_name": common.device_name(device),
        "size": args.size,
        "batch": args.batch,
        "iters": args.iters,
        "compile": args.compile,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "memory_measure": common.memory_method(device),
        "images_per_s": ips,
        "seconds_per_batch": secs,
        "peak_memory_bytes": {k: {"above_base": v[0], "total": v[1]} for k, v in memory.items()},
        "ratios": ratios,
        "targets": {
            "speed_vs_forward": SPEED_VS_FORWARD,
            "speed_vs_pytorch_grad_cam": SPEED_VS_LIBRARY,
            "memory_vs_forward": MEMORY_VS_FORWARD,
            "relevance_cost_vs_forward": RELEVANCE_COST_VS_FORWARD,
        },
        "meets_targets": checks,
    }
    path = common.write_result("cam_bench", payload)
    print(
        f"{args.size} on {payload['device_name']}, batch {args.batch}, {payload['precision']}; "
        f"memory: {payload['memory_measure']}"
    )
    print(common.table(rows))
    for k, c in checks.items():
        print(f"{k}: " + ", ".join(f"{n} {'OK' if ok else 'BELOW TARGET'}" for n, ok in c.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
