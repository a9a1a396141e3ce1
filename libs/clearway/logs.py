"""Structured (JSON lines) logging with the current trace id on every record.

Every line is redacted on its way out (`redact`). Code is written never to log a secret or
a card token; this is the net under that rule for what slips through anyway (a `KeyError`
naming a card token in a traceback, a DSN in a connection error, a key in an extra). It
replaces PEM private keys, a URL's password (`scheme://user:pw@`), bearer tokens, the value
of an extra whose name says secret (password, secret, token, authorization, cookie,
credential, private key) and of such a name's quoted `name="value"` or query `?name=value`,
card tokens (`sc_`, `bk_`, `tok_`) and card numbers (12-19 digits passing Luhn).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from clearway.card_tokens import looks_like_card_number

_RESERVED = set(vars(logging.makeLogRecord({})))

REDACTED = "[redacted]"
_PRIVATE_KEY = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY-----|.*)",
    re.DOTALL,
)
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s@]*@")
_BEARER = re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_SECRET_WORDS = "password|passwd|passphrase|secret|token|authorization|cookie|credential"
_SECRET_WORD = rf"[\w-]*(?:{_SECRET_WORDS})"
_SECRET_NAME = re.compile(rf"{_SECRET_WORDS}|private_?key", re.IGNORECASE)
_SECRET_HINT = re.compile(_SECRET_WORDS)
# `password='...'`, `"session_token": "..."`, protobuf's `password: "..."`: quoted values
# only, so that a traceback's source line (`token = parse(request)`) stays readable.
_SECRET_QUOTED = re.compile(
    rf"""(\b{_SECRET_WORD}["']?\s*[:=]\s*)(["'])(?:(?!\2).)*\2""", re.IGNORECASE
)
# A query string's `?reset_token=...&`.
_SECRET_QUERY = re.compile(rf"([?&;]{_SECRET_WORD}=)[^&\s#\"']+", re.IGNORECASE)
_CARD_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?:sc_(?:[0-9a-f]{20}|[0-9a-f]{14}|[0-9a-f]{8})"
    r"|bk_[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]|tok_[A-Za-z0-9]{8,64})(?![A-Za-z0-9])"
)
# A run of 12-19 digits, single spaces or dashes allowed between them (card_tokens' shape).
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){11,18}(?![0-9])")


def _card_number(match: re.Match[str]) -> str:
    return "[card number]" if looks_like_card_number(match.group()) else match.group()


def redact_text(text: str) -> str:
    """`text` with private keys, URL passwords, bearer tokens, `secret=value` values, card
    tokens and card numbers replaced."""
    # Each pattern runs only where a cheap substring test says it may match: most lines
    # hold none of these, and the portal logs every request.
    if "PRIVATE KEY" in text:
        text = _PRIVATE_KEY.sub("[redacted private key]", text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\1 {REDACTED}", text)
    if _SECRET_HINT.search(lowered):
        text = _SECRET_QUOTED.sub(rf"\1\2{REDACTED}\2", text)
        text = _SECRET_QUERY.sub(rf"\1{REDACTED}", text)
    if "_" in text:
        text = _CARD_TOKEN.sub("[card token]", text)
    return _DIGIT_RUN.sub(_card_number, text)


def redact(value: Any, name: str = "") -> Any:
    """`value` (a log field named `name`) as it may be logged: a secret-named field's value
    whole, and secrets inside strings, replaced; containers walked; other objects as text."""
    if name and _SECRET_NAME.search(name) and value not in (None, ""):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {str(key): redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item) for item in value]
    return redact_text(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace ids and extras, all
    redacted (`redact`)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a JSON line."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = redact(value, key)
        if record.exc_info:
            entry["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON logs to stderr at `level`; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_clearway", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler._clearway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
