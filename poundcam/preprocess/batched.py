"""The official test transform on the device, batched, with Pillow for what the device cannot take.

``DevicePreprocessor.preprocess_batch(list_of_bytes)`` returns a ``PreprocessedBatch``: one
normalized tensor [n, 3, 224, 224] on the device for the n images that decoded, and, in input
order, a ``PreprocessedItem`` (row, crop geometry, path taken, lazy crop image) or an
``ImageDecodeFailure`` (index, code, message) per input.

Two paths compute the same transform (poundcam.preprocess.transform; docs/preprocessing.md):

- "device": torchvision.io on the preprocessor's device (nvJPEG on CUDA, libjpeg-turbo on the
  CPU): JPEG decode -> EXIF orientation -> JPEG encode at quality 90 -> decode -> antialiased
  bilinear resize of the shorter side to 256 -> center crop 224 -> normalization. Decode and
  encode calls take the whole batch as one list. With ``roundtrip="tensor"`` the quality-90
  encode and decode are computed as tensor math instead (poundcam.preprocess.jpeg_tensor: libjpeg's
  integer arithmetic, equal to Pillow's round trip bit for bit; no bitstream leaves the
  device). Only plain JPEGs are sent this way: the header (poundcam.preprocess.jpeg_header) must be
  readable, complete (ends with EOI), 8-bit, 1 or 3 components, Huffman-coded, with an EXIF
  orientation this module applies itself and within the limits.
- "pillow": poundcam.preprocess.decode.decode_image +
  poundcam.preprocess.transform.preprocess_with_geometry, in a thread pool, for everything else
  (PNG, WebP, GIF, CMYK, odd or damaged JPEGs, inputs the device decoder refuses). Its results
  join the same batch; it is also the only source of error codes, so an input fails with the
  same code whichever path was planned for it.

``choose_path(device, setting)`` picks the default path: "device" on CUDA, "pillow" on the CPU
(where the Pillow path is the model's calibration and not slower), unless the setting
(POUNDCAM_PREPROCESS = auto | device | pillow) forces one.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import os
import queue
import threading
import warnings
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..constants import ErrorCode, JpegRoundtrip, PreprocessPath, values
from .batching import map_in_groups
from .budget import DEFAULT_BUDGET, MemoryBudget, decode_cost
from .decode import DecodedImage, DecodeLimits, ImageDecodeError, decode_image
from .geometry import resized_size
from .jpeg_header import JpegHeader, read_jpeg_header
from .jpeg_tensor import jpeg_roundtrip_tensors
from .transform import CROP, JPEG_QUALITY, CropGeometry, geometry_for, normalize, preprocess_with_geometry

with warnings.catch_warnings():  # torchvision's image I/O warns of its deprecation on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from torchvision.io import ImageReadMode  # loads torchvision's image operators

log = logging.getLogger(__name__)

SETTINGS = values(PreprocessPath)
ROUNDTRIPS = values(JpegRoundtrip)  # how the device path re-encodes at quality 90
MAX_IN_FLIGHT = 2  # CUDA: batches queued on the device before preprocess_batch waits for one
# The device path resizes the whole image: above this many resized pixels (thin strips) an
# input takes the Pillow path, which computes only the crop.
DEVICE_MAX_RESIZED_PIXELS = 16 * 1024 * 1024


def choose_path(device: str | torch.device, setting: str | None = PreprocessPath.AUTO) -> PreprocessPath:
    """The preprocessing path for ``device``: "device" on CUDA, "pillow" elsewhere, unless
    ``setting`` ("auto" | "device" | "pillow"; None means "auto") forces one."""
    setting = PreprocessPath.AUTO if setting is None else setting
    if setting not in SETTINGS:
        raise ValueError(f"preprocessing setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if setting != PreprocessPath.AUTO:
        return PreprocessPath(setting)
    return PreprocessPath.DEVICE if torch.device(device).type == "cuda" else PreprocessPath.PILLOW


@dataclasses.dataclass(frozen=True)
class ImageDecodeFailure:
    """An input that could not be preprocessed; ``code`` is poundcam.preprocess.decode's error code
    (or ``ErrorCode.DECODE_FAILED`` for an unexpected error)."""

    index: int
    code: str
    message: str

    ok = False


@dataclasses.dataclass(eq=False)
class PreprocessedItem:
    """One preprocessed input: row ``row`` of its batch's tensor.

    path: "device" or "pillow"; reason: why a device-path batch sent it to Pillow (None when it
    took the planned path). width/height: the upright original size (geometry.original).
    view: what the preprocessor's ``original_view`` made of the decoded original (Pillow
    path), in place of the original itself; None otherwise.
    """

    index: int
    row: int
    path: str
    geometry: CropGeometry
    format: str
    original_mode: str
    reason: str | None
    _batch: PreprocessedBatch = dataclasses.field(repr=False)
    _data: bytes = dataclasses.field(repr=False)
    _crop: Image.Image | None = dataclasses.field(default=None, repr=False)
    _decoded: DecodedImage | None = dataclasses.field(default=None, repr=False)
    _original: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    view: Any = dataclasses.field(default=None, repr=False)

    ok = True

    @property
    def width(self) -> int:
        return self.geometry.original[0]

    @property
    def height(self) -> int:
        return self.geometry.original[1]

    @property
    def tensor(self) -> torch.Tensor:
        """The normalized [3, 224, 224] input, on the batch's device."""
        return self._batch.tensor[self.row]

    def crop_image(self) -> Image.Image:
        """The 224x224 RGB crop the model sees (before normalization), as a PIL image."""
        if self._crop is None:
            self._crop = self._batch._device_crop(self.row)
        return self._crop

    def decoded(self) -> DecodedImage:
        """The upright original as poundcam.preprocess.decode decodes it (for rendering on the original).
        Device-path items decode it here, on the CPU, on first use."""
        if self._decoded is None:
            self._decoded = decode_image(self._data, self._batch.limits)
        return self._decoded

    @property
    def device_original(self) -> torch.Tensor | None:
        """The device decoder's upright original, uint8 [3, H, W] on the device, when it was
        kept (``keep_originals``); None for Pillow-path items."""
        return self._original

    def original_image(self) -> Image.Image:
        """The upright original in RGB, for rendering. With ``keep_originals`` a device-path
        item converts the image its device decoder produced (no second decode); otherwise
        this is ``decoded().image``."""
        if self._original is not None:
            self._batch.host_wait()
            return Image.fromarray(self._original.permute(1, 2, 0).cpu().numpy(), "RGB")
        return self.decoded().image


@dataclasses.dataclass(eq=False)
class PreprocessedBatch:
    """``tensor`` [n, 3, 224, 224] (normalized, on the device) for the n inputs that decoded;
    ``items`` has one entry per input, in input order.

    On CUDA the batch is computed on the preprocessor's own stream, without the host waiting
    for it: ``ready`` is the event recorded after its last operation. ``wait()`` orders the
    calling thread's current stream after it (``preprocess_batch`` does that by default); the
    item methods that copy to the host wait for it themselves."""

    tensor: torch.Tensor
    items: list[PreprocessedItem | ImageDecodeFailure]
    limits: DecodeLimits
    keys: list[Any] | None = None
    ready: Any = None  # torch.cuda.Event on CUDA, None on the CPU
    _crops: torch.Tensor | None = dataclasses.field(default=None, repr=False)  # uint8, device rows
    _crop_rows: dict[int, int] = dataclasses.field(default_factory=dict, repr=False)
    _crops_cpu: np.ndarray | None = dataclasses.field(default=None, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    preprocess_s: float = 0.0  # wall time of the preprocess_batch call, where its caller times it

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[PreprocessedItem | ImageDecodeFailure]:
        return iter(self.items)

    @property
    def ok(self) -> list[PreprocessedItem]:
        return [it for it in self.items if isinstance(it, PreprocessedItem)]

    @property
    def failures(self) -> list[ImageDecodeFailure]:
        return [it for it in self.items if isinstance(it, ImageDecodeFailure)]

    def wait(self) -> None:
        """Work queued after this on the calling thread's current stream sees the batch's
        tensors (a wait on the device; the host goes on). Nothing to do on the CPU."""
        if self.ready is not None:
            torch.cuda.current_stream(self.tensor.device).wait_event(self.ready)

    def host_wait(self) -> None:
        """Block until the batch's tensors are written (CUDA)."""
        if self.ready is not None:
            self.ready.synchronize()

    def _device_crop(self, row: int) -> Image.Image:
        with self._lock:  # one transfer of all device-path crops, on first use
            if self._crops_cpu is None:
                self.host_wait()
                assert self._crops is not None  # a batch with device-path items has their crops
                self._crops_cpu = self._crops.permute(0, 2, 3, 1).cpu().numpy()
        return Image.fromarray(self._crops_cpu[self._crop_rows[row]], "RGB")


# --- the device path, stage by stage ----------------------------------------------------------


def plan_input(data: bytes, limits: DecodeLimits) -> tuple[JpegHeader | None, str | None]:
    """(header, None) if the device path can take ``data``, else (None, reason)."""
    if len(data) == 0 or len(data) > limits.max_bytes:
        return None, "size limit"
    if "JPEG" not in limits.allowed_formats:
        return None, "JPEG not allowed"
    header = read_jpeg_header(data)
    if header is None:
        return None, "not a plain JPEG"
    if header.width <= 0 or header.height <= 0:
        return None, "no size in the frame header"
    pixels = header.width * header.height
    if pixels > limits.max_pixels or (Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS):
        return None, "pixel limit"
    rw, rh = resized_size(*header.oriented_size)
    if rw * rh > DEVICE_MAX_RESIZED_PIXELS:
        return None, "extreme aspect ratio"
    if header.process == "other" or header.precision != 8:
        return None, f"{header.process} {header.precision}-bit JPEG"
    if header.components not in (1, 3):
        return None, f"{header.components}-component JPEG"
    if header.components == 3 and header.adobe_transform == 0:
        return None, "RGB-coded JPEG"
    if not header.huffman_tables:  # decoders differ on the implicit default tables
        return None, "no Huffman tables"
    if header.orientation is None:
        return None, "unreadable orientation"
    if not header.complete:
        return None, "no end-of-image marker"
    return header, None


def orient(image: torch.Tensor, orientation: int | None) -> torch.Tensor:
    """Turn a [C, H, W] image upright by its EXIF orientation, as PIL's exif transposes do."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1, -2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return image.transpose(-1, -2).flip(-2)
    return image


def resize_crop(image: torch.Tensor, geom: CropGeometry, exact_uint8: bool | None = None) -> torch.Tensor:
    """uint8 [3, H, W] -> the uint8 [3, 224, 224] center crop of the antialiased bilinear resize
    to ``geom.resized``, computed as Pillow computes it (horizontal pass, rounding to 8 bits,
    vertical pass). ``exact_uint8`` (default: on the CPU) uses torch's uint8 kernel, which
    follows Pillow's integer arithmetic; otherwise two float passes with rounding between them
    (CUDA). Either agrees with Pillow to within one level on a small fraction of pixels."""
    if exact_uint8 is None:
        exact_uint8 = image.device.type == "cpu"
    if exact_uint8:
        rw, rh = geom.resized
        out = F.interpolate(image.unsqueeze(0), size=(rh, rw), mode="bilinear", antialias=True)
        return out[0, :, geom.crop_top : geom.crop_top + CROP, geom.crop_left : geom.crop_left + CROP]
    return _resize_crop_float(image.unsqueeze(0), geom)[0]


def _resize_crop_float(images: torch.Tensor, geom: CropGeometry) -> torch.Tensor:
    """uint8 [N, 3, H, W] of one size -> uint8 [N, 3, 224, 224]: the float form of resize_crop."""
    rw, rh = geom.resized
    left, top = geom.crop_left, geom.crop_top
    h, w = images.shape[-2:]
    x = images.float()
    if rw != w:
        x = F.interpolate(x, size=(h, rw), mode="bilinear", antialias=True).round_().clamp_(0, 255)
    x = x[..., left : left + CROP]  # the vertical pass works column by column
    if rh != h:
        x = F.interpolate(x, size=(rh, CROP), mode="bilinear", antialias=True).round_().clamp_(0, 255)
    return x[..., top : top + CROP, :].to(torch.uint8)


def resize_crops(
    images: Sequence[torch.Tensor],
    geoms: Sequence[CropGeometry],
    exact_uint8: bool | None = None,
    max_pixels: int = 32 * 1024 * 1024,
) -> list[torch.Tensor]:
    """``resize_crop`` for many images. The float form (CUDA) runs images of the same size as
    one batch, at most ``max_pixels`` at a time (16 bytes per pixel at the peak), so its number
    of operations does not grow with the batch; the uint8 form (CPU) runs image by image, on
    each decoder output's own layout, which its kernel is fastest on."""
    if not images:
        return []
    if exact_uint8 is None:
        exact_uint8 = images[0].device.type == "cpu"
    if exact_uint8:
        return [resize_crop(im, g, True) for im, g in zip(images, geoms, strict=True)]
    return map_in_groups(
        images,
        [(im.shape, g) for im, g in zip(images, geoms, strict=True)],
        lambda stack, key: _resize_crop_float(stack, key[1]),
        3 * max_pixels,
    )


# The operators behind torchvision.io.decode_jpeg / encode_jpeg, called directly: the Python
# wrappers add nothing here but a deprecation warning on every call. Inputs: lists.
_RGB = ImageReadMode.RGB.value


def decode_jpegs(raw: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes (uint8 CPU tensors) -> uint8 [3, H, W] RGB images on ``device``."""
    if device.type == "cuda":
        return torch.ops.image.decode_jpegs_cuda(raw, _RGB, device)
    return [torch.ops.image.decode_jpeg(r, _RGB, False) for r in raw]


def encode_jpegs(images: list[torch.Tensor], quality: int = JPEG_QUALITY) -> list[torch.Tensor]:
    """uint8 [3, H, W] images -> JPEG bytes (uint8 tensors on the images' device)."""
    if images[0].device.type == "cuda":
        return torch.ops.image.encode_jpegs_cuda([im.contiguous() for im in images], quality)
    # the CPU encoder reads HWC: the decoder's CHW output is already a view of that layout
    return [torch.ops.image.encode_jpeg(im, quality) for im in images]


def byte_tensor(data: bytes) -> torch.Tensor:
    """A uint8 tensor over ``data`` without copying it (the decoders only read their input; a
    copy of a 1080p JPEG costs ~80 us of the preprocessing thread, interpreter lock held)."""
    return torch.frombuffer(data, dtype=torch.uint8)


with warnings.catch_warnings():  # torch says once per process that bytes are read-only: not here
    warnings.simplefilter("ignore", UserWarning)
    byte_tensor(b"\xff")


def _each(fn, inputs: list, **kw) -> list:
    """``fn`` over the whole list in one call; if that fails, item by item, each failure kept
    as its exception (so one input the decoder refuses does not take the others along)."""
    if not inputs:
        return []
    try:
        return list(fn(inputs, **kw))
    except Exception:  # noqa: BLE001 - retried per item below
        pass
    out = []
    for x in inputs:
        try:
            out.append(fn([x], **kw)[0])
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out


def device_transform(
    datas: Sequence[bytes],
    headers: Sequence[JpegHeader],
    device: torch.device,
    keep_originals: bool = False,
    roundtrip: str = JpegRoundtrip.CODEC,
) -> list[tuple | Exception]:
    """The transform on ``device`` for planned JPEG inputs: per input, (uint8 crop [3,224,224]
    on the device, geometry, the upright decoded original or None) or the exception that
    stopped it. ``roundtrip``: "codec" (the JPEG encoder and decoder) or "tensor"
    (poundcam.preprocess.jpeg_tensor) for the quality-90 re-encode."""
    out: list[Any] = [None] * len(datas)
    raw = [byte_tensor(d) for d in datas]
    first = _each(decode_jpegs, raw, device=device)
    live = []
    for i, img in enumerate(first):
        if isinstance(img, Exception):
            out[i] = img
        elif tuple(img.shape[-2:]) != (headers[i].height, headers[i].width):
            out[i] = ValueError(f"decoded size {tuple(img.shape)} differs from the header")
        else:
            live.append(i)
    upright = [orient(first[i], headers[i].orientation) for i in live]
    del first
    originals = dict(zip(live, upright, strict=True)) if keep_originals else {}
    if roundtrip == JpegRoundtrip.TENSOR:
        live2, second = live, _each(jpeg_roundtrip_tensors, upright)
    else:
        live2, second = _codec_roundtrip(live, upright, out, device)
    del upright
    done, images = _set_aside_failures(live2, second, out)
    del second
    geoms = [geometry_for(*headers[i].oriented_size) for i in done]
    for i, crop, geom in zip(done, resize_crops(images, geoms), geoms, strict=True):
        out[i] = (crop, geom, originals.get(i))
    return out


def _codec_roundtrip(
    live: list[int], upright: list[torch.Tensor], out: list, device: torch.device
) -> tuple[list[int], list]:
    """Encode at quality 90 and decode again (the decoder reads host bytes); failures go to
    ``out``. Returns the inputs still alive and their decoded images (or exceptions)."""
    live2, encoded = _set_aside_failures(live, _each(encode_jpegs, upright), out)
    return live2, _each(decode_jpegs, to_host(encoded), device=device)


def _set_aside_failures(indices: list[int], results: list, out: list) -> tuple[list[int], list]:
    """The exceptions among ``results`` go to ``out`` at their inputs' indices; returns the
    indices and results of the others."""
    kept, values = [], []
    for i, r in zip(indices, results, strict=True):
        if isinstance(r, Exception):
            out[i] = r
        else:
            kept.append(i)
            values.append(r)
    return kept, values


def to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """1-D tensors (one device) -> on the CPU, joined for one transfer (from a GPU: one
    synchronization, not one per tensor) and split on the host."""
    if not tensors:
        return []
    joined = torch.cat(tensors).cpu()
    return list(joined.split([t.numel() for t in tensors]))


def _pillow_one(
    data: bytes,
    limits: DecodeLimits,
    budget: MemoryBudget | None = None,
    original_view=None,
    keep_original: bool = True,
):
    """The Pillow path for one input: (tensor, geometry, crop, decoded, view) or (code, message).

    The decode reserves its estimated memory from ``budget`` once the header is read, and holds
    it until the crop and the view (``original_view(image, geometry)``) are made. The decoded
    original is returned only with ``keep_original``; otherwise it is dropped here, and with it
    the largest buffer an input has."""
    try:
        with budget.lease() if budget is not None else contextlib.nullcontext() as lease:
            reserve = (
                (lambda w, h, mode: lease.acquire(decode_cost(w, h, mode))) if lease is not None else None
            )
            decoded = decode_image(data, limits, before_load=reserve)
            tensor, geom, crop = preprocess_with_geometry(decoded.image)
            view = original_view(decoded.image, geom) if original_view is not None else None
            if not keep_original:
                # the largest buffer goes now; _assemble keeps no DecodedImage without its image
                decoded = dataclasses.replace(decoded, image=None)  # type: ignore[arg-type]
            return tensor, geom, crop, decoded, view
    except ImageDecodeError as exc:
        return exc.code, str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad input never fails its batch
        log.exception("unexpected error preprocessing an input with Pillow")
        return ErrorCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}"


# --- the preprocessor -------------------------------------------------------------------------


class DevicePreprocessor:
    """The official transform for batches of image bytes, on ``device``.

    threads: worker threads for the Pillow path (and, on the CPU, for the device path's chunks);
    default: the machine's CPU count. force: None/"auto" (see ``choose_path``), "device" or
    "pillow". limits: poundcam.preprocess.decode.DecodeLimits for both paths. keep_originals: device-path
    items keep their decoded upright original on the device for ``original_image()`` (memory:
    3 bytes per pixel per image, until the batch is dropped). roundtrip: how the device path
    re-encodes at quality 90, "codec" (the JPEG encoder and decoder; default) or "tensor"
    (poundcam.preprocess.jpeg_tensor, the same result as Pillow's, computed on the device).
    memory_budget: bytes that Pillow-path decodes may hold at once (poundcam.preprocess.budget).
    original_view: ``f(image, geometry)`` applied to each Pillow-path original while it is
    decoded (a display-size copy, say); its result is the item's ``view``, and the original is
    then dropped instead of kept with the batch (``original_image()`` decodes it again).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        force: str | None = None,
        limits: DecodeLimits | None = None,
        keep_originals: bool = False,
        roundtrip: str = JpegRoundtrip.CODEC,
        memory_budget: int = DEFAULT_BUDGET,
        original_view=None,
    ):
        if roundtrip not in ROUNDTRIPS:
            raise ValueError(f"roundtrip must be one of {', '.join(ROUNDTRIPS)}, got {roundtrip!r}")
        self.roundtrip = roundtrip
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.path = choose_path(self.device, force)
        self.limits = limits or DecodeLimits()
        self.keep_originals = keep_originals
        self.budget = MemoryBudget(memory_budget)
        self.original_view = original_view
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._pool = cf.ThreadPoolExecutor(self.threads, thread_name_prefix="poundcam-preprocess")
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._in_flight: collections.deque = collections.deque()  # CUDA: events of recent batches

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> DevicePreprocessor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def plan(self, data: bytes) -> tuple[str, JpegHeader | None, str | None]:
        """(path, header, reason) for one input under this preprocessor's default path."""
        if self.path == PreprocessPath.PILLOW:
            return PreprocessPath.PILLOW, None, None
        header, reason = plan_input(data, self.limits)
        if header is None:
            return PreprocessPath.PILLOW, None, reason
        return PreprocessPath.DEVICE, header, None

    def preprocess_batch(self, items: Sequence[bytes], wait: bool = True) -> PreprocessedBatch:
        """The batch for ``items`` (image bytes). On CUDA its work is queued on this
        preprocessor's stream and the call returns without waiting for the device (it waits
        only while ``MAX_IN_FLIGHT`` earlier batches are unfinished, which bounds the memory);
        with ``wait`` the calling thread's current stream is ordered after the batch, so
        anything it queues next sees the tensors. A consumer on another thread passes
        wait=False and calls ``batch.wait()`` itself (``iter_batches`` does)."""
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._in_flight.popleft().synchronize()
        datas = [bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in items]
        for d in datas:
            if not isinstance(d, bytes):
                raise TypeError(f"preprocess_batch needs bytes, got {type(d).__name__}")
        plans = [self.plan(d) for d in datas]
        reasons = {i: r for i, (_, _, r) in enumerate(plans) if r is not None}
        pillow_futures = {
            i: self._pool.submit(self._pillow, d)
            for i, (d, (path, _, _)) in enumerate(zip(datas, plans, strict=True))
            if path == PreprocessPath.PILLOW
        }
        dev_idx = [i for i, (path, _, _) in enumerate(plans) if path == PreprocessPath.DEVICE]
        dev_headers = [h for i in dev_idx if (h := plans[i][1]) is not None]  # all: planned with one
        dev_out = self._run_device([datas[i] for i in dev_idx], dev_headers)
        dev_results: dict[int, tuple] = {}
        for i, res in zip(dev_idx, dev_out, strict=True):
            if isinstance(res, Exception):  # refused by the device decoder: Pillow decides
                reasons[i] = f"device decoder: {type(res).__name__}: {str(res)[:200]}"
                pillow_futures[i] = self._pool.submit(self._pillow, datas[i])
            else:
                dev_results[i] = res
        pillow_results = {i: f.result() for i, f in pillow_futures.items()}
        headers = {i: plans[i][1] for i in dev_results}
        batch = self._assemble(datas, headers, dev_results, pillow_results, reasons)
        if batch.ready is not None:
            self._in_flight.append(batch.ready)
        if wait:
            batch.wait()
        return batch

    def _pillow(self, data: bytes):
        return _pillow_one(
            data, self.limits, self.budget, self.original_view, keep_original=self.original_view is None
        )

    def _on_stream(self):
        if self._stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self._stream)

    def _run_device(self, datas: list[bytes], headers: list[JpegHeader]) -> list:
        if not datas:
            return []
        if self._stream is not None:  # CUDA: one batched call per stage, on a side stream
            with torch.cuda.device(self.device), self._on_stream():
                return device_transform(datas, headers, self.device, self.keep_originals, self.roundtrip)
        # CPU: the same stages, the batch split in chunks over the thread pool
        n = min(self.threads, len(datas))
        bounds = [len(datas) * k // n for k in range(n + 1)]
        futures = [
            self._pool.submit(
                device_transform, datas[a:b], headers[a:b], self.device, self.keep_originals, self.roundtrip
            )
            for a, b in zip(bounds, bounds[1:], strict=False)
        ]  # consecutive pairs
        return [res for f in futures for res in f.result()]

    def _assemble(self, datas, headers, dev_results, pillow_results, reasons) -> PreprocessedBatch:
        n_ok = len(dev_results) + sum(1 for r in pillow_results.values() if len(r) > 2)
        with self._on_stream():  # allocated on the stream that writes it
            tensor = torch.empty((n_ok, 3, CROP, CROP), dtype=torch.float32, device=self.device)
        batch = PreprocessedBatch(tensor=tensor, items=[], limits=self.limits)
        dev_rows: list[int] = []
        dev_crops: list[torch.Tensor] = []
        pil_rows: list[int] = []
        pil_tensors: list[torch.Tensor] = []
        row = 0
        for i, data in enumerate(datas):
            if i in dev_results:
                crop, geom, original = dev_results[i]
                batch.items.append(
                    PreprocessedItem(
                        index=i,
                        row=row,
                        path=PreprocessPath.DEVICE,
                        geometry=geom,
                        format="JPEG",
                        original_mode="L" if headers[i].components == 1 else "RGB",
                        reason=None,
                        _batch=batch,
                        _data=data,
                        _original=original,
                    )
                )
                batch._crop_rows[row] = len(dev_crops)
                dev_rows.append(row)
                dev_crops.append(crop)
            else:
                res = pillow_results[i]
                if len(res) == 2:
                    batch.items.append(ImageDecodeFailure(index=i, code=res[0], message=res[1]))
                    continue
                t, geom, crop, decoded, view = res
                batch.items.append(
                    PreprocessedItem(
                        index=i,
                        row=row,
                        path=PreprocessPath.PILLOW,
                        geometry=geom,
                        format=decoded.format,
                        original_mode=decoded.original_mode,
                        reason=reasons.get(i),
                        _batch=batch,
                        _data=data,
                        _crop=crop,
                        _decoded=decoded if decoded.image is not None else None,
                        view=view,
                    )
                )
                pil_rows.append(row)
                pil_tensors.append(t)
            row += 1
        with self._on_stream():
            if dev_crops:
                crops = torch.stack(dev_crops)
                batch._crops = crops
                tensor.index_copy_(
                    0, self._to_device(torch.tensor(dev_rows)), normalize(crops.float().div_(255))
                )
            if pil_tensors:
                tensor.index_copy_(
                    0, self._to_device(torch.tensor(pil_rows)), self._to_device(torch.stack(pil_tensors))
                )
        if self._stream is not None:
            batch.ready = torch.cuda.Event(blocking=True)  # host waits sleep, not spin
            batch.ready.record(self._stream)
            # the consumer uses (and frees) these on its own stream: keep the allocator from
            # reusing their memory for a later batch before that stream is done with them
            consumer = torch.cuda.current_stream(self.device)
            kept = [tensor] + ([batch._crops] if batch._crops is not None else [])
            kept += [
                it._original
                for it in batch.items
                if isinstance(it, PreprocessedItem) and it._original is not None
            ]
            for t in kept:
                t.record_stream(consumer)
        return batch

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor on the device without the host waiting for the stream: from pinned
        memory, asynchronously (a copy from pageable memory would wait for the stream's queue)."""
        if self._stream is None:
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)


# --- overlap: the next batch is preprocessed while the current one is used -------------------

_DONE = object()


class BatchPreprocessor(Protocol):
    """What ``iter_batches`` needs: a DevicePreprocessor, or a wrapper around one."""

    def preprocess_batch(self, items: Sequence[bytes], wait: bool = True) -> PreprocessedBatch: ...


def iter_batches(
    preprocessor: BatchPreprocessor, source: Iterable[tuple[Any, bytes]], batch_size: int, prefetch: int = 1
) -> Generator[PreprocessedBatch, None, None]:
    """Batches of up to ``batch_size`` from ``(key, bytes)`` pairs, preprocessed on a background
    thread up to ``prefetch`` batches ahead of the consumer (a bounded queue). Each batch has
    ``keys`` in input order. An exception from ``source`` or the preprocessor is raised here,
    after the batches before it; closing the iterator early stops the background thread."""
    if batch_size < 1 or prefetch < 1:
        raise ValueError("batch_size and prefetch must be at least 1")
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            keys, datas = [], []
            for key, data in source:
                if stop.is_set():
                    return
                keys.append(key)
                datas.append(data)
                if len(datas) == batch_size:
                    batch = preprocessor.preprocess_batch(datas, wait=False)
                    batch.keys = keys
                    if not put(batch):
                        return
                    keys, datas = [], []
            if datas:
                batch = preprocessor.preprocess_batch(datas, wait=False)
                batch.keys = keys
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    thread = threading.Thread(target=produce, name="poundcam-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            item.wait()  # this thread's stream, not the producer's, waits for the device
            yield item
    finally:
        stop.set()
        thread.join()
