"""ops/k8s/: the core manifests against the Kubernetes schemas (kubernetes-validate, strict), the
KEDA objects against their documented structure (no schema ships for them), and the
kustomization against the files it ties together."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "ops" / "k8s"
# The oldest Kubernetes these manifests support, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
KEDA_API = "keda.sh/v1alpha1"
CORE_KINDS = {"Namespace", "ConfigMap", "Deployment", "Job", "PodDisruptionBudget"}


def _core(manifests):
    return [(path, doc) for path, doc in manifests if not doc["apiVersion"].startswith("keda.sh/")]


def test_every_manifest_is_a_known_kind(manifests):
    kinds = {doc["kind"] for _, doc in manifests}
    assert kinds == CORE_KINDS | {"ScaledObject", "TriggerAuthentication"}
    assert "Secret" not in kinds, "credentials are created out of band, never committed"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_manifests_validate_strictly(manifests, version):
    for path, doc in _core(manifests):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{path.name} {doc['kind']}/{doc['metadata']['name']} (k8s {version}): "
                f"{exc.message} at {'/'.join(map(str, exc.path))}"
            )


def test_the_validator_rejects_a_broken_manifest(k8s):
    """The strict check bites: an unknown field and a wrong type both fail."""
    import copy

    bad = copy.deepcopy(k8s("Deployment", "poundcam-worker"))
    bad["spec"]["template"]["spec"]["terminationGracePeriod"] = 900
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)
    bad = copy.deepcopy(k8s("Deployment", "poundcam-worker"))
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "900"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


def _is_int_string(value, minimum=0) -> bool:
    return isinstance(value, str) and value.isdigit() and int(value) >= minimum


SCALED_OBJECT_SPEC_KEYS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
REDIS_TRIGGER_KEYS = {
    "address",
    "addressFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "passwordFromEnv",
    "usernameFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}


def test_scaled_object_structure(k8s):
    so = k8s("ScaledObject", "poundcam-worker")
    assert so["apiVersion"] == KEDA_API
    spec = so["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC_KEYS, set(spec) - SCALED_OBJECT_SPEC_KEYS
    target = spec["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "poundcam-worker"}
    k8s("Deployment", target["name"])  # the target exists
    for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        assert isinstance(spec[key], int) and spec[key] >= 0, key
    assert spec["pollingInterval"] > 0
    assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]

    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    for direction in ("scaleUp", "scaleDown"):
        rules = behavior[direction]
        assert isinstance(rules["stabilizationWindowSeconds"], int)
        for policy in rules["policies"]:
            assert policy["type"] in ("Pods", "Percent")
            assert isinstance(policy["value"], int) and policy["value"] > 0
            assert isinstance(policy["periodSeconds"], int) and 0 < policy["periodSeconds"] <= 1800

    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert set(meta) <= REDIS_TRIGGER_KEYS, set(meta) - REDIS_TRIGGER_KEYS
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
    assert ("address" in meta) != ("host" in meta), "exactly one of address or host"
    assert _is_int_string(meta["listLength"], minimum=1)
    assert _is_int_string(meta["activationListLength"])
    assert _is_int_string(meta["databaseIndex"])
    auth = trigger["authenticationRef"]["name"]
    k8s("TriggerAuthentication", auth)  # the reference resolves


def test_scale_from_zero_wakes_on_any_waiting_message(k8s):
    """With no replica left, a list shorter than the activation threshold is never worked off."""
    spec = k8s("ScaledObject", "poundcam-worker")["spec"]
    if spec["minReplicaCount"] == 0:
        assert spec["triggers"][0]["metadata"]["activationListLength"] == "0"


def test_trigger_authentication_reads_the_workers_secret(k8s):
    ta = k8s("TriggerAuthentication", "poundcam-redis")
    assert ta["apiVersion"] == KEDA_API
    assert set(ta["spec"]) == {"secretTargetRef"}
    refs = ta["spec"]["secretTargetRef"]
    assert refs and all(set(r) == {"parameter", "name", "key"} for r in refs)
    assert {r["parameter"] for r in refs} <= {"password", "username", "host", "port", "address"}
    worker = k8s("Deployment", "poundcam-worker")["spec"]["template"]["spec"]["containers"][0]
    worker_secrets = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in worker["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {r["name"] for r in refs} <= worker_secrets


def test_kustomization_lists_every_manifest(k8s):
    kust = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kust["resources"]) == sorted(files)
    assert k8s("Namespace", kust["namespace"])
    images = {i["name"] for i in kust["images"]}
    used = {
        c["image"].split(":")[0]
        for kind, name in (("Deployment", "poundcam-worker"), ("Job", "poundcam-migrate"))
        for c in k8s(kind, name)["spec"]["template"]["spec"]["containers"]
    }
    assert used == images


def test_kustomize_build_validates():
    """What `kubectl apply -k` would send: rendered by kubectl's kustomize, then validated."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the kustomization is checked by the test above")
    proc = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(docs) == len([p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml"])
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "poundcam", doc["kind"]
        if not doc["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)
