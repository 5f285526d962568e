"""Configuration from ``POUNDCAM_*`` environment variables.

``Settings.from_env()`` reads every variable once; keyword overrides (field values, already
typed) win over the environment. Every value is validated when the object is built, and an
invalid one raises :class:`SettingsError` naming the variable. docs/configuration.md lists
every variable with its default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

from .constants import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    CamMethod,
    CamTarget,
    CompileMode,
    DeepMaps,
    Device,
    HeatmapMode,
    JpegRoundtrip,
    PreprocessPath,
    StrEnum,
    values,
)
from .errors import PoundcamError

# Fields whose value is one of an enum's (poundcam.constants); stored as the enum's member.
CHOICES: dict[str, type[StrEnum]] = {
    "device": Device,
    "preprocess": PreprocessPath,
    "cam_method": CamMethod,
    "deep_maps": DeepMaps,
    "jpeg_roundtrip": JpegRoundtrip,
    "compile": CompileMode,
    "cam_target": CamTarget,
    "heatmap": HeatmapMode,
}


class SettingsError(PoundcamError):
    """A configuration value is missing or invalid; the message names the variable."""


def env_name(field_name: str) -> str:
    return "POUNDCAM_" + field_name.upper()


# The broker is Redis: besides Celery, the workers' entry check, the dead letters, the sweeper
# and the queue exporter read it with redis-py, which knows these schemes.
BROKER_SCHEMES = ("redis", "rediss")


def _opt_str(raw: str) -> str | None:
    raw = raw.strip()
    return raw or None


def _str(raw: str) -> str:
    return raw.strip()


def _int(raw: str) -> int:
    return int(raw.strip().replace("_", ""))


def _float(raw: str) -> float:
    return float(raw.strip())


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _paths(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(os.pathsep) if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of poundcam. Field ``x`` is read from ``POUNDCAM_X``."""

    database_url: str = field(default="sqlite:///./poundcam.db", metadata={"parse": _str})
    broker_url: str = field(default="redis://127.0.0.1:6379/0", metadata={"parse": _str})
    s3_endpoint_url: str | None = field(default=None, metadata={"parse": _opt_str})
    heatmap_bucket: str | None = field(default=None, metadata={"parse": _opt_str})
    heatmap_prefix: str = field(default="heatmaps/", metadata={"parse": _str})
    # "off": no object at all, the maps only in the database (one S3 request per image)
    heatmap: str = field(default="comparative", metadata={"parse": _str})
    allowed_buckets: tuple[str, ...] = field(default=(), metadata={"parse": _csv})
    weights: str | None = field(default=None, metadata={"parse": _opt_str})
    weights_sha256: str | None = field(default=None, metadata={"parse": _opt_str})
    cache_dir: str | None = field(default=None, metadata={"parse": _opt_str})
    device: str = field(default=Device.AUTO, metadata={"parse": _str})
    preprocess: str = field(default=PreprocessPath.AUTO, metadata={"parse": _str})
    # the device path's quality-90 re-encode: the codec, or tensor math (poundcam.preprocess.jpeg_tensor)
    jpeg_roundtrip: str = field(default=JpegRoundtrip.CODEC, metadata={"parse": _str})
    batch_size: int = field(default=32, metadata={"parse": _int})
    threshold: float = field(default=0.5, metadata={"parse": _float})
    cam_layer: int = field(default=-1, metadata={"parse": _int})
    cam_target: str = field(default=CamTarget.CONTRASTIVE, metadata={"parse": _str})
    # HiResCAM localizes at the last block where GradCAM's channel means do not
    # (docs/faithfulness.md); the library (ComparativeCAM) and the facade share this default.
    cam_method: str = field(default=CamMethod.HIRESCAM, metadata={"parse": _str})
    # which images also get the deep maps (attention relevance through every block, about
    # 2.8x a forward pass): none, those labelled fake, or all; docs/cam.md
    deep_maps: str = field(default=DeepMaps.NONE, metadata={"parse": _str})
    # torch.compile for the CAM's no-autograd part (ComparativeCAM(compile=True)); docs/cam.md
    compile: str = field(default=CompileMode.OFF, metadata={"parse": _str})
    max_image_bytes: int = field(default=DEFAULT_MAX_IMAGE_BYTES, metadata={"parse": _int})
    max_image_pixels: int = field(default=DEFAULT_MAX_IMAGE_PIXELS, metadata={"parse": _int})
    task_batch_size: int = field(default=64, metadata={"parse": _int})
    visibility_timeout_s: int = field(default=3600, metadata={"parse": _int})
    # a queue entry larger than this is refused (dead-lettered) before it is parsed
    max_message_bytes: int = field(default=1024 * 1024, metadata={"parse": _int})
    dead_letter_max: int = field(default=10000, metadata={"parse": _int})
    # and at most this many bytes of them (any producer can fill the list)
    dead_letter_max_bytes: int = field(default=64 * 1024 * 1024, metadata={"parse": _int})
    # claims of one item before it fails with retries_exhausted (the sweeper's cap)
    max_attempts: int = field(default=5, metadata={"parse": _int})
    # how often each worker runs the sweeper (0: never; `poundcam sweep` still works)
    sweep_interval_s: int = field(default=300, metadata={"parse": _int})
    # touched by the worker's consumer loop; the liveness probe checks its age
    heartbeat_file: str = field(default="/tmp/poundcam-heartbeat", metadata={"parse": _str})
    # written once the worker's model is loaded and its stores checked; the readiness probe
    ready_file: str = field(default="/tmp/poundcam-ready", metadata={"parse": _str})
    metrics_port: int = field(default=9808, metadata={"parse": _int})
    local_root: str | None = field(default=None, metadata={"parse": _opt_str})
    # local images are read only if their real path lies under one (poundcam.storage.LocalStore);
    # unset: local_root, and for `poundcam analyze` the paths it is given
    allowed_roots: tuple[str, ...] = field(default=(), metadata={"parse": _paths})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), then ``overrides``."""
        environ = os.environ if environ is None else environ
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
        values = {}
        for name, f in known.items():
            var = env_name(name)
            if name in overrides:
                values[name] = overrides[name]
            elif var in environ:
                parse: Callable[[str], object] = f.metadata["parse"]
                try:
                    values[name] = parse(environ[var])
                except ValueError:
                    raise SettingsError(f"{var}={environ[var]!r} is not a valid {_kind(f)}") from None
        return cls(**values)

    @property
    def embedded(self) -> bool:
        """Embedded mode: a local folder stands in for S3 (``POUNDCAM_LOCAL_ROOT`` is set)."""
        return self.local_root is not None

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        if isinstance(self.allowed_buckets, str):
            object.__setattr__(self, "allowed_buckets", _csv(self.allowed_buckets))
        else:
            object.__setattr__(self, "allowed_buckets", tuple(self.allowed_buckets))
        object.__setattr__(self, "allowed_roots", tuple(str(p) for p in self.allowed_roots))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int",) and (not isinstance(value, int) or isinstance(value, bool)):
                self._fail(f.name, "must be an integer")
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    self._fail(f.name, "must be a number")
                object.__setattr__(self, f.name, float(value))
            if f.type in ("str",) and not isinstance(value, str):
                self._fail(f.name, "must be a string")
            if f.type == "str | None" and value is not None and not isinstance(value, str):
                self._fail(f.name, "must be a string")
        for name in ("database_url", "heartbeat_file", "ready_file"):
            if not getattr(self, name):
                self._fail(name, "must not be empty")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in values(choices):
                self._fail(name, f"must be one of {', '.join(values(choices))}")
            object.__setattr__(self, name, choices(getattr(self, name)))
        if not 0.0 <= self.threshold <= 1.0:
            self._fail("threshold", "must be between 0 and 1")
        for name in (
            "batch_size",
            "max_image_bytes",
            "max_image_pixels",
            "task_batch_size",
            "visibility_timeout_s",
            "max_message_bytes",
            "dead_letter_max",
            "dead_letter_max_bytes",
            "max_attempts",
        ):
            if getattr(self, name) < 1:
                self._fail(name, "must be at least 1")
        if self.broker_url.partition("://")[0] not in BROKER_SCHEMES:
            schemes = " or ".join(s + "://" for s in BROKER_SCHEMES)
            self._fail("broker_url", f"must be a Redis URL ({schemes})")
        if self.sweep_interval_s < 0:
            self._fail("sweep_interval_s", "must be 0 (off) or more")
        if not 0 <= self.metrics_port <= 65535:
            self._fail("metrics_port", "must be a port number between 0 and 65535")
        if self.weights_sha256 is not None and not _is_sha256(self.weights_sha256):
            self._fail("weights_sha256", "must be 64 hexadecimal digits")
        if self.heatmap_prefix.startswith("/") or ".." in self.heatmap_prefix.split("/"):
            self._fail("heatmap_prefix", "must be a relative key prefix without '..'")
        if self.heatmap_prefix and not self.heatmap_prefix.endswith("/"):
            object.__setattr__(self, "heatmap_prefix", self.heatmap_prefix + "/")
        for b in self.allowed_buckets:
            if "/" in b or " " in b:
                self._fail("allowed_buckets", f"{b!r} is not a bucket name")

    def _fail(self, name: str, why: str):
        raise SettingsError(f"{env_name(name)} ({name}={getattr(self, name)!r}) {why}")


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def _kind(f) -> str:
    return {"int": "integer", "float": "number"}.get(f.type, "value")
