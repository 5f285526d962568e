"""Object storage behind one interface: S3 (any S3-compatible endpoint, through boto3) and a
local folder for the embedded mode.

Reads take URIs that come from jobs and are checked before anything is fetched: ``s3://``
URIs only from buckets on the allow-list, local paths only in the embedded mode and only under
the allowed roots. Writes take keys (heatmaps) under the store's own bucket or folder.
Every failure is a :class:`StorageError` with a stable ``code`` and a ``transient`` flag:
transient errors (the store is unreachable or overloaded) are worth retrying, the others are
final for that object.
"""

from __future__ import annotations

import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..constants import S3_SCHEME, STORAGE_ERROR_CODES, ErrorCode
from ..errors import PoundcamError

MAX_KEY_BYTES = 1024  # the S3 limit
MAX_URI_CHARS = 2048
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class StorageError(PoundcamError):
    """A storage operation failed. ``code`` is stable (one of
    ``poundcam.constants.STORAGE_ERROR_CODES``); ``transient`` says a retry may help (by
    default, whether the code is a transient one)."""

    def __init__(self, code: str, message: str, transient: bool | None = None):
        if code not in STORAGE_ERROR_CODES:
            raise ValueError(f"unknown storage error code {code!r}")
        super().__init__(message)
        self.code = ErrorCode(code)
        self.transient = self.code.transient if transient is None else transient

    def __reduce__(self):  # keep code/transient across pickling (process pools)
        return (type(self), (self.code, str(self), self.transient))


@dataclass(frozen=True)
class S3Ref:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def validate_key(key: str, code: ErrorCode = ErrorCode.INVALID_KEY) -> str:
    """Check an object key: relative, no '..' segment, no control characters, <= 1024 bytes."""
    if not isinstance(key, str) or not key:
        raise StorageError(code, "empty object key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise StorageError(code, f"object key longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise StorageError(code, f"object key {key!r} contains control characters")
    if key.startswith("/") or "\\" in key:
        raise StorageError(code, f"object key {key!r} must be relative, with '/' separators")
    parts = key.split("/")
    if any(p in ("..", ".") for p in parts) or "" in parts[:-1]:
        raise StorageError(code, f"object key {key!r} has an empty, '.' or '..' segment")
    if key.endswith("/"):
        raise StorageError(code, f"object key {key!r} names a folder, not an object")
    return key


def parse_s3_uri(uri: str) -> S3Ref:
    """``s3://bucket/key`` -> S3Ref, validating the bucket name and the key."""
    if not isinstance(uri, str) or len(uri) > MAX_URI_CHARS:
        raise StorageError(ErrorCode.INVALID_URI, "URI missing or too long")
    if not uri.startswith(S3_SCHEME):
        raise StorageError(ErrorCode.INVALID_URI, f"{uri!r} is not an s3:// URI")
    bucket, sep, key = uri[len(S3_SCHEME) :].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise StorageError(ErrorCode.INVALID_URI, f"{uri!r}: {bucket!r} is not a valid bucket name")
    if not sep or not key:
        raise StorageError(ErrorCode.INVALID_URI, f"{uri!r} has no object key")
    validate_key(key, code=ErrorCode.INVALID_URI)
    return S3Ref(bucket, key)


def heatmap_key(prefix: str, sha256: str, model_id: str, cam_config_id: str, name: str) -> str:
    """The deterministic key of one heatmap:
    ``<prefix><model_id>/<cam_config_id>/<sha[:2]>/<sha>/<name>.png``."""
    if not _SHA256_RE.match(sha256 or ""):
        raise StorageError(ErrorCode.INVALID_KEY, f"{sha256!r} is not a lowercase hex sha256")
    for what, value in (("model id", model_id), ("CAM config id", cam_config_id), ("heatmap name", name)):
        if not _SEGMENT_RE.match(value or "") or value in (".", ".."):
            raise StorageError(ErrorCode.INVALID_KEY, f"{what} {value!r} is not a safe key segment")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    key = f"{prefix}{model_id}/{cam_config_id}/{sha256[:2]}/{sha256}/{name}.png"
    return validate_key(key)


class ObjectStore(ABC):
    """Where images are read from and heatmaps are written to."""

    @abstractmethod
    def head(self, uri: str) -> int:
        """Size in bytes of the object at ``uri``."""

    @abstractmethod
    def get(self, uri: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ``too_large`` (checked before download) above ``max_bytes``."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write ``data`` at ``key`` in the store's own space; returns its URI."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists in the store's own space."""

    @abstractmethod
    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """A URL a reviewer can open for ``key``."""

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """The URI of ``key`` in the store's own space."""

    @abstractmethod
    def check(self, probe_key: str) -> None:
        """Check at start that images can be read and heatmaps written (by writing a small
        object at ``probe_key``).

        Raises:
            StorageError: a source is unreachable or missing, or the write failed.
        """


def _check_size(uri: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise StorageError(ErrorCode.TOO_LARGE, f"{uri}: {size} bytes, over the limit of {max_bytes}")


# --- S3 ----------------------------------------------------------------------------------

_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "TooManyRequests",
}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "Forbidden", "AllAccessDisabled"}


def _from_boto(exc: Exception, what: str) -> StorageError:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _NOT_FOUND_CODES or status == 404:
            return StorageError(ErrorCode.NOT_FOUND, f"{what}: not found ({code or status})")
        if code in _DENIED_CODES or status == 403:
            return StorageError(ErrorCode.ACCESS_DENIED, f"{what}: access denied ({code or status})")
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return StorageError(ErrorCode.STORAGE_UNAVAILABLE, f"{what}: {code or status}")
        return StorageError(ErrorCode.STORAGE_ERROR, f"{what}: {code or status}: {err.get('Message', '')}")
    if isinstance(exc, BotoCoreError):  # connection refused, timeouts, broken streams
        return StorageError(ErrorCode.STORAGE_UNAVAILABLE, f"{what}: {exc}")
    if isinstance(exc, OSError):
        return StorageError(ErrorCode.STORAGE_UNAVAILABLE, f"{what}: {exc}")
    raise exc


class S3Store(ObjectStore):
    """Images from allow-listed buckets; heatmaps into ``bucket``."""

    def __init__(
        self,
        bucket: str | None,
        allowed_buckets: Iterable[str] = (),
        client=None,
        endpoint_url: str | None = None,
    ):
        if client is None:
            from .s3 import make_s3_client

            client = make_s3_client(endpoint_url=endpoint_url)
        self.client = client
        self.bucket = bucket
        self.allowed_buckets = frozenset(allowed_buckets)

    def ref(self, uri: str) -> S3Ref:
        """Parse and authorise a read URI."""
        if isinstance(uri, str) and not uri.startswith(S3_SCHEME):
            raise StorageError(
                ErrorCode.URI_NOT_ALLOWED,
                f"{uri!r}: only s3:// URIs are read here (local paths only in the embedded mode)",
            )
        ref = parse_s3_uri(uri)
        if ref.bucket not in self.allowed_buckets:
            raise StorageError(
                ErrorCode.URI_NOT_ALLOWED, f"{uri}: bucket {ref.bucket!r} is not in POUNDCAM_ALLOWED_BUCKETS"
            )
        return ref

    def _own(self, key: str) -> S3Ref:
        if not self.bucket:
            raise StorageError(
                ErrorCode.STORAGE_ERROR, "no heatmap bucket configured (POUNDCAM_HEATMAP_BUCKET)"
            )
        return S3Ref(self.bucket, validate_key(key))

    def head(self, uri: str) -> int:
        ref = self.ref(uri)
        return self._head(ref)

    def _head(self, ref: S3Ref) -> int:
        try:
            return int(self.client.head_object(Bucket=ref.bucket, Key=ref.key)["ContentLength"])
        except Exception as exc:  # noqa: BLE001 - mapped to a StorageError or re-raised
            raise _from_boto(exc, ref.uri) from exc

    def get(self, uri: str, max_bytes: int | None = None) -> bytes:
        """One request: a GET of the first ``max_bytes + 1`` bytes. The object's size comes
        from the response's Content-Range (Content-Length when the server sends the whole
        object), so the limit is checked before the body is read, without a HEAD."""
        ref = self.ref(uri)
        kwargs = {} if max_bytes is None else {"Range": f"bytes=0-{max_bytes}"}
        try:
            resp = self.client.get_object(Bucket=ref.bucket, Key=ref.key, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if max_bytes is not None and _unsatisfiable_range(exc):
                return b""  # a range starting at byte 0 is unsatisfiable only on an empty object
            raise _from_boto(exc, ref.uri) from exc
        body = resp["Body"]
        try:
            total = _total_from_content_range(resp.get("ContentRange"))
            if total is None:  # the whole object: no range asked, or the server ignored it
                total = resp.get("ContentLength")
            if total is not None:
                _check_size(uri, int(total), max_bytes)
            data = body.read()
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _from_boto(exc, ref.uri) from exc
        finally:
            body.close()
        _check_size(uri, len(data), max_bytes)
        return data

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        ref = self._own(key)
        try:
            self.client.put_object(Bucket=ref.bucket, Key=ref.key, Body=data, ContentType=content_type)
        except Exception as exc:  # noqa: BLE001
            raise _from_boto(exc, ref.uri) from exc
        return ref.uri

    def exists(self, key: str) -> bool:
        ref = self._own(key)
        try:
            self._head(ref)
        except StorageError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                return False
            raise
        return True

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        ref = self._own(key)
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": ref.bucket, "Key": ref.key}, ExpiresIn=int(expires_s)
        )

    def uri_for(self, key: str) -> str:
        return self._own(key).uri

    def check(self, probe_key: str) -> None:
        """The allowed buckets can be reached, and the heatmap bucket written (a store without
        one, as with ``POUNDCAM_HEATMAP=off``, writes nothing and is not probed)."""
        for bucket in sorted(self.allowed_buckets):
            try:
                self.client.head_bucket(Bucket=bucket)
            except Exception as exc:  # noqa: BLE001
                raise _from_boto(exc, f"s3://{bucket} (POUNDCAM_ALLOWED_BUCKETS)") from exc
        if self.bucket:
            self.put(probe_key, b"poundcam write check\n", "text/plain")


def _unsatisfiable_range(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return exc.response.get("Error", {}).get("Code") == "InvalidRange" or status == 416


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes 0-99/1234"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None


# --- local folder (embedded mode) ----------------------------------------------------------


def _file_error(exc: OSError, uri: str) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(ErrorCode.NOT_FOUND, f"{uri}: no such file")
    if isinstance(exc, PermissionError):
        return StorageError(ErrorCode.ACCESS_DENIED, f"{uri}: permission denied")
    return StorageError(ErrorCode.STORAGE_ERROR, f"{uri}: {exc}")


class LocalStore(ObjectStore):
    """A folder: heatmaps written under ``root``; images read from under ``read_roots``.

    Paths are resolved (symlinks followed) before the containment check, so neither '..'
    nor a link can reach outside the allowed roots.
    """

    def __init__(self, root: str | os.PathLike, read_roots: Iterable[str | os.PathLike] = ()):
        self.root = Path(root).resolve()
        self.read_roots = tuple(Path(r).resolve() for r in read_roots) or (self.root,)

    def path(self, uri: str) -> Path:
        """Parse and authorise a read URI: a path or ``file://`` URI under a read root."""
        if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_CHARS:
            raise StorageError(ErrorCode.INVALID_URI, "URI missing or too long")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
            raise StorageError(ErrorCode.INVALID_URI, f"{uri!r} contains control characters")
        if uri.startswith("file://"):
            parsed = urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                raise StorageError(ErrorCode.URI_NOT_ALLOWED, f"{uri!r}: remote file URIs are not read")
            raw = unquote(parsed.path)
        elif "://" in uri:
            raise StorageError(
                ErrorCode.URI_NOT_ALLOWED, f"{uri!r}: the embedded mode reads local paths only"
            )
        else:
            raw = uri
        if "\x00" in raw:
            raise StorageError(ErrorCode.INVALID_URI, f"{uri!r} contains a NUL byte")
        try:
            path = Path(raw).expanduser()
            path = (Path.cwd() / path if not path.is_absolute() else path).resolve()
        except (OSError, RuntimeError) as exc:
            raise StorageError(ErrorCode.INVALID_URI, f"{uri!r}: {exc}") from exc
        if not any(path == r or path.is_relative_to(r) for r in self.read_roots):
            real = "" if str(path) == uri else f" (real path {path})"
            raise StorageError(ErrorCode.URI_NOT_ALLOWED, f"{uri!r}{real} is outside the allowed roots")
        return path

    def _own(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(ErrorCode.INVALID_KEY, f"{key!r} resolves outside {self.root}")
        return path

    def head(self, uri: str) -> int:
        return self._stat(self.path(uri), uri)

    @staticmethod
    def _stat(path: Path, uri: str) -> int:
        try:
            st = path.stat()
        except OSError as exc:
            raise _file_error(exc, uri) from None
        if not path.is_file():
            raise StorageError(ErrorCode.NOT_FOUND, f"{uri}: not a regular file")
        return st.st_size

    def get(self, uri: str, max_bytes: int | None = None) -> bytes:
        path = self.path(uri)
        _check_size(uri, self._stat(path, uri), max_bytes)
        try:
            with open(path, "rb") as fh:
                data = fh.read(-1 if max_bytes is None else max_bytes + 1)
        except OSError as exc:
            raise _file_error(exc, uri) from None
        _check_size(uri, len(data), max_bytes)
        return data

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._own(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.chmod(tmp, 0o644)  # mkstemp makes 0600; reviewers' tools must read heatmaps
                os.replace(tmp, path)  # readers never see a partial file
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(ErrorCode.STORAGE_ERROR, f"{path}: {exc}") from exc
        return str(path)

    def exists(self, key: str) -> bool:
        return self._own(key).is_file()

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        return self._own(key).as_uri()

    def check(self, probe_key: str) -> None:
        for root in self.read_roots:
            if not root.is_dir():
                raise StorageError(ErrorCode.NOT_FOUND, f"{root}: allowed root is not a folder")
        self.put(probe_key, b"poundcam write check\n", "text/plain")

    def uri_for(self, key: str) -> str:
        return str(self._own(key))
