"""``poundcam calibrate IMAGES...``: choose the explained block from evidence, on a deployer's images.

Runs the layer rule of poundcam.cam.calibration (lowest deletion AUC of the contrastive fake
maps of the images the model labels fake; no ground truth) for the configured CAM method, or
those of ``--method`` (several: the weighting is chosen too), over every block, or those of
``--layers``. Prints one row per candidate (deletion AUC, P(fake) after 10% of the cells are
blurred, images used; the choice and the current setting marked), the choice as
``POUNDCAM_CAM_LAYER=N`` (and ``POUNDCAM_CAM_METHOD=`` when it changes) and how much it beats
the current setting; ``--write-env`` writes the choice into a dotenv-style file
(docker-compose's env_file, a ConfigMap's source).
The images are read and checked as ``poundcam analyze`` reads them (poundcam.commands.inputs)
and preprocessed by the official transform, the Pillow path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..constants import CamMethod, values
from ..errors import PoundcamError
from ..settings import env_name
from .common import add_model_options, model_overrides, positive_int

DEFAULT_LIMIT = 64
FEW_IMAGES = 8  # fewer images labelled fake than this: the choice is printed with a warning
LAYER_VAR = env_name("cam_layer")
METHOD_VAR = env_name("cam_method")


class CalibrateError(PoundcamError):
    """The rule cannot run on what was given."""


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="choose the explained layer from the deletion rule on your images",
        description="Choose the block ComparativeCAM explains (POUNDCAM_CAM_LAYER; with several "
        "weightings in --method, POUNDCAM_CAM_METHOD too) without ground truth: for each "
        "candidate block and weighting, the contrastive fake maps of the images the "
        "model labels fake are scored by deletion (cells blurred in map order, area under the "
        "P(fake) curve) and the candidate with the lowest deletion AUC is chosen. Costs about "
        "14 forward passes per image and candidate. Paths are checked as `poundcam analyze` "
        "checks them (POUNDCAM_ALLOWED_ROOTS; unset: the paths given). docs/cam.md.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument(
        "--layers",
        default=None,
        metavar="LIST",
        help="candidate blocks, comma-separated (negative counts from the end; default every block)",
    )
    p.add_argument(
        "--method",
        type=parse_methods,
        default=None,
        metavar="LIST",
        help="CAM weighting the layer is chosen for (default POUNDCAM_CAM_METHOD or hirescam); "
        f"several, comma-separated ({','.join(values(CamMethod))}), to choose the weighting too",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"read at most the first N images found (default {DEFAULT_LIMIT})",
    )
    add_model_options(p)
    p.add_argument(
        "--write-env",
        default=None,
        metavar="FILE",
        help=f"set {LAYER_VAR}= (and {METHOD_VAR}= when the chosen weighting is not the "
        "configured one) in this dotenv-style file (created if missing; other lines kept); "
        "left as it is when the images do not tell the choice from the current setting",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_calibrate)


def parse_methods(text: str) -> list[str]:
    """``"gradcam,hirescam"`` -> ["gradcam", "hirescam"] (each a CAM weighting, once)."""
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    known = values(CamMethod)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more of {', '.join(known)}, comma-separated")
    return names


def parse_layers(text: str | None) -> list[int] | None:
    """``"0,2,-1"`` -> [0, 2, -1]; None -> None (every block)."""
    if text is None:
        return None
    parts = [t.strip() for t in text.split(",") if t.strip()]
    try:
        layers = [int(t) for t in parts]
    except ValueError:
        raise CalibrateError(f"--layers {text!r}: not a comma-separated list of block numbers") from None
    if not layers:
        raise CalibrateError("--layers: no block given")
    return layers


def _calibrate(args) -> int:
    from ..settings import Settings
    from ..storage import LocalStore, make_store
    from .inputs import collect, default_roots

    layers = parse_layers(args.layers)
    overrides: dict[str, Any] = {"local_root": os.getcwd(), **model_overrides(args)}
    if args.method is not None and len(args.method) == 1:
        overrides["cam_method"] = args.method[0]  # the current setting is this method's layer
    settings = Settings.from_env(**overrides)
    if not settings.allowed_roots:  # unset: the files and folders given
        settings = settings.replace(allowed_roots=default_roots(args.paths, settings))
    store = make_store(settings)
    assert isinstance(store, LocalStore)  # local_root is set
    inputs = collect(args.paths, store, command="calibrate")
    for k in inputs.skipped:
        print(f"poundcam calibrate: skipped ({k.code}) {k.reason}", file=sys.stderr)
    files = inputs.files[: args.limit]
    if not files:
        raise CalibrateError("no image files found")
    x, read = _read(files, store, settings)

    from ..model.weights import with_local_weights

    settings = with_local_weights(settings)
    from ..cam.calibration import calibrate
    from ..runtime import load_model, pick_device

    device = pick_device(settings.device)
    model = load_model(settings, device)
    current = model.block_index(settings.cam_layer)
    bar = _Bar()
    try:
        result = calibrate(
            model,
            x.to(device),
            settings.threshold,
            layers=layers,
            method=args.method if args.method is not None else settings.cam_method,
            target=settings.cam_target,
            batch=settings.batch_size,
            progress=bar,
        )
    finally:
        bar.close()
    current_method = str(settings.cam_method)
    tie = result.is_tie(current, current_method)
    setting = f"{LAYER_VAR}={current if tie else result.chosen}"  # a tie keeps the current one
    written = None
    if args.write_env and not tie:
        lines = {LAYER_VAR: str(result.chosen)}
        if result.method != Settings.from_env().cam_method:
            lines[METHOD_VAR] = result.method  # the layer was chosen for this method
        write_env(Path(args.write_env), lines)
        written = args.write_env
    if args.json:
        doc = result.as_dict()
        doc.update(
            model_id=model.model_id,
            files=len(files),
            read=len(read),
            skipped=[k.as_dict() for k in inputs.skipped],
            current=current,
            current_method=current_method,
            gain_over_current=None,
            tie=tie,
            setting=setting,
            written_to=written,
        )
        measured = result.gain(current, current_method)
        if measured is not None:
            doc["gain_over_current"] = {"deletion_auc": measured[0], "standard_error": measured[1]}
        print(json.dumps(doc, indent=2))
    else:
        print(report(result, current, model.num_blocks, current_method))
        if written:
            print(f"written to {written}")
        elif args.write_env:
            print(f"{args.write_env} left as it is: the images do not tell the blocks apart")
    if result.used < FEW_IMAGES:
        print(
            f"poundcam calibrate: warning: only {result.used} image(s) labelled fake were scored; "
            f"the choice is noisy below {FEW_IMAGES} (give more images)",
            file=sys.stderr,
        )
    return 0


def _read(files: list[str], store, settings):
    """The model inputs of the files that decode, [N, 3, 224, 224], and those files; one line on
    stderr per file that cannot be read or decoded."""
    import torch

    from ..preprocess.decode import DecodeLimits, decode_image
    from ..preprocess.transform import preprocess

    limits = DecodeLimits.from_settings(settings)
    tensors, read = [], []
    for path in files:
        try:
            decoded = decode_image(store.get(path, max_bytes=settings.max_image_bytes), limits)
            tensors.append(preprocess(decoded.image))
            read.append(path)
        except PoundcamError as exc:
            code = getattr(exc, "code", "unreadable")
            print(f"poundcam calibrate: skipped ({code}) {path}: {exc}", file=sys.stderr)
    if not tensors:
        raise CalibrateError(f"none of the {len(files)} file(s) could be read as an image")
    return torch.stack(tensors), read


class _Bar:
    """tqdm progress on stderr, its total set by the first report."""

    def __init__(self):
        self.bar = None

    def __call__(self, n: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, unit="pass", desc="calibrate", dynamic_ncols=True)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def report(result, current: int, num_blocks: int, current_method: str | None = None) -> str:
    """The table, the setting line(s) and the gain over the current setting: the layer
    ``current`` with ``current_method`` (default: the chosen weighting). With several
    weightings tried, each row and each setting names its weighting. When the images do not
    tell the lowest score from the current setting (``Calibration.is_tie``), the current
    setting is the one kept: its row is marked kept, and its setting is the one printed."""
    current_method = current_method or result.method
    several = len(result.methods) > 1
    tie = result.is_tie(current, current_method)
    kept = (current, current_method) if tie else (result.chosen, result.method)
    head = ("weighting",) if several else ()
    rows = [(*head, "layer", "deletion AUC", "P(fake) after 10%", "images", "")]
    for s in result.scores:
        flags = (
            ("lowest", tie and (s.layer, s.method) == (result.chosen, result.method)),
            ("chosen", (s.layer, s.method) == kept),
            ("current", (s.layer, s.method) == (current, current_method)),
        )
        marks = [m for m, ok in flags if ok]
        rows.append(
            (
                *((s.method,) if several else ()),
                str(s.layer),
                figure(s.deletion_auc),
                figure(s.p_fake_after),
                str(s.images),
                f"<- {', '.join(marks)}" if marks else "",
            )
        )
    n = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    lines = [
        f"{', '.join(result.methods)} ({result.target}) on {result.used} of {result.images} images "
        f"(labelled fake: P(fake) >= {result.threshold:g}; {result.flagged} flagged); "
        "deletion AUC: lower is better",
        "",
    ]
    for r in rows:
        cells = "  ".join(v.rjust(w) for v, w in zip(r[:n], widths, strict=True))
        lines.append(f"{cells}  {r[n]}" if r[n] else cells)
    lines += ["", f"{LAYER_VAR}={kept[0]}"]
    if several:
        lines.append(f"{METHOD_VAR}={kept[1]}")

    def named(method: str, layer: int) -> str:
        return f"{method} at block {layer}" if several else f"block {layer}"

    what, apart = ("setting", "settings") if several else ("layer", "blocks")
    default_note = " (the default, the last block)" if current == num_blocks - 1 else ""
    now_name = f"{named(current_method, current) if several else current}{default_note}"
    chosen, now = result.score(result.chosen), result.score(current, current_method)
    assert chosen is not None
    if now is None:
        lines.append(f"the current {what}, {now_name}, was not among the candidates")
    elif now is chosen:
        lines.append(f"the current {what}, {now_name}, is already the best")
    else:
        measured = result.gain(current, current_method)
        assert measured is not None  # the current setting was a candidate
        gain, se = measured
        compared = (
            f"{figure(gain)} deletion AUC ({figure(chosen.deletion_auc)} vs {figure(now.deletion_auc)}; "
            f"standard error {figure(se)} over {chosen.images} images)"
        )
        if tie:
            lines.append(
                f"{named(result.method, chosen.layer)} scores lowest, {compared} below the current "
                f"{what}, {now_name}: within twice its standard error, so these images do not tell "
                f"the two {apart} apart and the current {what} is kept (give more images labelled "
                "fake to decide)"
            )
        else:
            lines.append(
                f"{named(result.method, chosen.layer)} beats the current {what}, {now_name}, by {compared}"
            )
    return "\n".join(lines)


def figure(value: float) -> str:
    """A score or a difference as printed: three decimals, or three significant digits below 0.1
    (``3.12e-05``, ``0.0123``), so that what the rule compared (exact values) is what a reader
    sees: a model whose P(fake) is tiny everywhere scores about 3e-5, which three decimals
    print as 0.000 for every block."""
    if value == 0 or not math.isfinite(value) or abs(value) >= 0.1:
        return f"{value:.3f}"
    return f"{value:#.3g}"


_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def write_env(path: Path, values_: dict[str, str]) -> None:
    """Set each ``NAME=value`` of ``values_`` in a dotenv-style file: every line that assigns
    NAME (``export`` prefix allowed) is replaced, in place; a NAME not assigned yet is appended.
    Other lines are kept as they are. The file is replaced atomically; created if missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    lines = text.splitlines()
    seen = set()
    for i, line in enumerate(lines):
        m = _ASSIGN.match(line)
        if m and m.group(1) in values_:
            name = m.group(1)
            lines[i] = f"{name}={values_[name]}"
            seen.add(name)
    lines += [f"{name}={value}" for name, value in values_.items() if name not in seen]
    out = "\n".join(lines) + "\n"
    parent = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(out)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
