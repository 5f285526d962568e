"""The enums and constants every part of poundcam shares: one source for each.

Labels, item states, CAM methods and targets, preprocessing paths and re-encodes, and every
error code an item can fail with. Each enum is a ``str`` enum: a member equals (and stores,
serializes and prints as) its plain value, so the database, JSON messages and metrics see the
same strings as before. Settings validation, argparse ``choices=``, the database CHECK
constraints and the documentation's error-code tables (a test compares them) derive from
here. Importing this module imports nothing heavy (no torch).
"""

from __future__ import annotations

import enum
import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, enum.Enum):
        """``enum.StrEnum`` of Python 3.11: members are strings and print as their value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)


def values(enum_cls: type[StrEnum]) -> tuple[str, ...]:
    """The plain string values of an enum, in definition order (argparse ``choices=``,
    messages, SQL): plain strings print as themselves where a member's repr would not."""
    return tuple(member.value for member in enum_cls)


class Label(StrEnum):
    """The two classes, in the model's output order (index 0 and 1 of its logits)."""

    REAL = "real"
    FAKE = "fake"


LABELS = values(Label)


def labelled_fake(p_fake: float, threshold: float) -> bool:
    """The label rule, one for every place that labels or selects by label (the analysis, its
    deep maps' "flagged", ``poundcam calibrate``): P(fake) at or over the threshold, compared
    as Python floats (a float32 probability is read exactly; the threshold is not rounded to
    float32 as a tensor comparison would round it)."""
    return float(p_fake) >= threshold


class ItemState(StrEnum):
    """The life of a job item: queued -> running -> done | failed (running -> queued on a
    transient failure)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


ITEM_STATES = values(ItemState)


class CamMethod(StrEnum):
    """How gradients weight the activations (docs/cam.md)."""

    GRADCAM = "gradcam"  # channel weights: the gradient averaged over the patch tokens
    HIRESCAM = "hirescam"  # each token's own gradient times its activation


class DeepMaps(StrEnum):
    """Which analysed images also get the deep maps, attention relevance through every block
    (poundcam.cam.relevance; docs/cam.md), computed after the fast maps of their batch."""

    NONE = "none"  # the fast maps only
    FLAGGED = "flagged"  # images labelled fake: P(fake) >= threshold
    ALL = "all"  # every image


# The CAM method behind the deep maps (ComparativeCAM(method=DEEP_METHOD)).
DEEP_METHOD = "relevance"

# The longest CAM configuration id (analysis.cam_config_id), the width of analyses.cam_config_id.
CAM_CONFIG_ID_MAX = 64


class CamTarget(StrEnum):
    """What the CAM explains (poundcam.cam.targets)."""

    CONTRASTIVE = "contrastive"  # logit(fake) - logit(real), one backward pass
    LOGIT = "logit"  # each class's own logit


class Device(StrEnum):
    """Where the model runs; ``auto`` is CUDA when available, else the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class PreprocessPath(StrEnum):
    """The preprocessing setting: a path (``device``: torchvision on the model's device;
    ``pillow``: the official transform on CPU threads) or ``auto`` (the device path on CUDA)."""

    AUTO = "auto"
    DEVICE = "device"
    PILLOW = "pillow"


# The paths a batch item can actually take (``auto`` resolves to one of them).
PREPROCESS_PATHS = (PreprocessPath.DEVICE.value, PreprocessPath.PILLOW.value)


class JpegRoundtrip(StrEnum):
    """How the device path performs the transform's quality-90 JPEG re-encode."""

    CODEC = "codec"  # the JPEG encoder and decoder (nvJPEG on CUDA, libjpeg-turbo on the CPU)
    TENSOR = "tensor"  # the same lossy steps as tensor math (poundcam.preprocess.jpeg_tensor)


class CompileMode(StrEnum):
    """Whether the CAM's no-autograd part is compiled with ``torch.compile``."""

    OFF = "off"
    ON = "on"


class HeatmapMode(StrEnum):
    """The one heatmap object per analysed image: the comparative heatmap, or none (the maps
    only in the database)."""

    COMPARATIVE = "comparative"
    OFF = "off"


S3_SCHEME = "s3://"  # the URIs a worker reads (local paths only in the embedded mode)
# Default limits of one image (POUNDCAM_MAX_IMAGE_BYTES, POUNDCAM_MAX_IMAGE_PIXELS).
DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192  # 67,108,864
# The longest side accepted (a JPEG's own limit). Pillow keeps 8 bytes of bookkeeping per row of
# each copy of an image, so a strip within the pixel limit but millions of rows tall costs far
# more than its pixels: 1 x 20,000,000 took 400 MB to decode and crop, 1 x 65,000,000 1.3 GB.
MAX_IMAGE_SIDE = 65535


class ErrorCode(StrEnum):
    """Every code an item can fail with: stored on failed job items, counted in metrics,
    matched on by scripts, so the values never change. docs/input-handling.md describes each
    one (tests/test_constants.py keeps its tables and this enum equal)."""

    # The image bytes (poundcam.preprocess.decode.ImageDecodeError).
    EMPTY = "empty"
    TOO_LARGE = "too_large"  # also the storage check before a download
    TOO_MANY_PIXELS = "too_many_pixels"
    DECOMPRESSION_BOMB = "decompression_bomb"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    # Preprocessing raised something unexpected for one input.
    DECODE_FAILED = "decode_failed"
    # Object storage (poundcam.storage.StorageError).
    INVALID_URI = "invalid_uri"
    INVALID_KEY = "invalid_key"
    URI_NOT_ALLOWED = "uri_not_allowed"
    NOT_FOUND = "not_found"
    ACCESS_DENIED = "access_denied"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    STORAGE_ERROR = "storage_error"
    # The analysis (poundcam.analysis, poundcam.pipeline).
    FETCH_FAILED = "fetch_failed"
    CAM_UNAVAILABLE = "cam_unavailable"
    RENDER_FAILED = "render_failed"
    ANALYSIS_FAILED = "analysis_failed"
    HEATMAP_NOT_STORED = "heatmap_not_stored"  # the store refused the heatmaps for good
    # The worker gave up on a message's remaining items (workers.tasks).
    RETRIES_EXHAUSTED = "retries_exhausted"
    DATABASE_UNAVAILABLE = "database_unavailable"

    @property
    def transient(self) -> bool:
        """Whether a retry may succeed (the store was unreachable or overloaded)."""
        return self in TRANSIENT_ERROR_CODES


# ImageDecodeError's codes (docs/input-handling.md).
DECODE_ERROR_CODES = frozenset(
    {
        ErrorCode.EMPTY,
        ErrorCode.TOO_LARGE,
        ErrorCode.TOO_MANY_PIXELS,
        ErrorCode.DECOMPRESSION_BOMB,
        ErrorCode.NOT_AN_IMAGE,
        ErrorCode.UNSUPPORTED_FORMAT,
        ErrorCode.TRUNCATED,
        ErrorCode.CORRUPT,
    }
)
# StorageError's codes (docs/input-handling.md).
STORAGE_ERROR_CODES = frozenset(
    {
        ErrorCode.INVALID_URI,
        ErrorCode.INVALID_KEY,
        ErrorCode.URI_NOT_ALLOWED,
        ErrorCode.NOT_FOUND,
        ErrorCode.TOO_LARGE,
        ErrorCode.ACCESS_DENIED,
        ErrorCode.STORAGE_UNAVAILABLE,
        ErrorCode.STORAGE_ERROR,
    }
)
# Codes worth a retry: the message is retried instead of the item failing.
TRANSIENT_ERROR_CODES = frozenset({ErrorCode.STORAGE_UNAVAILABLE})


# The longest a retried message waits (the cap of the workers' backoff, workers/tasks.py), and
# how far ahead a queue entry's ETA may lie: that wait plus room for clocks that disagree. A
# worker holds a delayed message in memory until its time, so a later ETA is refused.
RETRY_DELAY_MAX_S = 300.0
ETA_AHEAD_MAX_S = RETRY_DELAY_MAX_S + 300.0


class DeadLetterReason(StrEnum):
    """Why a worker refused a raw queue entry (poundcam.broker.envelope): stored with the dead
    letter and a metric label; docs/operations.md lists them."""

    OVERSIZED = "oversized"  # over POUNDCAM_MAX_MESSAGE_BYTES
    NOT_JSON = "not_json"  # not UTF-8 JSON
    BAD_ENVELOPE = "bad_envelope"  # not kombu's envelope
    BAD_BODY_ENCODING = "bad_body_encoding"  # the body is not base64
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"  # pickle, YAML, ...
    BAD_BODY = "bad_body"  # not Celery's [args, kwargs, embed]
    UNKNOWN_TASK = "unknown_task"  # another task than poundcam.analyze
    BAD_ARGUMENTS = "bad_arguments"  # other arguments, or a workflow
    BAD_MESSAGE = "bad_message"  # the message breaks the contract


# How `poundcam report` can order a job's items (p_fake and fake_share: highest first). Here,
# not in poundcam.report, so that the command line is built without importing the report's
# drawing code (and PyTorch with it).
REPORT_SORTS = ("position", "p_fake", "fake_share")
