"""docker-compose.yml: valid compose-spec, and wired the way the services expect.

Runs offline: check-jsonschema ships the compose-spec schema (--builtin-schema).
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
KAFKA_POM = REPO / "deploy" / "kafka" / "pom.xml"

GRPC_PORTS = {"ingest": 50051, "fares": 50052, "settlement": 50053, "accounts": 50054}
DEPENDENCIES = {
    "ingest": {"kafka", "redis"},
    "fares": {"kafka", "postgres"},
    "settlement": {"kafka", "postgres"},
    "accounts": {"kafka", "postgres", "redis"},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def kafka_version_from_pom() -> str:
    root = ET.parse(KAFKA_POM).getroot()
    # Maven POMs normally carry the POM namespace; accept one without it too.
    namespace = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
    version = root.findtext(f"{namespace}properties/{namespace}kafka.version")
    assert version, f"{KAFKA_POM} has no <properties><kafka.version>"
    return version.strip()


def test_compose_file_validates_against_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_defines_infrastructure_and_the_four_services(services: dict[str, Any]) -> None:
    assert {"kafka", "postgres", "redis", *GRPC_PORTS} <= set(services)


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_service_healthcheck_calls_clearway_health_on_its_grpc_port(
    services: dict[str, Any], name: str
) -> None:
    expected = ["CMD", "clearway", "health", f"127.0.0.1:{GRPC_PORTS[name]}"]
    assert services[name]["healthcheck"]["test"] == expected


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_service_listens_on_its_grpc_port(services: dict[str, Any], name: str) -> None:
    port = GRPC_PORTS[name]
    service = services[name]
    assert service["ports"] == [f"{port}:{port}"]
    assert str(service["environment"]["CLEARWAY_GRPC_PORT"]) == str(port)


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_service_waits_only_for_healthy_infrastructure_it_needs(
    services: dict[str, Any], name: str
) -> None:
    depends_on = services[name]["depends_on"]
    assert isinstance(depends_on, dict), "long form needed to wait for health"
    assert set(depends_on) == DEPENDENCIES[name]
    for dependency, spec in depends_on.items():
        assert spec["condition"] == "service_healthy", dependency


def test_every_depended_on_service_defines_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            healthcheck = services[dependency].get("healthcheck", {})
            assert healthcheck.get("test"), f"{name} waits for {dependency}: no healthcheck"
            assert not healthcheck.get("disable", False)


def test_kafka_image_tag_matches_kafka_version_in_pom(services: dict[str, Any]) -> None:
    assert KAFKA_POM.exists(), f"{KAFKA_POM.relative_to(REPO)} is missing"
    image, _, tag = services["kafka"]["image"].partition(":")
    assert image == "apache/kafka"
    assert tag == kafka_version_from_pom()


def test_kafka_is_a_single_kraft_node_with_replication_factor_one(
    services: dict[str, Any],
) -> None:
    env = {key: str(value) for key, value in services["kafka"]["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["CLUSTER_ID"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"


def test_four_services_share_one_image_built_from_deploy_dockerfile(
    services: dict[str, Any],
) -> None:
    builds = [services[name]["build"] for name in GRPC_PORTS]
    assert all(build == builds[0] for build in builds)
    context = (COMPOSE_FILE.parent / builds[0]["context"]).resolve()
    assert context == REPO
    assert (context / builds[0]["dockerfile"]) == REPO / "deploy" / "Dockerfile"
    assert {services[name]["image"] for name in GRPC_PORTS} == {"clearway:dev"}


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_service_runs_itself_and_reaches_the_infrastructure(
    services: dict[str, Any], name: str
) -> None:
    service = services[name]
    env = service["environment"]
    assert service["command"] == ["serve", name]
    assert env["CLEARWAY_GRPC_HOST"] == "0.0.0.0", "127.0.0.1 is unreachable from outside"
    assert env["CLEARWAY_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["CLEARWAY_PG_DSN"] == "postgresql://clearway:clearway@postgres:5432/clearway"
    assert env["CLEARWAY_REDIS_URL"] == "redis://redis:6379/0"
    assert env["CLEARWAY_LOG_LEVEL"] == "INFO"
    assert service["stop_grace_period"] == "20s"


def test_fares_reads_the_example_feed(services: dict[str, Any]) -> None:
    assert services["fares"]["environment"]["CLEARWAY_FEED_DIR"] == "/app/examples/feeds/london"


def test_settlement_keeps_statements_on_a_named_volume(compose: dict[str, Any]) -> None:
    settlement = compose["services"]["settlement"]
    statements_dir = settlement["environment"]["CLEARWAY_STATEMENTS_DIR"]
    assert statements_dir == "/var/lib/clearway/statements"
    mounts = dict(volume.rsplit(":", 1) for volume in settlement["volumes"])
    assert statements_dir in mounts.values()
    volume = next(source for source, target in mounts.items() if target == statements_dir)
    assert volume in compose["volumes"]
