"""End to end: validator taps over gRPC → ingest → fares → settlement statements and
accounts history, all four services running against real Kafka, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.auth import OPERATIONS, Principal
from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.pki import secure_channel
from clearway.runtime import RunningService
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from clearway.telemetry import setup_tracing
from services.accounts.app import build as build_accounts
from services.accounts.entrypoints.cli import sign_in
from services.fares.app import build as build_fares
from services.ingest.app import build as build_ingest
from services.ingest.simulator.day import SimulatedDay
from services.ingest.simulator.stream import Tally, register_devices, send_day
from services.settlement.app import build as build_settlement

pytestmark = pytest.mark.integration
LONDON = ZoneInfo("Europe/London")
EXPORTER = InMemorySpanExporter()
setup_tracing("clearway-tests", [SimpleSpanProcessor(EXPORTER)])

CARD_A = "tok_e2ecarda0001"
CARD_B = "tok_e2ecardb0002"


def last_wednesday() -> date:
    """A recent Wednesday in the past: peak hours apply and taps are not too old."""
    day = datetime.now(UTC).date() - timedelta(days=1)
    while day.weekday() != 2:
        day -= timedelta(days=1)
    return day


def tap(
    device: str, seq: int, card: str, at: datetime, stop: str, kind: str, operator: str, route=""
) -> events_pb2.Tap:
    kinds = {
        "entry": events_pb2.TAP_KIND_ENTRY,
        "exit": events_pb2.TAP_KIND_EXIT,
        "board": events_pb2.TAP_KIND_BOARD,
    }
    message = events_pb2.Tap(
        device_id=device,
        sequence_number=seq,
        card_token=card,
        stop_id=stop,
        kind=kinds[kind],
        operator_id=operator,
        route_id=route,
    )
    message.tapped_at.FromDatetime(at.astimezone(UTC))
    return message


def the_day(day: date) -> SimulatedDay:
    """Two cards' day plus one malformed tap, grouped by validator device."""

    def at(hh: int, mm: int) -> datetime:
        return datetime.combine(day, time(hh, mm), LONDON)

    taps = [
        # Card A: Zone 1 peak on the Underground (2.90), then two buses within the Hopper hour.
        tap("gate-KGX", 1, CARD_A, at(8, 0), "KGX", "entry", "LUL"),
        tap("gate-OXC", 1, CARD_A, at(8, 20), "OXC", "exit", "LUL"),
        tap("bus-BUS_73", 1, CARD_A, at(9, 0), "CMD", "board", "BUSCO", "BUS_73"),
        tap("bus-BUS_390", 1, CARD_A, at(9, 30), "VIC", "board", "BUSCO", "BUS_390"),
        # Card B: Zones 2→1 off-peak (2.90), then an entry never followed by an exit (9.40).
        tap("gate-BRX", 1, CARD_B, at(10, 0), "BRX", "entry", "LUL"),
        tap("gate-KGX", 2, CARD_B, at(10, 30), "KGX", "exit", "LUL"),
        tap("gate-CMD", 1, CARD_B, at(18, 0), "CMD", "entry", "LUL"),
        # A broken validator sends a raw card number: rejected, never stored.
        tap("gate-OXC", 2, "4111111111111111", at(11, 0), "OXC", "entry", "LUL"),
    ]
    simulated = SimulatedDay(day)
    for t in taps:
        simulated.by_device.setdefault(t.device_id, []).append(t)
    # A flaky link resends card A's exit.
    resend = events_pb2.Tap()
    resend.CopyFrom(taps[1])
    simulated.by_device["gate-OXC"].insert(1, resend)
    return simulated


@dataclass
class Pipeline:
    ingest: int
    fares: int
    settlement: int
    accounts: int
    pki: Path
    ingest_admin: int

    async def send(self, day: SimulatedDay, validators: int) -> Tally:
        """Register the day's validators (again: nothing changes) and stream their taps,
        each batch signed by its device."""
        await register_devices(f"127.0.0.1:{self.ingest_admin}", self.pki, day.devices())
        return await send_day(
            f"127.0.0.1:{self.ingest}", day, validators=validators, pki_dir=self.pki
        )

    def channel(self, port: int) -> grpc.aio.Channel:
        if port == self.settlement:  # settlement's callers are parties and operations
            return secure_channel(f"127.0.0.1:{port}", self.pki, Principal("role", OPERATIONS))
        if port == self.ingest:  # validators: TLS, each batch signed by its device
            return secure_channel(f"127.0.0.1:{port}", self.pki, None)
        return grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
async def pipeline(settings_for, tmp_path: Path, pki: Path) -> AsyncIterator[Pipeline]:
    apps = [
        build_ingest(settings_for("ingest")),
        build_fares(settings_for("fares")),
        build_settlement(
            settings_for("settlement"),
            statements_dir=tmp_path / "statements",
            signing_key=pki / "signing.key.pem",
        ),
        build_accounts(settings_for("accounts")),
    ]
    running = [RunningService(app) for app in apps]
    ports = []
    try:
        for r in running:
            ports.append(await r.start())
        assert running[0].admin_port is not None
        yield Pipeline(*ports, pki, running[0].admin_port)
    finally:
        for r in reversed(running):
            await r.stop()


async def close_day(p: Pipeline, day: date) -> settlement_pb2.ClosePeriodResponse:
    async with p.channel(p.fares) as ch:
        await fares_pb2_grpc.FaresServiceStub(ch).CloseServiceDay(
            fares_pb2.CloseServiceDayRequest(service_day=day.isoformat()), timeout=90
        )
    async with p.channel(p.settlement) as ch:
        return await settlement_pb2_grpc.SettlementServiceStub(ch).ClosePeriod(
            settlement_pb2.ClosePeriodRequest(period_id=day.isoformat()), timeout=90
        )


async def history(p: Pipeline, card: str, want: int) -> list[accounts_pb2.ListJourneysResponse]:
    """All pages of a card's history once it holds `want` journeys (bounded wait)."""
    async with p.channel(p.accounts) as ch:
        stub = accounts_pb2_grpc.AccountsServiceStub(ch)
        # The card's owner: a traveller account that holds it (signed up once per test).
        owner = f"owner-{card.removeprefix('tok_')}@example.org"
        metadata = await sign_in(ch, owner, "the owner's password", sign_up=True, add_card=card)
        for _ in range(100):
            pages, token = [], ""
            while True:
                page = await stub.ListJourneys(
                    accounts_pb2.ListJourneysRequest(
                        card_token=card, page_size=1, page_token=token
                    ),
                    metadata=metadata,
                )
                pages.append(page)
                token = page.next_page_token
                if not token:
                    break
            journeys = [j for page in pages for j in page.journeys]
            if len(journeys) >= want and all(j.legs for j in journeys):
                return pages
            await asyncio.sleep(0.2)
    raise AssertionError(f"history of {card} never reached {want} journeys")


def view(pages: list[accounts_pb2.ListJourneysResponse]) -> list[tuple]:
    return [
        (
            tuple((leg.from_stop_id, leg.to_stop_id) for leg in j.legs),
            j.charge.amount_minor,
            j.incomplete,
        )
        for page in pages
        for j in page.journeys
    ]


def nets(response: settlement_pb2.ClosePeriodResponse) -> dict[str, int]:
    """Every party's net, leaving out the parties (in force) with nothing this period."""
    return {s.party_id: s.net.amount_minor for s in response.statements if s.line_count}


async def test_taps_reach_exact_statements_and_history(pipeline: Pipeline):
    day = last_wednesday()
    EXPORTER.clear()
    tally = await pipeline.send(the_day(day), validators=3)

    assert (tally.sent, tally.accepted, tally.duplicates) == (9, 7, 1)
    assert dict(tally.rejected) == {"RAW_CARD_NUMBER": 1}
    assert tally.accepted + tally.duplicates + tally.rejected_total == tally.sent

    closed = await close_day(pipeline, day)
    # A: 2.90 + 1.75 + 0.00 (Hopper); B: 2.90 + 9.40 maximum fare: 16.95 charged. The
    # example scheme's clearing fee is 1.5 % (half up) + 1p a journey: 4.35 -> 4 + 1 = 5
    # on each 2.90, 2.625 -> 3 + 1 = 4 on the 1.75, 14.1 -> 14 + 1 = 15 on the 9.40.
    # Every journey has one operator, so it gets the revenue less the fee.
    assert closed.total_charged.amount_minor == 1695
    assert closed.total_fees.amount_minor == 5 + 4 + 5 + 15
    assert closed.total_apportioned.amount_minor == 1695 - 29
    assert nets(closed) == {
        "scheme:clearway": -1695 + 29,
        "operator:LUL": (290 - 5) + (290 - 5) + (940 - 15),
        "operator:BUSCO": 175 - 4,
    }
    assert sum(nets(closed).values()) == 0
    for statement in closed.statements:
        assert Path(statement.path).is_dir()  # noqa: ASYNC240 (a test, not a server)

    pages_a = await history(pipeline, CARD_A, 2)
    assert view(pages_a) == [
        ((("CMD", ""), ("VIC", "")), 175, False),
        ((("KGX", "OXC"),), 290, False),
    ]
    assert len(pages_a) == 2 and pages_a[-1].next_page_token == ""
    pages_b = await history(pipeline, CARD_B, 2)
    assert view(pages_b) == [
        ((("CMD", ""),), 940, True),
        ((("BRX", "KGX"),), 290, False),
    ]


async def test_sending_the_same_batch_twice_changes_nothing(pipeline: Pipeline):
    day = last_wednesday()
    first = await pipeline.send(the_day(day), validators=3)
    closed_once = await close_day(pipeline, day)
    second = await pipeline.send(the_day(day), validators=3)
    closed_twice = await close_day(pipeline, day)

    assert first.accepted == 7
    assert (second.accepted, second.duplicates, dict(second.rejected)) == (
        0,
        8,
        {"RAW_CARD_NUMBER": 1},
    )
    assert nets(closed_twice) == nets(closed_once)
    assert sorted(s.sha256 for s in closed_twice.statements) == sorted(
        s.sha256 for s in closed_once.statements
    )
    assert view(await history(pipeline, CARD_A, 2)) == [
        ((("CMD", ""), ("VIC", "")), 175, False),
        ((("KGX", "OXC"),), 290, False),
    ]


async def test_a_simulator_trace_continues_through_kafka_into_fares_and_settlement(
    pipeline: Pipeline,
):
    day = last_wednesday()
    EXPORTER.clear()
    tally: Tally = await pipeline.send(the_day(day), validators=1)
    assert tally.accepted == 7
    await close_day(pipeline, day)
    await history(pipeline, CARD_A, 2)

    # Consumers process batches: each batch span links to the trace context of the
    # records it handled, and what it produces carries the batch span's context.
    spans = EXPORTER.get_finished_spans()
    roots = [s for s in spans if s.name == "simulator.send_day"]
    assert len(roots) == 1
    reached = {s.context.span_id for s in spans if s.context.trace_id == roots[0].context.trace_id}
    traces = {roots[0].context.trace_id}
    grown = True
    while grown:
        linked = {
            s.context.trace_id
            for s in spans
            if any(link.context.span_id in reached for link in s.links)
        }
        grown = not linked <= traces
        traces |= linked
        reached |= {s.context.span_id for s in spans if s.context.trace_id in traces}
    names = {s.name for s in spans if s.context.span_id in reached}
    assert {
        "clearway.ingest.v1.IngestService/StreamTaps",
        "ingest.accept_batch",
        "fares.price_taps process",
        "settlement.post_journeys process",
        "accounts.store_journeys process",
    } <= names
