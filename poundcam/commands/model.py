"""Model commands: `poundcam convert`, `poundcam model-info`."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

SUFFIX = ".safetensors"  # the loader reads a file by its suffix: any other is read as a .ckpt


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="export a PoundNet checkpoint to safetensors",
        description="Read an official Lightning .ckpt (safely: no code runs) and "
        "write OUT.safetensors with the config, model id and the "
        "source file's sha256 in its metadata. OUT is a .safetensors file, or a folder "
        "(existing, or ending with /) to write CHECKPOINT's name with .safetensors into; "
        "missing folders are created. An existing file is kept unless --force is given; "
        "the file is written beside OUT and renamed, so no half file is left under OUT.",
    )
    p.add_argument("checkpoint", help="official .ckpt (local path, s3:// or hf://)")
    p.add_argument(
        "out", metavar="OUT", help="output .safetensors file, or a folder (existing, or ending with /)"
    )
    p.add_argument("--config", help="the run's config.yaml (default: beside the checkpoint)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
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


def export_path(checkpoint: str, out: str, force: bool = False):
    """Where ``convert`` writes: ``out``, or the checkpoint's name with .safetensors inside the
    folder ``out`` names. Refused (InvalidRequestError) before any work: a name without the
    .safetensors suffix (the file would not be read back as an export), or an existing file
    without ``force``."""
    from ..errors import InvalidRequestError
    from .common import output_file

    name = PurePosixPath(checkpoint.rstrip("/")).stem or "poundnet"  # a local path or a URI
    path = output_file(out, name + SUFFIX)
    if path.suffix != SUFFIX:
        raise InvalidRequestError(
            f"{path}: the export's name must end in {SUFFIX} (weights are read by their suffix; "
            f"any other is read as a .ckpt); to write into a folder, end it with /"
        )
    if path.exists() and not force:
        raise InvalidRequestError(f"{path} exists; --force replaces it")
    return path


def _convert(args) -> int:
    from ..model.checkpoint import convert

    out = export_path(args.checkpoint, args.out, force=args.force)  # before the weights are fetched
    src = _weights(args.checkpoint)
    out = convert(src, out, config=args.config)
    print(f"wrote {out}")
    return 0


def _info(args) -> int:
    from ..model.checkpoint import describe, load_poundnet

    model = load_poundnet(_weights(args.weights), config=args.config)
    print(json.dumps(json.loads(describe(model)), indent=2))
    return 0
