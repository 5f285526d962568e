"""Model commands: `poundcam convert`, `poundcam model-info`."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="export a PoundNet checkpoint to safetensors",
        description="Read an official Lightning .ckpt (safely: no code runs) and "
        "write OUT.safetensors with the config, model id and the "
        "source file's sha256 in its metadata.",
    )
    p.add_argument("checkpoint", help="official .ckpt (local path, s3:// or hf://)")
    p.add_argument("out", help="output .safetensors path")
    p.add_argument("--config", help="the run's config.yaml (default: beside the checkpoint)")
    p.set_defaults(handler=_convert)

    p = sub.add_parser("model-info", help="print a checkpoint's architecture and model id")
    p.add_argument("weights", help="local path, s3://bucket/key or hf://repo/run/last.ckpt")
    p.add_argument("--config", help="the run's config.yaml")
    p.set_defaults(handler=_info)


def _weights(uri: str):
    """The checkpoint ``uri`` names, fetched with the configured cache folder and S3 endpoint
    (POUNDCAM_WEIGHTS_SHA256 pins the configured weights, not this one)."""
    from ..model.weights import weights_for
    from ..settings import Settings

    return weights_for(Settings.from_env(weights=uri, weights_sha256=None))


def _convert(args) -> int:
    from ..model.checkpoint import convert

    src = _weights(args.checkpoint)
    out = convert(src, args.out, config=args.config)
    print(f"wrote {out}")
    return 0


def _info(args) -> int:
    from ..model.checkpoint import describe, load_poundnet

    model = load_poundnet(_weights(args.weights), config=args.config)
    print(json.dumps(json.loads(describe(model)), indent=2))
    return 0
