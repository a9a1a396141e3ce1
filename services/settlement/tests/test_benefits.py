"""Benefit postings (redemptions at providers, rewards): their positions, hand-computed and
as properties; every refusal with its code; decoding from Kafka; their lines, summaries
and file sets, which the party's verifier checks like any other; and file sets written
before benefit postings, which still verify."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import shutil
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.money import Money
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from services.settlement.adapters.file_sets import (
    FileSetInfo,
    publish_public_key,
    write_file_set,
)
from services.settlement.adapters.journey_events import decode_benefit
from services.settlement.domain.benefits import BenefitKind, BenefitPosting
from services.settlement.domain.errors import InvalidBenefitPostingError
from services.settlement.domain.settle import (
    REWARDS_FUNDED,
    TRAVELLER_FLOAT,
    VOUCHER_REDEMPTIONS,
    VOUCHERS_FUNDED,
    benefit_position,
)
from services.settlement.domain.settlement_files import (
    COLUMNS,
    LINES_FILE,
    PAYMENT_FILE,
    PRE_BENEFIT_COLUMNS,
    PUBLIC_KEY_FILE,
    SUMMARY_FILE,
    LineRecord,
    LineSource,
    benefit_lines,
    csv_header,
    csv_line,
    parse_csv_line,
    payment_file,
    top_up_lines,
)
from services.settlement.entrypoints.verify_cli import main as verify_main

from .test_settlement_files import find_line, resign, rewrite_line, stream

GBP = "GBP"
DAY = date(2026, 11, 25)
PERIOD = DAY.isoformat()
ISSUER = "scheme:issuer"
BUS = "operator:bus"
CAMDEN = "funder:camden"
ISLINGTON = "funder:islington"  # in force until the day before DAY
LEISURE = "provider:camden-leisure"
SOUNDBOX = "provider:soundbox"
SHOP = "retailer:cornershop"

SCHEME_TOML = """
scheme_id = "benefit-tests"
name = "Benefit test scheme"
currency = "GBP"

[settlement]
timezone = "Europe/London"
cutoff = "10:00"

[[party]]
id = "scheme:issuer"
name = "Issuer"
effective_from = 2025-01-01
bank = { sort_code = "04-00-04", account_number = "12345678" }

[[party]]
id = "operator:bus"
name = "Town bus"
agency_ids = ["BUS"]
tier = "local"
effective_from = 2025-01-01
bank = { sort_code = "04-00-04", account_number = "12345670" }

[[party]]
id = "funder:camden"
name = "Camden council"
effective_from = 2025-01-01
bank = { sort_code = "04-00-04", account_number = "12345671" }

[[party]]
id = "funder:islington"
name = "Islington council"
effective_from = 2025-01-01
effective_to = 2026-11-25
bank = { sort_code = "04-00-04", account_number = "12345672" }

[[party]]
id = "provider:camden-leisure"
name = "Camden leisure centres"
categories = ["leisure", "pitch_hire"]
effective_from = 2025-01-01
bank = { sort_code = "04-00-04", account_number = "12345673" }

[[party]]
id = "provider:soundbox"
name = "Soundbox studios"
categories = ["studio"]
effective_from = 2025-01-01
bank = { sort_code = "04-00-04", account_number = "12345674" }

[[party]]
id = "retailer:cornershop"
name = "Corner shop"
effective_from = 2025-01-01
bank = { sort_code = "04-00-04", account_number = "12345675" }

[[apportionment.default]]
method = "equal"
effective_from = 2025-01-01
"""


def gbp(amount: int) -> Money:
    return Money(amount, GBP)


def redemption(
    posting_id: str = "redemption:rdm_0001",
    amount: int = 1250,
    *,
    funder: str = CAMDEN,
    provider: str = LEISURE,
    day: date = DAY,
) -> BenefitPosting:
    return BenefitPosting(
        posting_id,
        BenefitKind.REDEMPTION,
        funder,
        gbp(amount),
        day,
        provider_id=provider,
        entitlement_scheme_id="camden-youth-leisure",
        category="leisure",
    )


def reward(
    posting_id: str = "reward:rwd_0001", amount: int = 300, *, funder: str = CAMDEN
) -> BenefitPosting:
    return BenefitPosting(
        posting_id,
        BenefitKind.REWARD,
        funder,
        gbp(amount),
        DAY,
        reward_rule_id="camden-volunteering",
    )


@pytest.fixture(scope="module")
def scheme_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scheme") / "benefits.toml"
    path.write_text(SCHEME_TOML)
    return path


@pytest.fixture(scope="module")
def scheme(scheme_file: Path) -> Scheme:
    return load_scheme(scheme_file)


def total(position: dict[tuple[str, str], Money]) -> int:
    return sum(m.amount_minor for m in position.values())


# -- positions ---------------------------------------------------------------------------


def test_a_redemption_makes_the_council_owe_the_provider(scheme: Scheme) -> None:
    position = benefit_position(scheme, DAY, redemption(amount=1250))
    assert position == {
        (CAMDEN, VOUCHERS_FUNDED): gbp(-1250),
        (LEISURE, VOUCHER_REDEMPTIONS): gbp(1250),
    }
    assert total(position) == 0


def test_a_reward_makes_its_funder_owe_the_schemes_traveller_float(scheme: Scheme) -> None:
    assert benefit_position(scheme, DAY, reward(amount=300)) == {
        (CAMDEN, REWARDS_FUNDED): gbp(-300),
        (ISSUER, TRAVELLER_FLOAT): gbp(300),
    }
    # An operator may pay for a reward too (off-peak travel).
    assert benefit_position(scheme, DAY, reward(amount=200, funder=BUS)) == {
        (BUS, REWARDS_FUNDED): gbp(-200),
        (ISSUER, TRAVELLER_FLOAT): gbp(200),
    }


@given(
    amount=st.integers(1, 10**9),
    kind=st.sampled_from(BenefitKind),
    funder=st.sampled_from([CAMDEN, BUS]),
    provider=st.sampled_from([LEISURE, SOUNDBOX]),
)
def test_every_benefit_position_sums_to_zero_and_charges_the_funder_the_amount(
    scheme: Scheme, amount: int, kind: BenefitKind, funder: str, provider: str
) -> None:
    if kind is BenefitKind.REDEMPTION:
        posting = redemption(amount=amount, funder=CAMDEN, provider=provider)
    else:
        posting = reward(amount=amount, funder=funder)
    position = benefit_position(scheme, DAY, posting)
    assert total(position) == 0
    assert len(position) == 2
    assert all(m.amount_minor != 0 for m in position.values())
    owed = VOUCHERS_FUNDED if kind is BenefitKind.REDEMPTION else REWARDS_FUNDED
    assert position[(posting.funder_id, owed)] == gbp(-amount)


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda: redemption(posting_id=""), "INVALID_POSTING_ID"),
        (lambda: redemption(posting_id="a b"), "INVALID_POSTING_ID"),
        (lambda: redemption(posting_id="x" * 129), "INVALID_POSTING_ID"),
        (lambda: redemption(amount=0), "INVALID_AMOUNT"),
        (lambda: redemption(amount=-5), "INVALID_AMOUNT"),
        (lambda: redemption(funder=""), "MISSING_FUNDER"),
        (lambda: redemption(provider=""), "MISSING_PROVIDER"),
        (lambda: dataclasses.replace(reward(), provider_id=LEISURE), "UNEXPECTED_PROVIDER"),
        (lambda: dataclasses.replace(reward(), kind="refund"), "UNKNOWN_KIND"),
    ],
)
def test_an_invalid_posting_is_refused_with_a_code(build: Callable[[], object], code: str) -> None:
    with pytest.raises(InvalidBenefitPostingError) as err:
        build()
    assert err.value.code == code


@pytest.mark.parametrize(
    ("posting", "code"),
    [
        (redemption(funder="funder:nobody"), "UNKNOWN_FUNDER"),
        (redemption(funder=BUS), "UNKNOWN_FUNDER"),  # an operator funds no redemption
        (redemption(funder=ISLINGTON), "UNKNOWN_FUNDER"),  # no longer in force on DAY
        (redemption(provider="provider:nobody"), "UNKNOWN_PROVIDER"),
        (redemption(provider=SHOP), "UNKNOWN_PROVIDER"),  # a retailer is no provider
        (redemption(provider=CAMDEN), "UNKNOWN_PROVIDER"),
        (reward(funder=SHOP), "UNKNOWN_FUNDER"),
        (reward(funder=LEISURE), "UNKNOWN_FUNDER"),
        (reward(funder=ISSUER), "UNKNOWN_FUNDER"),
        (dataclasses.replace(reward(), amount=Money(300, "EUR")), "CURRENCY_MISMATCH"),
    ],
)
def test_a_posting_the_scheme_cannot_settle_is_refused_with_a_code(
    scheme: Scheme, posting: BenefitPosting, code: str
) -> None:
    with pytest.raises(InvalidBenefitPostingError) as err:
        benefit_position(scheme, DAY, posting)
    assert err.value.code == code


def test_parties_are_those_in_force_on_the_given_day(scheme: Scheme) -> None:
    earlier = DAY - timedelta(days=1)
    position = benefit_position(scheme, earlier, redemption(funder=ISLINGTON, day=earlier))
    assert position[(ISLINGTON, VOUCHERS_FUNDED)] == gbp(-1250)


# -- decoding ------------------------------------------------------------------------------


def event(**changes: object) -> events_pb2.BenefitPosting:
    message = events_pb2.BenefitPosting(
        posting_id="redemption:rdm_0001",
        kind=events_pb2.BenefitPosting.KIND_REDEMPTION,
        funder_id=CAMDEN,
        provider_id=LEISURE,
        amount=money_pb2.Money(amount_minor=1250, currency=GBP),
        service_day=PERIOD,
        entitlement_scheme_id="camden-youth-leisure",
        category="leisure",
    )
    for name, value in changes.items():
        if value is None:
            message.ClearField(name)
        elif isinstance(value, money_pb2.Money):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def test_a_benefit_posting_decodes_from_its_event() -> None:
    assert decode_benefit(event().SerializeToString()) == redemption()
    rewarded = event(
        posting_id="reward:rwd_0001",
        kind=events_pb2.BenefitPosting.KIND_REWARD,
        amount=money_pb2.Money(amount_minor=300, currency=GBP),
        provider_id="",
        entitlement_scheme_id="",
        category="",
        reward_rule_id="camden-volunteering",
    )
    assert decode_benefit(rewarded.SerializeToString()) == reward()


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"", "EMPTY_MESSAGE"),
        (b"\xff\xff\xff not protobuf", "UNDECODABLE"),
        (
            event(kind=events_pb2.BenefitPosting.KIND_UNSPECIFIED).SerializeToString(),
            "UNKNOWN_KIND",
        ),
        (event(kind=7).SerializeToString(), "UNKNOWN_KIND"),
        (event(amount=None).SerializeToString(), "MISSING_AMOUNT"),
        (event(amount=money_pb2.Money(amount_minor=5)).SerializeToString(), "MISSING_AMOUNT"),
        (
            event(amount=money_pb2.Money(amount_minor=5, currency="gbp")).SerializeToString(),
            "INVALID_AMOUNT",
        ),
        (
            event(amount=money_pb2.Money(amount_minor=-5, currency=GBP)).SerializeToString(),
            "INVALID_AMOUNT",
        ),
        (event(service_day="2026-02-30").SerializeToString(), "INVALID_SERVICE_DAY"),
        (event(posting_id="").SerializeToString(), "INVALID_POSTING_ID"),
        (event(provider_id="").SerializeToString(), "MISSING_PROVIDER"),
    ],
)
def test_an_unusable_event_is_refused_with_the_code_its_dead_letter_carries(
    value: bytes, code: str
) -> None:
    with pytest.raises(InvalidBenefitPostingError) as err:
        decode_benefit(value)
    assert err.value.code == code


# -- lines, summaries and file sets --------------------------------------------------------


def period_lines(scheme: Scheme) -> list[LineRecord]:
    """Every party's lines of a period of two redemptions and two rewards."""
    postings = [
        redemption("redemption:rdm_0001", 1250),
        redemption("redemption:rdm_0002", 4000, provider=SOUNDBOX),
        reward("reward:rwd_0001", 300),
        reward("reward:rwd_0002", 200, funder=BUS),
    ]
    return [line for posting in postings for line in benefit_lines(scheme, PERIOD, posting)]


async def write_period(
    root: Path, scheme: Scheme, key: Ed25519PrivateKey
) -> dict[str, FileSetInfo]:
    """Every party's set (the scheme's last, with the pain.001), one write_file_set each."""
    records = period_lines(scheme)
    scheme_party = scheme.scheme_party(DAY)
    others = [p for p in scheme.parties_on(DAY) if p != scheme_party]
    written: dict[str, FileSetInfo] = {}
    for party in [*others, scheme_party]:
        mine = sorted(
            (r for r in records if r.party_id == party.party_id), key=lambda r: r.sort_key
        )
        extra = {}
        if party == scheme_party:
            creditors = [(p, written[p.party_id].net) for p in others]
            extra[PAYMENT_FILE] = payment_file(scheme, PERIOD, creditors)
        written[party.party_id] = await write_file_set(
            root, scheme, party, PERIOD, stream(mine), signer=key, extra_files=extra
        )
    return written


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def period(
    tmp_path_factory: pytest.TempPathFactory, scheme: Scheme, key: Ed25519PrivateKey
) -> tuple[Path, dict[str, FileSetInfo]]:
    """A closed period of benefit postings; never altered by a test (copy before tampering)."""
    root = tmp_path_factory.mktemp("benefit-files")
    publish_public_key(root, key)
    return root, asyncio.run(write_period(root, scheme, key))


def summary(info: FileSetInfo) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(info.path(SUMMARY_FILE).read_bytes())
    return loaded


def lines_of(info: FileSetInfo) -> list[LineRecord]:
    with info.path(LINES_FILE).open(encoding="utf-8", newline="") as source:
        rows = csv.reader(source)
        assert tuple(next(rows)) == COLUMNS
        return [parse_csv_line(row) for row in rows]


def test_a_redemption_is_on_the_councils_and_the_providers_files(
    period: tuple[Path, dict[str, FileSetInfo]],
) -> None:
    _, written = period
    [owed, owed_too, rewarded] = lines_of(written[CAMDEN])
    assert (owed.source, owed.source_id, owed.account, owed.amount_minor) == (
        LineSource.REDEMPTION, "redemption:rdm_0001", VOUCHERS_FUNDED, -1250,
    )  # fmt: skip
    assert (owed.funder, owed.provider, owed.benefit_amount_minor) == (CAMDEN, LEISURE, 1250)
    assert (owed.entitlement_scheme, owed.category) == ("camden-youth-leisure", "leisure")
    assert (owed_too.source_id, owed_too.amount_minor, owed_too.provider) == (
        "redemption:rdm_0002", -4000, SOUNDBOX,
    )  # fmt: skip
    assert (rewarded.source, rewarded.account, rewarded.amount_minor) == (
        LineSource.REWARD, REWARDS_FUNDED, -300,
    )  # fmt: skip
    assert rewarded.reward_rule == "camden-volunteering"
    [paid] = lines_of(written[LEISURE])
    assert (paid.source_id, paid.account, paid.amount_minor, paid.funder) == (
        "redemption:rdm_0001", VOUCHER_REDEMPTIONS, 1250, CAMDEN,
    )  # fmt: skip
    floats = lines_of(written[ISSUER])
    assert [(r.source_id, r.account, r.amount_minor) for r in floats] == [
        ("reward:rwd_0001", TRAVELLER_FLOAT, 300),
        ("reward:rwd_0002", TRAVELLER_FLOAT, 200),
    ]


def test_summaries_total_what_councils_fund_and_providers_are_owed(
    period: tuple[Path, dict[str, FileSetInfo]],
) -> None:
    _, written = period
    camden = summary(written[CAMDEN])
    assert camden["vouchers_funded_minor"] == -1250 - 4000
    assert camden["rewards_funded_minor"] == -300
    assert camden["vouchers_redeemed_minor"] == 0
    assert camden["net_minor"] == -5550
    assert camden["counts"] == {
        "adjustment_lines": 0, "journeys": 0, "lines": 3, "redemptions": 2, "rewards": 1,
        "top_ups": 0,
    }  # fmt: skip
    assert camden["payment"] == {"amount_minor": 5550, "direction": "debit", "end_to_end_id": None}
    leisure = summary(written[LEISURE])
    assert leisure["vouchers_redeemed_minor"] == leisure["net_minor"] == 1250
    assert leisure["party"] == {
        "kind": "provider",
        "name": "Camden leisure centres",
        "party_id": LEISURE,
    }
    assert leisure["payment"]["direction"] == "credit"
    assert summary(written[SOUNDBOX])["vouchers_redeemed_minor"] == 4000
    assert summary(written[BUS])["rewards_funded_minor"] == -200
    assert summary(written[ISSUER])["accounts"] == {TRAVELLER_FLOAT: 500}
    assert sum(info.net.amount_minor for info in written.values()) == 0
    # The providers are paid by the period's pain.001, like operators.
    payments = written[ISSUER].path(PAYMENT_FILE).read_text()
    for provider in (LEISURE, SOUNDBOX):
        assert written[provider].end_to_end_id in payments
    assert "<CtrlSum>52.50</CtrlSum>" in payments


def verify(directory: Path, scheme_file: Path, public_key: Path) -> int:
    return verify_main(
        [str(directory), "--scheme", str(scheme_file), "--public-key", str(public_key)]
    )


def test_verify_settlement_passes_on_every_set_of_benefit_postings(
    period: tuple[Path, dict[str, FileSetInfo]],
    scheme_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, written = period
    for party_id in written:
        code = verify(root / PERIOD / party_id, scheme_file, root / PUBLIC_KEY_FILE)
        out = capsys.readouterr().out
        assert code == 0, out
        assert out.rstrip().endswith("VERIFIED")


@pytest.mark.parametrize(
    ("party_id", "source_id", "account", "changes", "problem"),
    [
        (
            LEISURE, "redemption:rdm_0001", VOUCHER_REDEMPTIONS,
            {"target_minor": 1350, "amount_minor": 1350},
            "target 1350 but the basis gives 1250"
            " (redemption 1250 from funder:camden to provider:camden-leisure)",
        ),
        (
            CAMDEN, "redemption:rdm_0001", VOUCHERS_FUNDED, {"provider": "provider:nobody"},
            "the basis cannot be settled: UNKNOWN_PROVIDER",
        ),
        (
            CAMDEN, "reward:rwd_0001", REWARDS_FUNDED, {"funder": SHOP},
            "the basis cannot be settled: UNKNOWN_FUNDER",
        ),
        (
            ISSUER, "reward:rwd_0002", TRAVELLER_FLOAT, {"benefit_amount_minor": None},
            "a reward line needs benefit_amount_minor and funder",
        ),
    ],
)  # fmt: skip
def test_an_altered_benefit_line_resigned_by_an_insider_is_named_by_its_line(
    period: tuple[Path, dict[str, FileSetInfo]],
    scheme_file: Path,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    party_id: str,
    source_id: str,
    account: str,
    changes: dict[str, object],
    problem: str,
) -> None:
    root, _ = period
    directory = tmp_path / PERIOD / party_id
    shutil.copytree(root / PERIOD / party_id, directory)
    number, _ = find_line(directory, source_id, account)
    rewrite_line(directory, number, **changes)
    resign(directory, key)
    assert verify(directory, scheme_file, root / PUBLIC_KEY_FILE) == 1
    out = capsys.readouterr().out
    assert f"lines.csv line {number}: {problem}" in out, out


def test_lines_round_trip_through_csv(scheme: Scheme) -> None:
    for record in period_lines(scheme):
        numbered = dataclasses.replace(record, line=3)
        assert parse_csv_line(next(csv.reader([csv_line(numbered)]))) == numbered


# -- sets written before benefit postings ---------------------------------------------------


def test_a_set_written_before_benefit_postings_still_verifies(
    period: tuple[Path, dict[str, FileSetInfo]],
    scheme_file: Path,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As a set of a retailer's top-up was written before: lines.csv without the benefit
    columns, summary.json without the benefit totals and counts."""
    root, _ = period
    scheme = load_scheme(scheme_file)
    shop = scheme.party(SHOP, DAY)
    assert shop is not None
    records = top_up_lines(scheme, PERIOD, "t-1", day=DAY, retailer_id=SHOP, amount=gbp(2000))
    mine = [r for r in records if r.party_id == SHOP]
    info = asyncio.run(write_file_set(tmp_path, scheme, shop, PERIOD, stream(mine), signer=key))
    lines = info.path(LINES_FILE)
    width = len(PRE_BENEFIT_COLUMNS)
    old_rows = [row[:width] for row in csv.reader(lines.read_text().splitlines())]
    lines.write_text("".join(",".join(row) + "\n" for row in old_rows))
    assert lines.read_text().startswith(",".join(PRE_BENEFIT_COLUMNS) + "\n")
    assert lines.read_text() != csv_header()
    document = json.loads(info.path(SUMMARY_FILE).read_bytes())
    for name in ("vouchers_redeemed_minor", "vouchers_funded_minor", "rewards_funded_minor"):
        del document[name]
    del document["counts"]["redemptions"], document["counts"]["rewards"]
    info.path(SUMMARY_FILE).write_text(json.dumps(document, sort_keys=True, indent=2) + "\n")
    resign(info.directory, key)

    assert verify(info.directory, scheme_file, root / PUBLIC_KEY_FILE) == 0, capsys.readouterr()
    assert capsys.readouterr().out.rstrip().endswith("VERIFIED")
    # With the new header, the summary must have the benefit totals.
    lines.write_text(csv_header() + "".join(",".join(r) + ",,,,,,\n" for r in old_rows[1:]))
    resign(info.directory, key)
    assert verify(info.directory, scheme_file, root / PUBLIC_KEY_FILE) == 1
    assert (
        "summary.json: counts.redemptions is null but the lines give 0" in capsys.readouterr().out
    )
