"""Shared loaders for the deployment checks: the compose file, the Dockerfile and ops/k8s/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = ROOT / "ops" / "compose.env.example"
DOCKERFILE = ROOT / "Dockerfile"
K8S_DIR = ROOT / "ops" / "k8s"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"

INSTALL_COMPOSE = "apt-get update && apt-get install -y docker-compose"


def _docker_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess:
    """Run Debian's docker-compose (v1) on the repository's compose file, with only PATH in the
    environment so nothing from the caller's shell fills the ${...} variables."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(f"docker-compose is not installed; install it with: {INSTALL_COMPOSE}")
    return subprocess.run(
        [exe, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )


@pytest.fixture(scope="session")
def docker_compose():
    """``docker_compose(*args, env_file=PATH)`` -> CompletedProcess."""
    return _docker_compose


@pytest.fixture(scope="session")
def compose_raw() -> dict:
    """The compose file as written (before interpolation)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def compose_config() -> dict:
    """The compose file as docker-compose resolves it, with the example env file."""
    proc = _docker_compose("config", env_file=COMPOSE_ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="session")
def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments) pairs."""
    return _dockerfile_instructions()


@pytest.fixture(scope="session")
def image_entrypoint(dockerfile) -> list[str]:
    found = [json.loads(args) for word, args in dockerfile if word == "ENTRYPOINT"]
    assert found, "Dockerfile has no ENTRYPOINT"
    return found[-1]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p != KUSTOMIZATION)


@pytest.fixture(scope="session")
def manifests() -> list[tuple[Path, dict]]:
    """Every document in ops/k8s/*.yaml except the kustomization, with its file."""
    docs = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


@pytest.fixture(scope="session")
def k8s(manifests):
    """Look a manifest up by kind and name: k8s("Deployment", "poundcam-worker")."""
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in manifests}

    def get(kind: str, name: str) -> dict:
        assert (kind, name) in by_key, f"no {kind} {name} in {K8S_DIR}"
        return by_key[(kind, name)]

    return get
