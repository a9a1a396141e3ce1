"""Shared libraries: money, settings, trace-context carriers, JSON logs."""

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from clearway.logs import JsonFormatter
from clearway.money import CurrencyMismatchError, Money, total
from clearway.settings import ServiceSettings, SettingsError
from clearway.telemetry import (
    context_from_grpc_metadata,
    context_from_kafka_headers,
    grpc_metadata_with_trace,
    kafka_headers_with_trace,
)

TRACER = TracerProvider().get_tracer("test")


@given(
    amount=st.integers(min_value=-(10**9), max_value=10**9),
    weights=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12).filter(
        lambda w: sum(w) > 0
    ),
)
def test_allocation_is_penny_exact_deterministic_and_proportional(amount, weights):
    parts = Money(amount, "GBP").allocate(weights)
    assert sum(p.amount_minor for p in parts) == amount
    assert parts == Money(amount, "GBP").allocate(weights)
    total_weight = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = amount * weight / total_weight
        assert abs(part.amount_minor - exact) < 1
        if weight == 0:
            assert part.amount_minor == 0


def test_money_refuses_floats_other_currencies_and_bad_codes():
    with pytest.raises(TypeError):
        Money(2.9, "GBP")  # type: ignore[arg-type]
    with pytest.raises(CurrencyMismatchError):
        Money(1, "GBP") + Money(1, "EUR")
    with pytest.raises(ValueError):
        Money(1, "pounds")
    assert str(Money(-1234, "GBP")) == "-12.34 GBP"
    assert total([Money(100, "GBP"), Money(75, "GBP")], "GBP") == Money(175, "GBP")


def test_settings_come_from_the_environment_with_clear_errors(monkeypatch):
    monkeypatch.setenv("CLEARWAY_GRPC_PORT", "6000")
    monkeypatch.setenv("CLEARWAY_TOPIC_PREFIX", "x.")
    settings = ServiceSettings.from_env("fares")
    assert settings.grpc_port == 6000
    assert settings.topics.taps == "x.taps"
    assert settings.db_schema == "fares"
    monkeypatch.setenv("CLEARWAY_GRPC_PORT", "sixty")
    with pytest.raises(SettingsError, match="CLEARWAY_GRPC_PORT"):
        ServiceSettings.from_env("fares")


def test_trace_context_survives_kafka_headers_and_grpc_metadata():
    with TRACER.start_as_current_span("producer") as span:
        headers = kafka_headers_with_trace()
        metadata = grpc_metadata_with_trace()
    trace_id = span.get_span_context().trace_id
    for ctx in (context_from_kafka_headers(headers), context_from_grpc_metadata(metadata)):
        assert trace.get_current_span(ctx).get_span_context().trace_id == trace_id
    assert not trace.get_current_span(context_from_kafka_headers(None)).get_span_context().is_valid


def test_json_logs_carry_the_trace_id_and_extras():
    record = logging.makeLogRecord({"msg": "tap parked", "levelname": "WARNING", "reason": "X"})
    with TRACER.start_as_current_span("work") as span:
        line = json.loads(JsonFormatter("fares").format(record))
    assert line["msg"] == "tap parked"
    assert line["reason"] == "X"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
