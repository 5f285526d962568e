import hashlib
import urllib.request

import pytest

from poundcam.storage import LocalStore, S3Store, StorageError, heatmap_key, parse_s3_uri, validate_key

SHA = hashlib.sha256(b"image").hexdigest()


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(StorageError) as info:
        fn(*args, **kwargs)
    return info.value.code


# --- keys and URIs ------------------------------------------------------------------------


def test_heatmap_key_is_deterministic():
    key = heatmap_key("heatmaps/", SHA, "pn-0123456789abcdef", "c1-contrastive-L-1", "real_overlay")
    assert key == f"heatmaps/pn-0123456789abcdef/c1-contrastive-L-1/{SHA[:2]}/{SHA}/real_overlay.png"
    assert heatmap_key("heatmaps", SHA, "m", "c", "n") == heatmap_key("heatmaps/", SHA, "m", "c", "n")
    assert heatmap_key("", SHA, "m", "c", "n") == f"m/c/{SHA[:2]}/{SHA}/n.png"


@pytest.mark.parametrize(
    "args",
    [
        ("h/", "XYZ", "m", "c", "n"),
        ("h/", SHA.upper(), "m", "c", "n"),
        ("h/", SHA, "../m", "c", "n"),
        ("h/", SHA, "m", "a/b", "n"),
        ("h/", SHA, "m", "c", ".."),
        ("h/", SHA, "", "c", "n"),
        ("/abs/", SHA, "m", "c", "n"),
    ],
)
def test_heatmap_key_rejects_unsafe_parts(args):
    assert code_of(heatmap_key, *args) == "invalid_key"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "a/../b",
        "..",
        "a/./b",
        "a//b",
        "dir/",
        "a\\b",
        "a\x00b",
        "new\nline",
        "x" * 1025,
        "é" * 513,
    ],
)
def test_bad_keys(key):
    assert code_of(validate_key, key) == "invalid_key"


def test_good_keys_and_uris():
    assert validate_key("a/b.c/..d/x y.png") == "a/b.c/..d/x y.png"
    ref = parse_s3_uri("s3://my-bucket/deep/path/img.jpg")
    assert (ref.bucket, ref.key, ref.uri) == (
        "my-bucket",
        "deep/path/img.jpg",
        "s3://my-bucket/deep/path/img.jpg",
    )


@pytest.mark.parametrize(
    "uri",
    [
        "s3://",
        "s3://bucket",
        "s3://bucket/",
        "s3://Bad_Bucket/k",
        "s3://b/k",
        "s3://bucket//k",
        "s3://bucket/a/../k",
        "s3://bucket/k\r\n",
        "http://bucket/k",
        "s3://" + "a" * 3000,
    ],
)
def test_bad_s3_uris(uri):
    assert code_of(parse_s3_uri, uri) == "invalid_uri"


# --- S3 (moto server over HTTP) ---------------------------------------------------------------


@pytest.fixture
def store(s3_client, bucket):
    return S3Store(bucket, allowed_buckets=[bucket], client=s3_client)


def test_s3_put_get_head_exists(store, bucket):
    key = heatmap_key("heatmaps/", SHA, "m", "c", "real_overlay")
    assert not store.exists(key)
    uri = store.put(key, b"\x89PNG data", "image/png")
    assert uri == f"s3://{bucket}/{key}" == store.uri_for(key)
    assert store.exists(key)
    assert store.head(uri) == 9
    assert store.get(uri) == b"\x89PNG data"
    assert store.get(uri, max_bytes=9) == b"\x89PNG data"
    assert store.client.head_object(Bucket=bucket, Key=key)["ContentType"] == "image/png"
    url = store.presigned_url(key, expires_s=60)
    assert url.startswith(store.client.meta.endpoint_url)
    with urllib.request.urlopen(url, timeout=10) as resp:  # a reviewer opens it
        assert resp.read() == b"\x89PNG data"


def test_s3_empty_object(store, bucket):
    uri = store.put("empty", b"")
    assert store.get(uri, max_bytes=10) == b""


def test_s3_too_large_is_refused_before_download(store):
    uri = store.put("big.jpg", b"x" * 1001)
    with pytest.raises(StorageError) as info:
        store.get(uri, max_bytes=1000)
    assert info.value.code == "too_large" and not info.value.transient
    assert "1001" in str(info.value)


def test_s3_not_found(store, bucket):
    for fn in (store.get, store.head):
        with pytest.raises(StorageError) as info:
            fn(f"s3://{bucket}/missing.jpg")
        assert info.value.code == "not_found" and not info.value.transient


def test_s3_missing_allowed_bucket_is_not_found(s3_client):
    store = S3Store("out", allowed_buckets=["pc-no-such-bucket"], client=s3_client)
    assert code_of(store.get, "s3://pc-no-such-bucket/k.jpg") == "not_found"


def test_s3_disallowed_bucket_and_local_paths(store, s3_client, bucket):
    other = bucket + "-other"
    s3_client.create_bucket(Bucket=other)
    s3_client.put_object(Bucket=other, Key="k.jpg", Body=b"secret")
    assert code_of(store.get, f"s3://{other}/k.jpg") == "uri_not_allowed"
    assert code_of(store.head, f"s3://{other}/k.jpg") == "uri_not_allowed"
    for uri in ("/etc/passwd", "file:///etc/passwd", "https://example.com/a.jpg", "k.jpg"):
        assert code_of(store.get, uri) == "uri_not_allowed", uri
    assert code_of(store.get, f"s3://{bucket}/a/../k.jpg") == "invalid_uri"


def test_heatmap_bucket_is_not_implicitly_readable(s3_client, bucket):
    store = S3Store(bucket, allowed_buckets=[], client=s3_client)
    uri = store.put("heatmaps/x.png", b"png")
    assert code_of(store.get, uri) == "uri_not_allowed"


def test_s3_unreachable_is_transient(monkeypatch):
    import socket

    from poundcam.storage.s3 import make_s3_client

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_s3_client(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    store = S3Store("out", allowed_buckets=["in-bucket"], client=client)
    with pytest.raises(StorageError) as info:
        store.get("s3://in-bucket/k.jpg")
    assert info.value.code == "storage_unavailable" and info.value.transient
    with pytest.raises(StorageError) as info:
        store.put("k.png", b"x")
    assert info.value.transient


def test_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(StorageError("storage_unavailable", "down", transient=True)))
    assert (err.code, err.transient, str(err)) == ("storage_unavailable", True, "down")


# --- local folder (embedded mode) -------------------------------------------------------------


@pytest.fixture
def local(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"jpegdata")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    return LocalStore(tmp_path / "out", read_roots=[tmp_path / "in"])


def test_local_put_get_head(local, tmp_path):
    key = heatmap_key("heatmaps/", SHA, "m", "c", "fake_overlay")
    assert not local.exists(key)
    path = local.put(key, b"png", "image/png")
    assert path == str(tmp_path / "out" / key) and local.exists(key)
    assert (tmp_path / "out" / key).read_bytes() == b"png"
    assert local.presigned_url(key) == (tmp_path / "out" / key).as_uri()
    assert not list((tmp_path / "out").rglob("*.tmp"))
    src = str(tmp_path / "in" / "a.jpg")
    assert local.head(src) == 8
    assert local.get(src) == b"jpegdata"
    assert local.get((tmp_path / "in" / "a.jpg").as_uri(), max_bytes=8) == b"jpegdata"


def test_local_errors(local, tmp_path):
    assert code_of(local.get, str(tmp_path / "in" / "a.jpg"), max_bytes=7) == "too_large"
    assert code_of(local.get, str(tmp_path / "in" / "missing.jpg")) == "not_found"
    assert code_of(local.get, str(tmp_path / "in")) == "not_found"  # a folder


@pytest.mark.parametrize(
    "uri",
    [
        "{root}/secret.txt",
        "{root}/in/../secret.txt",
        "file://{root}/in/../secret.txt",
        "file://otherhost{root}/in/a.jpg",
        "/etc/passwd",
        "s3://bucket/key.jpg",
        "http://example.com/a.jpg",
        "{root}/in/link-out",
    ],
)
def test_local_traversal_and_foreign_uris_rejected(local, tmp_path, uri):
    (tmp_path / "in" / "link-out").symlink_to(tmp_path / "secret.txt")
    assert code_of(local.get, uri.format(root=tmp_path)) == "uri_not_allowed"


@pytest.mark.parametrize("uri", ["", "{root}/in/a\x00.jpg", "{root}/in/a\n.jpg"])
def test_local_malformed_paths(local, tmp_path, uri):
    assert code_of(local.get, uri.format(root=tmp_path)) == "invalid_uri"


@pytest.mark.parametrize("key", ["../escape.png", "/abs.png", "a/../../escape.png"])
def test_local_put_cannot_escape_root(local, tmp_path, key):
    assert code_of(local.put, key, b"x") == "invalid_key"
    assert not (tmp_path / "escape.png").exists()


def test_local_put_through_symlinked_folder_is_rejected(local, tmp_path):
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    assert code_of(local.put, "link/escape.png", b"x") == "invalid_key"
    assert not (tmp_path / "escape.png").exists()


def test_make_store_follows_settings(tmp_path, s3_server):
    from poundcam.settings import Settings
    from poundcam.storage import make_store

    assert isinstance(make_store(Settings.from_env({}, local_root=str(tmp_path))), LocalStore)
    s3 = make_store(
        Settings.from_env({}, heatmap_bucket="maps", allowed_buckets=("in-b",), s3_endpoint_url=s3_server)
    )
    assert isinstance(s3, S3Store) and s3.allowed_buckets == {"in-b"} and s3.bucket == "maps"


def test_make_store_applies_the_callers_changes(tmp_path, s3_server):
    """Commands name the bucket or folder they read: the one factory, with changes."""
    from poundcam.settings import Settings, SettingsError
    from poundcam.storage import make_store

    s3 = Settings.from_env(
        {}, heatmap_bucket="maps", allowed_buckets=("in-b",), s3_endpoint_url=s3_server, local_root=None
    )
    heatmaps = make_store(s3, allowed_buckets=("maps",))
    assert (heatmaps.bucket, heatmaps.allowed_buckets) == ("maps", {"maps"})
    sources = make_store(s3.replace(local_root=str(tmp_path)), local_root=None, heatmap_bucket=None)
    assert isinstance(sources, S3Store)
    assert (sources.bucket, sources.allowed_buckets) == (None, {"in-b"})
    assert sources.client.meta.endpoint_url == s3_server
    (tmp_path / "in").mkdir()
    local = make_store(s3, local_root=str(tmp_path / "out"), allowed_roots=(str(tmp_path / "in"),))
    assert isinstance(local, LocalStore)
    assert (local.root, local.read_roots) == (tmp_path / "out", (tmp_path / "in",))
    assert make_store(s3, local_root=str(tmp_path)).read_roots == (tmp_path,)
    with pytest.raises(SettingsError, match="POUNDCAM_ALLOWED_BUCKETS"):
        make_store(s3, allowed_buckets=("a/b",))


def test_s3_with_the_heatmap_off_needs_no_heatmap_bucket(tmp_path, s3_server, s3_client, bucket):
    """POUNDCAM_HEATMAP=off: an S3 deployment without a heatmap bucket gets its context, and
    the worker's readiness check reads the allowed buckets and writes nothing; with the
    heatmap on, the missing bucket stops start-up."""
    from poundcam.runtime import make_context
    from poundcam.settings import Settings, SettingsError
    from workers.runtime import check_ready

    settings = Settings.from_env(
        {},
        database_url=f"sqlite:///{tmp_path / 'r.db'}",
        allowed_buckets=(bucket,),
        s3_endpoint_url=s3_server,
    )
    with pytest.raises(SettingsError, match="POUNDCAM_HEATMAP_BUCKET"):
        make_context(settings, analyzer=None, s3_client=s3_client)
    ctx = make_context(settings.replace(heatmap="off"), analyzer=None, s3_client=s3_client)
    try:
        assert isinstance(ctx.source, S3Store) and ctx.sink is ctx.source
        assert ctx.sink.bucket is None and ctx.source.allowed_buckets == {bucket}
        check_ready(ctx)
        assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        ctx.source.allowed_buckets = frozenset({"pc-no-such-bucket"})
        assert code_of(check_ready, ctx) == "not_found"
    finally:
        ctx.close()
    ctx = make_context(settings.replace(heatmap_bucket=bucket), analyzer=None, s3_client=s3_client)
    try:
        check_ready(ctx)  # the heatmap bucket is written: the probe object is there
        assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    finally:
        ctx.close()


def test_stores_are_made_only_by_the_factory():
    """Outside poundcam/storage/, the library, the commands and the workers make their stores
    with make_store (naming the bucket or folder they need), never a store class directly."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    storage = root / "poundcam" / "storage"
    made = [
        f"{path.relative_to(root)}:{node.lineno}"
        for folder in ("poundcam", "workers")
        for path in sorted((root / folder).rglob("*.py"))
        if not path.is_relative_to(storage)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in ("LocalStore", "S3Store")
    ]
    assert made == []
