"""Kafka plumbing shared by the services: topic names, topic creation, producers, consumers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from opentelemetry import metrics

from clearway.infra.endpoints import (
    FROM_ENV,
    KAFKA_CA_VAR,
    KAFKA_CERT_VAR,
    KAFKA_KEY_VAR,
    FromEnv,
    KafkaTls,
    kafka_tls_from_env,
    settings_error,
)
from clearway.telemetry import kafka_headers_with_trace

log = logging.getLogger(__name__)
_PUBLISHED = metrics.get_meter("clearway.kafka").create_counter(
    "clearway.kafka.published",
    unit="{message}",
    description="Messages Kafka acknowledged through publish_many, by topic",
)


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names; a prefix lets tests and several schemes share one cluster."""

    prefix: str = ""

    @property
    def taps(self) -> str:
        """Accepted taps, key = card token."""
        return f"{self.prefix}taps"

    @property
    def taps_dlq(self) -> str:
        """Taps ingest rejected, with their reason (dead letters), key = device id.

        Named by the one rule for dead-letter topics, `<topic>.<service>.dlq`.
        """
        return f"{self.taps}.ingest.dlq"

    @property
    def journeys(self) -> str:
        """Priced journeys and adjustments, key = card token."""
        return f"{self.prefix}journeys"

    @property
    def topups(self) -> str:
        """Top-ups of stored value sold by retailers, key = card token."""
        return f"{self.prefix}topups"

    @property
    def benefits(self) -> str:
        """Money moved by entitlements and rewards (redemptions at providers, rewards),
        `BenefitPosting`, key = posting id."""
        return f"{self.prefix}benefits"

    @property
    def statements(self) -> str:
        """Statements issued at period close, key = party id."""
        return f"{self.prefix}statements"

    @property
    def ingest_txns(self) -> str:
        """Ingest's commit log: the token of every committed write of taps (one partition,
        kept a day): how a write whose outcome was not seen is settled."""
        return f"{self.prefix}ingest.txns"

    @property
    def denylist(self) -> str:
        """Changes to the deny list of card tokens, key = card token (one partition, so its
        offsets number the list's versions; compacted, so it is kept whole)."""
        return f"{self.prefix}denylist"

    @property
    def concessions(self) -> str:
        """Cards' travel-pass concessions (`CardConcession`), key = card token; a record
        without a value (a tombstone) ends the card's concession (one partition, like the
        deny list; compacted, so it holds each card's latest state)."""
        return f"{self.prefix}concessions"

    def all(self) -> list[str]:
        """Every topic Clearway uses."""
        return [
            self.taps,
            self.taps_dlq,
            self.journeys,
            self.topups,
            self.benefits,
            self.statements,
            self.ingest_txns,
            self.denylist,
            self.concessions,
        ]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic's partition count and configuration, when not the defaults."""

    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


# Topics (by name without the prefix) that are not created with the defaults.
SPECIAL_TOPICS = {
    "ingest.txns": TopicSpec(1, {"retention.ms": str(24 * 3600 * 1000)}),
    "denylist": TopicSpec(
        1, {"cleanup.policy": "compact", "min.compaction.lag.ms": str(3600 * 1000)}
    ),
    "concessions": TopicSpec(
        1, {"cleanup.policy": "compact", "min.compaction.lag.ms": str(3600 * 1000)}
    ),
}


def topic_spec(name: str) -> TopicSpec | None:
    """How topic `name` (with any prefix) is created, when not with the defaults."""
    for suffix, spec in SPECIAL_TOPICS.items():
        if name.endswith(suffix):
            return spec
    return None


DEFAULT_PARTITIONS = 6


# -- connecting: plaintext, or TLS (mutual with a client certificate) ----------------------


def client_options(bootstrap: str, tls: KafkaTls | FromEnv | None = FROM_ENV) -> dict[str, Any]:
    """The connection options of every Kafka client Clearway makes (producer, consumer,
    admin): `bootstrap_servers`, and with TLS `security_protocol="SSL"` and the (cached)
    `ssl_context`. `tls` defaults to the environment's (`kafka_tls_from_env`); None is
    plaintext."""
    if isinstance(tls, FromEnv):
        tls = kafka_tls_from_env()
    if tls is None:
        return {"bootstrap_servers": bootstrap}
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SSL",
        "ssl_context": ssl_context(tls),
    }


@functools.lru_cache(maxsize=8)
def ssl_context(tls: KafkaTls) -> ssl.SSLContext:
    """The client SSL context for `tls` (broker certificate and host name verified), built
    once per process and shared by every client: the files are read at the first client, so
    a renewed certificate takes effect at the next restart. Unreadable or unusable files
    are a SettingsError naming the variable (never quoting the file)."""
    for var, path in ((KAFKA_CA_VAR, tls.ca), (KAFKA_CERT_VAR, tls.cert), (KAFKA_KEY_VAR, tls.key)):
        if path is not None and not path.is_file():
            raise settings_error(f"{var}: no such file {path}")
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=tls.ca)
    except (OSError, ssl.SSLError) as exc:
        raise settings_error(
            f"{KAFKA_CA_VAR}: {tls.ca} holds no usable CA certificate ({_reason(exc)})"
        ) from None
    if tls.cert is not None and tls.key is not None:
        try:
            context.load_cert_chain(tls.cert, tls.key, password=_refuse_encrypted_key)
        except (OSError, ssl.SSLError, _EncryptedKeyError) as exc:
            raise settings_error(
                f"{KAFKA_CERT_VAR} and {KAFKA_KEY_VAR}: {tls.cert} and {tls.key} are not a PEM"
                f" certificate and its unencrypted private key ({_reason(exc)})"
            ) from None
    return context


class _EncryptedKeyError(Exception):
    """The key asks for a password: the process would otherwise prompt on its terminal."""


def _refuse_encrypted_key() -> str:
    raise _EncryptedKeyError("the key is encrypted")


def _reason(exc: BaseException) -> str:
    """What went wrong, without the file's contents (ssl and OSError never quote them)."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.args[-1])
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = DEFAULT_PARTITIONS,
    timeout_s: float = 60.0,
) -> None:
    """Create the topics that do not exist yet (replication factor 1 locally), with
    `partitions` partitions unless `topic_spec` says otherwise."""
    wanted = list(names)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(**client_options(bootstrap))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in wanted if n not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    created = await admin.create_topics(
                        [_new_topic(n, partitions) for n in missing]
                    )
                    _raise_refusals(created)
                await _await_leaders(admin, missing, deadline)
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


def _raise_refusals(response: object) -> None:
    """The broker answers a CreateTopics it refuses (no Create permission, a bad setting)
    per topic inside its response, and aiokafka does not raise it: raise the first refusal
    here, naming the topic, rather than wait for leaders of a topic that will never be. A
    topic another client created meanwhile is no refusal."""
    for entry in getattr(response, "topic_errors", ()):
        name, code = entry[0], entry[1]
        if code not in (0, TopicAlreadyExistsError.errno):
            error = for_code(code)
            raise error(
                f"topic {name} is missing and the broker refused to create it "
                f"({error.__name__}); declare it (k8s: a KafkaTopic) or grant Create"
            )


async def _await_leaders(admin: AIOKafkaAdminClient, names: list[str], deadline: float) -> None:
    """Until every partition of the new topics `names` has a leader, so that the first
    consumer or producer does not meet NotLeaderForPartition (which aiokafka's fetcher logs
    as an ERROR) while the broker is still taking them on; at most until `deadline`."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        topics = await admin.describe_topics(names)
        if len(topics) == len(names) and all(_led(topic) for topic in topics):
            return
        await asyncio.sleep(0.1)


def _led(topic: Mapping[str, object]) -> bool:
    partitions = topic.get("partitions")
    return (
        topic.get("error_code") == 0
        and isinstance(partitions, list)
        and bool(partitions)
        and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in partitions)
    )


async def delete_topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a run's or a test's topics, so a
    broker does not keep thousands of partitions open); the names deleted."""
    if not prefix:
        raise ValueError("a prefix is required: this never deletes every topic")
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    try:
        await admin.start()
        doomed = sorted(n for n in await admin.list_topics() if n.startswith(prefix))
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


def _new_topic(name: str, partitions: int) -> NewTopic:
    spec = topic_spec(name)
    if spec is None:
        return NewTopic(name, num_partitions=partitions, replication_factor=1)
    return NewTopic(
        name,
        num_partitions=spec.partitions,
        replication_factor=1,
        topic_configs=dict(spec.configs),
    )


def idempotent_producer(bootstrap: str, **overrides: object) -> AIOKafkaProducer:
    """A producer that only acknowledges what every in-sync replica took, without duplicates."""
    options: dict[str, object] = {
        **client_options(bootstrap),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def transactional_producer(bootstrap: str, transactional_id: str) -> AIOKafkaProducer:
    """A producer whose sends and consumer-offset commits are atomic (exactly-once effect)."""
    return idempotent_producer(bootstrap, transactional_id=transactional_id, linger_ms=0)


def committed_consumer(bootstrap: str, group_id: str, *topics: str) -> AIOKafkaConsumer:
    """A group consumer that reads only committed records and commits offsets explicitly."""
    return AIOKafkaConsumer(
        *topics,
        **client_options(bootstrap),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` (murmur2, as the Java client)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


async def publish_many(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Sequence[tuple[bytes, bytes | None, list[tuple[str, bytes]]]],
) -> None:
    """Send (key, value, headers) messages and return once Kafka holds every one (acks as
    the producer is configured); raises the first failure. A None value is a tombstone
    (a compacted topic forgets the key).

    Messages are packed into record batches per partition (the partition of their key, as
    the default partitioner picks it) and handed to the producer whole: much cheaper per
    message than one `send` each. Order is kept within each key.
    """
    if not messages:
        return
    count = len(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]] = {}
    known: dict[bytes, int] = {}
    for message in messages:
        key = message[0]
        partition = known.get(key)
        if partition is None:
            partition = known[key] = partition_for(key, count)
        by_partition.setdefault(partition, []).append(message)
    futures = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise MessageSizeTooLargeError(f"a message of {len(value or b'')} bytes")
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)
    # Fares' journey revisions, ingest's taps, accounts' outbox all come this way. Counted
    # once acknowledged: a resend after a crash counts again, and a transactional
    # producer's messages count before (and whether or not) their transaction commits.
    _PUBLISHED.add(len(messages), {"messaging.destination.name": topic})


REASON_HEADER = "clearway-reason"
DETAIL_HEADER = "clearway-reason-detail"
MAX_DETAIL_BYTES = 1000


def dead_letter_headers(
    code: str,
    detail: str,
    original: Iterable[tuple[str, bytes]] = (),
    source: tuple[str, int, int] | None = None,
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: the original's (minus old reasons), the reason code and
    detail, where it came from (topic, partition, offset), and the current trace context."""
    headers = [(k, bytes(v)) for k, v in original if not k.startswith("clearway-")]
    headers = [h for h in headers if h[0] != "traceparent" and h[0] != "tracestate"]
    headers += [(REASON_HEADER, code.encode()), (DETAIL_HEADER, detail.encode()[:MAX_DETAIL_BYTES])]
    if source is not None:
        topic, partition, offset = source
        headers += [
            ("clearway-source-topic", topic.encode()),
            ("clearway-source-partition", str(partition).encode()),
            ("clearway-source-offset", str(offset).encode()),
        ]
    return headers + kafka_headers_with_trace()


async def send_dead_letter(
    producer: AIOKafkaProducer,
    topic: str,
    record: ConsumerRecord[bytes, bytes],
    code: str,
    detail: str,
) -> None:
    """Park `record` unchanged on `topic` with its reason; returns once Kafka has it."""
    headers = dead_letter_headers(
        code, detail, record.headers or (), (record.topic, record.partition, record.offset)
    )
    await producer.send_and_wait(topic, value=record.value, key=record.key, headers=headers)
