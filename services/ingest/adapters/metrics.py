"""Ingest's metrics (served at /metrics; names, units and attributes in docs/metrics.md):
every tap answered by outcome and reason code, taps per signed batch, batches refused
whole, and the deny list this process holds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from opentelemetry import metrics

from clearway.ingest.v1 import ingest_pb2
from clearway.telemetry import ObservedGauge
from services.ingest.domain.deny_list import DenyList

meter = metrics.get_meter("clearway.ingest")

TAPS = meter.create_counter(
    "clearway.ingest.taps",
    unit="{tap}",
    description="Taps answered, by outcome (accepted, duplicate, rejected) and reason code",
)
BATCH_SIZE = meter.create_histogram(
    "clearway.ingest.batch_size",
    unit="{tap}",
    description="Taps per signed batch answered (stream and backlog upload)",
    explicit_bucket_boundaries_advisory=[1, 10, 50, 100, 250, 500, 1000, 2500, 5000],
)
BATCHES_REFUSED = meter.create_counter(
    "clearway.ingest.batches_refused",
    unit="{batch}",
    description="Signed batches refused whole (device not proven, undecodable), by reason code",
)
DENY_LIST_SIZE = ObservedGauge(
    meter,
    "clearway.ingest.deny_list.size",
    unit="{card}",
    description="Cards on the deny list, as this process holds it",
)
DENY_LIST_VERSION = ObservedGauge(
    meter,
    "clearway.ingest.deny_list.version",
    unit="{change}",
    description="Version of the deny list this process holds (changes applied)",
)

OUTCOMES = {
    ingest_pb2.ACK_STATUS_ACCEPTED: "accepted",
    ingest_pb2.ACK_STATUS_DUPLICATE: "duplicate",
    ingest_pb2.ACK_STATUS_REJECTED: "rejected",
}


def count_answered(acks: Sequence[ingest_pb2.TapAck]) -> None:
    """One signed batch answered: its size, and each tap by outcome and reason code (empty
    unless rejected: the codes are ingest's fixed set, so the series are bounded)."""
    BATCH_SIZE.record(len(acks))
    answered = Counter((OUTCOMES.get(ack.status, "unknown"), ack.reason_code) for ack in acks)
    for (outcome, reason), taps in answered.items():
        TAPS.add(taps, {"clearway.outcome": outcome, "clearway.reason": reason})


def count_refused(reason_code: str) -> None:
    """A signed batch refused before any of its taps was looked at."""
    BATCHES_REFUSED.add(1, {"clearway.reason": reason_code})


def deny_list_size(deny_list: DenyList) -> list[tuple[int, dict[str, str]]]:
    """The size gauge's point (read at collection)."""
    return [(len(deny_list), {})]


def deny_list_version(deny_list: DenyList) -> list[tuple[int, dict[str, str]]]:
    """The version gauge's point (read at collection)."""
    return [(deny_list.version, {})]
