"""The one analysis path: image bytes in; per image a result or a failure with an error code.

Both the CLI's embedded mode and the Celery workers call ``Analyzer.analyze``. Work flows in
three overlapping stages:

    preprocess (poundcam.preprocess.batched: the device path or Pillow, a background thread
    one batch ahead) -> model + CAM + heatmap drawing on the device (this thread, in batches)
    -> statistics + PNG encoding (thread pool)

so the next batch is decoded and the previous one encoded while the device computes. The
preprocessing path is ``choose_path(device, options.preprocess)``: the device path on CUDA,
Pillow on the CPU, unless forced; both give the same fields and geometry. Each image gets its
raw maps (float32, for the database) and one heatmap file, the comparative evidence over the
original (poundcam.cam.render), drawn for the whole batch where the maps are, originals
downscaled to the display size on the device; the CPU only deflates. Every other rendering is
made on demand from the stored maps (poundcam.cam.ondemand). When ``AnalysisOptions.deep_maps``
chooses them (the images labelled fake, or all), the deep maps (attention relevance through
every block, ``ComparativeCAM(method="relevance")``) are computed after the fast pass, in one
batch of the chosen rows of the same preprocessed input, and stored beside the fast maps;
``AnalysisOptions.fast_maps=False`` computes the deep maps alone (``poundcam explain``).
A device out-of-memory error halves the batch and retries; it never fails the items.
``Analyzer.stage_times()`` says where the time went (docs/analysis.md).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from .cam import ComparativeCAM
from .cam.batch_stats import compute_stats_batch
from .cam.render import (
    DISPLAY_REDUCING_GAP,
    comparative_png,
    comparative_scanlines,
    display_original_pil,
    display_originals,
)
from .constants import (
    CAM_CONFIG_ID_MAX,
    DEEP_METHOD,
    CamMethod,
    CamTarget,
    DeepMaps,
    ErrorCode,
    JpegRoundtrip,
    Label,
    PreprocessPath,
    labelled_fake,
    values,
)
from .errors import InvalidRequestError
from .preprocess.batched import (
    DevicePreprocessor,
    PreprocessedBatch,
    PreprocessedItem,
    choose_path,
    iter_batches,
)
from .preprocess.decode import DecodeLimits
from .preprocess.geometry import CropGeometry

log = logging.getLogger(__name__)

HEATMAP_NAME = "comparative"  # the one heatmap file of an image (poundcam.cam.render)
STAGES = (
    "preprocess",
    "wait_preprocess",
    "model_cam",
    "render_device",
    "encode",
    "wait_encode",
    "wait_results",
)


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """How an Analyzer works; every field has the service's default (docs/configuration.md
    names the setting behind each)."""

    threshold: float = 0.5  # label "fake" when P(fake) >= threshold
    cam_layer: int = -1
    cam_target: str = CamTarget.CONTRASTIVE
    cam_method: str = CamMethod.HIRESCAM  # or gradcam; see ComparativeCAM and docs/cam.md
    deep_maps: str = DeepMaps.NONE  # which images also get the deep (relevance) maps
    # False: the deep maps alone, for every image (``poundcam explain``): no fast maps, no
    # statistics, no heatmap; P(fake) comes from the relevance pass. Needs deep_maps "all"
    # and render off.
    fast_maps: bool = True
    batch_size: int = 32
    render: bool = True  # draw the comparative heatmap (one PNG per image)
    decode_threads: int = max(2, min(16, os.cpu_count() or 2))
    limits: DecodeLimits = dataclasses.field(default_factory=DecodeLimits)
    preprocess: str = PreprocessPath.AUTO  # auto | device | pillow (preprocess.batched.choose_path)
    prefetch: int = 1  # batches preprocessed ahead of the device
    compile: bool = False  # torch.compile the CAM's no-autograd part (docs/cam.md)
    jpeg_roundtrip: str = JpegRoundtrip.CODEC  # the device path's quality-90 re-encode


@dataclasses.dataclass
class AnalysisResult:
    """One analysed image: probabilities, label, CAM statistics, geometry and rendered files."""

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
    heatmaps: dict[str, bytes]  # {HEATMAP_NAME: PNG}, empty when not drawn
    timings: dict[str, float]
    real_map: Any = None  # the raw maps, float32 numpy arrays [grid, grid]; None without fast maps
    fake_map: Any = None
    deep_real_map: Any = None  # the deep maps (same form), for the images chosen by
    deep_fake_map: Any = None  # AnalysisOptions.deep_maps; None for the others

    def record(self) -> dict[str, Any]:
        """Everything but the PNG bytes (what the database stores)."""
        d = dataclasses.asdict(self)
        d.pop("heatmaps")
        return d


@dataclasses.dataclass
class ItemOutcome:
    """What became of one input: ``result`` when it was analysed, else an error code (stable,
    documented) and message; ``sha256`` of its bytes whenever they were read."""

    key: Any
    result: AnalysisResult | None = None
    error_code: str | None = None
    error_message: str | None = None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclasses.dataclass
class _Meta:
    """What the encoding stage needs of one preprocessed input (not the input itself)."""

    key: Any
    sha256: cf.Future
    geometry: CropGeometry
    format: str
    original_mode: str
    decode_s: float


@dataclasses.dataclass
class _Piece:
    """Rows [start, start + n) of a batch after the device: maps, logits and rendered scanlines
    on the host once ``ready`` (a CUDA event; None when computed on the CPU) has passed."""

    start: int
    real: torch.Tensor | None  # None without fast maps (AnalysisOptions.fast_maps)
    fake: torch.Tensor | None
    logits: torch.Tensor
    probs: torch.Tensor
    invalid: dict[int, str]
    grid: int
    layer: int
    target: str
    heat_rows: list[torch.Tensor] | None  # comparative heatmap scanlines, per image
    compute_s: float  # per item
    render_s: float  # per item, on the device
    ready: Any = None
    # The deep maps of the rows chosen for them: row r's are deep_real[deep_rows[r]]
    deep_rows: dict[int, int] = dataclasses.field(default_factory=dict)
    deep_real: torch.Tensor | None = None
    deep_fake: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.logits.shape[0]

    def wait(self) -> None:
        if self.ready is not None:
            self.ready.synchronize()


class _TimedPreprocessor:
    """Records the wall time of each preprocess_batch call on the batch and in the stages."""

    def __init__(self, pre: DevicePreprocessor, add):
        self.pre, self._add = pre, add

    def preprocess_batch(self, items: Sequence[bytes], wait: bool = True) -> PreprocessedBatch:
        t0 = time.perf_counter()
        batch = self.pre.preprocess_batch(items, wait=wait)
        batch.preprocess_s = time.perf_counter() - t0
        self._add("preprocess", batch.preprocess_s)
        return batch


class _InputReader:
    """The input side of one ``analyze`` call: reads ``(key, bytes)`` pairs in the calling
    thread and puts them on the queue the preprocessing thread drains, at most ``window``
    inputs ahead of the batches taken. Items without usable bytes never reach that thread:
    they are kept in ``failures`` by input position."""

    def __init__(self, items: Iterable[tuple[Any, Any]], pool: cf.Executor, window: int):
        self._items = iter(items)
        self._pool = pool
        self._window = window
        self._feed: queue.SimpleQueue = queue.SimpleQueue()
        self.failures: dict[int, ItemOutcome] = {}
        self.read = 0  # inputs read so far (their positions are 0 .. read - 1)
        self.fed = 0  # inputs put on the queue
        self.batched = 0  # inputs the preprocessing thread has returned in batches
        self.exhausted = False

    def inputs(self) -> Iterator:
        """What the preprocessing thread reads: ``((position, key, sha256 future), bytes)``."""
        return _drain(self._feed)

    def top_up(self) -> None:
        """Read inputs until the preprocessing thread has what it needs for the batches it
        may prepare ahead of the device, or the input is over."""
        while not self.exhausted and self.fed - self.batched < self._window:
            try:
                key, data = next(self._items)
            except StopIteration:
                self.exhausted = True
                self._feed.put(_END)
                return
            self._admit(self.read, key, data)
            self.read += 1

    def _admit(self, idx: int, key: Any, data: Any) -> None:
        if isinstance(data, BaseException):
            code = getattr(data, "code", ErrorCode.FETCH_FAILED)
            self.failures[idx] = ItemOutcome(key, error_code=code, error_message=str(data))
            return
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            self.failures[idx] = ItemOutcome(
                key,
                error_code=ErrorCode.DECODE_FAILED,
                error_message=f"expected image bytes, got {type(data).__name__}",
            )
            return
        self._feed.put(((idx, key, self._pool.submit(_sha256, data)), data))
        self.fed += 1

    def close(self) -> None:
        """End the preprocessing thread's input if the items were not read to the end."""
        if not self.exhausted:
            self.exhausted = True
            self._feed.put(_END)


class _OrderedOutcomes:
    """Outcome futures in input order: the analysed items' futures, with the failures set
    aside by the reader slotted in at their positions. At most ``backlog`` wait behind an
    unfinished first one."""

    def __init__(self, failures: dict[int, ItemOutcome], backlog: int):
        self._failures = failures
        self._backlog = backlog
        self._pending: collections.deque[cf.Future] = collections.deque()
        self._emitted = 0  # positions below this are in _pending or gone

    def add(self, idx: int, future: cf.Future) -> None:
        """The future of the input at position ``idx`` (positions arrive in increasing order)."""
        self.add_failures(upto=idx)
        self._pending.append(future)
        self._emitted = idx + 1

    def add_failures(self, upto: int) -> None:
        """Queue the failures at positions below ``upto`` not queued yet."""
        for i in range(self._emitted, upto):
            if i in self._failures:
                self._pending.append(_done(self._failures.pop(i)))
        self._emitted = max(self._emitted, upto)

    def ready(self) -> Iterator[cf.Future]:
        """Take the futures that are done at the front, and more while the backlog is full."""
        while self._pending and (self._pending[0].done() or len(self._pending) > self._backlog):
            yield self._pending.popleft()

    def rest(self) -> Iterator[cf.Future]:
        """Take every future left, in order."""
        while self._pending:
            yield self._pending.popleft()


class Analyzer:
    """Binds a loaded PoundNet and a CAM configuration; ``analyze()`` streams outcomes in input order.

    The analyzer owns a preprocessing thread and a pool of threads (decoding, hashing,
    statistics, PNG encoding): close it, or use it as a context manager.

    Args:
        model: a PoundNet (or any module ComparativeCAM explains); moved to ``device`` and put
            in eval mode.
        options: thresholds, CAM configuration, batch size, rendering and decoding limits;
            the defaults of AnalysisOptions when omitted.
        device: where the model runs; the model's own device when omitted.

    Raises:
        ValueError: an unknown CAM method, target or preprocessing setting, or a CAM layer out
            of range.

    Example:
        >>> with Analyzer(PoundNet.from_checkpoint("last.ckpt")) as analyzer:
        ...     for outcome in analyzer.analyze([("a.jpg", open("a.jpg", "rb").read())]):
        ...         print(outcome.key, outcome.result.p_fake if outcome.ok else outcome.error_code)
    """

    def __init__(
        self, model, options: AnalysisOptions | None = None, device: str | torch.device | None = None
    ):
        self.options = options or AnalysisOptions()
        if self.options.deep_maps not in values(DeepMaps):
            raise ValueError(f"deep_maps must be one of {values(DeepMaps)}, not {self.options.deep_maps!r}")
        if not self.options.fast_maps and (self.options.deep_maps != DeepMaps.ALL or self.options.render):
            raise ValueError("fast_maps=False needs deep_maps='all' and render=False")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.preprocess_path = choose_path(self.device, self.options.preprocess)
        self.model = model.to(self.device).eval()
        self.cam = ComparativeCAM(
            self.model,
            layer=self.options.cam_layer,
            target=self.options.cam_target,
            method=self.options.cam_method,
            compile=self.options.compile,
            compile_batch=self.options.batch_size,
        )
        # the deep maps: relevance through every block, same target, on the same inputs
        self.deep_cam = (
            None
            if self.options.deep_maps == DeepMaps.NONE
            else ComparativeCAM(self.model, target=self.options.cam_target, method=DEEP_METHOD)
        )
        if len(self.cam_config_id) > CAM_CONFIG_ID_MAX:
            raise InvalidRequestError(
                f"the CAM configuration id {self.cam_config_id!r} is over {CAM_CONFIG_ID_MAX} "
                f"characters; give the threshold ({self.options.threshold!r}) with fewer digits"
            )
        threads = self.options.decode_threads
        self._pre = DevicePreprocessor(
            self.device,
            threads=threads,
            force=self.preprocess_path,
            limits=self.options.limits,
            keep_originals=self.options.render,
            roundtrip=self.options.jpeg_roundtrip,
            original_view=_display_view if self.options.render else None,
        )
        self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="poundcam-io")
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._stage_lock = threading.Lock()
        self._stages: dict[str, float] = {}
        self.reset_stage_times()

    @property
    def model_id(self) -> str:
        """The model's id (checkpoint digest), ``unidentified`` when it has none."""
        return self.model.model_id or "unidentified"

    @functools.cached_property
    def cam_config_id(self) -> str:
        """The CAM configuration's id (method, point, layer, target), and which images get the
        deep maps when some do, with the threshold that chose them when it did:
        ``hirescam-ln_1-L23-contrastive.deep-flagged-0.5``, ``....deep-all``. Fixed for the
        analyzer's life (its CAM and options are), so formatted once."""
        return cam_config_id(self.cam.config_id, self.options.deep_maps, self.options.threshold)

    def close(self) -> None:
        """Stop the preprocessing thread and the pool (waits for their work in progress)."""
        self._pre.close()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- where the time goes -------------------------------------------------------------------
    def stage_times(self) -> dict[str, float]:
        """Where the time went since the last reset (docs/analysis.md).

        Returns:
            Seconds by stage: ``preprocess`` (background thread, wall), ``wait_preprocess``
            (this thread waiting for a batch), ``model_cam``, ``render_device`` (this thread),
            ``encode`` (statistics + PNG files, summed over the pool's threads),
            ``wait_encode`` (the pool's threads waiting for a batch's copy to the host, its
            statistics or an input's hash, summed), ``wait_results`` (this thread waiting for
            the pool); and ``items``: the outcomes produced.
        """
        with self._stage_lock:
            return dict(self._stages)

    def reset_stage_times(self) -> None:
        """Start the stage times from zero."""
        with self._stage_lock:
            self._stages = dict.fromkeys((*STAGES, "items"), 0.0)

    def _add(self, stage: str, seconds: float) -> None:
        with self._stage_lock:
            self._stages[stage] += seconds

    # -- the stream ------------------------------------------------------------------------------
    def analyze(self, items: Iterable[tuple[Any, bytes | BaseException]]) -> Iterator[ItemOutcome]:
        """Analyze image bytes; one outcome per item, in input order.

        ``items`` is read in the calling thread, a few batches ahead of the device. An item
        whose bytes could not be fetched may carry the exception instead of bytes: it is
        reported with the exception's ``code`` (or ``fetch_failed``) and the others go on.

        Args:
            items: ``(key, image bytes or exception)`` pairs; the key is returned untouched.

        Returns:
            An iterator of ItemOutcome, one per item, in the order of ``items``: a result, or
            an error code and message for an item that could not be analysed.

        Raises:
            torch.OutOfMemoryError: only when a single image does not fit on the device
                (larger batches are halved and retried).
        """
        bs = self.options.batch_size
        prefetch = max(1, self.options.prefetch)
        reader = _InputReader(items, self._pool, window=(prefetch + 2) * bs)
        ordered = _OrderedOutcomes(reader.failures, backlog=2 * bs)
        batches = iter_batches(
            _TimedPreprocessor(self._pre, self._add), reader.inputs(), bs, prefetch=prefetch
        )
        try:
            while (batch := self._next_batch(reader, batches)) is not None:
                reader.batched += len(batch.items)
                assert batch.keys is not None  # iter_batches gives every batch its keys
                for (idx, _, _), future in zip(batch.keys, self._run_batch(batch), strict=True):
                    ordered.add(idx, future)
                del batch  # the batch's originals and inputs can go
                for future in ordered.ready():
                    yield self._result(future)
            ordered.add_failures(upto=reader.read)
            for future in ordered.rest():
                yield self._result(future)
        finally:
            reader.close()  # lets the preprocessing thread finish
            batches.close()

    def _next_batch(
        self, reader: _InputReader, batches: Iterator[PreprocessedBatch]
    ) -> PreprocessedBatch | None:
        """Tops up the preprocessing thread's input, then waits for its next batch."""
        reader.top_up()
        t0 = time.perf_counter()
        batch = next(batches, None)
        self._add("wait_preprocess", time.perf_counter() - t0)
        return batch

    def _result(self, fut: cf.Future) -> ItemOutcome:
        t0 = time.perf_counter()
        outcome = fut.result()
        self._add("wait_results", time.perf_counter() - t0)
        self._add("items", 1)
        return outcome

    # -- one batch on the device -----------------------------------------------------------------
    def _run_batch(self, batch: PreprocessedBatch) -> list[cf.Future]:
        """Futures of the batch's outcomes, in its input order."""
        n_in = max(1, len(batch.items))
        decode_s = getattr(batch, "preprocess_s", 0.0) / n_in
        futures: list[cf.Future | None] = [None] * len(batch.items)
        ok: list[tuple[int, PreprocessedItem]] = []
        keys = batch.keys
        assert keys is not None  # iter_batches gives every batch its keys
        for j, (item, (_, key, sha)) in enumerate(zip(batch.items, keys, strict=True)):
            if isinstance(item, PreprocessedItem):  # else an ImageDecodeFailure
                ok.append((j, item))
            else:
                futures[j] = _done(
                    ItemOutcome(key, error_code=item.code, error_message=item.message, sha256=sha.result())
                )
        if not ok:
            return futures  # type: ignore[return-value]
        metas = [
            _Meta(keys[j][1], keys[j][2], it.geometry, it.format, it.original_mode, decode_s) for j, it in ok
        ]
        t0 = time.perf_counter()
        displays = self._displays([it for _, it in ok]) if self.options.render else None
        self._add("render_device", time.perf_counter() - t0)
        geometries = [it.geometry for _, it in ok]
        for piece in self._compute(batch.tensor, displays, geometries, 0):
            # submitted first, so taken by a thread before the image tasks that wait for it
            stats = self._pool.submit(
                self._piece_stats, piece, geometries[piece.start : piece.start + len(piece)]
            )
            for r in range(len(piece)):
                j = ok[piece.start + r][0]
                futures[j] = self._pool.submit(self._finish, piece, r, metas[piece.start + r], stats)
        return futures  # type: ignore[return-value]

    def _displays(self, items: list[PreprocessedItem]) -> list[torch.Tensor]:
        """Each original at the overlay display size, uint8 [3, h, w]: device-path originals
        are downscaled on the device; Pillow-path ones in the pool (futures; ``_resolve``)."""
        out: list[Any] = [None] * len(items)
        on_device: list[int] = []
        originals: list[torch.Tensor] = []
        for i, it in enumerate(items):
            if it.device_original is not None:
                on_device.append(i)
                originals.append(it.device_original)
            else:
                out[i] = self._pool.submit(_pil_display, it)
        shown = display_originals(originals, [items[i].geometry for i in on_device])
        for i, x in zip(on_device, shown, strict=True):
            out[i] = x
        return out

    def _resolve(self, displays: list) -> list[torch.Tensor]:
        """The Pillow-path displays (futures, resized while the model ran), on the device."""
        out = list(displays)
        for i, x in enumerate(out):
            if isinstance(x, cf.Future):
                x = x.result()
                if self.device.type == "cuda":  # pinned: the copy does not wait for the device
                    x = x.contiguous().pin_memory()
                out[i] = x.to(self.device, non_blocking=True)
        return out

    def _compute(self, x: torch.Tensor, displays, geometries, start: int) -> list[_Piece]:
        """Model + CAM + overlays for rows of x; halves and retries on device out-of-memory."""
        try:
            t0 = time.perf_counter()
            if self.options.fast_maps:
                res = self.cam.attribute(x, on_invalid="report")
                deep_rows, deep = self._deep(x, res)
                real, fake, invalid = res.real, res.fake, dict(res.invalid)
            else:  # the deep maps alone: the relevance pass gives the logits too
                assert self.deep_cam is not None  # fast_maps=False needs deep_maps="all"
                res = deep = self.deep_cam.attribute(x, on_invalid="report")
                deep_rows = {r: r for r in range(x.shape[0])}
                real, fake, invalid = None, None, {}
            t1 = time.perf_counter()
            heat_rows = None
            if self.options.render:  # fast maps only (fast_maps=False needs render off)
                heat_rows = comparative_scanlines(res.real, res.fake, self._resolve(displays), geometries)
            n = x.shape[0]
            if deep is not None:
                for r, k in deep_rows.items():
                    if k in deep.invalid:
                        invalid.setdefault(r, f"deep map: {deep.invalid[k]}")
            piece = _Piece(
                start,
                real,
                fake,
                res.logits,
                res.probs,
                invalid,
                res.grid,
                res.layer,
                res.target,
                heat_rows,
                (t1 - t0) / n,
                0.0,
                deep_rows=deep_rows,
                deep_real=None if deep is None else deep.real,
                deep_fake=None if deep is None else deep.fake,
            )
            self._to_host(piece)
            t2 = time.perf_counter()
            piece.render_s = (t2 - t1) / n
            self._add("model_cam", t1 - t0)
            self._add("render_device", t2 - t1)
            return [piece]
        except torch.OutOfMemoryError:
            if x.shape[0] == 1:
                raise
            log.warning("device out of memory at batch %d; retrying as halves", x.shape[0])
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        half = x.shape[0] // 2
        cut = (lambda s: s[:half]), (lambda s: s[half:])
        return [
            p
            for c, off in zip(cut, (0, half), strict=True)
            for p in self._compute(
                c(x), None if displays is None else c(displays), c(geometries), start + off
            )
        ]

    def deep_rows(self, probs: torch.Tensor, invalid: Iterable[int] = ()) -> list[int]:
        """The rows of a batch that get the deep maps under ``options.deep_maps``: none, those
        labelled fake (``probs[:, 1] >= threshold``) or all; never those whose fast maps could
        not be computed."""
        if self.options.deep_maps == DeepMaps.NONE:
            return []
        skip = set(invalid)
        flagged = [self._labelled_fake(p) for p in probs[:, 1].tolist()]
        return [
            r
            for r in range(probs.shape[0])
            if r not in skip and (self.options.deep_maps == DeepMaps.ALL or flagged[r])
        ]

    def _labelled_fake(self, p_fake: float) -> bool:
        """The label rule (constants.labelled_fake) at this analysis's threshold."""
        return labelled_fake(p_fake, self.options.threshold)

    def label_for(self, p_fake: float) -> str:
        """The label of a P(fake) at this analyzer's threshold (also for an analysis stored
        before, at another threshold: the pipeline decides reused analyses with it)."""
        return Label.FAKE if self._labelled_fake(p_fake) else Label.REAL

    def _deep(self, x: torch.Tensor, res) -> tuple[dict[int, int], Any]:
        """The deep maps of the chosen rows of x, in one batch after the fast pass:
        ``({row: index in the result}, CAMResult)``, or ``({}, None)`` when no row is chosen."""
        rows = self.deep_rows(res.probs, res.invalid)
        if not rows or self.deep_cam is None:
            return {}, None
        index = torch.tensor(rows, device=x.device)
        deep = self.deep_cam.attribute(x.index_select(0, index), on_invalid="report")
        return {r: k for k, r in enumerate(rows)}, deep

    def _to_host(self, piece: _Piece) -> None:
        """Copy the piece's tensors to the host. On CUDA: into pinned memory on a side stream,
        without waiting; ``piece.ready`` is the event the encoding threads wait for."""
        if self._copy_stream is None:
            return
        names = ("real", "fake", "logits", "probs", "deep_real", "deep_fake")
        tensors = [getattr(piece, n) for n in names]
        tensors += piece.heat_rows or []
        compute = torch.cuda.current_stream(self.device)
        self._copy_stream.wait_stream(compute)
        hosts: list[Any] = []
        with torch.cuda.stream(self._copy_stream):
            for t in tensors:
                if t is None:
                    hosts.append(None)
                    continue
                h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                h.copy_(t, non_blocking=True)
                t.record_stream(self._copy_stream)  # not reused before the copy has read it
                hosts.append(h)
            piece.ready = torch.cuda.Event(blocking=True)  # waiting threads sleep, not spin
            piece.ready.record(self._copy_stream)
        for n, h in zip(names, hosts, strict=False):  # the heat rows follow the named ones
            setattr(piece, n, h)
        if piece.heat_rows is not None:
            piece.heat_rows = hosts[len(names) :]

    # -- statistics + PNG files (thread pool) ----------------------------------------------------
    def _piece_stats(self, piece: _Piece, geometries: list[CropGeometry]) -> list:
        t0 = time.perf_counter()
        piece.wait()
        t1 = time.perf_counter()
        self._add("wait_encode", t1 - t0)
        try:
            if piece.real is None or piece.fake is None:
                return [{} for _ in geometries]  # no fast maps, no statistics
            return compute_stats_batch(piece.real, piece.fake, geometries)
        finally:
            self._add("encode", time.perf_counter() - t1)

    def _finish(self, piece: _Piece, r: int, meta: _Meta, stats_future: cf.Future) -> ItemOutcome:
        t0 = time.perf_counter()
        sha = meta.sha256.result()
        waited = 0.0
        try:
            piece.wait()
            waited = time.perf_counter() - t0
            if r in piece.invalid:
                return ItemOutcome(
                    meta.key, error_code=ErrorCode.CAM_UNAVAILABLE, error_message=piece.invalid[r], sha256=sha
                )
            heatmaps = {}
            if piece.heat_rows is not None and piece.real is not None and piece.fake is not None:
                heatmaps = {
                    HEATMAP_NAME: comparative_png(
                        piece.heat_rows[r], piece.real[r], piece.fake[r], float(piece.probs[r, 1])
                    )
                }
            t_stats = time.perf_counter()
            stats = stats_future.result()[r]
            waited += time.perf_counter() - t_stats
            if isinstance(stats, Exception):
                raise stats
            result = self._make_result(
                piece, r, meta, sha, stats, heatmaps, render_s=piece.render_s + time.perf_counter() - t0
            )
            return ItemOutcome(meta.key, result=result, sha256=sha)
        except Exception as exc:  # one image's rendering must never take its batch down
            log.exception("unexpected error rendering %s", meta.key)
            return ItemOutcome(
                meta.key,
                error_code=ErrorCode.RENDER_FAILED,
                error_message=f"{type(exc).__name__}: {exc}",
                sha256=sha,
            )
        finally:
            self._add("wait_encode", waited)
            self._add("encode", time.perf_counter() - t0 - waited)

    def _make_result(
        self,
        piece: _Piece,
        r: int,
        meta: _Meta,
        sha: str,
        stats: dict,
        heatmaps: dict[str, bytes],
        render_s: float,
    ) -> AnalysisResult:
        p_fake = float(piece.probs[r, 1])
        return AnalysisResult(
            sha256=sha,
            image_format=meta.format,
            width=meta.geometry.original[0],
            height=meta.geometry.original[1],
            original_mode=meta.original_mode,
            p_fake=p_fake,
            logit_real=float(piece.logits[r, 0]),
            logit_fake=float(piece.logits[r, 1]),
            label=self.label_for(p_fake),
            threshold=self.options.threshold,
            model_id=self.model_id,
            cam_config_id=self.cam_config_id,
            # (no statistics without fast maps: stats is {} then)
            stats=stats and {**stats, "grid": piece.grid, "layer": piece.layer, "target": piece.target},
            geometry=meta.geometry.to_dict(),
            heatmaps=heatmaps,
            real_map=_row(piece.real, r),
            fake_map=_row(piece.fake, r),
            deep_real_map=_row(piece.deep_real, piece.deep_rows.get(r)),
            deep_fake_map=_row(piece.deep_fake, piece.deep_rows.get(r)),
            timings={"decode_s": meta.decode_s, "compute_s": piece.compute_s, "render_s": render_s},
        )


def cam_config_id(fast: str, deep_maps: str = DeepMaps.NONE, threshold: float = 0.5) -> str:
    """The configuration id of an analysis: the fast maps' (``ComparativeCAM.config_id``),
    followed by ``.deep-<policy>`` when some images get the deep maps, and for ``flagged`` by
    the threshold that chose them (``-`` and :func:`threshold_text`), since another threshold
    chooses other images: ``.deep-flagged-0.5``, ``.deep-all``. With ``none`` it is the fast
    maps' id unchanged (whatever the threshold), so analyses stored before deep maps existed
    are found again. The id is a key segment of the heatmap objects (letters, digits, ``.``,
    ``_``, ``-``) and at most ``CAM_CONFIG_ID_MAX`` characters (``analyses.cam_config_id``)."""
    if deep_maps == DeepMaps.NONE:
        return fast
    if deep_maps == DeepMaps.FLAGGED:
        return f"{fast}{_DEEP_SUFFIX}{deep_maps}-{threshold_text(threshold)}"
    return f"{fast}{_DEEP_SUFFIX}{deep_maps}"


def threshold_text(threshold: float) -> str:
    """The threshold as a configuration id writes it: Python's shortest text that reads back
    as the same float (``0.5``, ``0.73``, ``1.0``, ``2.5e-08``), so that equal thresholds give
    one id and different ones different ids; ``-0.0`` is written ``0.0``."""
    return repr(float(threshold) + 0.0)


def fast_config_id(config_id: str) -> str:
    """The fast maps' part of a configuration id made by :func:`cam_config_id`."""
    return config_id.split(_DEEP_SUFFIX, 1)[0]


_DEEP_SUFFIX = ".deep-"


def _row(maps: torch.Tensor | None, k: int | None) -> Any:
    return None if maps is None or k is None else maps[k].numpy().copy()


_END = object()


def _drain(feed: queue.SimpleQueue) -> Iterator:
    """The inputs put on ``feed`` until _END (runs on the preprocessing thread)."""
    while (x := feed.get()) is not _END:
        yield x


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pil_display(item: PreprocessedItem) -> torch.Tensor:
    """A Pillow-path original at the display size, uint8 [3, h, w] on the CPU: the view made
    while it was decoded (its original is not kept), else from the original decoded again."""
    if item.view is not None:
        return item.view
    return _display_view(item.original_image(), item.geometry)


def _display_view(image, geometry: CropGeometry) -> torch.Tensor:
    """An original at the display size, uint8 [3, h, w] on the CPU."""
    shown = display_original_pil(image, geometry, reducing_gap=DISPLAY_REDUCING_GAP)
    return torch.from_numpy(shown).permute(2, 0, 1)


def _done(outcome: ItemOutcome) -> cf.Future:
    f: cf.Future = cf.Future()
    f.set_result(outcome)
    return f
