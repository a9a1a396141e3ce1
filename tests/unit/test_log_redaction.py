"""JSON logs never carry a secret or a card token, whatever a log call hands them
(clearway.logs: redaction at the formatter, under the rule that code never logs them)."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from clearway.card_tokens import bank_card_token
from clearway.logs import JsonFormatter, configure_logging, redact_text

SCHEME_CARD = "sc_04a2b9c1d25e80"
OPAQUE_CARD = "tok_0123456789abcdef0123"
BANK_CARD = bank_card_token("4111 1111 1111 1111", b"k" * 32)
PAN = "4111 1111 1111 1111"
PASSWORD = "correct-horse-battery-staple"
SESSION = "Zx8w1Yb2Qk3Ljd9sPq0RtUvWxYz-_abcdEFGHijklmn"


def private_key_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


def format_line(record: logging.LogRecord) -> str:
    line = JsonFormatter("accounts").format(record)
    json.loads(line)  # still one JSON object
    return line


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": msg, "args": args or None, "levelname": "INFO", **extra})


@pytest.mark.parametrize("card", [SCHEME_CARD, OPAQUE_CARD, BANK_CARD])
def test_card_tokens_in_a_message_or_an_extra_are_redacted(card: str) -> None:
    line = format_line(record("journey for %s priced", card, card=card, cards=[card]))
    assert card not in line
    assert "[card token]" in line


def test_a_card_number_is_redacted_and_other_long_numbers_are_kept() -> None:
    not_luhn = "4111111111111112"
    line = format_line(record(f"declined {PAN} and {PAN.replace(' ', '')}; offset {not_luhn}"))
    assert "4111" not in line.replace(not_luhn, "")
    assert not_luhn in line, "a number that is no card number stays readable"


def test_a_card_token_in_an_exceptions_traceback_is_redacted() -> None:
    # A defect such as a KeyError names its key: the traceback is logged with exc_info.
    cards: dict[str, int] = {}
    try:
        cards[SCHEME_CARD] += 1
    except KeyError:
        rec = record("rpc failed", exc_info=sys.exc_info())
    line = format_line(rec)
    assert SCHEME_CARD not in line
    assert "KeyError" in line and "cards[SCHEME_CARD] += 1" in line, "the traceback stays"


def test_a_private_key_is_redacted_whole() -> None:
    pem = private_key_pem()
    body = pem.splitlines()[1]
    try:
        raise FileNotFoundError(2, "No such file or directory", pem)
    except FileNotFoundError:
        rec = record("service failed", exc_info=sys.exc_info(), key=pem)
    line = format_line(rec)
    assert body not in line and "PRIVATE KEY-----" not in line
    # A key cut short (no END line) goes too.
    assert body not in redact_text(pem[: len(pem) // 2])


def test_a_dsns_password_is_redacted_and_the_address_kept() -> None:
    dsn = f"postgresql://clearway:{PASSWORD}@db.internal:5432/clearway"
    line = format_line(record("cannot connect to %s", dsn, target=f"redis://:{PASSWORD}@r:6379/0"))
    assert PASSWORD not in line
    assert "postgresql://clearway:[redacted]@db.internal:5432/clearway" in line


def test_extras_named_like_secrets_are_redacted_whole() -> None:
    line = format_line(
        record("sign-in", password=PASSWORD, session_token=SESSION, csrf_secret="x" * 40)
    )
    assert PASSWORD not in line and SESSION not in line and "x" * 40 not in line
    entry = json.loads(line)
    assert entry["password"] == entry["session_token"] == entry["csrf_secret"] == "[redacted]"


def test_secrets_inside_text_are_redacted() -> None:
    texts = [
        f"metadata (('authorization', 'Bearer {SESSION}'),)",
        f"SignInRequest(email='a@example.org', password='{PASSWORD}')",
        f'password: "{PASSWORD}"',  # protobuf's text format
        f"GET /reset?reset_token={SESSION}&x=1",
    ]
    for text in texts:
        assert SESSION not in redact_text(text) and PASSWORD not in redact_text(text), text


def test_what_is_not_secret_stays_as_it_was() -> None:
    text = (
        "tap rejected reason=MISSING_CARD_TOKEN code BAD_RESET_TOKEN card=3f9a0c1e2d4b5a69 "
        "token = parse(request) offset 123456 at 2026-12-01T02:41:58.123+00:00"
    )
    assert redact_text(text) == text


def test_configured_logging_writes_redacted_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    configure_logging("accounts", "INFO")
    try:
        logging.getLogger("test").warning(
            "card %s", OPAQUE_CARD, extra={"dsn": f"postgresql://u:{PASSWORD}@h/db"}
        )
    finally:
        root.handlers[:], level = before
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.strip(), "nothing was logged"
    assert OPAQUE_CARD not in err and PASSWORD not in err
    assert json.loads(err.strip().splitlines()[-1])["msg"] == "card [card token]"
