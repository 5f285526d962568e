import pytest

from poundcam.errors import PoundcamError
from poundcam.settings import Settings, SettingsError, env_name


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert s.database_url == "sqlite:///./poundcam.db"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.heatmap_prefix == "heatmaps/"
    assert s.allowed_buckets == ()
    assert (s.device, s.batch_size, s.threshold, s.cam_layer, s.cam_target) == (
        "auto", 32, 0.5, -1, "contrastive")
    assert s.max_image_bytes == 50 * 1024 * 1024
    assert s.max_image_pixels == 8192 * 8192
    assert (s.task_batch_size, s.visibility_timeout_s, s.metrics_port) == (64, 3600, 9808)
    assert not s.embedded


def test_reads_environment_and_overrides_win():
    env = {"POUNDCAM_DATABASE_URL": "postgresql://db/x", "POUNDCAM_BATCH_SIZE": "8",
           "POUNDCAM_THRESHOLD": "0.7", "POUNDCAM_ALLOWED_BUCKETS": " in-a, in-b ,,",
           "POUNDCAM_HEATMAP_BUCKET": "maps", "POUNDCAM_HEATMAP_PREFIX": "hm",
           "POUNDCAM_CAM_LAYER": "-2", "POUNDCAM_DEVICE": "cpu", "POUNDCAM_S3_ENDPOINT_URL": "",
           "POUNDCAM_LOCAL_ROOT": "/data/out", "POUNDCAM_ALLOWED_ROOTS": "/a:/b"}
    s = Settings.from_env(env, batch_size=4)
    assert s.database_url == "postgresql://db/x"
    assert s.batch_size == 4 and s.threshold == 0.7 and s.cam_layer == -2
    assert s.allowed_buckets == ("in-a", "in-b")
    assert s.heatmap_bucket == "maps" and "maps" not in s.allowed_buckets
    assert s.heatmap_prefix == "hm/"
    assert s.s3_endpoint_url is None
    assert s.embedded and s.allowed_roots == ("/a", "/b")


def test_every_field_has_a_documented_variable():
    from dataclasses import fields
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for f in fields(Settings):
        assert f"`{env_name(f.name)}`" in doc, f.name


@pytest.mark.parametrize("var,value", [
    ("POUNDCAM_BATCH_SIZE", "many"), ("POUNDCAM_BATCH_SIZE", "0"),
    ("POUNDCAM_THRESHOLD", "1.5"), ("POUNDCAM_THRESHOLD", "half"),
    ("POUNDCAM_DEVICE", "tpu"), ("POUNDCAM_CAM_TARGET", "gradcam"),
    ("POUNDCAM_MAX_IMAGE_BYTES", "-1"), ("POUNDCAM_METRICS_PORT", "70000"),
    ("POUNDCAM_WEIGHTS_SHA256", "abc"), ("POUNDCAM_HEATMAP_PREFIX", "/abs/"),
    ("POUNDCAM_HEATMAP_PREFIX", "a/../b/"), ("POUNDCAM_ALLOWED_BUCKETS", "a/b"),
    ("POUNDCAM_COMPILE", "yes"), ("POUNDCAM_JPEG_ROUNDTRIP", "nvjpeg"),
])
def test_invalid_values_name_the_variable(var, value):
    with pytest.raises(SettingsError, match=var) as info:
        Settings.from_env({var: value})
    assert isinstance(info.value, PoundcamError)


def test_invalid_override_and_unknown_setting():
    with pytest.raises(SettingsError, match="POUNDCAM_BATCH_SIZE"):
        Settings.from_env({}, batch_size="8")
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.from_env({}, batchsize=8)


def test_frozen():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.batch_size = 3
    assert s.replace(batch_size=3).batch_size == 3
