"""The deny list against real Kafka: publisher, followers, the validators' door, the admin
calls."""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from clearway.auth import (
    OPERATIONS,
    PermissionDeniedError,
    Principal,
    UnauthenticatedError,
    acting_as,
)
from clearway.errors import ClearwayError
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.kafka import Topics, ensure_topics, idempotent_producer
from clearway.rpc import Readiness, ServiceInterceptor, Slot, reason_of
from services.ingest.adapters.deny_list_topic import DenyListFollower, DenyListPublisher
from services.ingest.domain.devices import (
    ASSERTION_CONTEXT,
    Device,
    DeviceKey,
    DeviceStatus,
    KeyStatus,
    key_id_of,
)
from services.ingest.entrypoints.deny_list import (
    DenyListAdminPorts,
    DenyListAdminServicer,
    DenyListDoor,
)

pytestmark = pytest.mark.integration

LOST = ingest_pb2.DENY_REASON_LOST_OR_STOLEN
FRAUD = ingest_pb2.DENY_REASON_FRAUD
CARD_A = "tok_aaaa1111bbbb"
CARD_B = "tok_cccc2222dddd"
CARD_C = "sc_04a2b9c1d25e80"
RAW_PAN = "4111111111111111"
DEVICE_ID = "gate-KGX-01"
WAIT_S = 5.0


class Devices:
    """An in-memory device registry (DeviceLookup)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Device] = {}

    async def device(self, device_id: str) -> Device | None:
        return self.by_id.get(device_id)

    def revoke(self, device_id: str) -> None:
        device = self.by_id[device_id]
        self.by_id[device_id] = Device(
            device.device_id,
            device.operator_id,
            device.allowed_stop_ids,
            device.allowed_route_ids,
            DeviceStatus.REVOKED,
            device.registered_at,
            device.keys,
            revoked_at=datetime.now(UTC),
            revoked_reason="stolen",
        )


class Validator:
    """A device with its Ed25519 key, signing assertions as a validator does."""

    def __init__(self, device_id: str = DEVICE_ID) -> None:
        self.device_id = device_id
        self.key = Ed25519PrivateKey.generate()
        self.public_key = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_of(self.public_key)

    def device(self) -> Device:
        at = datetime.now(UTC) - timedelta(days=1)
        return Device(
            self.device_id,
            "LU",
            frozenset({"KGX"}),
            frozenset(),
            DeviceStatus.ACTIVE,
            at,
            (DeviceKey(self.key_id, self.public_key, KeyStatus.ACTIVE, at),),
        )

    def credential(
        self,
        purpose: str = "deny-list",
        issued_at: datetime | None = None,
        device_id: str | None = None,
    ) -> ingest_pb2.SignedDeviceAssertion:
        assertion = ingest_pb2.DeviceAssertion(
            device_id=self.device_id if device_id is None else device_id, purpose=purpose
        )
        assertion.issued_at.FromDatetime(issued_at or datetime.now(UTC))
        raw = assertion.SerializeToString()
        return ingest_pb2.SignedDeviceAssertion(
            key_id=self.key_id, assertion=raw, signature=self.key.sign(ASSERTION_CONTEXT + raw)
        )


@pytest.fixture
async def topic(kafka_bootstrap: str, unique_name: str) -> str:
    name = Topics(prefix=f"{unique_name}.").denylist
    await ensure_topics(kafka_bootstrap, [name])
    return name


@pytest.fixture
async def publisher(kafka_bootstrap: str, topic: str) -> AsyncIterator[DenyListPublisher]:
    producer = idempotent_producer(kafka_bootstrap)
    await producer.start()
    try:
        yield DenyListPublisher(producer, topic)
    finally:
        await producer.stop()


@pytest.fixture
async def start_follower(kafka_bootstrap: str):
    """Start (and at the end stop) followers of a topic, each with its `run` task."""
    started: list[tuple[DenyListFollower, asyncio.Task[None]]] = []

    async def start(topic: str, **options: int) -> DenyListFollower:
        follower = DenyListFollower(kafka_bootstrap, topic, **options)
        await asyncio.wait_for(follower.start(), 60)
        started.append((follower, asyncio.create_task(follower.run())))
        return follower

    yield start
    for follower, task in started:
        await follower.stop()
        await asyncio.wait_for(task, 10)


@pytest.fixture
def validator() -> Validator:
    return Validator()


@pytest.fixture
def devices(validator: Validator) -> Devices:
    registry = Devices()
    registry.by_id[validator.device_id] = validator.device()
    return registry


@pytest.fixture(autouse=True)
def no_card_token_in_logs(caplog: pytest.LogCaptureFixture):
    """Whatever a test does, no card token (nor a card number) is ever logged."""
    caplog.set_level(logging.DEBUG)
    yield
    for secret in (CARD_A, CARD_B, CARD_C, RAW_PAN):
        assert secret not in caplog.text


async def _publish(publisher: DenyListPublisher, token: str, add: bool, reason: int = 0) -> int:
    return await publisher.publish(token, add, reason, "clearway:role/operations", _now())


def _now() -> datetime:
    return datetime.now(UTC)


async def _next(stream: AsyncIterator[ingest_pb2.SubscribeDenyListResponse]):
    return await asyncio.wait_for(anext(stream), WAIT_S)


# -- publisher and followers ---------------------------------------------------------------


async def test_a_started_follower_reflects_published_changes_with_their_versions(
    topic, publisher, start_follower
):
    follower = await start_follower(topic)
    assert follower.version == 0
    assert not follower.blocked(CARD_A)

    v1 = await _publish(publisher, CARD_A, True, LOST)
    v2 = await _publish(publisher, CARD_B, True, FRAUD)
    assert (v1, v2) == (1, 2)  # version = offset + 1 on the one partition
    assert await follower.wait_beyond(v1, WAIT_S)
    assert await follower.wait_beyond(v2 - 1, WAIT_S)
    assert follower.blocked(CARD_A) and follower.blocked(CARD_B)
    assert follower.version == v2

    v3 = await _publish(publisher, CARD_A, False)
    assert v3 == 3
    assert await follower.wait_beyond(v2, WAIT_S)
    assert not follower.blocked(CARD_A)
    assert follower.blocked(CARD_B)
    assert follower.version == v3
    assert [(e.card_token, e.reason, e.version) for e in follower.deny_list.entries()] == [
        (CARD_B, FRAUD, v2)
    ]


async def test_a_follower_started_later_rebuilds_the_same_list(topic, publisher, start_follower):
    first = await start_follower(topic)
    await _publish(publisher, CARD_A, True, LOST)
    await _publish(publisher, CARD_B, True, FRAUD)
    await _publish(publisher, CARD_C, True, LOST)
    last = await _publish(publisher, CARD_A, False)
    assert await first.wait_beyond(last - 1, WAIT_S)

    second = await start_follower(topic)  # start returns once it has read up to the end

    assert second.version == first.version == last
    assert second.deny_list.entries() == first.deny_list.entries()
    assert [e.card_token for e in second.deny_list.entries()] == [CARD_C, CARD_B]


async def test_wait_beyond_times_out_when_nothing_changes(topic, start_follower):
    follower = await start_follower(topic)
    assert not await follower.wait_beyond(0, 0.3)


async def test_a_record_that_does_not_decode_is_skipped_and_still_counts_as_a_version(
    topic, publisher, start_follower, caplog
):
    follower = await start_follower(topic)
    producer = publisher._producer
    v1 = await _publish(publisher, CARD_A, True, LOST)
    garbage = await producer.send_and_wait(topic, key=b"x", value=b"\xff\xff\xff", partition=0)
    wrong_key = events_pb2.DenyListChange(card_token=CARD_B, action=1, reason=LOST)
    mismatch = await producer.send_and_wait(
        topic, key=CARD_C.encode(), value=wrong_key.SerializeToString(), partition=0
    )
    assert await follower.wait_beyond(mismatch.offset, WAIT_S)

    assert follower.version == mismatch.offset + 1 == garbage.offset + 2 == v1 + 2
    assert [e.card_token for e in follower.deny_list.entries()] == [CARD_A]
    assert "deny-list change skipped" in caplog.text
    # A later follower rebuilds to the same version.
    again = await start_follower(topic)
    assert again.version == follower.version
    assert again.deny_list.entries() == follower.deny_list.entries()


async def test_stopping_the_follower_wakes_waiters(topic, start_follower):
    follower = await start_follower(topic)
    waiter = asyncio.create_task(follower.wait_beyond(0, 30))
    await asyncio.sleep(0.1)
    await follower.stop()
    assert await asyncio.wait_for(waiter, 2) is False
    assert follower.stopped


# -- the validators' door -------------------------------------------------------------------


async def test_get_returns_the_whole_list_sorted_with_its_version(
    topic, publisher, start_follower, devices, validator
):
    await _publish(publisher, CARD_B, True, FRAUD)
    await _publish(publisher, CARD_A, True, LOST)
    last = await _publish(publisher, CARD_C, True, LOST)
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now)

    reply = await door.get(ingest_pb2.GetDenyListRequest(credential=validator.credential()))

    assert reply.version == last
    assert [(e.card_token, e.reason, e.version) for e in reply.entries] == [
        (CARD_C, LOST, 3),
        (CARD_A, LOST, 2),
        (CARD_B, FRAUD, 1),
    ]
    assert all(e.HasField("added_at") for e in reply.entries)


async def test_a_subscription_receives_an_add_then_a_removal_within_seconds(
    topic, publisher, start_follower, devices, validator
):
    base = await _publish(publisher, CARD_B, True, FRAUD)
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now)
    request = ingest_pb2.SubscribeDenyListRequest(
        credential=validator.credential(), since_version=follower.version
    )
    stream = door.subscribe(request)
    first = asyncio.create_task(_next(stream))
    await asyncio.sleep(0.3)
    assert not first.done()  # up to date: nothing is sent until something changes

    added_at = await _publish(publisher, CARD_A, True, LOST)
    update = await first
    assert update.WhichOneof("change") == "added"
    assert (update.version, update.added.card_token, update.added.reason) == (
        added_at,
        CARD_A,
        LOST,
    )
    assert update.added.version == added_at

    removed_at = await _publish(publisher, CARD_A, False)
    update = await _next(stream)
    assert update.WhichOneof("change") == "removed_card_token"
    assert update.removed_card_token == CARD_A
    assert update.version == removed_at > added_at > base
    await stream.aclose()


async def test_a_subscription_from_a_kept_version_gets_the_changes_one_by_one(
    topic, publisher, start_follower, devices, validator
):
    v1 = await _publish(publisher, CARD_A, True, LOST)
    v2 = await _publish(publisher, CARD_B, True, FRAUD)
    v3 = await _publish(publisher, CARD_A, False)
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now)
    stream = door.subscribe(
        ingest_pb2.SubscribeDenyListRequest(credential=validator.credential(), since_version=v1)
    )
    updates = [await _next(stream), await _next(stream)]
    assert [(u.version, u.WhichOneof("change")) for u in updates] == [
        (v2, "added"),
        (v3, "removed_card_token"),
    ]
    await stream.aclose()


async def test_a_subscription_from_a_version_no_longer_kept_gets_a_snapshot_first(
    topic, publisher, start_follower, devices, validator
):
    v1 = await _publish(publisher, CARD_A, True, LOST)
    await _publish(publisher, CARD_B, True, FRAUD)
    await _publish(publisher, CARD_C, True, LOST)
    v4 = await _publish(publisher, CARD_A, False)
    follower = await start_follower(topic, max_changes=2)  # keeps changes 3 and 4 only
    door = DenyListDoor(follower, devices, _now)
    stream = door.subscribe(
        ingest_pb2.SubscribeDenyListRequest(credential=validator.credential(), since_version=v1)
    )

    first = await _next(stream)
    assert first.WhichOneof("change") == "snapshot"
    assert first.version == v4
    assert [e.card_token for e in first.snapshot.entries] == [CARD_C, CARD_B]

    v5 = await _publish(publisher, CARD_A, True, FRAUD)
    then = await _next(stream)
    assert (then.version, then.WhichOneof("change"), then.added.card_token) == (
        v5,
        "added",
        CARD_A,
    )
    await stream.aclose()


async def test_a_subscription_from_a_version_ahead_of_the_list_gets_a_snapshot(
    topic, publisher, start_follower, devices, validator
):
    v1 = await _publish(publisher, CARD_A, True, LOST)
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now)
    stream = door.subscribe(
        ingest_pb2.SubscribeDenyListRequest(credential=validator.credential(), since_version=99)
    )
    first = await _next(stream)
    assert (first.version, first.WhichOneof("change")) == (v1, "snapshot")
    assert [e.card_token for e in first.snapshot.entries] == [CARD_A]
    await stream.aclose()


async def test_a_revoked_device_s_subscription_ends_with_device_revoked(
    topic, start_follower, devices, validator
):
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now, recheck_s=0.2)
    stream = door.subscribe(
        ingest_pb2.SubscribeDenyListRequest(credential=validator.credential(), since_version=0)
    )
    pending = asyncio.create_task(_next(stream))
    await asyncio.sleep(0.3)
    assert not pending.done()

    devices.revoke(validator.device_id)
    with pytest.raises(ClearwayError) as refused:
        await pending
    assert (refused.value.code, refused.value.kind.value) == ("DEVICE_REVOKED", "PERMISSION_DENIED")


async def test_a_subscription_ends_cleanly_when_the_follower_stops(
    topic, start_follower, devices, validator
):
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now)
    stream = door.subscribe(
        ingest_pb2.SubscribeDenyListRequest(credential=validator.credential(), since_version=0)
    )
    pending = asyncio.create_task(_next(stream))
    await asyncio.sleep(0.2)
    await follower.stop()
    with pytest.raises(StopAsyncIteration):
        await pending


def _refusals(validator: Validator) -> list[tuple[str, object, str, str]]:
    """(case, credential, status kind, reason code) for credentials the door refuses."""
    stranger = Validator("gate-unknown")
    imposter = Validator()  # signs as the registered device with a key it does not have
    tampered = validator.credential()
    tampered.signature = bytes(64)
    other_key = imposter.credential()
    other_key.key_id = validator.key_id
    undecodable = validator.credential()
    undecodable.assertion = b"\xff\xff"
    undecodable.signature = validator.key.sign(ASSERTION_CONTEXT + undecodable.assertion)
    return [
        ("missing", None, "UNAUTHENTICATED", "MISSING_CREDENTIAL"),
        ("empty", ingest_pb2.SignedDeviceAssertion(), "UNAUTHENTICATED", "MISSING_CREDENTIAL"),
        ("undecodable", undecodable, "INVALID_ARGUMENT", "UNDECODABLE_ASSERTION"),
        (
            "stale",
            validator.credential(issued_at=_now() - timedelta(minutes=6)),
            "UNAUTHENTICATED",
            "STALE_ASSERTION",
        ),
        (
            "from the future",
            validator.credential(issued_at=_now() + timedelta(minutes=6)),
            "UNAUTHENTICATED",
            "STALE_ASSERTION",
        ),
        ("wrong purpose", validator.credential("taps"), "UNAUTHENTICATED", "WRONG_PURPOSE"),
        ("bad signature", tampered, "UNAUTHENTICATED", "BAD_SIGNATURE"),
        ("another key", other_key, "UNAUTHENTICATED", "BAD_SIGNATURE"),
        ("unknown key", imposter.credential(), "UNAUTHENTICATED", "UNKNOWN_KEY"),
        ("unknown device", stranger.credential(), "UNAUTHENTICATED", "UNKNOWN_DEVICE"),
    ]


async def test_credentials_that_do_not_prove_the_device_are_refused_with_their_codes(
    topic, start_follower, devices, validator
):
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now)
    for case, credential, kind, code in _refusals(validator):
        get = ingest_pb2.GetDenyListRequest(credential=credential)
        subscribe = ingest_pb2.SubscribeDenyListRequest(credential=credential)
        with pytest.raises(ClearwayError) as on_get:
            await door.get(get)
        with pytest.raises(ClearwayError) as on_subscribe:
            await _next(door.subscribe(subscribe))
        for refused in (on_get.value, on_subscribe.value):
            assert (refused.kind.value, refused.code) == (kind, code), case


async def test_a_revoked_device_is_refused(topic, start_follower, devices, validator):
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now)
    devices.revoke(validator.device_id)
    credential = validator.credential()
    for call in (
        door.get(ingest_pb2.GetDenyListRequest(credential=credential)),
        _next(door.subscribe(ingest_pb2.SubscribeDenyListRequest(credential=credential))),
    ):
        with pytest.raises(ClearwayError) as refused:
            await call
        assert (refused.value.kind.value, refused.value.code) == (
            "PERMISSION_DENIED",
            "DEVICE_REVOKED",
        )


async def test_over_grpc_refusals_carry_the_reason_code_and_updates_stream(
    topic, publisher, start_follower, devices, validator
):
    """Through a real server and the shared interceptor (as app.py will serve it)."""
    follower = await start_follower(topic)
    door = DenyListDoor(follower, devices, _now)

    class DenyListOnly(ingest_pb2_grpc.IngestServiceServicer):
        async def GetDenyList(self, request, context):
            return await door.get(request)

        async def SubscribeDenyList(self, request, context):
            async for update in door.subscribe(request):
                yield update

    readiness = Readiness()
    server = grpc.aio.server(interceptors=[ServiceInterceptor(readiness)])
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(DenyListOnly(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    readiness.open()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            stale = validator.credential(issued_at=_now() - timedelta(hours=1))
            call = stub.SubscribeDenyList(ingest_pb2.SubscribeDenyListRequest(credential=stale))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason_of(refused.value.trailing_metadata()) == "STALE_ASSERTION"

            call = stub.SubscribeDenyList(
                ingest_pb2.SubscribeDenyListRequest(credential=validator.credential())
            )
            await asyncio.sleep(0.3)  # subscribed before the change
            version = await _publish(publisher, CARD_A, True, LOST)
            update = await asyncio.wait_for(call.read(), WAIT_S)
            assert (update.version, update.added.card_token) == (version, CARD_A)
            call.cancel()

            reply = await stub.GetDenyList(
                ingest_pb2.GetDenyListRequest(credential=validator.credential())
            )
            assert (reply.version, [e.card_token for e in reply.entries]) == (version, [CARD_A])
    finally:
        readiness.close()
        await server.stop(1)


# -- the operations role's calls -------------------------------------------------------------


@pytest.fixture
def admin(publisher: DenyListPublisher) -> DenyListAdminServicer:
    slot: Slot[DenyListAdminPorts] = Slot("deny list admin")
    slot.fill(DenyListAdminPorts(publisher, _now))
    return DenyListAdminServicer(slot)


def _add(token: str, reason: int = LOST) -> ingest_pb2.AddDenyListEntryRequest:
    return ingest_pb2.AddDenyListEntryRequest(card_token=token, reason=reason)


def _remove(token: str) -> ingest_pb2.RemoveDenyListEntryRequest:
    return ingest_pb2.RemoveDenyListEntryRequest(card_token=token)


async def test_the_operations_role_adds_and_removes_cards(
    topic, admin, start_follower, kafka_bootstrap
):
    follower = await start_follower(topic)
    with acting_as(Principal("role", OPERATIONS)):
        added = await admin.AddDenyListEntry(_add(CARD_A, FRAUD), None)
        removed = await admin.RemoveDenyListEntry(_remove(CARD_A), None)
        again = await admin.RemoveDenyListEntry(_remove(CARD_A), None)  # not on the list: fine
    assert (added.version, removed.version, again.version) == (1, 2, 3)
    assert await follower.wait_beyond(2, WAIT_S)
    assert not follower.blocked(CARD_A)
    assert follower.version == 3

    # The records are the topic's contract: key = card token, value = a DenyListChange.
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        records = []
        while len(records) < 3:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            records.extend(batch.get(partition, []))
    finally:
        await consumer.stop()
    changes = [events_pb2.DenyListChange.FromString(r.value) for r in records]
    assert [r.key for r in records] == [CARD_A.encode()] * 3
    assert [(c.card_token, c.action, c.reason) for c in changes] == [
        (CARD_A, events_pb2.DenyListChange.ACTION_ADD, FRAUD),
        (CARD_A, events_pb2.DenyListChange.ACTION_REMOVE, 0),
        (CARD_A, events_pb2.DenyListChange.ACTION_REMOVE, 0),
    ]
    assert {c.changed_by for c in changes} == {"clearway:role/operations"}
    assert all(c.HasField("changed_at") for c in changes)


async def test_only_the_operations_role_may_change_the_list(admin):
    with acting_as(Principal("party", "operator:LUL")):
        with pytest.raises(PermissionDeniedError):
            await admin.AddDenyListEntry(_add(CARD_A), None)
        with pytest.raises(PermissionDeniedError):
            await admin.RemoveDenyListEntry(_remove(CARD_A), None)
    with acting_as(Principal("device", "gate-KGX-01")), pytest.raises(PermissionDeniedError):
        await admin.AddDenyListEntry(_add(CARD_A), None)
    with acting_as(None):
        with pytest.raises(UnauthenticatedError):
            await admin.AddDenyListEntry(_add(CARD_A), None)
        with pytest.raises(UnauthenticatedError):
            await admin.RemoveDenyListEntry(_remove(CARD_A), None)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (_add(""), "MISSING_CARD_TOKEN"),
        (_add(RAW_PAN), "RAW_CARD_NUMBER"),
        (_add("4111-1111-1111-1111"), "RAW_CARD_NUMBER"),
        (_add(f"tok_{RAW_PAN}x?"), "RAW_CARD_NUMBER"),
        (_add("not a token"), "BAD_CARD_TOKEN"),
        (_add("tok_" + "a" * 200), "BAD_CARD_TOKEN"),
        (_add(CARD_A, ingest_pb2.DENY_REASON_UNSPECIFIED), "MISSING_DENY_REASON"),
        (_add(CARD_A, 99), "BAD_DENY_REASON"),
        (_remove(""), "MISSING_CARD_TOKEN"),
        (_remove(RAW_PAN), "RAW_CARD_NUMBER"),
        (_remove("tok_\n1234"), "BAD_CARD_TOKEN"),
    ],
)
async def test_bad_admin_requests_are_refused_and_never_echo_a_card_number(
    admin, request_, code, topic, kafka_bootstrap
):
    with acting_as(Principal("role", OPERATIONS)):
        call = (
            admin.AddDenyListEntry
            if isinstance(request_, ingest_pb2.AddDenyListEntryRequest)
            else admin.RemoveDenyListEntry
        )
        with pytest.raises(ClearwayError) as refused:
            await call(request_, None)
    assert (refused.value.kind.value, refused.value.code) == ("INVALID_ARGUMENT", code)
    assert RAW_PAN not in str(refused.value)
    assert "4111-1111" not in str(refused.value)
    # Nothing was published.
    follower = DenyListFollower(kafka_bootstrap, topic)
    await follower.start()
    await follower.stop()
    assert follower.version == 0
