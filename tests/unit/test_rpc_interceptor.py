"""The shared RPC interceptor, through a real grpc.aio server started by `RunningService`:
domain errors become their status with a `reason-code` trailer, outages UNAVAILABLE,
anything else INTERNAL; the readiness gate; the server span continues the caller's trace;
a client that goes away is not an ERROR."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from clearway.errors import ClearwayError, ErrorKind
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.rpc import REASON_METADATA_KEY, reason_of
from clearway.runtime import Resources, RunningService
from clearway.settings import ServiceSettings
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from clearway.telemetry import grpc_metadata_with_trace, setup_tracing

EXPORTER = InMemorySpanExporter()
setup_tracing("clearway-tests", [SimpleSpanProcessor(EXPORTER)])

FARES = "clearway.fares.v1.FaresService"
SETTLEMENT = "clearway.settlement.v1.SettlementService"
INGEST = "clearway.ingest.v1.IngestService"
SECRET = "password=hunter2 at db.internal:5432"


class ThingMissingError(ClearwayError):
    code = "THING_MISSING"
    kind = ErrorKind.NOT_FOUND


class BadThingError(ClearwayError):
    """Default kind: a client mistake."""

    code = "BAD_THING"


# QuoteFare raises what its rider_category_id names ("" answers normally).
FAILURES: dict[str, Callable[[], BaseException]] = {
    "not-found": lambda: ThingMissingError("thing 42 is not here"),
    "default-kind": lambda: BadThingError("that thing is wrong"),
    "code-override": lambda: ClearwayError("overridden", code="CUSTOM_CODE"),
    "refused": lambda: ConnectionRefusedError(111, "Connection refused"),
    "pg-starting": lambda: asyncpg.exceptions.CannotConnectNowError("the database is starting"),
    "pg-shutdown": lambda: asyncpg.exceptions.AdminShutdownError("terminating connection"),
    "runtime": lambda: RuntimeError(SECRET),
    "key": lambda: KeyError(SECRET),
}


class Fares(fares_pb2_grpc.FaresServiceServicer):
    def __init__(self) -> None:
        self.calls = 0
        self.sleeping = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def QuoteFare(self, request, context):
        self.calls += 1
        failure = FAILURES.get(request.rider_category_id)
        if failure is not None:
            raise failure()
        return fares_pb2.QuoteFareResponse()

    async def CloseServiceDay(self, request, context):
        # A long unary call the client gives up on.
        self.sleeping.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return fares_pb2.CloseServiceDayResponse(service_day=request.service_day)


class Settlement(settlement_pb2_grpc.SettlementServiceServicer):
    """A server stream: endless chunks, or a domain error after two chunks."""

    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def DownloadStatementLines(self, request, context):
        try:
            line = 0
            while True:
                if request.party_id == "fail-after-two" and line == 2:
                    raise ThingMissingError("statement vanished")
                yield settlement_pb2.DownloadStatementLinesResponse(first_line=line)
                line += 1
                await asyncio.sleep(0.01)
        finally:
            self.finished.set()


class Ingest(ingest_pb2_grpc.IngestServiceServicer):
    """A bidi stream: one (empty) answer per request, until the client goes."""

    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def StreamTaps(self, request_iterator, context):
        try:
            async for _ in request_iterator:
                yield ingest_pb2.StreamTapsResponse()
        finally:
            self.finished.set()


@dataclasses.dataclass
class ProbeService:
    """A service made of generated servicer bases; `start` may be held on an event."""

    settings: ServiceSettings
    hold: asyncio.Event | None = None
    starting: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    fares: Fares = dataclasses.field(default_factory=Fares)
    settlement: Settlement = dataclasses.field(default_factory=Settlement)
    ingest: Ingest = dataclasses.field(default_factory=Ingest)

    @property
    def grpc_service_names(self) -> list[str]:
        return [FARES, SETTLEMENT, INGEST]

    def register(self, server: grpc.aio.Server) -> None:
        fares_pb2_grpc.add_FaresServiceServicer_to_server(self.fares, server)
        settlement_pb2_grpc.add_SettlementServiceServicer_to_server(self.settlement, server)
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(self.ingest, server)

    async def start(self, resources: Resources) -> None:
        self.starting.set()
        if self.hold is not None:
            await self.hold.wait()


def probe_settings() -> ServiceSettings:
    return dataclasses.replace(
        ServiceSettings.from_env("probe"), grpc_host="127.0.0.1", grpc_port=0, grace_seconds=0.5
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[ProbeService, grpc.aio.Channel]]:
    service = ProbeService(probe_settings())
    running = RunningService(service)
    port = await running.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield service, channel
    finally:
        await channel.close()
        await running.stop()


async def quote(channel: grpc.aio.Channel, failure: str, **kwargs) -> fares_pb2.QuoteFareResponse:
    stub = fares_pb2_grpc.FaresServiceStub(channel)
    return await stub.QuoteFare(
        fares_pb2.QuoteFareRequest(rider_category_id=failure), timeout=10, **kwargs
    )


async def failed(channel: grpc.aio.Channel, failure: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await quote(channel, failure)
    return raised.value


async def health(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return reply.status


async def reflected_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names: set[str] = set()
    async for reply in call:
        names |= {s.name for s in reply.list_services_response.service}
    return names


def spans_named(name: str) -> Iterator[ReadableSpan]:
    return (s for s in EXPORTER.get_finished_spans() if s.name == name)


async def server_span(name: str) -> ReadableSpan:
    """The one finished span called `name`. The server ends its span after the status has
    gone out, so the client can hold the answer a moment before the span is exported."""
    for _ in range(200):
        spans = list(spans_named(name))
        if spans:
            [span] = spans
            return span
        await asyncio.sleep(0.01)
    raise AssertionError(f"no finished span named {name} within 2 s")


# -- error mapping ---------------------------------------------------------------------


async def test_a_domain_error_becomes_its_kind_with_the_code_in_trailer_and_details(served):
    _, channel = served
    EXPORTER.clear()

    error = await failed(channel, "not-found")

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "THING_MISSING: thing 42 is not here"
    assert (REASON_METADATA_KEY, "THING_MISSING") in tuple(error.trailing_metadata())
    assert reason_of(error.trailing_metadata()) == "THING_MISSING"
    span = await server_span(f"{FARES}/QuoteFare")
    assert span.attributes["clearway.reason_code"] == "THING_MISSING"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.attributes["rpc.method"] == "QuoteFare"
    # A client's mistake is not a server error (OpenTelemetry's RPC conventions).
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("failure", "status", "reason"),
    [
        ("default-kind", grpc.StatusCode.INVALID_ARGUMENT, "BAD_THING"),
        ("code-override", grpc.StatusCode.INVALID_ARGUMENT, "CUSTOM_CODE"),
    ],
)
async def test_a_domain_error_of_the_default_kind_is_invalid_argument(
    served, failure, status, reason
):
    _, channel = served

    error = await failed(channel, failure)

    assert error.code() == status
    assert error.details().startswith(f"{reason}: ")
    assert reason_of(error.trailing_metadata()) == reason


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("refused", "NETWORK_UNAVAILABLE"),
        ("pg-starting", "DATABASE_UNAVAILABLE"),
        ("pg-shutdown", "DATABASE_UNAVAILABLE"),
    ],
)
async def test_an_outage_is_unavailable_with_its_reason(served, failure, reason, caplog):
    _, channel = served
    caplog.set_level(logging.DEBUG)

    error = await failed(channel, failure)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(error.trailing_metadata()) == reason
    assert error.details().startswith(f"{reason}: ")
    # An outage is expected weather, not a bug: a warning, never an ERROR.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("failure", ["runtime", "key"])
async def test_an_unexpected_error_is_internal_and_hides_its_text(served, failure, caplog):
    _, channel = served
    caplog.set_level(logging.DEBUG)

    error = await failed(channel, failure)

    assert error.code() == grpc.StatusCode.INTERNAL  # never UNKNOWN
    assert reason_of(error.trailing_metadata()) == "INTERNAL"
    assert error.details().startswith("INTERNAL: ")
    assert "hunter2" not in error.details()
    assert "hunter2" not in str(tuple(error.trailing_metadata()))
    # The server keeps the traceback for itself.
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert logged, "an unexpected error must be logged with its traceback"


async def test_a_server_error_marks_the_span_as_an_error(served):
    _, channel = served
    EXPORTER.clear()

    await failed(channel, "runtime")

    span = await server_span(f"{FARES}/QuoteFare")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["clearway.reason_code"] == "INTERNAL"


async def test_a_successful_call_still_answers_and_the_servicer_ran(served):
    service, channel = served
    before = service.fares.calls

    reply = await quote(channel, "")

    assert reply == fares_pb2.QuoteFareResponse()
    assert service.fares.calls == before + 1


async def test_a_domain_error_in_the_middle_of_a_server_stream_keeps_its_code(served):
    _, channel = served
    stub = settlement_pb2_grpc.SettlementServiceStub(channel)
    call = stub.DownloadStatementLines(
        settlement_pb2.DownloadStatementLinesRequest(party_id="fail-after-two"), timeout=10
    )
    received = []

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for chunk in call:
            received.append(chunk.first_line)

    assert received == [0, 1]
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(raised.value.trailing_metadata()) == "THING_MISSING"


# -- the readiness gate ----------------------------------------------------------------


async def test_calls_are_refused_not_ready_until_start_returns_but_health_answers():
    hold = asyncio.Event()
    service = ProbeService(probe_settings(), hold=hold)
    running = RunningService(service)
    starting = asyncio.create_task(running.start())
    try:
        await asyncio.wait_for(service.starting.wait(), 10)
        assert not starting.done()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            # Health and reflection answer (NOT_SERVING) while the service starts.
            assert await health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await health(channel, FARES) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert {FARES, SETTLEMENT, INGEST} <= await reflected_services(channel)

            error = await failed(channel, "")
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert reason_of(error.trailing_metadata()) == "NOT_READY"
            assert error.details().startswith("NOT_READY: ")
            assert service.fares.calls == 0, "the gate must stop the call before the servicer"

            stream = settlement_pb2_grpc.SettlementServiceStub(channel).DownloadStatementLines(
                settlement_pb2.DownloadStatementLinesRequest(), timeout=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in stream:
                    pass
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert reason_of(raised.value.trailing_metadata()) == "NOT_READY"

            hold.set()
            assert await asyncio.wait_for(starting, 10) == running.port

            assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
            assert await health(channel, FARES) == health_pb2.HealthCheckResponse.SERVING
            assert await quote(channel, "") == fares_pb2.QuoteFareResponse()
            assert service.fares.calls == 1
    finally:
        hold.set()
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await running.stop()


# -- trace context ---------------------------------------------------------------------


async def test_the_server_span_continues_the_callers_trace(served):
    _, channel = served
    EXPORTER.clear()
    tracer = trace.get_tracer("tests.client")

    with tracer.start_as_current_span("client call", kind=trace.SpanKind.CLIENT) as client:
        metadata = grpc_metadata_with_trace()
        await quote(channel, "", metadata=metadata)
    caller = client.get_span_context()

    assert any(key == "traceparent" for key, _ in metadata)
    server = await server_span(f"{FARES}/QuoteFare")
    assert server.kind == trace.SpanKind.SERVER
    assert server.parent is not None
    assert server.parent.span_id == caller.span_id
    assert server.context.trace_id == caller.trace_id
    assert server.parent.is_remote
    assert server.attributes["rpc.system"] == "grpc"


async def test_a_call_without_trace_context_starts_a_new_trace(served):
    _, channel = served
    EXPORTER.clear()

    await quote(channel, "")

    server = await server_span(f"{FARES}/QuoteFare")
    assert server.kind == trace.SpanKind.SERVER
    assert server.parent is None


# -- a client that goes away -----------------------------------------------------------


async def test_a_server_stream_the_client_cancels_is_not_an_error(served, caplog):
    service, channel = served
    caplog.set_level(logging.DEBUG)
    call = settlement_pb2_grpc.SettlementServiceStub(channel).DownloadStatementLines(
        settlement_pb2.DownloadStatementLinesRequest(), timeout=10
    )
    first = await call.read()
    second = await call.read()

    call.cancel()

    assert (first.first_line, second.first_line) == (0, 1)
    await asyncio.wait_for(service.settlement.finished.wait(), 5)
    await asyncio.sleep(0.2)  # let grpc and the interceptor finish their logging
    errors = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_a_bidi_stream_the_client_cancels_is_not_an_error(served, caplog):
    service, channel = served
    caplog.set_level(logging.DEBUG)
    call = ingest_pb2_grpc.IngestServiceStub(channel).StreamTaps(timeout=10)
    await call.write(ingest_pb2.StreamTapsRequest())
    await call.read()
    await call.write(ingest_pb2.StreamTapsRequest())
    await call.read()

    call.cancel()

    await asyncio.wait_for(service.ingest.finished.wait(), 5)
    await asyncio.sleep(0.2)
    errors = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_a_unary_call_the_client_cancels_is_not_an_error(served, caplog):
    service, channel = served
    caplog.set_level(logging.DEBUG)
    call = fares_pb2_grpc.FaresServiceStub(channel).CloseServiceDay(
        fares_pb2.CloseServiceDayRequest(service_day="2024-01-01"), timeout=10
    )
    await asyncio.wait_for(service.fares.sleeping.wait(), 5)

    call.cancel()

    await asyncio.wait_for(service.fares.cancelled.wait(), 5)
    await asyncio.sleep(0.2)
    errors = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
