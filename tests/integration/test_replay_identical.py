"""Invariant 5: replaying the taps topic from the start into empty stores produces
byte-identical statements."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiokafka import AIOKafkaProducer

from clearway.auth import OPERATIONS, Principal
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.kafka import Topics, ensure_topics
from clearway.pki import secure_channel
from clearway.runtime import RunningService
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.fares.app import DEFAULT_FEED, load_catalog
from services.fares.app import build as build_fares
from services.ingest.simulator.day import simulate_day
from services.settlement.app import build as build_settlement

pytestmark = pytest.mark.integration


async def settle(settings_for, prefix: str, taps, day: str, tmp_path, pki) -> dict[str, str]:
    """Taps (in this order) → fares → settlement in empty stores; party -> statement sha256."""

    def settings(service: str):
        return dataclasses.replace(
            settings_for(service),
            topics=Topics(prefix=f"{prefix}."),
            db_schema=f"{prefix}_{service}",
            consumer_group=f"{prefix}-{service}",
        )

    fares_settings = settings("fares")
    await ensure_topics(fares_settings.endpoints.kafka_bootstrap, fares_settings.topics.all())
    producer = AIOKafkaProducer(
        bootstrap_servers=fares_settings.endpoints.kafka_bootstrap, acks="all"
    )
    await producer.start()
    try:
        for t in taps:
            await producer.send(
                fares_settings.topics.taps, t.SerializeToString(), key=t.card_token.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
    fares = RunningService(build_fares(fares_settings))
    settlement = RunningService(
        build_settlement(
            settings("settlement"),
            statements_dir=tmp_path / prefix,
            signing_key=pki / "signing.key.pem",
        )
    )
    fares_port = await fares.start()
    settlement_port = await settlement.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{fares_port}") as ch:
            await fares_pb2_grpc.FaresServiceStub(ch).CloseServiceDay(
                fares_pb2.CloseServiceDayRequest(service_day=day), timeout=90
            )
        operations = Principal("role", OPERATIONS)
        async with secure_channel(f"127.0.0.1:{settlement_port}", pki, operations) as ch:
            closed = await settlement_pb2_grpc.SettlementServiceStub(ch).ClosePeriod(
                settlement_pb2.ClosePeriodRequest(period_id=day), timeout=90
            )
    finally:
        await settlement.stop()
        await fares.stop()
    return {s.party_id: s.sha256 for s in closed.statements}


async def test_replaying_the_taps_into_empty_stores_gives_byte_identical_statements(
    settings_for, unique_name, tmp_path, pki
):
    catalog = load_catalog([DEFAULT_FEED])
    day = (datetime.now(UTC) - timedelta(days=3)).date()
    simulated = simulate_day(catalog.versions[0], day, cards=40, seed=5)
    # Validators upload device by device: a card's taps arrive out of time order.
    taps = [t for device in sorted(simulated.by_device) for t in simulated.by_device[device]]
    for t in taps:
        t.tap_id = f"{t.device_id}:{t.sequence_number}"
    taps = [t for t in taps if t.card_token.startswith("tok_") and t.stop_id and t.kind]

    first = await settle(settings_for, f"{unique_name}a", taps, day.isoformat(), tmp_path, pki)
    replay = await settle(settings_for, f"{unique_name}b", taps, day.isoformat(), tmp_path, pki)

    assert len(first) >= 4  # the issuer and at least three operators
    assert replay == first
    root_a, root_b = tmp_path / f"{unique_name}a", tmp_path / f"{unique_name}b"
    a = {str(p.relative_to(root_a)): p.read_bytes() for p in root_a.rglob("*") if p.is_file()}
    b = {str(p.relative_to(root_b)): p.read_bytes() for p in root_b.rglob("*") if p.is_file()}
    assert len(a) >= 4 * 4  # every party's lines, summary, manifest and signature
    assert a == b
