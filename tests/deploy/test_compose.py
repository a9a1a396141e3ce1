"""docker-compose.yml: valid compose-spec, and wired the way the services expect.

Runs offline: check-jsonschema ships the compose-spec schema (--builtin-schema). The
one-shot `pki` job's script is run here too, with the venv's `clearway` and its volumes
mapped to temporary directories, so the files settlement and ingest are pointed at are
known to be the files the job writes. The portal's healthcheck command is run against a
real portal in-process, whose accounts is a gRPC health server.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clearway.runtime import authenticated_services_of, authentication_of, check_transport
from clearway.settings import ServiceSettings
from services.accounts.app import AccountsApp, StoredValueSettings
from services.ingest.app import build as build_ingest
from services.portal.adapters.accounts import TRAVELLER_SERVICE
from services.portal.app import PortalApp, PortalSettings
from services.settlement.app import SCHEME_FILE_VAR, SIGNING_KEY_VAR, STATEMENTS_DIR_VAR

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
KAFKA_POM = REPO / "deploy" / "kafka" / "pom.xml"
IMAGE_WORKDIR = PurePosixPath("/app")  # deploy/Dockerfile: WORKDIR /app, COPY examples/

GRPC_PORTS = {"ingest": 50051, "fares": 50052, "settlement": 50053, "accounts": 50054}
# Where a container healthcheck can ask in plaintext: ingest and settlement serve TLS on
# their gRPC ports and health on a plaintext port beside it (gRPC port + 1000).
HEALTH_PORTS = {**GRPC_PORTS, "ingest": 51051, "settlement": 51053}
# Ingest's mutual-TLS admin port (gRPC port + 2000): the device registry, the deny list.
ADMIN_PORTS = {"ingest": 52051}
DEPENDENCIES = {
    "ingest": {
        "pki": "service_completed_successfully",
        "kafka": "service_healthy",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    },
    "fares": {"kafka": "service_healthy", "postgres": "service_healthy"},
    "settlement": {
        "pki": "service_completed_successfully",
        "kafka": "service_healthy",
        "postgres": "service_healthy",
    },
    "accounts": {
        "kafka": "service_healthy",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    },
}
SERVER_TLS_VARS = ("CLEARWAY_TLS_CERT", "CLEARWAY_TLS_KEY", "CLEARWAY_TLS_CLIENT_CA")
TLS_FILE_VARS = (*SERVER_TLS_VARS, SIGNING_KEY_VAR)
PORTAL_PORT = 8080  # HTTP; every other Clearway service is gRPC
# `${NAME:-default}`: compose takes NAME from the shell or .env, else the default.
INTERPOLATION = re.compile(r"^\$\{(?P<name>\w+):-(?P<default>[^}]*)\}$")
# The files each TLS service is pointed at: ingest never sees the scheme's signing key.
TLS_SERVICES = {"settlement": TLS_FILE_VARS, "ingest": SERVER_TLS_VARS}


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


def test_compose_defines_infrastructure_the_pki_job_and_the_five_services(
    services: dict[str, Any],
) -> None:
    assert {"kafka", "postgres", "redis", "pki", *GRPC_PORTS, "portal"} <= set(services)


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_service_healthcheck_calls_clearway_health_on_its_plaintext_health_port(
    services: dict[str, Any], name: str
) -> None:
    expected = ["CMD", "clearway", "health", f"127.0.0.1:{HEALTH_PORTS[name]}"]
    assert services[name]["healthcheck"]["test"] == expected


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_service_listens_on_its_grpc_port_and_publishes_its_health_and_admin_ports(
    services: dict[str, Any], name: str
) -> None:
    published = [GRPC_PORTS[name], HEALTH_PORTS[name]]
    if name in ADMIN_PORTS:
        published.append(ADMIN_PORTS[name])
    service = services[name]
    assert service["ports"] == list(dict.fromkeys(f"{port}:{port}" for port in published))
    assert str(service["environment"]["CLEARWAY_GRPC_PORT"]) == str(GRPC_PORTS[name])


@pytest.mark.parametrize("name", sorted(GRPC_PORTS))
def test_service_waits_only_for_what_it_needs(services: dict[str, Any], name: str) -> None:
    depends_on = services[name]["depends_on"]
    assert isinstance(depends_on, dict), "long form needed to wait for health"
    conditions = {dependency: spec["condition"] for dependency, spec in depends_on.items()}
    assert conditions == DEPENDENCIES[name]


def test_every_service_waited_for_as_healthy_defines_a_healthcheck(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] != "service_healthy":
                continue
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


def test_five_services_and_the_pki_job_share_one_image_built_from_deploy_dockerfile(
    services: dict[str, Any],
) -> None:
    names = [*GRPC_PORTS, "portal", "pki"]
    builds = [services[name]["build"] for name in names]
    assert all(build == builds[0] for build in builds)
    context = (COMPOSE_FILE.parent / builds[0]["context"]).resolve()
    assert context == REPO
    assert (context / builds[0]["dockerfile"]) == REPO / "deploy" / "Dockerfile"
    assert {services[name]["image"] for name in names} == {"clearway:dev"}


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
    volume, read_only = volume_mounts(settlement)[statements_dir]
    assert volume in compose["volumes"]
    assert not read_only


# -- settlement: mutual TLS, the signing key, the scheme ---------------------------------


def volume_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Target path -> (named volume, read-only) for each short-form volume entry."""
    mounts: dict[str, tuple[str, bool]] = {}
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        mounts[target] = (source, mode == ["ro"])
    return mounts


def in_image(path: str) -> Path:
    """The repository file an image path under /app was copied from."""
    return REPO / PurePosixPath(path).relative_to(IMAGE_WORKDIR)


def test_settlement_is_served_with_mutual_tls_and_health_on_its_own_port(
    services: dict[str, Any],
) -> None:
    env = services["settlement"]["environment"]
    for var in TLS_FILE_VARS:
        assert PurePosixPath(env[var]).is_absolute(), var
    assert str(env["CLEARWAY_HEALTH_PORT"]) == str(HEALTH_PORTS["settlement"])
    assert services["settlement"]["healthcheck"]["test"][-1].endswith(
        f":{env['CLEARWAY_HEALTH_PORT']}"
    )


def test_settlement_settings_from_its_compose_environment_turn_on_mutual_tls(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("CLEARWAY_")]:
        monkeypatch.delenv(key)
    for key, value in services["settlement"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = ServiceSettings.from_env("settlement")
    assert settings.tls_enabled
    assert settings.tls_client_ca is not None, "without a client CA it is not mutual"
    assert settings.grpc_port == GRPC_PORTS["settlement"]
    assert settings.plaintext_health_port == HEALTH_PORTS["settlement"]


def test_settlement_reads_the_scheme_and_feed_the_image_holds(services: dict[str, Any]) -> None:
    env = services["settlement"]["environment"]
    assert in_image(env[SCHEME_FILE_VAR]) == REPO / "examples" / "schemes" / "london.toml"
    assert in_image(env[SCHEME_FILE_VAR]).is_file()
    assert (in_image(env["CLEARWAY_FEED_DIR"]) / "agency.txt").is_file()


def pki_job_targets(services: dict[str, Any]) -> dict[str, str]:
    """Named volume -> where the pki job mounts it (read-write)."""
    targets = {}
    for target, (volume, read_only) in volume_mounts(services["pki"]).items():
        assert not read_only, f"the pki job writes {volume}"
        targets[volume] = target
    return targets


@pytest.mark.parametrize("name", sorted(TLS_SERVICES))
def test_tls_service_mounts_its_tls_files_read_only_from_the_pki_jobs_volume(
    compose: dict[str, Any], name: str
) -> None:
    services = compose["services"]
    env = services[name]["environment"]
    mounts = volume_mounts(services[name])
    written = pki_job_targets(services)
    for var in TLS_SERVICES[name]:
        directory = str(PurePosixPath(env[var]).parent)
        volume, read_only = mounts[directory]
        assert read_only, f"{var}: {directory} is not mounted read-only"
        assert volume in compose["volumes"], f"{var}: {volume} is not a named volume"
        assert volume in written, f"{var}: pki does not write {volume}"
        assert volume != "pki", f"{var}: the pki volume holds the CA's private key"
    assert services["settlement"]["environment"][STATEMENTS_DIR_VAR] not in volume_mounts(
        services["pki"]
    )


def test_ingest_and_settlement_get_tls_volumes_of_their_own(services: dict[str, Any]) -> None:
    # Settlement's volume holds the scheme's signing key: ingest must not mount it.
    ingest = {volume for volume, _ in volume_mounts(services["ingest"]).values()}
    settlement = {volume for volume, _ in volume_mounts(services["settlement"]).values()}
    assert not ingest & settlement
    assert SIGNING_KEY_VAR not in services["ingest"]["environment"]


@pytest.mark.parametrize("name", sorted(TLS_SERVICES))
def test_tls_service_starts_only_after_the_pki_job_succeeded(
    services: dict[str, Any], name: str
) -> None:
    pki = services["pki"]
    assert services[name]["depends_on"]["pki"] == {"condition": "service_completed_successfully"}
    assert pki["restart"] == "no", "a one-shot job"
    assert "ports" not in pki and "healthcheck" not in pki
    assert "user" not in pki, "runs as the image's uid 10001, like settlement"


def test_pki_job_inits_the_pki_for_settlement_and_issues_the_operations_role(
    services: dict[str, Any],
) -> None:
    pki = services["pki"]
    assert pki["entrypoint"] == ["/bin/sh", "-ec"]
    (script,) = pki["command"]
    assert "clearway pki init --dir /var/lib/clearway/pki --server-name settlement" in script
    assert "clearway pki issue role operations --dir /var/lib/clearway/pki" in script
    assert pki["environment"]["CLEARWAY_PKI_DIR"] == "/var/lib/clearway/pki"


def run_pki_script(services: dict[str, Any], root: Path) -> dict[str, Path]:
    """Run the pki job's script with its volumes mapped under `root`; the map used."""
    pki = services["pki"]
    mapping = {target: root / volume for target, (volume, _) in volume_mounts(pki).items()}
    (script,) = pki["command"]
    for target, directory in mapping.items():
        directory.mkdir(mode=0o700)  # the image's directory, copied into the new volume
        script = script.replace(target, str(directory))
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(root),
        **{key: str(value) for key, value in pki["environment"].items()},
    }
    for _ in range(2):  # runs on every `up`: the second run must succeed too
        result = subprocess.run(
            [*pki["entrypoint"], script],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return mapping


def files_of(services: dict[str, Any], name: str, mapping: dict[str, Path]) -> dict[str, Path]:
    """Where the pki job's run under `mapping` put each TLS file service `name` reads."""
    mounts = volume_mounts(services[name])
    written = pki_job_targets(services)
    files = {}
    for var in TLS_SERVICES[name]:
        target = PurePosixPath(services[name]["environment"][var])
        volume, _ = mounts[str(target.parent)]
        files[var] = mapping[written[volume]] / target.name
    return files


@pytest.mark.parametrize("name", sorted(TLS_SERVICES))
def test_pki_job_writes_every_file_a_tls_service_reads_with_the_names_clients_use(
    services: dict[str, Any], tmp_path: Path, name: str
) -> None:
    mapping = run_pki_script(services, tmp_path)
    files = files_of(services, name, mapping)
    for var in TLS_SERVICES[name]:
        mode = stat.S_IMODE(files[var].stat().st_mode)
        assert files[var].stat().st_uid == os.getuid(), f"{var}: not the job's (= {name}'s)"
        assert mode & 0o400, f"{var}: the owner cannot read it"
        assert not mode & 0o077, f"{var}: readable by others ({mode:o})"
    cert = x509.load_pem_x509_certificate(files["CLEARWAY_TLS_CERT"].read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    assert {name, f"{name}.clearway.svc", "localhost"} <= dns
    ca = x509.load_pem_x509_certificate(files["CLEARWAY_TLS_CLIENT_CA"].read_bytes())
    cert.verify_directly_issued_by(ca)
    # The service sees only its own files, never the CA's private key (nor, for ingest,
    # the scheme's signing key).
    (service_dir,) = {files[var].parent for var in TLS_SERVICES[name]}
    assert sorted(p.name for p in service_dir.iterdir()) == sorted(f.name for f in files.values())
    pki_dir = mapping["/var/lib/clearway/pki"]
    operations = pki_dir / "clients" / "role-operations.pem"
    assert operations.is_file() and (pki_dir / "clients" / "role-operations.key.pem").is_file()
    x509.load_pem_x509_certificate(operations.read_bytes()).verify_directly_issued_by(ca)


def test_ingest_and_settlement_are_served_the_same_server_certificate_and_ca(
    services: dict[str, Any], tmp_path: Path
) -> None:
    mapping = run_pki_script(services, tmp_path)
    ingest, settlement = (
        files_of(services, "ingest", mapping),
        files_of(services, "settlement", mapping),
    )
    for var in SERVER_TLS_VARS:
        assert ingest[var].read_bytes() == settlement[var].read_bytes(), var


# -- ingest: TLS for validators, a mutual-TLS admin port, PostgreSQL, Redis --------------


def settings_from_compose_env(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> ServiceSettings:
    for key in [k for k in os.environ if k.startswith("CLEARWAY_")]:
        monkeypatch.delenv(key)
    for key, value in services[name]["environment"].items():
        monkeypatch.setenv(key, str(value))
    return ServiceSettings.from_env(name)


def test_ingest_is_served_with_tls_and_health_and_admin_on_their_own_ports(
    services: dict[str, Any],
) -> None:
    env = services["ingest"]["environment"]
    for var in SERVER_TLS_VARS:
        assert PurePosixPath(env[var]).is_absolute(), var
    assert str(env["CLEARWAY_HEALTH_PORT"]) == str(HEALTH_PORTS["ingest"])
    assert str(env["CLEARWAY_ADMIN_PORT"]) == str(ADMIN_PORTS["ingest"])
    assert services["ingest"]["healthcheck"]["test"][-1].endswith(f":{env['CLEARWAY_HEALTH_PORT']}")


def test_ingest_settings_from_its_compose_environment_pass_its_transport_check(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from_compose_env(services, "ingest", monkeypatch)
    assert settings.tls_enabled
    assert settings.tls_client_ca is not None, "the admin port is mutual TLS"
    assert settings.grpc_port == GRPC_PORTS["ingest"]
    assert settings.plaintext_health_port == HEALTH_PORTS["ingest"]
    assert settings.mutual_tls_admin_port == ADMIN_PORTS["ingest"]
    assert settings.db_schema == "ingest"
    app = build_ingest(settings)
    # What `clearway serve ingest` checks before binding: it refuses to start otherwise.
    check_transport(settings, authentication_of(app), authenticated_services_of(app))


def test_ingest_uses_postgres_and_one_transactional_id_per_process(
    services: dict[str, Any],
) -> None:
    ingest = services["ingest"]
    env = ingest["environment"]
    assert env["CLEARWAY_PG_DSN"].startswith("postgresql://")
    assert "@postgres:" in env["CLEARWAY_PG_DSN"]
    assert env["CLEARWAY_DB_SCHEMA"] == "ingest"
    assert ingest["depends_on"]["postgres"] == {"condition": "service_healthy"}
    # A fixed id shared by several worker processes would have them fence each other.
    assert "CLEARWAY_INGEST_WRITER_ID" not in env


def redis_options(service: dict[str, Any]) -> dict[str, str]:
    """`redis-server --name value ...` as {name: value}."""
    command = [str(word) for word in service["command"]]
    assert command[0] == "redis-server"
    options = command[1:]
    assert len(options) % 2 == 0 and all(word.startswith("--") for word in options[::2])
    pairs = zip(options[::2], options[1::2], strict=True)
    return {name.removeprefix("--"): value for name, value in pairs}


def test_redis_fsyncs_every_write_so_ingests_claims_survive_a_crash(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    redis_host = services["ingest"]["environment"]["CLEARWAY_REDIS_URL"].split("/")[2]
    assert redis_host.split(":")[0] == "redis"
    options = redis_options(services["redis"])
    assert options["appendonly"] == "yes"
    assert options["appendfsync"] == "always"
    assert options.get("maxmemory-policy", "noeviction") == "noeviction"
    volume, read_only = volume_mounts(services["redis"])["/data"]
    assert volume in compose["volumes"] and not read_only


# -- accounts: fares for claims and caps progress ----------------------------------------


def test_accounts_reaches_fares_by_its_compose_name(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = services["accounts"]["environment"]
    assert env["CLEARWAY_FARES_TARGET"] == f"fares:{GRPC_PORTS['fares']}"
    assert str(services["fares"]["environment"]["CLEARWAY_GRPC_PORT"]) == str(GRPC_PORTS["fares"])
    settings = settings_from_compose_env(services, "accounts", monkeypatch)
    # What `clearway serve accounts` reads: the target, and the stored-value settings
    # (their defaults, or what compose sets) pass their checks.
    assert AccountsApp(settings).fares_target == env["CLEARWAY_FARES_TARGET"]
    StoredValueSettings.from_env()
    # Accounts connects to fares on first use: it must not wait for it.
    assert "fares" not in services["accounts"]["depends_on"]


# -- portal: HTTP on 8080, accounts' client, a healthcheck without curl ------------------


def interpolated(value: str, environ: dict[str, str]) -> str:
    """A compose value with `${NAME:-default}` resolved as compose would."""
    match = INTERPOLATION.match(value)
    if not match:
        assert "$" not in value, f"unexpected interpolation in {value!r}"
        return value
    return environ.get(match["name"]) or match["default"]


def portal_env(services: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, str]:
    """The portal's environment as its container gets it (feed mapped to the repo copy)."""
    env = {
        key: interpolated(str(value), environ or {})
        for key, value in services["portal"]["environment"].items()
    }
    env["CLEARWAY_FEED_DIR"] = str(in_image(env["CLEARWAY_FEED_DIR"]))
    return env


def portal_settings(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, environ: dict[str, str] | None = None
) -> PortalSettings:
    for key in [k for k in os.environ if k.startswith("CLEARWAY_")]:
        monkeypatch.delenv(key)
    for key, value in portal_env(services, environ).items():
        monkeypatch.setenv(key, value)
    return PortalSettings.from_env()


def test_portal_serves_http_and_waits_for_accounts_to_be_healthy(
    services: dict[str, Any],
) -> None:
    portal = services["portal"]
    assert portal["command"] == ["serve", "portal"]
    assert portal["ports"] == [f"{PORTAL_PORT}:{PORTAL_PORT}"]
    assert str(portal["environment"]["CLEARWAY_PORTAL_PORT"]) == str(PORTAL_PORT)
    depends_on = {name: spec["condition"] for name, spec in portal["depends_on"].items()}
    assert depends_on == {"accounts": "service_healthy"}
    assert portal["stop_grace_period"] == "20s"
    assert portal["restart"] == "unless-stopped"
    assert "volumes" not in portal, "the portal keeps nothing"


def test_portal_settings_from_its_compose_environment(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = portal_settings(services, monkeypatch)
    assert settings.host == "0.0.0.0", "127.0.0.1 is unreachable from outside"
    assert settings.port == PORTAL_PORT
    host, _, port = settings.accounts_target.partition(":")
    assert host == "accounts" and host in services
    assert port == str(services["accounts"]["environment"]["CLEARWAY_GRPC_PORT"])
    assert settings.secure_cookies == "auto", "plain HTTP on a developer's machine"
    assert len(settings.secret) >= 32
    assert settings.stops, "no stops for the claim form: the feed is not where it points"
    env = services["portal"]["environment"]
    assert env["CLEARWAY_FEED_DIR"] == services["fares"]["environment"]["CLEARWAY_FEED_DIR"]
    # Nothing the portal does not read: no database, Kafka or Redis credentials.
    assert not {"CLEARWAY_PG_DSN", "CLEARWAY_KAFKA_BOOTSTRAP", "CLEARWAY_REDIS_URL"} & set(env)


def test_portal_secret_has_a_dev_only_default_the_environment_overrides(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    match = INTERPOLATION.match(services["portal"]["environment"]["CLEARWAY_PORTAL_SECRET"])
    assert match, "CLEARWAY_PORTAL_SECRET must be settable from the shell or .env"
    assert match["name"] == "CLEARWAY_PORTAL_SECRET"
    assert "dev" in match["default"] and len(match["default"]) >= 32
    mine = "s" * 48
    settings = portal_settings(services, monkeypatch, {"CLEARWAY_PORTAL_SECRET": mine})
    assert settings.secret == mine.encode()
    # The comment right above the setting says the default is for development only.
    lines = COMPOSE_FILE.read_text().splitlines()
    (at,) = [i for i, line in enumerate(lines) if "CLEARWAY_PORTAL_SECRET: ${" in line]
    comment = []
    while lines[at - 1 - len(comment)].lstrip().startswith("#"):
        comment.append(lines[at - 1 - len(comment)].lstrip(" #"))
    assert "development only" in " ".join(reversed(comment))


def test_portal_healthcheck_runs_python_not_curl_against_healthz(
    services: dict[str, Any],
) -> None:
    test = services["portal"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{PORTAL_PORT}/healthz" in test[3]
    assert services["portal"]["healthcheck"]["timeout"] == "5s"


async def run_healthcheck(services: dict[str, Any], port: int) -> int:
    """The portal's compose healthcheck, run here against `port`: its exit code."""
    _, python, *args = services["portal"]["healthcheck"]["test"]
    assert python == "python"  # the image's venv is first on its PATH
    args = [arg.replace(f":{PORTAL_PORT}/", f":{port}/") for arg in args]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=20)


async def test_portal_healthcheck_passes_only_while_accounts_is_serving(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer = health.HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    accounts_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = portal_settings(services, monkeypatch)
    portal = PortalApp(
        PortalSettings(
            host="127.0.0.1",
            port=0,
            accounts_target=f"127.0.0.1:{accounts_port}",
            secure_cookies=settings.secure_cookies,
            secret=settings.secret,
            stops=settings.stops,
        )
    )
    port = await portal.start()
    try:
        servicer.set(TRAVELLER_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await run_healthcheck(services, port) != 0, "healthy while accounts is not"
        servicer.set(TRAVELLER_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        assert await run_healthcheck(services, port) == 0
    finally:
        await portal.stop()
        await server.stop(grace=None)
