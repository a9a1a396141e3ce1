"""Fixtures for every test (tests/ and services/*/tests): real Kafka, PostgreSQL and Redis.

`endpoints` picks, in order:
1. the servers named by CLEARWAY_KAFKA_BOOTSTRAP / CLEARWAY_PG_DSN / CLEARWAY_REDIS_URL
   (all three set);
2. testcontainers, when a Docker engine answers (for the ones not named by env);
3. the project's own local infrastructure (`clearway infra up`, which also honours any
   of the variables that are set).
When none of these works the tests fail with the reason; they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import pytest

from clearway.infra.endpoints import (
    KAFKA_BOOTSTRAP_VAR,
    PG_DSN_VAR,
    REDIS_URL_VAR,
    Endpoints,
)
from clearway.infra.process import free_ports
from clearway.kafka import Topics
from clearway.settings import ServiceSettings

ENDPOINT_VARS = (KAFKA_BOOTSTRAP_VAR, PG_DSN_VAR, REDIS_URL_VAR)
# Confluent Platform 7.9 ships Apache Kafka 3.9, the version deploy/kafka/pom.xml pins;
# testcontainers' KafkaContainer drives Confluent's image.
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.1"
POSTGRES_IMAGE = "postgres:15"
REDIS_IMAGE = "redis:7"


@dataclass(frozen=True)
class InfraSession:
    """The servers this test session uses and how they were found."""

    endpoints: Endpoints
    source: str  # "env", "testcontainers" or "local"
    # Environment for subprocesses (e.g. `clearway infra ...`) meant to use the same servers.
    cli_env: dict[str, str] = field(default_factory=dict)


def _docker_unavailable_reason() -> str | None:
    try:
        import docker  # noqa: PLC0415 - only needed when probing for an engine

        docker.from_env().ping()
    except Exception as exc:  # any failure means "no usable engine"
        return f"{type(exc).__name__}: {exc}"
    return None


def _start_containers(stack: ExitStack, env: dict[str, str]) -> Endpoints:
    """Start a container for each component the environment does not name."""
    from_env = Endpoints.from_env(env)
    kafka, pg, redis_url = from_env.kafka_bootstrap, from_env.pg_dsn, from_env.redis_url
    if not env.get(KAFKA_BOOTSTRAP_VAR):
        from testcontainers.community.kafka import KafkaContainer  # noqa: PLC0415

        container = stack.enter_context(KafkaContainer(KAFKA_IMAGE).with_kraft())
        kafka = container.get_bootstrap_server()
    if not env.get(PG_DSN_VAR):
        from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415

        pg_container = stack.enter_context(
            PostgresContainer(
                POSTGRES_IMAGE,
                username="clearway",
                password="clearway",
                dbname="clearway",
                driver=None,
            )
        )
        pg = pg_container.get_connection_url()
    if not env.get(REDIS_URL_VAR):
        from testcontainers.community.redis import RedisContainer  # noqa: PLC0415

        redis_container = stack.enter_context(RedisContainer(REDIS_IMAGE))
        host = redis_container.get_container_host_ip()
        redis_url = f"redis://{host}:{redis_container.get_exposed_port(6379)}/0"
    return Endpoints(kafka_bootstrap=kafka, pg_dsn=pg, redis_url=redis_url)


@pytest.fixture(scope="session")
def infra_session() -> Iterator[InfraSession]:
    """Find or start Kafka, PostgreSQL and Redis once per test session."""
    env = dict(os.environ)
    if all(env.get(var) for var in ENDPOINT_VARS):
        yield InfraSession(Endpoints.from_env(env), "env", env)
        return

    docker_reason = _docker_unavailable_reason()
    if docker_reason is None:
        with ExitStack() as stack:
            try:
                endpoints = _start_containers(stack, env)
            except Exception as exc:
                pytest.fail(f"Docker answers but testcontainers failed: {exc!r}")
            cli_env = {**env, **endpoints.as_env()}
            # Code under test reads Endpoints.from_env(): point it at the containers.
            saved = {var: os.environ.get(var) for var in ENDPOINT_VARS}
            os.environ.update(endpoints.as_env())
            try:
                yield InfraSession(endpoints, "testcontainers", cli_env)
            finally:
                for var, value in saved.items():
                    if value is None:
                        os.environ.pop(var, None)
                    else:
                        os.environ[var] = value
        return

    from clearway.infra.manager import LocalInfra  # noqa: PLC0415
    from clearway.infra.process import InfraError  # noqa: PLC0415

    try:
        endpoints = LocalInfra(env=env).up()
    except InfraError as exc:
        pytest.fail(
            "no infrastructure for the tests: CLEARWAY_* endpoint variables are not all set, "
            f"no Docker engine ({docker_reason}), and `clearway infra up` failed: {exc}",
            pytrace=False,
        )
    # The local servers stay up after the session: developers and other runs reuse them.
    yield InfraSession(endpoints, "local", env)


@pytest.fixture(scope="session")
def endpoints(infra_session: InfraSession) -> Endpoints:
    """Addresses of the real Kafka, PostgreSQL and Redis for this session."""
    return infra_session.endpoints


@pytest.fixture(scope="session")
def kafka_bootstrap(endpoints: Endpoints) -> str:
    """Kafka bootstrap servers, host:port."""
    return endpoints.kafka_bootstrap


@pytest.fixture(scope="session")
def pg_dsn(endpoints: Endpoints) -> str:
    """PostgreSQL DSN (postgresql://user:password@host:port/db), usable by asyncpg."""
    return endpoints.pg_dsn


@pytest.fixture(scope="session")
def redis_url(endpoints: Endpoints) -> str:
    """Redis URL (redis://host:port/db), usable by redis.asyncio.Redis.from_url."""
    return endpoints.redis_url


SCHEME_PARTIES = (
    "operator:LUL",
    "operator:ELIZ",
    "operator:NATRAIL",
    "operator:BUSCO",
    "retailer:cornershop",
    "funder:camden",
    "scheme:clearway",
)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scheme PKI for the session: CA, server certificate, the signing key, and client
    certificates for the operations role and every party of the example scheme."""
    from clearway.auth import OPERATIONS, Principal  # noqa: PLC0415
    from clearway.pki import init_pki, issue_identity  # noqa: PLC0415

    directory = tmp_path_factory.mktemp("pki")
    init_pki(directory)
    issue_identity(Principal("role", OPERATIONS), directory)
    for party in SCHEME_PARTIES:
        issue_identity(Principal("party", party), directory)
    return directory


def tls_env(pki_dir: Path) -> dict[str, str]:
    """Environment of a service process serving mutual TLS with `pki_dir`'s certificates
    (and signing settlement files with its key)."""
    return {
        "CLEARWAY_TLS_CERT": str(pki_dir / "server.pem"),
        "CLEARWAY_TLS_KEY": str(pki_dir / "server.key.pem"),
        "CLEARWAY_TLS_CLIENT_CA": str(pki_dir / "ca.pem"),
        "CLEARWAY_PKI_DIR": str(pki_dir),
        "CLEARWAY_SIGNING_KEY": str(pki_dir / "signing.key.pem"),
    }


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh lowercase identifier for a per-test topic, schema, group or key prefix.

    After a test that used Kafka, the topics named with it are deleted: a broker keeps
    files open for every partition, and a whole run would otherwise leave thousands."""
    name = f"t{uuid4().hex[:10]}"
    yield name
    if "endpoints" in request.fixturenames:
        bootstrap = request.getfixturevalue("endpoints").kafka_bootstrap
        _delete_topics_soon(bootstrap, name)


def _delete_topics_soon(bootstrap: str, prefix: str) -> None:
    """Delete the test's topics in a thread of its own (the test's event loop is gone);
    a failure only leaves them behind."""
    from clearway.kafka import delete_topics_with_prefix  # noqa: PLC0415

    def work() -> None:
        with contextlib.suppress(Exception):
            asyncio.run(asyncio.wait_for(delete_topics_with_prefix(bootstrap, prefix), 15))

    worker = threading.Thread(target=work, name=f"delete topics {prefix}", daemon=True)
    worker.start()
    worker.join(20)


def service_settings(service: str, endpoints: Endpoints, pki: Path, name: str) -> ServiceSettings:
    """A service's settings under test, named `name`: real servers, topics prefixed
    `name.`, schema `name_service`, group `name-service`, port 0; settlement and ingest
    serve TLS with the session's PKI (`settings_for`, below, says why)."""
    tls: dict[str, object] = {}
    if service in ("settlement", "ingest"):
        tls = {
            "tls_cert": pki / "server.pem",
            "tls_key": pki / "server.key.pem",
            "tls_client_ca": pki / "ca.pem",
        }
    return dataclasses.replace(
        ServiceSettings.from_env(service),
        grpc_host="127.0.0.1",
        grpc_port=0,
        endpoints=endpoints,
        grace_seconds=3.0,
        topics=Topics(prefix=f"{name}."),
        db_schema=f"{name}_{service}",
        consumer_group=f"{name}-{service}",
        **tls,  # type: ignore[arg-type]
    )


@pytest.fixture
def settings_for(
    endpoints: Endpoints, unique_name: str, pki: Path
) -> Callable[[str], ServiceSettings]:
    """Settings for a service under test: real servers, its own topics, schema, group, port 0.

    All services built by one test share the topic prefix (so they talk to each other)
    but each gets its own PostgreSQL schema and consumer group. Settlement serves mutual
    TLS with the session's PKI (its callers are parties and the operations role); ingest
    serves TLS to validators and mutual TLS on its admin port (the operations role).
    """

    def make(service: str) -> ServiceSettings:
        return service_settings(service, endpoints, pki, unique_name)

    return make


def free_port() -> int:
    """One TCP port of 127.0.0.1 free now (see `free_ports`)."""
    return free_ports(1)[0]
