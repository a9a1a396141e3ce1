"""What the soak measures of the running fleet: each process's resident memory (Linux
/proc), each service's consumer lag (its Prometheus /metrics) and its log's error lines."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

METRICS_PORT_OFFSET = 3000  # CLEARWAY_METRICS_PORT's default: the gRPC port + 3000
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL", "FATAL"})
TRACEBACK = "Traceback (most recent call last)"
_LAG_LINE = re.compile(r"^clearway_consumer_lag(\{[^}]*\})?\s+(\S+)")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def rss_mb(pid: int) -> float | None:
    """Resident memory (VmRSS) of `pid` and every process under it, in MB (2^20 bytes);
    None once it has gone."""
    total_kb, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            if current == pid:
                return None
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
        todo += _children(current)
    return total_kb / 1024


def lag_of(metrics_text: str) -> int | None:
    """The sum of every `clearway_consumer_lag` series (all topics and partitions); None
    when there is none (a service that consumes nothing, or has not fetched yet)."""
    values = [float(m.group(2)) for m in map(_LAG_LINE.match, metrics_text.splitlines()) if m]
    return int(sum(values)) if values else None


async def scrape_lag(session: aiohttp.ClientSession, port: int) -> int | None:
    """The consumer lag a service reports on its /metrics; None when it does not answer."""
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            if response.status != 200:
                return None
            return lag_of(await response.text())
    except (aiohttp.ClientError, TimeoutError):
        return None


@dataclass(slots=True)
class LogFindings:
    """Error-level lines and tracebacks of one log, with the first few of them; those
    written before `since` (the service starting up, before any traffic) apart."""

    lines: int = 0
    warnings: int = 0
    errors: int = 0
    tracebacks: int = 0
    examples: list[str] = field(default_factory=list)
    start_up_errors: int = 0
    start_up_examples: list[str] = field(default_factory=list)


def scan_log(path: Path, since: datetime | None = None, examples: int = 3) -> LogFindings:
    """Count the JSON lines at error level or worse, and tracebacks (in a line's `exc`
    field or printed raw), in a service's log. A line belongs to the start-up when its
    `ts` (or, for a raw line, the last `ts` before it) is before `since`."""
    found = LogFindings()
    if not path.exists():
        return found
    in_start_up = since is not None
    with path.open(encoding="utf-8", errors="replace") as log:
        for line in log:
            found.lines += 1
            level, text, at = _parse(line)
            if at is not None and since is not None:
                in_start_up = at < since
            bad = level in ERROR_LEVELS or TRACEBACK in text
            if level == "WARNING":
                found.warnings += 1
            if bad and in_start_up:
                found.start_up_errors += 1
                if len(found.start_up_examples) < examples:
                    found.start_up_examples.append(line.strip()[:300])
                continue
            found.errors += level in ERROR_LEVELS
            found.tracebacks += TRACEBACK in text
            if bad and len(found.examples) < examples:
                found.examples.append(line.strip()[:300])
    return found


def _parse(line: str) -> tuple[str, str, datetime | None]:
    """(level, the text to look for a traceback in, time) of one log line."""
    try:
        entry = json.loads(line)
    except ValueError:
        return "", line, None
    if not isinstance(entry, dict):
        return "", line, None
    try:
        at: datetime | None = datetime.fromisoformat(str(entry.get("ts", "")))
    except ValueError:
        at = None
    text = str(entry.get("exc", "")) + str(entry.get("msg", ""))
    return str(entry.get("level", "")).upper(), text, at
