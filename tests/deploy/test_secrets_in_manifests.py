"""Secrets in the deployment files: only Secret references and file paths, never values
(docs/security.md).

Kubernetes, the base and the production overlay as `kubectl kustomize` renders them: no
ConfigMap carries a secret-looking key or value, no Secret is committed, every variable
named like a secret comes from a Secret, and every key file a container is pointed at is
under a mounted Secret. Compose: its development credentials never leave compose's own
network.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy.test_k8s_production import K8S, OVERLAY, kustomize, pod_template

REPO = Path(__file__).resolve().parents[2]
# A variable or ConfigMap key whose value is a secret by its name.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|API_KEY", re.I)
# A variable that names a key file (CLEARWAY_TLS_KEY, CLEARWAY_SIGNING_KEY).
KEY_FILE_NAME = re.compile(r"_KEY$")
URL_PASSWORD = re.compile(r"://[^\s:/@]+:[^\s@]+@")
PRIVATE_KEY = "PRIVATE KEY-----"


def secret_looking(value: str) -> str | None:
    """What makes `value` look like a secret, or None."""
    if PRIVATE_KEY in value:
        return "a private key"
    if URL_PASSWORD.search(value.replace("$(", "")):
        return "a URL with a password"
    return None


@pytest.fixture(scope="module", params=["base", "production"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(K8S if request.param == "base" else OVERLAY)


def pod_specs(documents: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every workload's pod spec (Deployments, StatefulSets, Jobs, CronJobs...)."""
    return [
        (doc["metadata"]["name"], template["spec"])
        for doc in documents
        if (template := pod_template(doc)) is not None
    ]


def test_renders_workloads_and_configmaps(rendered: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in rendered if pod_template(doc) is not None}
    assert {"Deployment", "CronJob"} <= kinds, "nothing to check: the render lost workloads"
    assert any(doc["kind"] == "ConfigMap" for doc in rendered)


def test_no_secret_is_committed(rendered: list[dict[str, Any]]) -> None:
    # Secrets are created in the cluster (k8s/README.md) or by the operators.
    secrets = [doc["metadata"]["name"] for doc in rendered if doc["kind"] == "Secret"]
    assert not secrets


def test_no_configmap_holds_a_secret(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        if doc["kind"] != "ConfigMap":
            continue
        name = doc["metadata"]["name"]
        for key, value in (doc.get("data") or {}).items():
            assert not SECRET_NAME.search(key), f"ConfigMap {name}: {key} is a secret's name"
            problem = secret_looking(str(value))
            assert problem is None, f"ConfigMap {name}: {key} holds {problem}"


def test_secret_named_variables_come_from_secrets(rendered: list[dict[str, Any]]) -> None:
    for workload, spec in pod_specs(rendered):
        for container in spec.get("initContainers", []) + spec["containers"]:
            for var in container.get("env", []):
                where = f"{workload}/{container['name']}: {var['name']}"
                if "value" in var:
                    problem = secret_looking(str(var["value"]))
                    assert problem is None, f"{where} holds {problem}"
                if SECRET_NAME.search(var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{where}: not a Secret"


def test_key_files_are_read_from_mounted_secrets(rendered: list[dict[str, Any]]) -> None:
    checked = 0
    for workload, spec in pod_specs(rendered):
        secret_volumes = {
            volume["name"]
            for volume in spec.get("volumes", [])
            if "secret" in volume
            or any("secret" in source for source in volume.get("projected", {}).get("sources", []))
        }
        for container in spec["containers"]:
            mounts = {
                PurePosixPath(mount["mountPath"]): mount["name"]
                for mount in container.get("volumeMounts", [])
            }
            for var in container.get("env", []):
                if not KEY_FILE_NAME.search(var["name"]) or "value" not in var:
                    continue
                path = PurePosixPath(var["value"])
                where = f"{workload}: {var['name']}={path}"
                assert path.is_absolute(), f"{where} is not a file path"
                under = [volume for mount, volume in mounts.items() if mount in path.parents]
                assert under, f"{where} is under no mount"
                assert set(under) <= secret_volumes, f"{where} is not read from a Secret"
                checked += 1
    assert checked, "no key file variable found: the check checked nothing"


def test_composes_development_credentials_stay_on_its_own_network() -> None:
    # docker-compose.yml's PostgreSQL password and DSN are public development values;
    # they are harmless only because nothing outside compose's network can use them.
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "clearway"
    for name in ("postgres", "redis", "kafka"):
        assert not services[name].get("ports"), f"{name} is published on the host"
