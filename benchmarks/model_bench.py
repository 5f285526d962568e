"""PoundNet's forward against open_clip's plain VisionTransformer of the same size (QuickGELU,
same width/layers/heads/patch/output_dim), side by side in one process, same device, batch and
precision (bf16 autocast on CUDA for both). PoundNet's sequence is longer by its 16 prompt
tokens (273 vs 257 at ViT-L/14), so the target is >= 0.93x the plain ViT's images/s.

    python benchmarks/model_bench.py                                # CPU, small ViT
    python benchmarks/model_bench.py --device cuda --size L14 --batch 128
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

TARGET = 0.93


def plain_vit(model, device):
    from open_clip.transformer import QuickGELU, VisionTransformer

    cfg = model.config
    vit = VisionTransformer(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        width=cfg.vision_width,
        layers=cfg.vision_layers,
        heads=cfg.vision_heads,
        mlp_ratio=4.0,
        output_dim=cfg.embed_dim,
        act_layer=QuickGELU,
    )
    common.init_clip_like(vit)
    return vit.requires_grad_(False).eval().to(device)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    device = args.device
    model = common.random_poundnet(args.size, device)
    vit = plain_vit(model, device)
    cfg = model.config
    x = torch.randn(args.batch, 3, cfg.image_size, cfg.image_size, device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )

    def poundnet():
        with torch.inference_mode():
            return model(x)  # autocasts itself on CUDA

    def plain():
        with torch.inference_mode(), autocast:
            return vit(x)

    with torch.inference_mode():
        model.text_features()  # computed once per model, as in service
    secs = common.time_side_by_side(
        {"poundnet": poundnet, "plain_vit": plain}, device, args.iters, args.warmup
    )
    ips = {k: args.batch / v for k, v in secs.items()}
    ratio = ips["poundnet"] / ips["plain_vit"]
    seq = 1 + model.visual.num_patches
    payload = {
        "benchmark": "model_bench",
        "device": device.type,
        "device_name": common.device_name(device),
        "size": args.size,
        "batch": args.batch,
        "iters": args.iters,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "tokens": {"poundnet": seq + cfg.n_ctx_vision, "plain_vit": seq},
        "images_per_s": ips,
        "seconds_per_batch": secs,
        "ratio": ratio,
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }
    path = common.write_result("model_bench", payload)
    print(f"{args.size} on {payload['device_name']}, batch {args.batch}, {payload['precision']}")
    print(
        common.table(
            [
                ["model", "tokens", "images/s"],
                ["PoundNet", str(seq + cfg.n_ctx_vision), f"{ips['poundnet']:.1f}"],
                ["open_clip ViT", str(seq), f"{ips['plain_vit']:.1f}"],
            ]
        )
    )
    verdict = "OK" if ratio >= TARGET else "BELOW TARGET"
    print(f"ratio PoundNet/plain = {ratio:.3f} (target >= {TARGET}) {verdict}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
