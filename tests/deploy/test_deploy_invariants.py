"""What no schema covers: the deployment's numbers, names and security rules agree with each
other and with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poundcam.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
READY_MARKER = "/tmp/poundcam-ready"
HEARTBEAT = "/tmp/poundcam-heartbeat"
HEARTBEAT_MAX_AGE_S = 300
CLUSTER_AUTOSCALER_GRACE_S = 600  # --max-graceful-termination-sec, its default
METRICS_PORT = 9808
SENSITIVE = re.compile(
    r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|BASIC_AUTH|BROKER_URL|DATABASE_URL", re.IGNORECASE
)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def celery_queue_name(monkeypatch) -> str:
    """The queue the workers consume, from the Celery app itself."""
    monkeypatch.setenv("POUNDCAM_BROKER_URL", "redis://127.0.0.1:6379/0")
    from workers.celery_app import QUEUE, TASK_NAME, app

    assert app.conf.task_default_queue == QUEUE
    assert app.conf.task_routes[TASK_NAME]["queue"] == QUEUE
    return QUEUE


@pytest.fixture(scope="module")
def worker_deployment(k8s):
    return k8s("Deployment", "poundcam-worker")


@pytest.fixture(scope="module")
def worker_pod(worker_deployment):
    return worker_deployment["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def worker_container(worker_pod):
    (container,) = worker_pod["containers"]
    return container


@pytest.fixture(scope="module")
def worst_batch_s(worker_deployment) -> int:
    return int(worker_deployment["metadata"]["annotations"]["poundcam.io/worst-batch-seconds"])


@pytest.fixture(scope="module")
def config_data(k8s) -> dict:
    return k8s("ConfigMap", "poundcam-config")["data"]


def _duration_s(text: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", str(text))
    assert parts and "".join(a + b for a, b in parts) == str(text), f"unreadable duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


# -- queue, commands, GPU ----------------------------------------------------------------------


def test_keda_watches_the_celery_queue(k8s, monkeypatch):
    trigger = k8s("ScaledObject", "poundcam-worker")["spec"]["triggers"][0]
    assert trigger["metadata"]["listName"] == celery_queue_name(monkeypatch)


def test_keda_watches_the_broker_database(k8s, compose_config):
    trigger = k8s("ScaledObject", "poundcam-worker")["spec"]["triggers"][0]
    broker = compose_config["services"]["worker"]["environment"]["POUNDCAM_BROKER_URL"]
    assert broker.rsplit("/", 1)[1] == trigger["metadata"]["databaseIndex"]


def test_worker_command_is_poundcam_worker(worker_container, compose_config, image_entrypoint):
    assert worker_container["command"] + worker_container.get("args", []) == ["poundcam", "worker"]
    assert image_entrypoint == ["poundcam"]
    for name in ("worker", "worker-cpu"):
        svc = compose_config["services"][name]
        assert svc.get("entrypoint", image_entrypoint) + svc["command"] == ["poundcam", "worker"]


def test_migrations_run_poundcam_db_upgrade(k8s, compose_config, image_entrypoint):
    (job,) = k8s("Job", "poundcam-migrate")["spec"]["template"]["spec"]["containers"]
    assert job["command"] + job.get("args", []) == ["poundcam", "db", "upgrade"]
    svc = compose_config["services"]["migrate"]
    assert svc.get("entrypoint", image_entrypoint) + svc["command"] == ["poundcam", "db", "upgrade"]


def test_dockerfile_default_command_is_the_worker(dockerfile):
    cmds = [args for word, args in dockerfile if word == "CMD"]
    assert cmds[-1] == '["worker"]'


def test_one_gpu_per_pod(worker_container):
    res = worker_container["resources"]
    assert int(res["requests"]["nvidia.com/gpu"]) == 1
    assert int(res["limits"]["nvidia.com/gpu"]) == 1


# -- the shutdown budget: worst batch < grace period < visibility timeout ----------------------


def test_grace_period_exceeds_the_worst_batch(worker_pod, worst_batch_s):
    assert worker_pod["terminationGracePeriodSeconds"] > worst_batch_s


def test_visibility_timeout_exceeds_the_grace_period(worker_pod, config_data):
    assert int(config_data["POUNDCAM_VISIBILITY_TIMEOUT_S"]) > worker_pod["terminationGracePeriodSeconds"]


def test_keda_cooldown_and_scale_down_window_exceed_the_worst_batch(k8s, worst_batch_s):
    spec = k8s("ScaledObject", "poundcam-worker")["spec"]
    assert spec["cooldownPeriod"] > worst_batch_s
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] > worst_batch_s


def test_compose_worker_has_the_same_budget(compose_config, worker_pod, config_data, worst_batch_s):
    for name in ("worker", "worker-cpu"):
        svc = compose_config["services"][name]
        grace = _duration_s(svc["stop_grace_period"])
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert grace == worker_pod["terminationGracePeriodSeconds"] > worst_batch_s
        assert (
            svc["environment"]["POUNDCAM_VISIBILITY_TIMEOUT_S"]
            == config_data["POUNDCAM_VISIBILITY_TIMEOUT_S"]
        )


def test_prestop_starts_warm_shutdown_and_waits(worker_container):
    script = " ".join(worker_container["lifecycle"]["preStop"]["exec"]["command"])
    assert f"rm -f {READY_MARKER}" in script
    assert "kill -TERM 1" in script, "SIGTERM is Celery's warm shutdown"
    assert "while kill -0 1" in script, "the hook waits for the current message"


def test_startup_allows_a_weights_download(worker_container):
    probe = worker_container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600


# -- readiness, metrics --------------------------------------------------------------------------


def test_readiness_follows_the_warm_up_marker(worker_container, dockerfile, compose_config):
    for probe in ("startupProbe", "readinessProbe"):
        assert worker_container[probe]["exec"]["command"] == ["test", "-f", READY_MARKER]
    health = [args for word, args in dockerfile if word == "HEALTHCHECK"]
    assert health and READY_MARKER in health[-1]
    assert READY_MARKER in " ".join(compose_config["services"]["worker"]["healthcheck"]["test"])
    # the worker writes the marker the probes read: the ready-file setting's default
    assert Settings.from_env({}).ready_file == READY_MARKER
    assert "settings().ready_file" in (ROOT / "workers" / "runtime.py").read_text()
    tmp = [m for m in worker_container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp, "/tmp is writable under a read-only root filesystem"


def test_metrics_port_is_one_number_everywhere(
    worker_deployment, worker_container, config_data, compose_config
):
    annotations = worker_deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == METRICS_PORT
    assert [p["containerPort"] for p in worker_container["ports"] if p["name"] == "metrics"] == [METRICS_PORT]

    assert int(config_data["POUNDCAM_METRICS_PORT"]) == METRICS_PORT
    assert int(compose_config["services"]["worker"]["environment"]["POUNDCAM_METRICS_PORT"]) == METRICS_PORT


# -- security ------------------------------------------------------------------------------------


def test_containers_run_as_non_root(manifests, dockerfile):
    users = [args for word, args in dockerfile if word == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) > 0
    pods = [doc["spec"]["template"]["spec"] for _, doc in manifests if doc["kind"] in ("Deployment", "Job")]
    assert len(pods) == 3  # the workers, the migration job, the queue exporter
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod.get("automountServiceAccountToken") is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) > 0
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_compose_does_not_run_our_image_as_root(compose_config):
    for name in ("migrate", "worker", "worker-cpu"):
        assert str(compose_config["services"][name].get("user", "10001")).split(":")[0] not in ("0", "root")


def test_no_secrets_in_plain_values(manifests):
    for path, doc in manifests:
        if doc["kind"] == "ConfigMap":
            for key, value in doc["data"].items():
                assert not SENSITIVE.search(key), f"{path.name}: {key} belongs in a Secret"
                assert not URL_WITH_PASSWORD.search(value), f"{path.name}: {key} holds a password"
        if doc["kind"] in ("Deployment", "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for env in c.get("env", []):
                    if "value" in env:
                        assert not SENSITIVE.search(env["name"]), f"{path.name}: {env['name']} in plain text"
                        assert not URL_WITH_PASSWORD.search(env["value"]), f"{path.name}: {env['name']}"
                    elif SENSITIVE.search(env["name"]):
                        assert "secretKeyRef" in env["valueFrom"], f"{path.name}: {env['name']}"


def test_compose_takes_every_credential_from_the_environment(compose_raw):
    """Secrets are ${VAR} or ${VAR:?message} interpolations, never literals or defaults."""
    from_env = r"\$\{[A-Z_]+(:\?[^}]*)?\}"
    envs = [compose_raw["x-poundcam-env"]] + [
        svc.get("environment") or {} for svc in compose_raw["services"].values()
    ]
    checked = 0
    for env in envs:
        for key, value in env.items():
            value = str(value)
            if URL_WITH_PASSWORD.search(value):
                checked += 1
                assert re.search(":" + from_env + "@", value), f"{key}: password written into a URL"
            elif SENSITIVE.search(key) and not key.endswith("_URL"):
                checked += 1
                assert re.fullmatch(from_env, value), f"{key}: not from the environment"
    assert checked >= 8


def test_credentials_stay_out_of_the_image():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", "*.env", ".git", "weights", "*.ckpt", "*.safetensors"):
        assert entry in ignored, entry


# -- liveness, disruptions, the cluster autoscaler -------------------------------------------------


def test_liveness_is_the_consumer_loops_heartbeat(worker_container, compose_config, dockerfile):
    from poundcam.settings import Settings
    from workers.loop import HEARTBEAT_INTERVAL_S

    assert Settings.from_env({}).heartbeat_file == HEARTBEAT
    probe = worker_container["livenessProbe"]
    assert "httpGet" not in probe  # the metrics thread answers even when the loop is wedged
    command = " ".join(probe["exec"]["command"])
    assert HEARTBEAT in command and f"-lt {HEARTBEAT_MAX_AGE_S}" in command
    assert HEARTBEAT_MAX_AGE_S > 10 * HEARTBEAT_INTERVAL_S
    for test in (
        " ".join(compose_config["services"]["worker"]["healthcheck"]["test"]),
        " ".join(args for word, args in dockerfile if word == "HEALTHCHECK"),
    ):
        assert HEARTBEAT in test and f"> {HEARTBEAT_MAX_AGE_S}" in test


def test_disruptions_take_one_worker_at_a_time(k8s, worker_deployment):
    pdb = k8s("PodDisruptionBudget", "poundcam-worker")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb  # the fleet scales to zero
    assert pdb["selector"] == worker_deployment["spec"]["selector"]


def test_the_cluster_autoscaler_cannot_cut_the_grace_period(worker_deployment, worker_pod):
    annotations = worker_deployment["spec"]["template"]["metadata"]["annotations"]
    if worker_pod["terminationGracePeriodSeconds"] > CLUSTER_AUTOSCALER_GRACE_S:
        assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
