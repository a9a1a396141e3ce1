"""Settlement file sets: the bytes each party gets per period, and the payment file.

Pure: records, renderings and checks, no file I/O (adapters/file_sets.py writes them,
entrypoints/verify_cli.py reads them). Per party and period a set holds:
- `lines.csv`: one line per (source, account) of the party in the period, where a source
  is a journey (its net movement in the period), a top-up, or a benefit posting (a
  redemption at a provider, a reward), with everything the party needs to recompute the
  line's target from the published scheme file;
- `summary.json`: totals and counts of the lines, and the party's payment;
- `manifest.json`: the sha256 and size of every other file; `manifest.sig` signs it.
The scheme party's set also holds `pain.001.xml`, the period's credit transfers.
Every rendering is canonical, so re-closing or replaying gives byte-identical files.
See docs/settlement.md, "Settlement files".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from urllib.parse import unquote
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from clearway.money import Money
from clearway.scheme.model import BankAccount, Party, PartyKind, Scheme

from .benefits import BenefitKind, BenefitPosting
from .errors import SettlementError
from .settle import (
    CLEARING_FEES,
    COMMISSION,
    COMMISSION_PAID,
    CONCESSION_REIMBURSEMENTS,
    REWARDS_FUNDED,
    VOUCHER_REDEMPTIONS,
    VOUCHERS_FUNDED,
    JourneyBasis,
    Leg,
    Settlement,
    benefit_position,
    settle_journey,
    top_up_position,
)

SUMMARY_FORMAT = "clearway.settlement-summary.v1"
MANIFEST_FORMAT = "clearway.settlement-manifest.v1"
LINES_FILE = "lines.csv"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
PAYMENT_FILE = "pain.001.xml"
PUBLIC_KEY_FILE = "scheme-signing.pub.pem"
PAIN001_NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"

COLUMNS: tuple[str, ...] = (
    "line",
    "period_id",
    "party_id",
    "account",
    "source",
    "source_id",
    "service_day",
    "revision",
    "amount_minor",
    "previous_minor",
    "target_minor",
    "currency",
    "method",
    "method_rule",
    "fell_back_to_equal",
    "charge_minor",
    "fare_forgone_minor",
    "reimbursement_minor",
    "fee_minor",
    "funding_rule",
    "rider_category",
    "started_at",
    "legs",
    "weight",
    "top_up_amount_minor",
    "retailer",
    "benefit_amount_minor",
    "funder",
    "provider",
    "entitlement_scheme",
    "category",
    "reward_rule",
)
# The columns of lines.csv written before benefit postings: such a file still reads, its
# lines without the benefit columns (empty), and the verifier checks its summary as it was
# written then (without the benefit totals and counts).
PRE_BENEFIT_COLUMNS = COLUMNS[: COLUMNS.index("benefit_amount_minor")]

# A row of lines.csv from its parts, rendered: line number; period_id, party_id, account,
# source, source_id, service_day, revision; amount, previous and target (integers); then
# currency, the basis columns (`basis_columns`: method to legs), the weight and the source
# columns (`source_columns`: top_up_amount_minor to reward_rule). csv_line and the close's
# writer (adapters/file_sets.py) both render rows with it.
LINE_FORMAT = b"%d,%s,%s,%s,%s,%s,%s,%s,%d,%d,%d,%s,%s,%s,%s\n"

# What a period's close reads per (source, party, account) with entries in the period, in
# this order, each UTF-8 text (bytes): the party, account, source and source id; the
# latest revision posted in the period and the movement (sum of the entries); the target
# of that revision's basis for the party and account, its service day and currency, its
# basis columns (`basis_columns`), the party's weight (`format_weight`) and its source
# columns (`source_columns`). A service day of b"" marks entries without a basis.
LINE_PARTS: tuple[str, ...] = (
    "party_id",
    "account",
    "source",
    "source_id",
    "revision",
    "amount_minor",
    "target_minor",
    "service_day",
    "currency",
    "basis_columns",
    "weight",
    "source_columns",
)

# Digits after the decimal point of currencies that do not have two (ISO 4217).
_MINOR_DIGITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "TND": 3}
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')  # RFC 4180: quote only these fields
_NEEDS_QUOTES_BYTES = re.compile(rb'[,"\r\n]')
_SCHEME_NAME_SORT_CODE = "SortCodeAccountNumber"
_UK_CLEARING_SYSTEM = "GBDSC"  # ExternalClearingSystemIdentification1Code: UK sort code


class SettlementFileError(SettlementError):
    """A settlement file (or a line of one) that cannot be read or written as it is."""

    code = "SETTLEMENT_FILE_INVALID"


class LineSource(StrEnum):
    """What a line settles."""

    JOURNEY = "journey"
    TOP_UP = "top_up"
    REDEMPTION = "redemption"  # a benefit posting of that kind (BenefitKind)
    REWARD = "reward"


BENEFIT_SOURCES = frozenset({LineSource.REDEMPTION, LineSource.REWARD})


class PaymentDirection(StrEnum):
    """Who pays whom for a party's net position of a period."""

    CREDIT = "credit"  # the scheme pays the party (it is in the period's pain.001)
    DEBIT = "debit"  # the party owes the scheme (a funder, a retailer)
    NONE = "none"  # nothing moves (net 0, or the scheme itself)


@dataclass(frozen=True, slots=True)
class LineRecord:
    """One line of `lines.csv`; see COLUMNS and docs/settlement.md for each field.

    Journey-only fields are None/"" on other lines, top-up fields on lines that are not a
    top-up's, benefit fields on lines that are not a benefit posting's. `legs` keep
    agency, network, distance and fares; leg ids are not carried (settlement does not use
    them).
    """

    period_id: str
    party_id: str
    account: str
    source: LineSource
    source_id: str
    service_day: date
    revision: int
    amount_minor: int
    previous_minor: int
    target_minor: int
    currency: str
    method: str = ""
    method_rule: str = ""
    fell_back_to_equal: bool = False
    charge_minor: int | None = None
    fare_forgone_minor: int | None = None
    reimbursement_minor: int | None = None
    fee_minor: int | None = None
    funding_rule: str = ""
    rider_category: str = ""
    started_at: datetime | None = None
    legs: tuple[Leg, ...] = ()
    weight: Fraction | None = None
    top_up_amount_minor: int | None = None
    retailer: str = ""
    benefit_amount_minor: int | None = None  # the posting's amount
    funder: str = ""  # the party that pays for the redemption or reward
    provider: str = ""  # a redemption's provider
    entitlement_scheme: str = ""
    category: str = ""
    reward_rule: str = ""
    line: int = 0  # 1-based; set by the writer, read back by parse_csv_line

    @property
    def sort_key(self) -> tuple[str, str, str]:
        """Lines are sorted by (source, source_id, account), strings in code point order
        (the same as UTF-8 byte order)."""
        return (self.source.value, self.source_id, self.account)


# -- lines.csv -------------------------------------------------------------------------


def csv_header() -> str:
    """The header row of lines.csv, with its line end."""
    return ",".join(COLUMNS) + "\n"


def csv_line(record: LineRecord, line: int | None = None) -> str:
    """One row of lines.csv (RFC 4180, quoted only where needed, `\\n` end); `line`
    overrides the record's line number."""
    q = _quoted  # numbers, dates and instants never need quoting; text fields may
    row = LINE_FORMAT % (
        record.line if line is None else line,
        q(record.period_id).encode(),
        q(record.party_id).encode(),
        q(record.account).encode(),
        record.source.value.encode(),
        q(record.source_id).encode(),
        record.service_day.isoformat().encode(),
        str(record.revision).encode(),
        record.amount_minor,
        record.previous_minor,
        record.target_minor,
        q(record.currency).encode(),
        record_basis_columns(record).encode(),
        format_weight(record.weight).encode(),
        record_source_columns(record).encode(),
    )
    return row.decode()


def basis_columns(
    *,
    method: str,
    method_rule: str,
    fell_back_to_equal: bool,
    charge_minor: int | None,
    fare_forgone_minor: int | None,
    reimbursement_minor: int | None,
    fee_minor: int | None,
    funding_rule: str,
    rider_category: str,
    started_at: datetime | None,
    legs: Sequence[Leg],
) -> str:
    """The columns `method` to `legs` of a line, rendered as lines.csv has them. They come
    from the line's basis alone, so every line of a basis has the same: they are rendered
    once, when the basis is posted (see `journey_columns`)."""
    q = _quoted
    return ",".join(
        (
            q(method),
            q(method_rule),
            "1" if fell_back_to_equal else "0",
            _opt_int(charge_minor),
            _opt_int(fare_forgone_minor),
            _opt_int(reimbursement_minor),
            _opt_int(fee_minor),
            q(funding_rule),
            q(rider_category),
            format_instant(started_at),
            q(format_legs(legs)),
        )
    )


def record_basis_columns(record: LineRecord) -> str:
    """`basis_columns` of a line record."""
    return basis_columns(
        method=record.method,
        method_rule=record.method_rule,
        fell_back_to_equal=record.fell_back_to_equal,
        charge_minor=record.charge_minor,
        fare_forgone_minor=record.fare_forgone_minor,
        reimbursement_minor=record.reimbursement_minor,
        fee_minor=record.fee_minor,
        funding_rule=record.funding_rule,
        rider_category=record.rider_category,
        started_at=record.started_at,
        legs=record.legs,
    )


def journey_columns(basis: JourneyBasis, settlement: Settlement) -> str:
    """`basis_columns` of every line of journey revision `basis` settled as `settlement`
    (the same values `journey_lines` puts on its records)."""
    return basis_columns(
        method=settlement.method.value if settlement.method is not None else "",
        method_rule=settlement.method_rule_id or "",
        fell_back_to_equal=settlement.fell_back_to_equal,
        charge_minor=basis.charge.amount_minor,
        fare_forgone_minor=settlement.fare_forgone.amount_minor,
        reimbursement_minor=settlement.reimbursement.amount_minor,
        fee_minor=settlement.fee.amount_minor,
        funding_rule=settlement.funding_rule_id or "",
        rider_category=basis.rider_category_id,
        started_at=basis.started_at,
        legs=basis.legs,
    )


def top_up_columns() -> str:
    """`basis_columns` of a top-up's lines: a top-up has none of them (nor has a benefit
    posting)."""
    return basis_columns(
        method="",
        method_rule="",
        fell_back_to_equal=False,
        charge_minor=None,
        fare_forgone_minor=None,
        reimbursement_minor=None,
        fee_minor=None,
        funding_rule="",
        rider_category="",
        started_at=None,
        legs=(),
    )


def source_columns(
    top_up_amount_minor: int | None,
    retailer: str,
    *,
    benefit_amount_minor: int | None = None,
    funder: str = "",
    provider: str = "",
    entitlement_scheme: str = "",
    category: str = "",
    reward_rule: str = "",
) -> str:
    """The columns `top_up_amount_minor` to `reward_rule` of a line, rendered: a top-up's
    amount and retailer, then a benefit posting's amount, funder, provider, entitlement
    scheme, category and reward rule (a journey's lines: none of them)."""
    q = _quoted
    return ",".join(
        (
            _opt_int(top_up_amount_minor),
            q(retailer),
            _opt_int(benefit_amount_minor),
            q(funder),
            q(provider),
            q(entitlement_scheme),
            q(category),
            q(reward_rule),
        )
    )


def record_source_columns(record: LineRecord) -> str:
    """`source_columns` of a line record."""
    return source_columns(
        record.top_up_amount_minor,
        record.retailer,
        benefit_amount_minor=record.benefit_amount_minor,
        funder=record.funder,
        provider=record.provider,
        entitlement_scheme=record.entitlement_scheme,
        category=record.category,
        reward_rule=record.reward_rule,
    )


def benefit_source_columns(posting: BenefitPosting) -> str:
    """`source_columns` of every line of benefit posting `posting` (the same values
    `benefit_lines` puts on its records)."""
    return source_columns(
        None,
        "",
        benefit_amount_minor=posting.amount.amount_minor,
        funder=posting.funder_id,
        provider=posting.provider_id,
        entitlement_scheme=posting.entitlement_scheme_id,
        category=posting.category,
        reward_rule=posting.reward_rule_id,
    )


def format_weight(weight: Fraction | None) -> str:
    """The `weight` column: `n/d` in lowest terms, "" for None."""
    return "" if weight is None else f"{weight.numerator}/{weight.denominator}"


def quoted_field(value: bytes) -> bytes:
    """A UTF-8 text field of lines.csv as written: quoted (RFC 4180) only when it holds
    `,`, `"`, CR or LF."""
    if _NEEDS_QUOTES_BYTES.search(value):
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


def parse_csv_header(row: Sequence[str]) -> tuple[str, ...]:
    """The columns of a lines.csv whose header is `row`: COLUMNS, or PRE_BENEFIT_COLUMNS
    for a file written before benefit postings; SettlementFileError for any other."""
    for columns in (COLUMNS, PRE_BENEFIT_COLUMNS):
        if tuple(row) == columns:
            return columns
    raise SettlementFileError(f"unexpected header: {','.join(row)[:200]}")


def parse_csv_line(row: Sequence[str]) -> LineRecord:
    """The record of one lines.csv row (as split by `csv.reader`; a row of a file written
    before benefit postings reads with empty benefit columns); SettlementFileError names
    the column that cannot be read."""
    if len(row) == len(PRE_BENEFIT_COLUMNS):
        row = [*row, *[""] * (len(COLUMNS) - len(PRE_BENEFIT_COLUMNS))]
    if len(row) != len(COLUMNS):
        raise SettlementFileError(f"{len(row)} columns, expected {len(COLUMNS)}")
    col = dict(zip(COLUMNS, row, strict=True))
    currency = col["currency"]
    try:
        return LineRecord(
            line=_int(col, "line"),
            period_id=col["period_id"],
            party_id=col["party_id"],
            account=col["account"],
            source=_source(col["source"]),
            source_id=col["source_id"],
            service_day=_day(col["service_day"]),
            revision=_int(col, "revision"),
            amount_minor=_int(col, "amount_minor"),
            previous_minor=_int(col, "previous_minor"),
            target_minor=_int(col, "target_minor"),
            currency=currency,
            method=col["method"],
            method_rule=col["method_rule"],
            fell_back_to_equal=_flag(col["fell_back_to_equal"]),
            charge_minor=_opt(col, "charge_minor"),
            fare_forgone_minor=_opt(col, "fare_forgone_minor"),
            reimbursement_minor=_opt(col, "reimbursement_minor"),
            fee_minor=_opt(col, "fee_minor"),
            funding_rule=col["funding_rule"],
            rider_category=col["rider_category"],
            started_at=parse_instant(col["started_at"]),
            legs=parse_legs(col["legs"], currency),
            weight=_fraction(col["weight"]),
            top_up_amount_minor=_opt(col, "top_up_amount_minor"),
            retailer=col["retailer"],
            benefit_amount_minor=_opt(col, "benefit_amount_minor"),
            funder=col["funder"],
            provider=col["provider"],
            entitlement_scheme=col["entitlement_scheme"],
            category=col["category"],
            reward_rule=col["reward_rule"],
        )
    except SettlementFileError:
        raise
    except (ValueError, TypeError) as exc:
        raise SettlementFileError(f"unreadable line: {exc}") from exc


def format_instant(at: datetime | None) -> str:
    """UTC ISO 8601 with a `Z` (microseconds only when there are some); "" for None."""
    if at is None:
        return ""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_instant(text: str) -> datetime | None:
    """The instant `format_instant` wrote (timezone-aware, UTC); None for ""."""
    if not text:
        return None
    if not text.endswith("Z"):
        raise SettlementFileError(f"started_at {text!r} is not UTC (…Z)")
    return datetime.fromisoformat(text).astimezone(UTC)


def format_legs(legs: Sequence[Leg]) -> str:
    """`agency/network/distance_m/standalone_minor/reference_minor` per leg, joined by `;`
    (agency and network percent-encode `%`, `/` and `;`; a fare not known is empty)."""
    return ";".join(
        "/".join(
            (
                _escape_id(leg.agency_id),
                _escape_id(leg.network_id),
                str(leg.distance_m),
                "" if leg.standalone_fare is None else str(leg.standalone_fare.amount_minor),
                "" if leg.reference_fare is None else str(leg.reference_fare.amount_minor),
            )
        )
        for leg in legs
    )


def parse_legs(text: str, currency: str) -> tuple[Leg, ...]:
    """The legs `format_legs` wrote, with ids "1", "2", ... in leg order."""
    if not text:
        return ()
    legs = []
    for index, part in enumerate(text.split(";"), start=1):
        fields = part.split("/")
        if len(fields) != 5:
            raise SettlementFileError(f"leg {index} {part!r}: expected 5 fields separated by /")
        agency, network, distance, standalone, reference = fields
        legs.append(
            Leg(
                leg_id=str(index),
                agency_id=unquote(agency),
                network_id=unquote(network),
                distance_m=int(distance),
                standalone_fare=Money(int(standalone), currency) if standalone else None,
                reference_fare=Money(int(reference), currency) if reference else None,
            )
        )
    return tuple(legs)


# -- building lines from settlements ---------------------------------------------------


def journey_lines(
    period_id: str,
    basis: JourneyBasis,
    settlement: Settlement,
    previous: Mapping[tuple[str, str], Money],
) -> list[LineRecord]:
    """The lines, of every party, of a journey whose latest revision in `period_id` is
    `basis` (settled as `settlement`) and which stood at `previous` before the period.
    A (party, account) whose movement nets to 0 has no line."""
    weights = {share.party_id: share.proportion for share in settlement.shares}
    lines = []
    for party_id, account in sorted(set(settlement.position) | set(previous)):
        zero = Money.zero(settlement.currency)
        target = settlement.position.get((party_id, account), zero)
        before = previous.get((party_id, account), zero)
        if target == before:
            continue
        lines.append(
            LineRecord(
                period_id=period_id,
                party_id=party_id,
                account=account,
                source=LineSource.JOURNEY,
                source_id=basis.journey_id,
                service_day=basis.service_day,
                revision=basis.revision,
                amount_minor=(target - before).amount_minor,
                previous_minor=before.amount_minor,
                target_minor=target.amount_minor,
                currency=settlement.currency,
                method=settlement.method.value if settlement.method is not None else "",
                method_rule=settlement.method_rule_id or "",
                fell_back_to_equal=settlement.fell_back_to_equal,
                charge_minor=basis.charge.amount_minor,
                fare_forgone_minor=settlement.fare_forgone.amount_minor,
                reimbursement_minor=settlement.reimbursement.amount_minor,
                fee_minor=settlement.fee.amount_minor,
                funding_rule=settlement.funding_rule_id or "",
                rider_category=basis.rider_category_id,
                started_at=basis.started_at,
                legs=basis.legs,
                weight=weights.get(party_id),
            )
        )
    return lines


def top_up_lines(
    scheme: Scheme,
    period_id: str,
    top_up_id: str,
    *,
    day: date,
    retailer_id: str,
    amount: Money,
) -> list[LineRecord]:
    """The lines, of every party, of a top-up of `amount` sold by `retailer_id` on `day`."""
    position = top_up_position(scheme, day, retailer_id, amount)
    return [
        LineRecord(
            period_id=period_id,
            party_id=party_id,
            account=account,
            source=LineSource.TOP_UP,
            source_id=top_up_id,
            service_day=day,
            revision=1,
            amount_minor=value.amount_minor,
            previous_minor=0,
            target_minor=value.amount_minor,
            currency=value.currency,
            top_up_amount_minor=amount.amount_minor,
            retailer=retailer_id,
        )
        for (party_id, account), value in sorted(position.items())
    ]


def benefit_lines(scheme: Scheme, period_id: str, posting: BenefitPosting) -> list[LineRecord]:
    """The lines, of every party, of benefit posting `posting` (a redemption: its funder's
    and its provider's; a reward: its funder's and the scheme's traveller float)."""
    position = benefit_position(scheme, posting.service_day, posting)
    return [
        LineRecord(
            period_id=period_id,
            party_id=party_id,
            account=account,
            source=LineSource(posting.kind.value),
            source_id=posting.posting_id,
            service_day=posting.service_day,
            revision=1,
            amount_minor=value.amount_minor,
            previous_minor=0,
            target_minor=value.amount_minor,
            currency=value.currency,
            benefit_amount_minor=posting.amount.amount_minor,
            funder=posting.funder_id,
            provider=posting.provider_id,
            entitlement_scheme=posting.entitlement_scheme_id,
            category=posting.category,
            reward_rule=posting.reward_rule_id,
        )
        for (party_id, account), value in sorted(position.items())
    ]


# -- summary.json ----------------------------------------------------------------------


@dataclass(slots=True)
class SummaryTotals:
    """Totals and counts of a party's lines, updated line by line (constant memory: the
    lines come sorted, so distinct sources are counted as they change)."""

    period_id: str
    currency: str
    accounts: dict[str, int] = field(default_factory=dict)
    gross_minor: int = 0
    adjustments_minor: int = 0
    fees_minor: int = 0
    commission_minor: int = 0
    reimbursements_minor: int = 0
    vouchers_redeemed_minor: int = 0
    vouchers_funded_minor: int = 0
    rewards_funded_minor: int = 0
    net_minor: int = 0
    lines: int = 0
    journeys: int = 0
    top_ups: int = 0
    redemptions: int = 0
    rewards: int = 0
    adjustment_lines: int = 0
    # False only for a set written before benefit postings (see PRE_BENEFIT_COLUMNS): its
    # summary has no benefit totals and counts.
    with_benefits: bool = True
    _last_source: tuple[str, str] | None = None

    def add(self, record: LineRecord) -> None:
        """Count `record` in (records must come in lines.csv order)."""
        amount = record.amount_minor
        self.accounts[record.account] = self.accounts.get(record.account, 0) + amount
        self.net_minor += amount
        self.lines += 1
        if record.service_day.isoformat() == self.period_id:
            self.gross_minor += amount
        else:
            self.adjustments_minor += amount
            self.adjustment_lines += 1
        if record.account == CLEARING_FEES:
            self.fees_minor += amount
        elif record.account in (COMMISSION, COMMISSION_PAID):
            self.commission_minor += amount
        elif record.account == CONCESSION_REIMBURSEMENTS:
            self.reimbursements_minor += amount
        elif record.account == VOUCHER_REDEMPTIONS:
            self.vouchers_redeemed_minor += amount
        elif record.account == VOUCHERS_FUNDED:
            self.vouchers_funded_minor += amount
        elif record.account == REWARDS_FUNDED:
            self.rewards_funded_minor += amount
        source = (record.source.value, record.source_id)
        if source != self._last_source:
            self._last_source = source
            self._count_source(record.source)

    def _count_source(self, source: LineSource) -> None:
        if source is LineSource.JOURNEY:
            self.journeys += 1
        elif source is LineSource.TOP_UP:
            self.top_ups += 1
        elif source is LineSource.REDEMPTION:
            self.redemptions += 1
        else:
            self.rewards += 1

    @classmethod
    def of_sums(
        cls,
        period_id: str,
        currency: str,
        *,
        accounts: Mapping[str, int],
        adjustments_minor: int,
        lines: int,
        adjustment_lines: int,
        journeys: int,
        top_ups: int,
        redemptions: int = 0,
        rewards: int = 0,
    ) -> SummaryTotals:
        """The totals `add` reaches over lines whose amounts sum to `accounts` per account
        (`adjustments_minor` of them on lines of earlier service days), from the counts."""
        net = sum(accounts.values())
        return cls(
            period_id,
            currency,
            accounts=dict(accounts),
            gross_minor=net - adjustments_minor,
            adjustments_minor=adjustments_minor,
            fees_minor=accounts.get(CLEARING_FEES, 0),
            commission_minor=accounts.get(COMMISSION, 0) + accounts.get(COMMISSION_PAID, 0),
            reimbursements_minor=accounts.get(CONCESSION_REIMBURSEMENTS, 0),
            vouchers_redeemed_minor=accounts.get(VOUCHER_REDEMPTIONS, 0),
            vouchers_funded_minor=accounts.get(VOUCHERS_FUNDED, 0),
            rewards_funded_minor=accounts.get(REWARDS_FUNDED, 0),
            net_minor=net,
            lines=lines,
            journeys=journeys,
            top_ups=top_ups,
            redemptions=redemptions,
            rewards=rewards,
            adjustment_lines=adjustment_lines,
        )

    @property
    def net(self) -> Money:
        """The party's net position of the period (positive: the party is owed)."""
        return Money(self.net_minor, self.currency)


@dataclass(frozen=True, slots=True)
class Payment:
    """How a party's net position is paid."""

    direction: PaymentDirection
    amount: Money  # never negative
    end_to_end_id: str | None  # set when direction is CREDIT


def payment_for(scheme_id: str, period_id: str, party: Party, net: Money) -> Payment:
    """The payment of `party`'s net position: credited by the period's pain.001 when
    positive, owed to the scheme when negative; the scheme party itself: none."""
    amount = Money(abs(net.amount_minor), net.currency)
    if party.kind is PartyKind.SCHEME or net.amount_minor == 0:
        return Payment(PaymentDirection.NONE, amount, None)
    if net.amount_minor > 0:
        e2e = end_to_end_id(scheme_id, period_id, party.party_id)
        return Payment(PaymentDirection.CREDIT, amount, e2e)
    return Payment(PaymentDirection.DEBIT, amount, None)


def render_summary(scheme_id: str, party: Party, period_id: str, totals: SummaryTotals) -> bytes:
    """summary.json: canonical JSON (sorted keys, indent 2, ASCII, trailing newline)."""
    payment = payment_for(scheme_id, period_id, party, totals.net)
    counts = {
        "lines": totals.lines,
        "journeys": totals.journeys,
        "top_ups": totals.top_ups,
        "adjustment_lines": totals.adjustment_lines,
    }
    benefits = {}
    if totals.with_benefits:
        counts |= {"redemptions": totals.redemptions, "rewards": totals.rewards}
        benefits = {
            "vouchers_redeemed_minor": totals.vouchers_redeemed_minor,
            "vouchers_funded_minor": totals.vouchers_funded_minor,
            "rewards_funded_minor": totals.rewards_funded_minor,
        }
    document = {
        "format": SUMMARY_FORMAT,
        "scheme_id": scheme_id,
        "period_id": period_id,
        "party": {"party_id": party.party_id, "name": party.name, "kind": party.kind.value},
        "bank_account": mask_account(party.bank),
        "currency": totals.currency,
        "accounts": dict(totals.accounts),
        "gross_minor": totals.gross_minor,
        "adjustments_minor": totals.adjustments_minor,
        "fees_minor": totals.fees_minor,
        "commission_minor": totals.commission_minor,
        "reimbursements_minor": totals.reimbursements_minor,
        **benefits,
        "net_minor": totals.net_minor,
        "counts": counts,
        "payment": {
            "direction": payment.direction.value,
            "amount_minor": payment.amount.amount_minor,
            "end_to_end_id": payment.end_to_end_id,
        },
    }
    return canonical_json(document)


def mask_account(bank: BankAccount) -> str:
    """The account (IBAN, or sort code + account number) with all but its last 4
    characters replaced by `*`."""
    plain = bank.iban or f"{bank.sort_code or ''}{bank.account_number or ''}"
    return "*" * max(0, len(plain) - 4) + plain[-4:]


def canonical_json(document: object) -> bytes:
    """Sorted keys, two-space indentation, ASCII only, trailing newline."""
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


# -- manifest.json ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One file a manifest covers."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What manifest.json says."""

    scheme_id: str
    period_id: str
    party_id: str
    files: tuple[ManifestFile, ...]
    signing_key: str  # sha256 hex of the raw 32-byte Ed25519 public key


def render_manifest(manifest: Manifest) -> bytes:
    """manifest.json: canonical JSON, files sorted by name."""
    document = {
        "format": MANIFEST_FORMAT,
        "scheme_id": manifest.scheme_id,
        "period_id": manifest.period_id,
        "party_id": manifest.party_id,
        "files": [
            {"name": f.name, "bytes": f.size, "sha256": f.sha256}
            for f in sorted(manifest.files, key=lambda f: f.name)
        ],
        "signing_key": manifest.signing_key,
    }
    return canonical_json(document)


def parse_manifest(body: bytes) -> Manifest:
    """The manifest in `body`; SettlementFileError when it is not one."""
    try:
        doc = json.loads(body)
        if doc.get("format") != MANIFEST_FORMAT:
            raise SettlementFileError(f"not a {MANIFEST_FORMAT} document")
        files = tuple(
            ManifestFile(str(f["name"]), int(f["bytes"]), str(f["sha256"])) for f in doc["files"]
        )
        return Manifest(
            scheme_id=str(doc["scheme_id"]),
            period_id=str(doc["period_id"]),
            party_id=str(doc["party_id"]),
            files=files,
            signing_key=str(doc["signing_key"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SettlementFileError(f"unreadable manifest: {exc}") from exc


def key_fingerprint(raw_public_key: bytes) -> str:
    """sha256 hex of an Ed25519 public key's raw 32 bytes (the manifest's signing_key)."""
    return hashlib.sha256(raw_public_key).hexdigest()


# -- pain.001 --------------------------------------------------------------------------


def end_to_end_id(scheme_id: str, period_id: str, party_id: str) -> str:
    """The EndToEndId of a party's credit transfer for a period: `CW` + yyyymmdd + `-` +
    10 hex of sha256(scheme|period|party); 21 characters, deterministic."""
    digest = hashlib.sha256(f"{scheme_id}|{period_id}|{party_id}".encode()).hexdigest()
    return f"CW{period_id.replace('-', '')}-{digest[:10]}"


def minor_digits(currency: str) -> int:
    """How many digits a currency's minor unit has (GBP, EUR: 2)."""
    return _MINOR_DIGITS.get(currency, 2)


def format_major(amount: Money) -> str:
    """`amount` in major units with exactly the currency's minor digits (1234 GBP ->
    "12.34"); never negative in a payment file."""
    digits = minor_digits(amount.currency)
    sign = "-" if amount.amount_minor < 0 else ""
    whole, minor = divmod(abs(amount.amount_minor), 10**digits)
    return f"{sign}{whole}.{minor:0{digits}d}" if digits else f"{sign}{whole}"


def payment_file(scheme: Scheme, period_id: str, creditors: Sequence[tuple[Party, Money]]) -> bytes:
    """pain.001.001.09 credit transfers from the scheme party to every party of
    `creditors` whose net position is positive (the scheme party itself excluded), one
    per party, by party id. Deterministic bytes; SettlementFileError if none is owed."""
    service_day = date.fromisoformat(period_id)
    paid = sorted(
        (
            (party, net)
            for party, net in creditors
            if party.kind is not PartyKind.SCHEME and net.amount_minor > 0
        ),
        key=lambda item: item[0].party_id,
    )
    if not paid:
        raise SettlementFileError(f"no party is owed money in {period_id}: no payment file")
    for party, net in paid:
        if net.currency != scheme.currency:
            raise SettlementFileError(f"{party.party_id} net in {net.currency}")
    ids = [end_to_end_id(scheme.scheme_id, period_id, p.party_id) for p, _ in paid]
    if len(set(ids)) != len(ids) or len({p.party_id for p, _ in paid}) != len(paid):
        raise SettlementFileError(f"duplicate creditor or EndToEndId in {period_id}")
    debtor = scheme.scheme_party(service_day)
    control = format_major(Money(sum(n.amount_minor for _, n in paid), scheme.currency))
    header = _El(
        "GrpHdr",
        [
            _El("MsgId", _message_id(scheme.scheme_id, period_id, "msg")),
            _El("CreDtTm", _cutoff_instant(scheme, service_day)),
            _El("NbOfTxs", str(len(paid))),
            _El("CtrlSum", control),
            _El("InitgPty", [_El("Nm", _max_text(debtor.name, 140))]),
        ],
    )
    instruction = _El(
        "PmtInf",
        [
            _El("PmtInfId", _message_id(scheme.scheme_id, period_id, "pmtinf")),
            _El("PmtMtd", "TRF"),
            _El("NbOfTxs", str(len(paid))),
            _El("CtrlSum", control),
            _El("ReqdExctnDt", [_El("Dt", (service_day + timedelta(days=1)).isoformat())]),
            _El("Dbtr", [_El("Nm", _max_text(debtor.name, 140))]),
            _El("DbtrAcct", [_account_id(debtor.bank)]),
            _El("DbtrAgt", [_agent(debtor.bank) or _NOT_PROVIDED]),
            *(
                _transfer(party, net, e2e, period_id)
                for (party, net), e2e in zip(paid, ids, strict=True)
            ),
        ],
    )
    document = _El(
        "Document",
        [_El("CstmrCdtTrfInitn", [header, instruction])],
        attrs=(("xmlns", PAIN001_NAMESPACE),),
    )
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + document.render(0)).encode("utf-8")


@dataclass(frozen=True, slots=True)
class _El:
    """An XML element: text or children, attributes in a fixed order."""

    tag: str
    content: str | list[_El]
    attrs: tuple[tuple[str, str], ...] = ()

    def render(self, depth: int) -> str:
        pad = "  " * depth
        attrs = "".join(f' {k}="{escape(v, {chr(34): "&quot;"})}"' for k, v in self.attrs)
        if isinstance(self.content, str):
            return f"{pad}<{self.tag}{attrs}>{escape(self.content)}</{self.tag}>\n"
        inner = "".join(child.render(depth + 1) for child in self.content)
        return f"{pad}<{self.tag}{attrs}>\n{inner}{pad}</{self.tag}>\n"


# The debtor's agent is required; without a BIC or sort code it is "not provided".
_NOT_PROVIDED = _El("FinInstnId", [_El("Othr", [_El("Id", "NOTPROVIDED")])])


def _transfer(party: Party, net: Money, e2e: str, period_id: str) -> _El:
    children = [
        _El("PmtId", [_El("EndToEndId", e2e)]),
        _El("Amt", [_El("InstdAmt", format_major(net), attrs=(("Ccy", net.currency),))]),
    ]
    agent = _agent(party.bank)
    if agent is not None:
        children.append(_El("CdtrAgt", [agent]))
    children += [
        _El("Cdtr", [_El("Nm", _max_text(party.name, 140))]),
        _El("CdtrAcct", [_account_id(party.bank)]),
        _El("RmtInf", [_El("Ustrd", _max_text(f"Clearway settlement {period_id} {e2e}", 140))]),
    ]
    return _El("CdtTrfTxInf", children)


def _account_id(bank: BankAccount) -> _El:
    if bank.iban:
        return _El("Id", [_El("IBAN", bank.iban)])
    if bank.sort_code and bank.account_number:
        return _El(
            "Id",
            [
                _El(
                    "Othr",
                    [
                        _El("Id", bank.sort_code + bank.account_number),
                        _El("SchmeNm", [_El("Prtry", _SCHEME_NAME_SORT_CODE)]),
                    ],
                )
            ],
        )
    raise SettlementFileError("a bank account needs an IBAN or a sort code and account number")


def _agent(bank: BankAccount) -> _El | None:
    """FinInstnId: the BIC, else the UK sort code as a clearing system member, else None."""
    if bank.bic:
        return _El("FinInstnId", [_El("BICFI", bank.bic)])
    if bank.sort_code:
        member = [
            _El("ClrSysId", [_El("Cd", _UK_CLEARING_SYSTEM)]),
            _El("MmbId", bank.sort_code),
        ]
        return _El("FinInstnId", [_El("ClrSysMmbId", member)])
    return None


def _message_id(scheme_id: str, period_id: str, kind: str) -> str:
    digest = hashlib.sha256(f"{scheme_id}|{period_id}|{kind}".encode()).hexdigest()
    prefix = "CWM" if kind == "msg" else "CWP"
    return f"{prefix}{period_id.replace('-', '')}-{digest[:16]}"


def _cutoff_instant(scheme: Scheme, service_day: date) -> str:
    """The period's cut-off: the scheme's cut-off time, local, on the next day."""
    local = datetime.combine(
        service_day + timedelta(days=1),
        scheme.calendar.cutoff,
        tzinfo=ZoneInfo(scheme.calendar.timezone),
    )
    return local.isoformat()


def _max_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


# -- verifying lines -------------------------------------------------------------------


class LineChecker:
    """Recomputes lines from their basis under a scheme and says what does not hold.

    Keeps the last journey's settlement: a journey's lines of one party come together.
    """

    def __init__(self, scheme: Scheme) -> None:
        self.scheme = scheme
        self._last: tuple[JourneyBasis, Settlement] | None = None

    def problems(self, record: LineRecord) -> list[str]:
        """What is wrong with `record` (empty: it reproduces)."""
        found = []
        if record.amount_minor != record.target_minor - record.previous_minor:
            found.append(
                f"amount {record.amount_minor} is not target {record.target_minor}"
                f" - previous {record.previous_minor}"
            )
        if record.currency != self.scheme.currency:
            found.append(
                f"currency {record.currency}, the scheme settles in {self.scheme.currency}"
            )
            return found
        try:
            if record.source is LineSource.TOP_UP:
                found += self._top_up(record)
            elif record.source in BENEFIT_SOURCES:
                found += self._benefit(record)
            else:
                found += self._journey(record)
        except SettlementError as exc:
            found.append(f"the basis cannot be settled: {exc}")
        return found

    def _top_up(self, record: LineRecord) -> list[str]:
        if record.top_up_amount_minor is None or not record.retailer:
            return ["a top-up line needs top_up_amount_minor and retailer"]
        amount = Money(record.top_up_amount_minor, record.currency)
        position = top_up_position(self.scheme, record.service_day, record.retailer, amount)
        expected = position.get((record.party_id, record.account), Money.zero(record.currency))
        if expected.amount_minor != record.target_minor:
            return [
                f"target {record.target_minor} but the basis gives {expected.amount_minor}"
                f" (top-up {record.top_up_amount_minor} at {record.retailer})"
            ]
        return []

    def _benefit(self, record: LineRecord) -> list[str]:
        if record.benefit_amount_minor is None or not record.funder:
            return [f"a {record.source.value} line needs benefit_amount_minor and funder"]
        posting = BenefitPosting(
            posting_id=record.source_id,
            kind=BenefitKind(record.source.value),
            funder_id=record.funder,
            amount=Money(record.benefit_amount_minor, record.currency),
            service_day=record.service_day,
            provider_id=record.provider,
            entitlement_scheme_id=record.entitlement_scheme,
            category=record.category,
            reward_rule_id=record.reward_rule,
        )
        position = benefit_position(self.scheme, record.service_day, posting)
        expected = position.get((record.party_id, record.account), Money.zero(record.currency))
        if expected.amount_minor != record.target_minor:
            payee = record.provider or "the traveller float"
            return [
                f"target {record.target_minor} but the basis gives {expected.amount_minor}"
                f" ({record.source.value} {record.benefit_amount_minor} from {record.funder}"
                f" to {payee})"
            ]
        return []

    def _journey(self, record: LineRecord) -> list[str]:
        if record.charge_minor is None:
            return ["a journey line needs charge_minor"]
        basis = JourneyBasis(
            journey_id=record.source_id,
            revision=record.revision,
            service_day=record.service_day,
            started_at=record.started_at,
            rider_category_id=record.rider_category,
            charge=Money(record.charge_minor, record.currency),
            legs=record.legs,
        )
        settled = self._settle(basis)
        method = settled.method.value if settled.method is not None else ""
        rule = settled.method_rule_id or ""
        found = []
        zero = Money.zero(record.currency)
        expected = settled.position.get((record.party_id, record.account), zero).amount_minor
        if expected != record.target_minor:
            found.append(
                f"target {record.target_minor} but the basis gives {expected}"
                f" (method {method or 'none'}, rule {rule or 'none'})"
            )
        weights = {s.party_id: s.proportion for s in settled.shares}
        stated: list[tuple[str, object, object]] = [
            ("method", record.method, method),
            ("method_rule", record.method_rule, rule),
            ("fell_back_to_equal", record.fell_back_to_equal, settled.fell_back_to_equal),
            ("fee_minor", record.fee_minor, settled.fee.amount_minor),
            ("fare_forgone_minor", record.fare_forgone_minor, settled.fare_forgone.amount_minor),
            ("reimbursement_minor", record.reimbursement_minor, settled.reimbursement.amount_minor),
            ("funding_rule", record.funding_rule, settled.funding_rule_id or ""),
            ("weight", record.weight, weights.get(record.party_id)),
        ]
        for name, on_line, recomputed in stated:
            if on_line != recomputed:
                found.append(f"{name} {_show(on_line)} but the basis gives {_show(recomputed)}")
        return found

    def _settle(self, basis: JourneyBasis) -> Settlement:
        if self._last is not None and self._last[0] == basis:
            return self._last[1]
        settled = settle_journey(self.scheme, basis)
        self._last = (basis, settled)
        return settled


# -- small codecs ----------------------------------------------------------------------


def _show(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value) if value != "" else '""'


def _quoted(value: str) -> str:
    if _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def _opt_int(value: int | None) -> str:
    return "" if value is None else str(value)


def _escape_id(value: str) -> str:
    return value.replace("%", "%25").replace("/", "%2F").replace(";", "%3B")


def _int(col: Mapping[str, str], name: str) -> int:
    try:
        return int(col[name])
    except ValueError:
        raise SettlementFileError(f"{name} {col[name]!r} is not an integer") from None


def _opt(col: Mapping[str, str], name: str) -> int | None:
    return None if col[name] == "" else _int(col, name)


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise SettlementFileError(f"fell_back_to_equal {text!r} is not 0 or 1")
    return text == "1"


def _source(text: str) -> LineSource:
    try:
        return LineSource(text)
    except ValueError:
        sources = ", ".join(source.value for source in LineSource)
        raise SettlementFileError(f"source {text!r} is not one of {sources}") from None


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SettlementFileError(f"service_day {text!r} is not YYYY-MM-DD") from None


def _fraction(text: str) -> Fraction | None:
    if not text:
        return None
    numerator, slash, denominator = text.partition("/")
    if not slash or not numerator.isdigit() or not denominator.isdigit() or denominator == "0":
        raise SettlementFileError(f"weight {text!r} is not n/d")
    return Fraction(int(numerator), int(denominator))
