"""The one analysis path: image bytes in; per image a result or a failure with an error code.

Both the CLI's embedded mode and the Celery workers call ``Analyzer.analyze``. Work flows in
three overlapping stages:

    decode + preprocess (thread pool) -> model + CAM on the device (this thread, in batches)
    -> statistics + PNG encoding (thread pool)

so decoding of the next batch and encoding of the previous one run while the device computes.
A device out-of-memory error halves the batch and retries; it never fails the items.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import logging
import os
import time
from typing import Any, Iterable, Iterator

import torch

from .cam import ComparativeCAM
from .cam.render import render_heatmaps
from .cam.stats import compute_stats
from .errors import PoundcamError
from .imaging import DecodeLimits, ImageDecodeError, decode_image
from .transform import CropGeometry, preprocess_with_geometry

log = logging.getLogger(__name__)

LABELS = ("real", "fake")


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    threshold: float = 0.5          # label "fake" when P(fake) >= threshold
    cam_layer: int = -1
    cam_target: str = "contrastive"
    batch_size: int = 32
    render: bool = True             # produce heatmap PNGs
    decode_threads: int = max(2, min(16, os.cpu_count() or 2))
    limits: DecodeLimits = dataclasses.field(default_factory=DecodeLimits)


@dataclasses.dataclass
class AnalysisResult:
    sha256: str
    image_format: str
    width: int
    height: int
    original_mode: str
    p_fake: float
    logit_real: float
    logit_fake: float
    label: str
    threshold: float
    model_id: str
    cam_config_id: str
    stats: dict
    geometry: dict
    heatmaps: dict[str, bytes]
    timings: dict[str, float]

    def record(self) -> dict[str, Any]:
        """Everything but the PNG bytes (what the database stores)."""
        d = dataclasses.asdict(self)
        d.pop("heatmaps")
        return d


@dataclasses.dataclass
class ItemOutcome:
    key: Any
    result: AnalysisResult | None = None
    error_code: str | None = None
    error_message: str | None = None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclasses.dataclass
class _Prepared:
    key: Any
    sha256: str
    decoded: Any
    tensor: torch.Tensor
    geometry: CropGeometry
    crop: Any
    decode_s: float


class Analyzer:
    """Binds a loaded PoundNet and a CAM configuration; ``analyze()`` streams outcomes in input order."""

    def __init__(self, model, options: AnalysisOptions | None = None, device: str | torch.device | None = None):
        self.options = options or AnalysisOptions()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.cam = ComparativeCAM(self.model, layer=self.options.cam_layer, target=self.options.cam_target)
        self._pool = cf.ThreadPoolExecutor(self.options.decode_threads, thread_name_prefix="poundcam-io")

    @property
    def model_id(self) -> str:
        return self.model.model_id or "unidentified"

    @property
    def cam_config_id(self) -> str:
        return self.cam.config_id

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- stage 1: decode + preprocess --------------------------------------------------------
    def _prepare(self, key: Any, data: bytes) -> _Prepared | ItemOutcome:
        t0 = time.perf_counter()
        sha = hashlib.sha256(data).hexdigest() if isinstance(data, (bytes, bytearray)) else None
        try:
            decoded = decode_image(data, self.options.limits)
            tensor, geometry, crop = preprocess_with_geometry(decoded.image)
        except ImageDecodeError as exc:
            return ItemOutcome(key, error_code=exc.code, error_message=str(exc), sha256=sha)
        except PoundcamError as exc:
            return ItemOutcome(key, error_code=getattr(exc, "code", "input_error"),
                               error_message=str(exc), sha256=sha)
        except Exception as exc:  # one bad image must never take its batch down
            log.exception("unexpected error preparing %s", key)
            return ItemOutcome(key, error_code="decode_failed",
                               error_message=f"{type(exc).__name__}: {exc}", sha256=sha)
        return _Prepared(key, sha, decoded, tensor, geometry, crop, time.perf_counter() - t0)

    # -- stage 2: model + CAM ----------------------------------------------------------------
    def _compute(self, batch: list[_Prepared]):
        x = torch.stack([p.tensor for p in batch]).to(self.device, non_blocking=True)
        t0 = time.perf_counter()
        try:
            res = self.cam.attribute(x, on_invalid="report")
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache() if self.device.type == "cuda" else None
            half = len(batch) // 2
            log.warning("device out of memory at batch %d; retrying as %d + %d", len(batch), half, len(batch) - half)
            return self._compute(batch[:half]) + self._compute(batch[half:])
        per_item = (time.perf_counter() - t0) / len(batch)
        return [(p, res.item(i), per_item) for i, p in enumerate(batch)]

    # -- stage 3: statistics + PNGs ------------------------------------------------------------
    def _finish(self, prepared: _Prepared, res, compute_s: float) -> ItemOutcome:
        t0 = time.perf_counter()
        d = prepared.decoded
        if res.invalid:
            return ItemOutcome(prepared.key, error_code="cam_unavailable",
                               error_message=res.invalid[0], sha256=prepared.sha256)
        real, fake = res.real[0].cpu(), res.fake[0].cpu()
        p_fake = float(res.probs[0, 1])
        heatmaps = (render_heatmaps(real, fake, prepared.crop, d.image, prepared.geometry)
                    if self.options.render else {})
        result = AnalysisResult(
            sha256=prepared.sha256, image_format=d.format, width=d.width, height=d.height,
            original_mode=d.original_mode, p_fake=p_fake, logit_real=float(res.logits[0, 0]),
            logit_fake=float(res.logits[0, 1]),
            label=LABELS[1] if p_fake >= self.options.threshold else LABELS[0],
            threshold=self.options.threshold, model_id=self.model_id,
            cam_config_id=self.cam_config_id,
            stats={**compute_stats(real, fake, prepared.geometry), "grid": res.grid,
                   "layer": res.layer, "target": res.target},
            geometry=prepared.geometry.to_dict(), heatmaps=heatmaps,
            timings={"decode_s": prepared.decode_s, "compute_s": compute_s,
                     "render_s": time.perf_counter() - t0})
        return ItemOutcome(prepared.key, result=result, sha256=prepared.sha256)

    def _safe_finish(self, prepared, res, compute_s) -> ItemOutcome:
        try:
            return self._finish(prepared, res, compute_s)
        except Exception as exc:
            log.exception("unexpected error rendering %s", prepared.key)
            return ItemOutcome(prepared.key, error_code="render_failed",
                               error_message=f"{type(exc).__name__}: {exc}", sha256=prepared.sha256)

    def analyze(self, items: Iterable[tuple[Any, bytes | BaseException]]) -> Iterator[ItemOutcome]:
        """Analyze ``(key, image bytes)`` pairs; yields one ItemOutcome per item, in input order.

        An item whose bytes could not be fetched may carry the exception instead of bytes: it
        is reported with the exception's ``code`` (or "fetch_failed") and the others go on.
        """
        bs = self.options.batch_size
        ahead = collections.deque()      # stage-1 futures, bounded read-ahead
        pending = collections.deque()    # (index, future or outcome) for stage 3, in order
        it = iter(items)
        exhausted = False

        def fill():
            nonlocal exhausted
            while not exhausted and len(ahead) < 2 * bs:
                try:
                    key, data = next(it)
                except StopIteration:
                    exhausted = True
                    return
                if isinstance(data, BaseException):
                    ahead.append(_done(ItemOutcome(key, error_code=getattr(data, "code", "fetch_failed"),
                                                   error_message=str(data))))
                else:
                    ahead.append(self._pool.submit(self._prepare, key, data))

        fill()
        while ahead or pending:
            batch: list[_Prepared] = []
            while ahead and len(batch) < bs:
                prepared = ahead.popleft().result()
                fill()
                if isinstance(prepared, ItemOutcome):
                    pending.append(_done(prepared))
                else:
                    pending.append(None)  # placeholder keeps input order
                    batch.append(prepared)
            if batch:
                computed = iter(self._compute(batch))
                for i, slot in enumerate(pending):
                    if slot is None:
                        p, r, c = next(computed)
                        pending[i] = self._pool.submit(self._safe_finish, p, r, c)
            # hand out everything finished at the front; keep rendering in flight otherwise
            while pending and (not ahead or pending[0].done() or len(pending) > 4 * bs):
                yield pending.popleft().result()


def _done(outcome: ItemOutcome) -> cf.Future:
    f: cf.Future = cf.Future()
    f.set_result(outcome)
    return f
