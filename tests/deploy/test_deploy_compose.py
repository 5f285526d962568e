"""docker-compose.yml: validated by docker-compose itself, then the structure the stack relies on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = ROOT / "ops" / "compose.env.example"

OUR_SERVICES = ("migrate", "worker", "worker-cpu")
ONE_SHOT = ("create-buckets", "migrate")


def test_compose_config_validates(docker_compose):
    proc = docker_compose("config", "-q", env_file=COMPOSE_ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr


def test_compose_refuses_to_run_without_credentials(docker_compose, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = docker_compose("config", "-q", env_file=empty)
    assert proc.returncode != 0
    assert re.search(
        r"set (POSTGRES_PASSWORD|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|FLOWER_BASIC_AUTH)", proc.stderr
    ), proc.stderr


def test_compose_services(compose_config):
    assert set(compose_config["services"]) == {
        "redis",
        "postgres",
        "s3",
        "create-buckets",
        "migrate",
        "worker",
        "worker-cpu",
        "queue-exporter",
        "flower",
    }


@pytest.mark.parametrize(
    "name", ["redis", "postgres", "s3", "worker", "worker-cpu", "queue-exporter", "flower"]
)
def test_long_running_services_have_health_checks(compose_config, name):
    health = compose_config["services"][name].get("healthcheck")
    assert health and not health.get("disable") and health.get("test"), f"{name}: no health check"


@pytest.mark.parametrize("name", ONE_SHOT)
def test_one_shot_services_do_not_restart(compose_config, name):
    assert compose_config["services"][name].get("restart") in (None, "no")


def test_workers_wait_for_healthy_services_buckets_and_migrations(compose_config):
    for name in ("worker", "worker-cpu"):
        deps = compose_config["services"][name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["s3"]["condition"] == "service_healthy"
        assert deps["create-buckets"]["condition"] == "service_completed_successfully"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    services = compose_config["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["create-buckets"]["depends_on"]["s3"]["condition"] == "service_healthy"


def test_bucket_set_up_creates_the_heatmap_and_image_buckets(compose_config):
    svc = compose_config["services"]["create-buckets"]
    env = svc["environment"]
    worker_env = compose_config["services"]["worker"]["environment"]
    assert env["HEATMAP_BUCKET"] == worker_env["POUNDCAM_HEATMAP_BUCKET"]
    assert env["IMAGE_BUCKETS"] == worker_env["POUNDCAM_ALLOWED_BUCKETS"]
    script = " ".join(svc["command"])
    assert "mc mb --ignore-existing" in script and "$HEATMAP_BUCKET" in script and "$IMAGE_BUCKETS" in script


def test_gpu_worker_reserves_one_gpu_and_cpu_worker_is_a_profile(compose_config):
    services = compose_config["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "profiles" not in services["worker"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert "deploy" not in services["worker-cpu"]


def test_worker_environment(compose_config):
    for name in ("worker", "worker-cpu"):
        env = compose_config["services"][name]["environment"]
        assert env["POUNDCAM_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["POUNDCAM_DATABASE_URL"].startswith("postgresql://poundcam:")
        assert env["POUNDCAM_DATABASE_URL"].endswith("@postgres:5432/poundcam")
        assert env["POUNDCAM_S3_ENDPOINT_URL"] == "http://s3:9000"
        assert env["POUNDCAM_METRICS_PORT"] == "9808"
        for key in (
            "POUNDCAM_HEATMAP_BUCKET",
            "POUNDCAM_ALLOWED_BUCKETS",
            "POUNDCAM_WEIGHTS",
            "POUNDCAM_VISIBILITY_TIMEOUT_S",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ):
            assert env.get(key), f"{name}: {key} missing"


def test_queue_exporter_serves_the_port_the_dashboards_scrape(compose_config):
    exporter = compose_config["services"]["queue-exporter"]
    assert exporter["command"] == ["queue-exporter", "--port", "9809"]
    assert exporter["environment"]["POUNDCAM_BROKER_URL"] == "redis://redis:6379/0"
    assert [str(p) for p in exporter["ports"]] in (["127.0.0.1:9809:9809/tcp"], ["127.0.0.1:9809:9809"])


def test_s3_server_uses_the_workers_key_pair(compose_config):
    s3 = compose_config["services"]["s3"]["environment"]
    worker = compose_config["services"]["worker"]["environment"]
    assert s3["MINIO_ROOT_USER"] == worker["AWS_ACCESS_KEY_ID"]
    assert s3["MINIO_ROOT_PASSWORD"] == worker["AWS_SECRET_ACCESS_KEY"]


def test_state_lives_on_named_volumes(compose_config):
    services = compose_config["services"]
    assert set(compose_config["volumes"]) == {"redis-data", "postgres-data", "s3-data", "model-cache"}
    wanted = {
        "redis": "redis-data:/data",
        "postgres": "postgres-data:/var/lib/postgresql/data",
        "s3": "s3-data:/data",
        "worker": "model-cache:/var/cache/poundcam",
    }
    for name, mount in wanted.items():
        mounts = [
            v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in services[name]["volumes"]
        ]
        assert any(m.startswith(mount) for m in mounts), (name, mounts)
    weights = [v for v in services["worker"]["volumes"] if ":/weights" in str(v)]
    assert weights and str(weights[0]).endswith(":ro"), "weights are mounted read-only"


def test_images_are_pinned_and_ours_are_built_here(compose_config):
    for name, svc in compose_config["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
        if name in OUR_SERVICES:
            assert image.startswith("poundcam-worker:") and "build" in svc


def test_ports_are_published_on_localhost_only(compose_raw):
    for name, svc in compose_raw["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"


def test_no_default_values_for_credentials():
    text = COMPOSE_FILE.read_text()
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"):
        assert re.search(r"\$\{" + var + r"[:}?]", text), f"{var} is not taken from the environment"
        assert not re.search(r"\$\{" + var + r":?-", text), f"{var} has a built-in default"


def test_example_env_file_holds_placeholders_only():
    values = dict(
        line.split("=", 1)
        for line in COMPOSE_ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"):
        assert "CHANGE-ME" in values[key], key
