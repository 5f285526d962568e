"""Weight resolution: local paths, s3:// against a real S3 server on localhost (moto's server
mode), hf:// offline and against a local server speaking the hub's resolve protocol."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from poundcam import PoundNet, WeightsNotFoundError
from poundcam.model.checkpoint import digest_file
from poundcam.model.weights import HOW_TO_PROVIDE, resolve_weights

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ckpt(official_dir) -> Path:
    return official_dir / "last.ckpt"


def test_local_path(ckpt, tmp_path):
    assert resolve_weights(str(ckpt), cache_dir=tmp_path) == ckpt
    assert resolve_weights(f"file://{ckpt}", cache_dir=tmp_path) == ckpt
    assert resolve_weights(ckpt, expected_sha256=digest_file(ckpt), cache_dir=tmp_path) == ckpt
    assert not any(tmp_path.iterdir())  # local files are not copied


def test_local_path_errors(ckpt, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="not found") as info:
        resolve_weights(str(tmp_path / "missing.ckpt"))
    assert HOW_TO_PROVIDE in str(info.value)
    with pytest.raises(WeightsNotFoundError, match="sha256"):
        resolve_weights(str(ckpt), expected_sha256="0" * 64)
    with pytest.raises(WeightsNotFoundError, match="unsupported"):
        resolve_weights("ftp://host/file.ckpt")


def test_the_settings_name_the_weights(ckpt, monkeypatch):
    """POUNDCAM_WEIGHTS and POUNDCAM_WEIGHTS_SHA256 reach the resolver through Settings."""
    from poundcam.model.weights import weights_for
    from poundcam.settings import Settings

    monkeypatch.setenv("POUNDCAM_WEIGHTS", str(ckpt))
    assert weights_for(Settings.from_env()) == ckpt
    monkeypatch.setenv("POUNDCAM_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(WeightsNotFoundError, match="sha256"):
        weights_for(Settings.from_env())


def test_default_cache_is_the_xdg_cache(monkeypatch, tmp_path):
    from poundcam.model.weights import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("POUNDCAM_CACHE_DIR", "/elsewhere")  # a setting: Settings.cache_dir
    assert default_cache_dir() == tmp_path / "poundcam"


@pytest.mark.integration
def test_s3_download_cache_and_verification(ckpt, s3_client, bucket, tmp_path):
    key = "runs/tiny/last.ckpt"
    s3_client.upload_file(str(ckpt), bucket, key)
    uri = f"s3://{bucket}/{key}"
    digest = digest_file(ckpt)

    got = resolve_weights(uri, cache_dir=tmp_path, s3_client=s3_client)
    assert got == tmp_path / "s3" / bucket / key
    assert digest_file(got) == digest
    assert Path(str(got) + ".sha256").read_text().strip() == digest
    assert (
        PoundNet.from_checkpoint(got, config=ckpt.parent / "config.yaml").model_id
        == PoundNet.from_checkpoint(ckpt).model_id
    )

    # The second resolve uses the cache: it works with the object gone from S3.
    s3_client.delete_object(Bucket=bucket, Key=key)
    assert resolve_weights(uri, cache_dir=tmp_path, s3_client=s3_client) == got
    assert resolve_weights(uri, expected_sha256=digest, cache_dir=tmp_path, s3_client=s3_client) == got

    # A damaged cached file is fetched again (and fails clearly while the object is gone).
    with open(got, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 16)
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(uri, cache_dir=tmp_path, s3_client=s3_client)
    assert uri in str(info.value) and HOW_TO_PROVIDE in str(info.value)
    s3_client.upload_file(str(ckpt), bucket, key)
    assert digest_file(resolve_weights(uri, cache_dir=tmp_path, s3_client=s3_client)) == digest
    assert not list(got.parent.glob("*.partial"))


@pytest.mark.integration
def test_s3_expected_digest_mismatch(ckpt, s3_client, bucket, tmp_path):
    s3_client.upload_file(str(ckpt), bucket, "w.ckpt")
    uri = f"s3://{bucket}/w.ckpt"
    with pytest.raises(WeightsNotFoundError, match="expected") as info:
        resolve_weights(uri, expected_sha256="ab" * 32, cache_dir=tmp_path, s3_client=s3_client)
    assert digest_file(ckpt) in str(info.value)
    assert not (tmp_path / "s3" / bucket / "w.ckpt").exists()  # nothing unverified is kept
    # A cached file recorded under another digest is not returned for a pinned digest.
    resolve_weights(uri, cache_dir=tmp_path, s3_client=s3_client)
    with pytest.raises(WeightsNotFoundError):
        resolve_weights(uri, expected_sha256="ab" * 32, cache_dir=tmp_path, s3_client=s3_client)


@pytest.mark.integration
def test_s3_endpoint_and_cache_from_settings(ckpt, s3_server, s3_client, bucket, tmp_path, monkeypatch):
    """Without an explicit client the resolver makes one for the settings' S3 endpoint
    (POUNDCAM_S3_ENDPOINT_URL) and caches in their folder (POUNDCAM_CACHE_DIR)."""
    from poundcam.model.weights import weights_for
    from poundcam.settings import Settings

    s3_client.upload_file(str(ckpt), bucket, "env.ckpt")
    monkeypatch.setenv("POUNDCAM_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("POUNDCAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POUNDCAM_WEIGHTS", f"s3://{bucket}/env.ckpt")
    got = weights_for(Settings.from_env())
    assert got.is_relative_to(tmp_path / "cache") and digest_file(got) == digest_file(ckpt)
    again = resolve_weights(
        f"s3://{bucket}/env.ckpt", cache_dir=tmp_path / "other", s3_endpoint_url=s3_server
    )
    assert digest_file(again) == digest_file(ckpt)


@pytest.mark.integration
def test_s3_missing_object(s3_client, bucket, tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(f"s3://{bucket}/absent.ckpt", cache_dir=tmp_path, s3_client=s3_client)
    assert "absent.ckpt" in str(info.value) and HOW_TO_PROVIDE in str(info.value)


def _resolve_in_subprocess(uris: list[str], env: dict, cache: Path) -> list[str]:
    """huggingface_hub reads HF_HUB_OFFLINE / HF_ENDPOINT at import time: use a fresh process.
    One output line per uri: ``OK <path>`` or ``ERROR <message>``."""
    code = (
        "import sys\nfrom poundcam.model.weights import resolve_weights\n"
        "from poundcam import WeightsNotFoundError\n"
        "for uri in sys.argv[2:]:\n"
        "    try:\n        print('OK', resolve_weights(uri, cache_dir=sys.argv[1]))\n"
        "    except WeightsNotFoundError as e:\n        print('ERROR', str(e).replace('\\n', ' '))\n"
    )
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(cache / "hf-home"), **env}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(cache), *uris], env=full, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("OK ", "ERROR "))]
    assert len(lines) == len(uris), proc.stdout + proc.stderr
    return lines


def test_hf_malformed_uri():
    with pytest.raises(WeightsNotFoundError, match="hf://owner/repo"):
        resolve_weights("hf://nebula/last.ckpt")


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """The hub's ``/{repo}/resolve/{revision}/{path}`` endpoint for one file."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def _lookup(self):
        self.requests.append(f"{self.command} {self.path}")
        path = self.path.split("?")[0]
        return self.files.get(path)

    def _headers(self, body: bytes) -> None:
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self):  # noqa: N802
        body = self._lookup()
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._headers(body)

    def do_GET(self):  # noqa: N802
        body = self._lookup()
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._headers(body)
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_server(ckpt):
    run = "poundnet_tiny_run"
    _HubHandler.files = {f"/nebula/PoundNet/resolve/main/{run}/last.ckpt": ckpt.read_bytes()}
    _HubHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", run
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_hf_download_from_a_hub_endpoint_then_offline(ckpt, hub_server, tmp_path):
    endpoint, run = hub_server
    uri = f"hf://nebula/PoundNet/{run}/last.ckpt"
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    found, missing = _resolve_in_subprocess([uri, "hf://nebula/PoundNet/absent/last.ckpt"], env, tmp_path)
    assert found.startswith("OK "), found
    got = Path(found[3:])
    assert got == tmp_path / "hf" / "nebula/PoundNet" / run / "last.ckpt"
    assert digest_file(got) == digest_file(ckpt)
    assert Path(str(got) + ".sha256").read_text().strip() == digest_file(ckpt)
    assert any(r.startswith("GET ") for r in _HubHandler.requests)
    assert missing.startswith("ERROR ") and "absent/last.ckpt" in missing

    # Offline: the cached file resolves without any server; an uncached run gets an error
    # that says how to provide weights.
    default = "hf://nebula/PoundNet/poundnet_ViTL_Progan_20240506_23_30_25/last.ckpt"
    cached, offline = _resolve_in_subprocess([uri, default], {"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert cached == f"OK {got}"
    assert offline.startswith("ERROR ") and default in offline
    assert "POUNDCAM_WEIGHTS" in offline and "s3://" in offline and "local" in offline
