"""The production Kafka ACLs, enforced by a real broker.

One single-node KRaft broker for this module, as test_kafka_tls's (mutual TLS, certificates
from `clearway.pki`), with Kafka's StandardAuthorizer (what Strimzi's `authorization:
simple` runs in KRaft). Each service gets a certificate whose user is the one Strimzi's
User Operator gives its KafkaUser, `CN=clearway-<service>` (`ssl.principal.mapping.rules`
strips the rest of our subject), the topics of kafka-topics.yaml are created, and the ACLs
of the rendered KafkaUsers (k8s/overlays/production) are created through the admin API, as
the User Operator does. Then:

- each service, started with its own certificate and its production topic names and
  consumer group, starts (ensure_topics, producers, ingest's transactional writer and
  followers, the consumer loop joining its group, settlement's lag probe);
- each service may produce to the topics its code writes (tests/deploy/test_kafka_acls.py
  reads them from services/<service>/app.py), and is refused every other topic;
- ingest may not even see the topics it does not use (journeys, topups, benefits,
  statements);
- nobody but ingest may use ingest's transactional ids, nor join another's group, nor
  create a topic.

The broker's own connections (the plaintext controller listener, the replication listener
without client certificates) are `User:ANONYMOUS`, a super user here as in any KRaft
cluster whose controller listener is plaintext; the services' listener requires a
certificate, so no client of it is anonymous. The shared plaintext broker is not touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.protocol.admin import CreateAclsRequest

from clearway.auth import Principal
from clearway.infra.endpoints import KAFKA_CA_VAR, KAFKA_CERT_VAR, KAFKA_KEY_VAR, Endpoints
from clearway.kafka import (
    KafkaTls,
    Topics,
    client_options,
    committed_consumer,
    ensure_topics,
    idempotent_producer,
    publish_many,
    transactional_producer,
)
from clearway.pki import PkiLayout, init_pki, issue_identity
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from services.accounts.app import build as build_accounts
from services.fares.app import build as build_fares
from services.ingest.app import build as build_ingest
from services.ingest.app import default_writer_id
from services.reports.adapters.topics import TopicNotFoundError, read_topic
from services.settlement.app import build as build_settlement
from tests.deploy.test_k8s_production import (
    BACKENDS,
    OVERLAY,
    REPORTS,
    kustomize,
    of_kind,
    settings_from,
)
from tests.deploy.test_kafka_acls import KafkaUse, kafka_use
from tests.integration.test_kafka_tls import mutual_tls_broker

pytestmark = pytest.mark.integration

STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ADMIN = Principal("role", "kafka-admin")  # the test's: a super user, as Strimzi's operators
# Our certificates' subject is `CN=<id>,OU=<kind>,O=Clearway`; Strimzi's are `CN=<user>`.
PRINCIPAL_MAPPING = r"RULE:^CN=([^,]+),OU=role,O=Clearway$/CN=$1/,DEFAULT"
# Kafka's codes (org.apache.kafka.common.resource / acl).
RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4, "transactionalId": 5}
PATTERN_TYPES = {"literal": 3, "prefix": 4}
OPERATIONS = {
    "Read": 3,
    "Write": 4,
    "Create": 5,
    "Delete": 6,
    "Alter": 7,
    "Describe": 8,
    "ClusterAction": 9,
    "DescribeConfigs": 10,
    "AlterConfigs": 11,
    "IdempotentWrite": 12,
}
ALLOW = 3


@dataclass(frozen=True)
class AclBroker:
    bootstrap: str
    pki: Path
    admin: KafkaTls
    users: dict[str, KafkaTls]  # service -> its KafkaUser's certificate
    uses: dict[str, KafkaUse]  # service -> what its code does on Kafka
    production: dict[str, ServiceSettings]  # service -> its settings in the overlay
    topics: list[str]  # every KafkaTopic of the overlay
    started_in_s: float

    def env(self, service: str) -> dict[str, str]:
        tls = self.users[service]
        assert tls.ca and tls.cert and tls.key
        return {
            KAFKA_CA_VAR: str(tls.ca),
            KAFKA_CERT_VAR: str(tls.cert),
            KAFKA_KEY_VAR: str(tls.key),
        }


def acl_creations(user: dict[str, Any]) -> Iterator[CreateAclsRequest]:
    """The KafkaUser's ACLs as the User Operator creates them: one binding per operation."""
    principal = f"User:CN={user['metadata']['name']}"
    for rule in user["spec"]["authorization"]["acls"]:
        resource = rule["resource"]
        for operation in rule["operations"]:
            yield CreateAclsRequest(
                RESOURCE_TYPES[resource["type"]],
                resource.get("name", "kafka-cluster"),
                PATTERN_TYPES[resource.get("patternType", "literal")],
                principal,
                rule.get("host", "*"),
                OPERATIONS[operation],
                ALLOW,
            )


async def set_up(bootstrap: str, admin: KafkaTls, docs: list[dict[str, Any]]) -> None:
    """As the admin (a super user): the overlay's topics (one partition each, one replica)
    and its KafkaUsers' ACLs."""
    client = AIOKafkaAdminClient(**client_options(bootstrap, admin))
    await client.start()
    try:
        topics = of_kind(docs, "KafkaTopic").values()
        await client.create_topics(
            [
                NewTopic(
                    t["spec"]["topicName"],
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={k: str(v) for k, v in t["spec"].get("config", {}).items()},
                )
                for t in topics
            ]
        )
        for user in of_kind(docs, "KafkaUser").values():
            for request in acl_creations(user):
                response = await client._send_request(request)  # no create_acls in aiokafka
                errors = [code for code, _ in response.creation_responses if code]
                assert not errors, (user["metadata"]["name"], errors)
    finally:
        await client.close()


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    directory = tmp_path_factory.mktemp("kafka-acls")
    pki = PkiLayout(directory / "pki")
    init_pki(pki.root)  # the server certificate names 127.0.0.1
    users: dict[str, KafkaTls] = {}
    for identity in (
        ADMIN,
        *(Principal("role", f"clearway-{name}") for name in (*BACKENDS, REPORTS)),
    ):
        issue_identity(identity, pki.root)
        stem = identity.file_stem
        tls = KafkaTls(ca=pki.ca_cert, cert=pki.client_cert(stem), key=pki.client_key(stem))
        users[identity.id.removeprefix("clearway-")] = tls
    admin = users.pop(ADMIN.id)
    broker = mutual_tls_broker(
        directory,
        pki,
        admin,
        {
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": f"User:ANONYMOUS;User:CN={ADMIN.id}",
            "ssl.principal.mapping.rules": PRINCIPAL_MAPPING,
        },
    )
    docs = kustomize(OVERLAY)
    with pytest.MonkeyPatch.context() as monkeypatch:
        uses = {name: kafka_use(name, docs, monkeypatch) for name in BACKENDS}
        production = {name: settings_from(docs, name, monkeypatch) for name in BACKENDS}
    started = time.monotonic()
    broker.start()
    try:
        asyncio.run(set_up(broker.bootstrap, admin, docs))
        topics = [t["spec"]["topicName"] for t in of_kind(docs, "KafkaTopic").values()]
        took = time.monotonic() - started
        yield AclBroker(broker.bootstrap, pki.root, admin, users, uses, production, topics, took)
    finally:
        broker.stop()


def as_service(broker: AclBroker, service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's Kafka clients present `service`'s certificate, as its pod's do."""
    for name, value in broker.env(service).items():
        monkeypatch.setenv(name, value)


# -- each service does what its code does --------------------------------------------------


def production_settings(
    service: str, broker: AclBroker, endpoints: Endpoints, prefix: str
) -> ServiceSettings:
    """The overlay's topic names and consumer group, on the ACL broker; PostgreSQL and
    Redis the session's, in a schema of this test's."""
    production = broker.production[service]
    return dataclasses.replace(
        ServiceSettings.from_env(service),
        topics=production.topics,
        consumer_group=production.consumer_group,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        endpoints=dataclasses.replace(endpoints, kafka_bootstrap=broker.bootstrap),
        grace_seconds=3.0,
        topic_partitions=1,
        db_schema=f"{prefix}_{service}",
    )


def build(service: str, settings: ServiceSettings, broker: AclBroker, tmp_path: Path) -> Any:
    if service == "ingest":
        tls = {
            "tls_cert": broker.pki / "server.pem",
            "tls_key": broker.pki / "server.key.pem",
            "tls_client_ca": broker.pki / "ca.pem",
        }
        return build_ingest(dataclasses.replace(settings, **tls))  # type: ignore[arg-type]
    if service == "fares":
        return build_fares(settings)
    if service == "settlement":
        tls = {
            "tls_cert": broker.pki / "server.pem",
            "tls_key": broker.pki / "server.key.pem",
            "tls_client_ca": broker.pki / "ca.pem",
        }
        return build_settlement(
            dataclasses.replace(settings, **tls),  # type: ignore[arg-type]
            statements_dir=tmp_path / "statements",
            signing_key=broker.pki / "signing.key.pem",
        )
    return build_accounts(settings)


async def admin_produce(broker: AclBroker, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**client_options(broker.bootstrap, broker.admin), acks="all")
    await producer.start()
    try:
        await publish_many(producer, topic, [(b"acl-test", value, [])])
    finally:
        await producer.stop()


Offsets = dict[TopicPartition, int]


async def admin_offsets(broker: AclBroker, group: str, topics: set[str]) -> tuple[Offsets, Offsets]:
    """(the group's committed offsets, the topics' end offsets), as the admin sees them."""
    admin = AIOKafkaAdminClient(**client_options(broker.bootstrap, broker.admin))
    probe = AIOKafkaConsumer(**client_options(broker.bootstrap, broker.admin))
    await admin.start()
    await probe.start()
    try:
        partitions = [TopicPartition(topic, 0) for topic in sorted(topics)]
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        ends = await probe.end_offsets(partitions)
        return {tp: meta.offset for tp, meta in committed.items()}, ends
    finally:
        await probe.stop()
        await admin.close()


async def visible_topics(bootstrap: str) -> set[str]:
    """The topics this process's Kafka identity may see (Describe)."""
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.parametrize("service", BACKENDS)
async def test_each_service_runs_with_only_its_acls(
    acl_broker: AclBroker,
    endpoints: Endpoints,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    service: str,
) -> None:
    use = acl_broker.uses[service]
    # A record no handler can decode on each topic the service's loop consumes: the kit
    # parks it on the service's dead-letter topic, with the service's producer, and commits.
    for topic in use.consumed:
        await admin_produce(acl_broker, topic, b"not a protobuf")
    as_service(acl_broker, service, monkeypatch)
    # Describe: a topic it cannot see, ensure_topics takes for missing (and cannot create).
    assert await visible_topics(acl_broker.bootstrap) == use.names
    settings = production_settings(service, acl_broker, endpoints, f"acl{uuid4().hex[:8]}")
    app = build(service, settings, acl_broker, tmp_path)
    running = RunningService(app)
    await running.start()
    try:
        loop = getattr(app, "loop", None)
        if loop is not None:
            # Its group joined, given its topics, offsets committed past the poison records,
            # which are on its dead-letter topics.
            deadline = asyncio.get_running_loop().time() + 20
            group = settings.consumer_group
            while True:
                committed, ends = await admin_offsets(acl_broker, group, use.consumed)
                if committed == ends and set(ends) == loop.consumer.assignment():
                    break
                assert asyncio.get_running_loop().time() < deadline, (service, committed, ends)
                await asyncio.sleep(0.2)
            assert loop.stats.dead_letters >= len(use.consumed)
            letters = {t for t in use.writes if t.endswith(f".{service}.dlq")}
            _, parked = await admin_offsets(acl_broker, group, letters)
            assert all(parked.values()), (service, parked)
        await asyncio.sleep(0.5)  # background loops (followers, relays) poll at least once
        died = [task.get_name() for task in running.resources.tasks if task.done()]
        assert not died, f"{service}: {died} ended"
        if service == "settlement":  # the lag probe: topics described, group offsets read
            assert await app.ports.get().lag.wait_caught_up(5) == 0
    finally:
        await running.stop()


@pytest.mark.parametrize("service", BACKENDS)
async def test_a_service_may_produce_to_its_own_topics_and_to_no_other(
    acl_broker: AclBroker, monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    as_service(acl_broker, service, monkeypatch)
    writes = acl_broker.uses[service].writes
    assert writes
    producer = idempotent_producer(acl_broker.bootstrap, request_timeout_ms=5_000)
    await producer.start()  # InitProducerId: Write on some topic suffices (no IdempotentWrite)
    try:
        for topic in acl_broker.topics:
            message = [(b"acl-test", b"from " + service.encode(), [])]
            if topic in writes:
                await publish_many(producer, topic, message)
            else:
                with pytest.raises(TopicAuthorizationFailedError):
                    await publish_many(producer, topic, message)
    finally:
        await producer.stop()


async def test_only_ingest_may_write_in_ingests_transactions(
    acl_broker: AclBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer_id = default_writer_id(Topics().prefix)
    as_service(acl_broker, "ingest", monkeypatch)
    producer = transactional_producer(acl_broker.bootstrap, writer_id)
    await producer.start()
    try:
        await producer.begin_transaction()
        for topic in (Topics().taps, Topics().taps_dlq, Topics().ingest_txns):
            await publish_many(producer, topic, [(b"acl-test", b"in a transaction", [])])
        await producer.commit_transaction()
    finally:
        await producer.stop()
    # accounts also writes `taps` (claims' correction taps), but not in transactions.
    as_service(acl_broker, "accounts", monkeypatch)
    stranger = transactional_producer(acl_broker.bootstrap, f"{writer_id}-x")
    with pytest.raises(TransactionalIdAuthorizationFailed):
        await stranger.start()
    await stranger.stop()


async def test_a_service_may_not_join_another_services_group(
    acl_broker: AclBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fares reads `taps` in its own group; in settlement's it is refused.
    as_service(acl_broker, "fares", monkeypatch)
    consumer = committed_consumer(acl_broker.bootstrap, "clearway-settlement", Topics().taps)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
            await consumer.getmany(timeout_ms=5_000)
    finally:
        await consumer.stop()


async def test_no_service_may_create_a_topic(
    acl_broker: AclBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in BACKENDS:
        as_service(acl_broker, service, monkeypatch)
        missing = f"acl{uuid4().hex[:8]}.{service}"
        # Refused at once, naming the topic (not a wait for a topic that will never be).
        started = asyncio.get_running_loop().time()
        with pytest.raises(KafkaError, match=f"topic {missing} is missing and the broker"):
            await ensure_topics(acl_broker.bootstrap, [missing], partitions=1, timeout_s=30)
        assert asyncio.get_running_loop().time() - started < 10
        admin = AIOKafkaAdminClient(**client_options(acl_broker.bootstrap, acl_broker.admin))
        await admin.start()
        try:
            assert missing not in await admin.list_topics()
        finally:
            await admin.close()


async def test_ingest_may_not_see_the_topics_it_does_not_use(
    acl_broker: AclBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest ensures at start only the topics it writes or follows: the others (their users
    create them) it may neither describe nor read."""
    as_service(acl_broker, "ingest", monkeypatch)
    topics = acl_broker.production["ingest"].topics
    unused = {topics.journeys, topics.topups, topics.benefits, topics.statements}
    assert unused <= set(acl_broker.topics)  # they exist; ingest is only not allowed them
    assert not unused & await visible_topics(acl_broker.bootstrap)
    for topic in sorted(unused):
        with pytest.raises(TopicNotFoundError):
            await read_topic(acl_broker.bootstrap, topic, lambda _: None)


async def test_the_reports_job_may_read_journeys_and_benefits_and_nothing_else(
    acl_broker: AclBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `clearway reports usage` does (services/reports/adapters/topics.py), with the
    reports job's certificate: both topics read whole, no group; any other topic is not
    even visible to it, and it may write none."""
    as_service(acl_broker, REPORTS, monkeypatch)
    topics = Topics()
    seen: list[bytes] = []
    for topic in (topics.journeys, topics.benefits):
        await read_topic(acl_broker.bootstrap, topic, seen.append)
    with pytest.raises(TopicNotFoundError):
        await read_topic(acl_broker.bootstrap, topics.topups, seen.append)
    producer = idempotent_producer(acl_broker.bootstrap, request_timeout_ms=5_000)
    try:
        # Write on no topic: not even a producer id (InitProducerId) for it.
        with pytest.raises(ClusterAuthorizationFailedError):
            await producer.start()
    finally:
        await producer.stop()
