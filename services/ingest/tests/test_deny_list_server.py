"""The deny list over ingest's real gRPC server (real Kafka, Redis, PostgreSQL): the
operations role adds and removes cards on the admin port; a validator's subscription
receives each change within seconds; taps of a blocked card are still taken, flagged."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from clearway.auth import Principal
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.ingest.device_client import DeviceIdentity
from services.ingest.tests.ingest_harness import (
    CARD,
    Ingest,
    read_topic,
    start_ingest,
    status_of,
    tap,
    taps_on,
)

pytestmark = pytest.mark.integration

GATE = "gate-KSX-07"
LOST = ingest_pb2.DENY_REASON_LOST_OR_STOLEN
OTHER_CARD = "sc_04a2b9c1d25e80"


@pytest.fixture
async def ingest(settings_for, pki):
    service = await start_ingest(settings_for("ingest"), pki)
    await service.register(GATE)
    try:
        yield service
    finally:
        await service.stop()


async def add(ingest: Ingest, card: str, reason: int = LOST) -> int:
    async with ingest.admin_channel() as channel:
        reply = await ingest_pb2_grpc.DenyListAdminServiceStub(channel).AddDenyListEntry(
            ingest_pb2.AddDenyListEntryRequest(card_token=card, reason=reason)
        )
    return reply.version


async def remove(ingest: Ingest, card: str) -> int:
    async with ingest.admin_channel() as channel:
        reply = await ingest_pb2_grpc.DenyListAdminServiceStub(channel).RemoveDenyListEntry(
            ingest_pb2.RemoveDenyListEntryRequest(card_token=card)
        )
    return reply.version


async def test_add_and_remove_reach_a_subscribed_validator_within_seconds(ingest: Ingest):
    identity = ingest.devices[GATE]
    first = await add(ingest, OTHER_CARD)
    async with ingest.channel() as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        whole = await stub.GetDenyList(
            ingest_pb2.GetDenyListRequest(credential=identity.assertion())
        )
        assert whole.version == first
        assert [(e.card_token, e.reason) for e in whole.entries] == [(OTHER_CARD, LOST)]

        call = stub.SubscribeDenyList(
            ingest_pb2.SubscribeDenyListRequest(
                credential=identity.assertion(), since_version=whole.version
            )
        )
        added_at = time.monotonic()
        version = await add(ingest, CARD)
        update = await asyncio.wait_for(call.read(), 5)
        assert update.WhichOneof("change") == "added"
        assert (update.version, update.added.card_token, update.added.reason) == (
            version,
            CARD,
            LOST,
        )
        assert time.monotonic() - added_at < 5

        removed_at = time.monotonic()
        version = await remove(ingest, CARD)
        update = await asyncio.wait_for(call.read(), 5)
        assert update.WhichOneof("change") == "removed_card_token"
        assert (update.version, update.removed_card_token) == (version, CARD)
        assert time.monotonic() - removed_at < 5
        call.cancel()

        # A validator that was offline catches up from its version: only what it missed.
        late = stub.SubscribeDenyList(
            ingest_pb2.SubscribeDenyListRequest(
                credential=identity.assertion(), since_version=first
            )
        )
        missed = [await asyncio.wait_for(late.read(), 5) for _ in range(2)]
        late.cancel()
    assert [m.WhichOneof("change") for m in missed] == ["added", "removed_card_token"]


async def test_taps_of_a_blocked_card_are_accepted_and_flagged(ingest: Ingest, kafka_bootstrap):
    version = await add(ingest, CARD)
    identity = ingest.devices[GATE]
    async with ingest.channel() as channel:  # the admin call answers once Kafka holds it
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for _ in range(50):
            request = ingest_pb2.GetDenyListRequest(credential=identity.assertion())
            if (await stub.GetDenyList(request)).version >= version:
                break
            await asyncio.sleep(0.1)
    acks = await ingest.send(GATE, [tap(GATE, 1), tap(GATE, 2, card=OTHER_CARD)])
    assert [a.status for a in acks] == [ingest_pb2.ACK_STATUS_ACCEPTED] * 2
    assert (acks[0].card_blocked, acks[0].deny_list_version) == (True, version)
    assert not acks[1].card_blocked

    records = await read_topic(kafka_bootstrap, ingest.settings.topics.taps)
    stored = {t.sequence_number: t for t in taps_on(records)}
    assert stored[1].card_blocked and stored[1].deny_list_version == version
    assert not stored[2].card_blocked


async def test_only_registered_devices_with_a_fresh_assertion_may_read_the_list(ingest: Ingest):
    stranger = DeviceIdentity.generate("gate-unknown-1")
    identity = ingest.devices[GATE]
    async with ingest.channel() as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for credential, reason in [
            (stranger.assertion(), "UNKNOWN_DEVICE"),
            (identity.assertion(purpose="something-else"), "WRONG_PURPOSE"),
            (None, "MISSING_CREDENTIAL"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetDenyList(ingest_pb2.GetDenyListRequest(credential=credential))
            assert status_of(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, reason)


async def test_a_validator_cannot_change_the_list(ingest: Ingest):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with ingest.admin_channel(Principal("party", "operator:LUL")) as channel:
            await ingest_pb2_grpc.DenyListAdminServiceStub(channel).AddDenyListEntry(
                ingest_pb2.AddDenyListEntryRequest(card_token=CARD, reason=LOST)
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # And on the validators' port the admin service is not served to anyone.
    async with ingest.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ingest_pb2_grpc.DenyListAdminServiceStub(channel).AddDenyListEntry(
                ingest_pb2.AddDenyListEntryRequest(card_token=CARD, reason=LOST)
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
