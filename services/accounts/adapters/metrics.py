"""Accounts' metrics (served at /metrics; names, units and attributes in docs/metrics.md):
how long a traveller waits for a page of journey history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import metrics

from clearway.errors import ClearwayError, infrastructure_reason

meter = metrics.get_meter("clearway.accounts")

HISTORY_DURATION = meter.create_histogram(
    "clearway.accounts.history.duration",
    unit="s",
    description="ListJourneys answered: sign-in check, Redis page cache, PostgreSQL, by outcome",
    explicit_bucket_boundaries_advisory=[
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
    ],
)


@contextmanager
def timed_history() -> Iterator[None]:
    """Record how long the block took, with its outcome: `ok`, a domain error's reason code
    (a bounded set), an outage's reason (DATABASE_UNAVAILABLE, ...), INTERNAL or
    CANCELLED."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except ClearwayError as exc:
        outcome = exc.code
        raise
    except Exception as exc:
        outcome = infrastructure_reason(exc) or "INTERNAL"
        raise
    except asyncio.CancelledError:  # the caller went away (or its deadline passed)
        outcome = "CANCELLED"
        raise
    finally:
        HISTORY_DURATION.record(time.perf_counter() - started, {"clearway.outcome": outcome})
