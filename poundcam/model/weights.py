"""Where the weights come from: a local path, ``s3://bucket/key`` or
``hf://owner/repo/<run>/last.ckpt``. Remote files are cached locally and verified by sha256.

The cache keeps ``<file>.sha256`` beside each download; a cached file whose digest no longer
matches (a partial write, a disk fault) is fetched again. ``expected_sha256`` pins a digest.

The cache is looked at before the network. An unreachable Hub fails within
``HUB_TIMEOUT_S``: one metadata request without the Hub client's own retries (it would retry
for about 30 s, logging each attempt) decides, and the Hub's log records go through the
application's logging once instead of also through the library's own handler.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from ..errors import WeightsNotFoundError
from .digest import digest_file

log = logging.getLogger(__name__)

HF_REPO = "nebula/PoundNet"
DEFAULT_RUN = "poundnet_ViTL_Progan_20240506_23_30_25"  # the run the paper reports
DEFAULT_WEIGHTS = f"hf://{HF_REPO}/{DEFAULT_RUN}/last.ckpt"

HOW_TO_PROVIDE = (
    "Provide weights with POUNDCAM_WEIGHTS (or --weights): a local .ckpt/.safetensors path, "
    "s3://bucket/key, or hf://nebula/PoundNet/<run>/last.ckpt. On a machine without network "
    "access, copy the checkpoint there and give its path; `poundcam convert CKPT OUT.safetensors` "
    "makes a compact export."
)
HUB_TIMEOUT_S = 4.0  # one metadata request to the Hub; unreachable: fail, do not retry


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/poundcam`` (``~/.cache/poundcam``): the cache when
    ``Settings.cache_dir`` is not set."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "poundcam"


def resolve_weights(
    uri: str | os.PathLike | None = None,
    expected_sha256: str | None = None,
    cache_dir: str | Path | None = None,
    s3_client=None,
    hf_endpoint: str | None = None,
    s3_endpoint_url: str | None = None,
) -> Path:
    """Return a local path holding verified weights for ``uri`` (default: the paper's run).

    Reads no ``POUNDCAM_*`` variable: :func:`weights_for` resolves what the settings name.

    Args:
        uri: a local path, ``s3://bucket/key`` or ``hf://owner/repo/path``.
        expected_sha256: the digest the file must have.
        cache_dir: where downloads are kept (default :func:`default_cache_dir`).
        s3_client: the boto3 client for ``s3://`` (default: one for ``s3_endpoint_url``).
        hf_endpoint: the Hub's URL (default: the Hub client's, ``HF_ENDPOINT``).
        s3_endpoint_url: the S3 endpoint when no ``s3_client`` is given (None: AWS).

    Raises:
        WeightsNotFoundError: the weights cannot be found, fetched or verified; the message
            says how to provide them (``POUNDCAM_WEIGHTS``).
    """
    uri = str(uri or DEFAULT_WEIGHTS)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return _cached(
            cache / "s3" / parsed.netloc / parsed.path.lstrip("/"),
            expected_sha256,
            lambda dest: _download_s3(
                parsed.netloc, parsed.path.lstrip("/"), dest, s3_client, s3_endpoint_url
            ),
            uri,
        )
    if parsed.scheme == "hf":
        parts = (parsed.netloc + parsed.path).split("/")
        if len(parts) < 3:
            raise WeightsNotFoundError(f"{uri}: expected hf://owner/repo/path/to/file")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        return _cached(
            cache / "hf" / repo / filename,
            expected_sha256,
            lambda dest: _download_hf(repo, filename, dest, hf_endpoint),
            uri,
        )
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: weights file not found. {HOW_TO_PROVIDE}")
        if expected_sha256 and digest_file(path) != expected_sha256.lower():
            raise WeightsNotFoundError(f"{path}: sha256 does not match the expected {expected_sha256}")
        return path
    raise WeightsNotFoundError(f"{uri}: unsupported weights location. {HOW_TO_PROVIDE}")


def weights_for(settings) -> Path:
    """The weights ``settings`` name (``Settings.weights``, default the paper's run), verified
    against ``weights_sha256`` and cached in ``cache_dir``; ``s3://`` through its S3 endpoint."""
    return resolve_weights(
        settings.weights,
        expected_sha256=settings.weights_sha256,
        cache_dir=settings.cache_dir,
        s3_endpoint_url=settings.s3_endpoint_url,
    )


def with_local_weights(settings):
    """Settings naming :func:`weights_for`'s local file, already verified (fetched if need be),
    so that its checksum is not asked for again when the model is loaded from it."""
    return settings.replace(weights=str(weights_for(settings)), weights_sha256=None)


def _cached(dest: Path, expected: str | None, fetch, uri: str) -> Path:
    sidecar = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and sidecar.is_file():
        recorded = sidecar.read_text().strip()
        if (not expected or recorded == expected.lower()) and digest_file(dest) == recorded:
            log.info("weights: using cached %s", dest)
            return dest
        log.warning("weights: cached %s failed verification; fetching again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".partial")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log.info("weights: downloading %s", uri)
        fetch(tmp)
        digest = digest_file(tmp)
        if expected and digest != expected.lower():
            raise WeightsNotFoundError(
                f"{uri}: downloaded file has sha256 {digest}, expected {expected}; not used"
            )
        tmp.replace(dest)
        sidecar.write_text(digest + "\n")
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _download_s3(bucket: str, key: str, dest: Path, client=None, endpoint_url: str | None = None) -> None:
    import botocore.exceptions

    if client is None:
        from ..storage.s3 import make_s3_client

        client = make_s3_client(endpoint_url=endpoint_url)
    try:
        client.download_file(bucket, key, str(dest))
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise WeightsNotFoundError(
            f"s3://{bucket}/{key}: cannot download weights ({code}: {exc}). {HOW_TO_PROVIDE}"
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise WeightsNotFoundError(
            f"s3://{bucket}/{key}: cannot reach S3 ({exc}). {HOW_TO_PROVIDE}"
        ) from None


def _quiet_hub() -> None:
    """The Hub client's records through the application's handlers only, warnings and up."""
    hub_log = logging.getLogger("huggingface_hub")
    hub_log.handlers.clear()
    hub_log.propagate = True
    hub_log.setLevel(logging.WARNING)


def _download_hf(repo: str, filename: str, dest: Path, endpoint: str | None = None) -> None:
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    except ImportError:  # pragma: no cover - a declared dependency
        raise WeightsNotFoundError(f"huggingface_hub is not installed. {HOW_TO_PROVIDE}") from None
    _quiet_hub()
    where = f"hf://{repo}/{filename}"
    try:  # one quick look, no retries: offline or unknown fails here, in seconds
        get_hf_file_metadata(
            hf_hub_url(repo, filename, endpoint=endpoint),
            timeout=HUB_TIMEOUT_S,
            endpoint=endpoint,
            retry_on_errors=False,
        )
    except Exception as exc:  # offline, unknown repo, HTTP errors: all mean "not available"
        raise WeightsNotFoundError(
            f"{where}: cannot reach the weights on the Hub ({type(exc).__name__}: "
            f"{_short(exc)}). {HOW_TO_PROVIDE}"
        ) from None
    try:
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            got = hf_hub_download(
                repo_id=repo, filename=filename, local_dir=tmp, endpoint=endpoint, etag_timeout=HUB_TIMEOUT_S
            )
            shutil.move(got, dest)
    except Exception as exc:  # the connection dropped during the download
        raise WeightsNotFoundError(
            f"{where}: cannot download weights ({type(exc).__name__}: {_short(exc)}). {HOW_TO_PROVIDE}"
        ) from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no detail"
