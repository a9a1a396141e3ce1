"""Reading a scheme document (a parsed scheme file) into a `Scheme`, refusing a bad one.

Pure: takes the parsed TOML document and returns a `Scheme`, or raises `SchemeError`
listing every problem found (not just the first), each naming the file, the path inside
it (`party[2].bank.iban`) and what is wrong. The file format is in docs/scheme.md.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from fractions import Fraction
from typing import Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .model import (
    BankAccount,
    Dated,
    DefaultMethod,
    EntitlementKind,
    EntitlementScheme,
    Fees,
    FundingRule,
    HoursWindow,
    Method,
    MethodRule,
    Party,
    PartyKind,
    Reimbursement,
    ReimbursementForm,
    RewardCredit,
    RewardKind,
    RewardPeriod,
    RewardRule,
    Scheme,
    SchemeError,
    SchemeProblem,
    SettlementCalendar,
    Tier,
)

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NAME_SHAPE = "1 to 64 letters, digits, '.', '_' or '-'"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CURRENCY = re.compile(r"[A-Z]{3}")
_CLOCK = re.compile(r"([0-9]{2}):([0-9]{2})")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_SORT_CODE = re.compile(r"([0-9]{2})-?([0-9]{2})-?([0-9]{2})")
_ACCOUNT_NUMBER = re.compile(r"[0-9]{8}")
# ISO 9362: party prefix (4 letters or digits), country (2 letters), party suffix
# (2 letters or digits), optional branch (3 letters or digits).
_BIC = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+")
# IBAN length per country (ISO 13616 registry); other countries: 15 to 34 characters.
_IBAN_LENGTH = {
    "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21,
    "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27,
}  # fmt: skip
# The account part (BBAN) of some countries' IBANs, to catch a transposed block.
_BBAN = {
    "GB": re.compile(r"[A-Z]{4}[0-9]{14}"),  # bank code, sort code, account number
    "IE": re.compile(r"[A-Z]{4}[0-9]{14}"),
    "DE": re.compile(r"[0-9]{18}"),
    "FR": re.compile(r"[0-9]{10}[A-Z0-9]{11}[0-9]{2}"),
    "NL": re.compile(r"[A-Z]{4}[0-9]{10}"),
    "ES": re.compile(r"[0-9]{20}"),
    "IT": re.compile(r"[A-Z][0-9]{10}[A-Z0-9]{12}"),
    "BE": re.compile(r"[0-9]{12}"),
}
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_END_OF_DAY = 24 * 60
_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")


def scheme_from_document(
    doc: Mapping[str, object],
    *,
    source: str,
    known_agencies: frozenset[str] | None,
    known_networks: frozenset[str] | None = None,
    known_areas: frozenset[str] | None = None,
) -> Scheme:
    """The scheme declared by `doc` (read from `source`); SchemeError lists every problem.

    With `known_agencies` (or `known_networks`, `known_areas`), an agency (network, area)
    id outside the set, e.g. the GTFS feed's, is refused.
    """
    r = _Reader(source, known_agencies, known_networks, known_areas)
    r.keys(
        doc,
        "",
        ("scheme_id", "name", "currency", "settlement", "party", "apportionment"),
        ("fees", "funding", "entitlement_scheme", "reward_rule"),
    )
    scheme_id = r.text(doc, "scheme_id", "", pattern=_NAME, shape=_NAME_SHAPE)
    name = r.text(doc, "name", "")
    currency = r.text(doc, "currency", "", pattern=_CURRENCY, shape="3 upper-case letters")
    calendar = _calendar(r, doc.get("settlement"), "settlement")
    party_tables = r.tables(doc, "party")
    parties = [(p, x) for p, t in party_tables if (x := _party(r, t, p))]
    if "party" in doc and not party_tables:
        r.problem("party", 'declare at least the scheme party ([[party]] id = "scheme:<name>")')
    declared = frozenset(i for _, t in party_tables if isinstance(i := t.get("id"), str))
    # A party refused above is left out of the checks that need every party to be read,
    # so that it does not also show up as a missing scheme party or operator.
    complete = parties if len(parties) == len(party_tables) else None
    fees = [(p, f) for p, t in r.tables(doc, "fees") if (f := _fees(r, t, p))]
    defaults, rules = _apportionment(r, doc.get("apportionment"), "apportionment")
    funding = [(p, g) for p, t in r.tables(doc, "funding") if (g := _funding(r, t, p))]
    entitlement_tables = r.tables(doc, "entitlement_scheme")
    # An allowance's categories are checked once every party is read.
    sold = frozenset(c for _, x in parties for c in x.categories) if complete else None
    entitlements = [
        (p, e) for p, t in entitlement_tables if (e := _entitlement_scheme(r, t, p, sold))
    ]
    rewards = [(p, w) for p, t in r.tables(doc, "reward_rule") if (w := _reward_rule(r, t, p))]
    # As with parties: a reward naming a scheme that was refused is not checked against it.
    schemes = _Declared(
        frozenset(i for _, t in entitlement_tables if isinstance(i := t.get("id"), str)),
        entitlements if len(entitlements) == len(entitlement_tables) else None,
    )
    payers = _Declared(declared, complete)

    _check_parties(r, parties)
    _check_no_overlap(r, fees, "fee schedule")
    _check_no_overlap(r, defaults, "default method")
    _check_method_rules(r, rules, complete)
    _check_funding(r, funding, payers)
    _check_entitlement_schemes(r, entitlements, payers)
    _check_reward_rules(r, rewards, payers, schemes)
    if complete:
        others = [x.dates for _, x in parties if x.kind is not PartyKind.SCHEME]
        dated: tuple[Sequence[tuple[str, _HasDates]], ...] = (
            fees,
            defaults,
            rules,
            funding,
            entitlements,
            rewards,
        )
        others += [x.dates for items in dated for _, x in items]
        _check_scheme_party(r, parties, others)

    if r.problems or not (scheme_id and name and currency and calendar):
        raise SchemeError(r.problems)
    return Scheme(
        scheme_id=scheme_id,
        name=name,
        currency=currency,
        calendar=calendar,
        parties=tuple(x for _, x in parties),
        fees=tuple(x for _, x in fees),
        default_methods=tuple(x for _, x in defaults),
        method_rules=tuple(x for _, x in rules),
        funding_rules=tuple(x for _, x in funding),
        source=source,
        entitlement_schemes=tuple(x for _, x in entitlements),
        reward_rules=tuple(x for _, x in rewards),
    )


def iban_problem(iban: str) -> str | None:
    """What is wrong with `iban` (already without spaces, upper-case), or None if valid."""
    if not _IBAN_SHAPE.fullmatch(iban):
        return "must be a country code, two check digits, then letters and digits"
    country = iban[:2]
    length = _IBAN_LENGTH.get(country)
    if length is not None and len(iban) != length:
        return f"a {country} IBAN has {length} characters, this one has {len(iban)}"
    if length is None and not 15 <= len(iban) <= 34:
        return f"an IBAN has 15 to 34 characters, this one has {len(iban)}"
    layout = _BBAN.get(country)
    if layout is not None and not layout.fullmatch(iban[4:]):
        return f"the account part does not have the layout of a {country} IBAN"
    rearranged = iban[4:] + iban[:4]
    if int("".join(str(int(c, 36)) for c in rearranged)) % 97 != 1:
        return "fails the ISO 13616 mod-97 check: the check digits do not match the account"
    return None


# -- reading values ---------------------------------------------------------------------


def _at(path: str, key: str) -> str:
    shown = key if _BARE_KEY.fullmatch(key) else f'"{key}"'
    return f"{path}.{shown}" if path else shown


def _kind_of(value: object) -> str:
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "text"),
        (datetime, "a date-time"),
        (date, "a date"),
        (time, "a time"),
        (list, "an array"),
        (dict, "a table"),
    )
    return next((name for t, name in kinds if isinstance(value, t)), type(value).__name__)


def _show(value: Fraction) -> str:
    """`value` as decimal text when it has a short exact one, else as a fraction."""
    for places in range(13):
        scaled = value * 10**places
        if scaled.denominator == 1:
            digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
            sign = "-" if value < 0 else ""
            if places == 0:
                return sign + digits
            return f"{sign}{digits[:-places]}.{digits[-places:]}"
    return str(value)


def _span(d: Dated) -> str:
    end = f"until {d.effective_to}" if d.effective_to else "with no end"
    return f"from {d.effective_from} {end}"


def _overlap(a: Dated, b: Dated) -> bool:
    return (b.effective_to is None or a.effective_from < b.effective_to) and (
        a.effective_to is None or b.effective_from < a.effective_to
    )


@dataclass
class _Reader:
    """Reads values out of the document, collecting a problem for each bad one."""

    source: str
    known_agencies: frozenset[str] | None
    known_networks: frozenset[str] | None
    known_areas: frozenset[str] | None
    problems: list[SchemeProblem] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(SchemeProblem(self.source, path or "(top level)", message))

    def keys(
        self,
        table: Mapping[str, object],
        path: str,
        required: Sequence[str],
        optional: Iterable[str] = (),
    ) -> None:
        """Refuse unknown keys (a typo must not be ignored) and report missing ones."""
        allowed = sorted({*required, *optional})
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
                self.problem(_at(path, key), f"unknown key '{key}' ({hint})")
        for key in required:
            if key not in table:
                self.problem(_at(path, key), "missing (required)")

    def table(self, value: object, path: str) -> Mapping[str, object] | None:
        if isinstance(value, dict):
            return value
        if value is not None:
            self.problem(path, f"expected a table, got {_kind_of(value)}")
        return None

    def tables(
        self, doc: Mapping[str, object], key: str, path: str = ""
    ) -> list[tuple[str, Mapping[str, object]]]:
        """The tables of array `key` ([[key]]), each with its path; none when absent."""
        value = doc.get(key)
        where = _at(path, key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(where, f"expected an array of tables, got {_kind_of(value)}")
            return []
        found: list[tuple[str, Mapping[str, object]]] = []
        for i, item in enumerate(value):
            if (t := self.table(item, f"{where}[{i}]")) is not None:
                found.append((f"{where}[{i}]", t))
        return found

    def text(
        self,
        table: Mapping[str, object],
        key: str,
        path: str,
        *,
        pattern: re.Pattern[str] | None = None,
        shape: str = "",
    ) -> str | None:
        """Non-empty text at `key` (missing: None, reported by `keys`)."""
        return self.text_value(table.get(key), _at(path, key), pattern=pattern, shape=shape)

    def text_value(
        self, value: object, path: str, *, pattern: re.Pattern[str] | None = None, shape: str = ""
    ) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(path, f"expected text, got {_kind_of(value)}")
            return None
        if not value.strip():
            self.problem(path, "must not be empty")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(path, f"'{value}' is not {shape}")
            return None
        return value

    def integer(
        self, table: Mapping[str, object], key: str, path: str, low: int, high: int | None
    ) -> int | None:
        value, where = table.get(key), _at(path, key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, f"expected an integer, got {_kind_of(value)}")
            return None
        if value < low or (high is not None and value > high):
            limit = f"{low} to {high}" if high is not None else f"at least {low}"
            self.problem(where, f"{value} is out of range ({limit})")
            return None
        return value

    def day(self, value: object, path: str) -> date | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            self.problem(path, "expected a date (YYYY-MM-DD), got a date-time")
            return None
        if isinstance(value, date):
            return value
        if isinstance(value, str) and _DATE.fullmatch(value):
            try:
                return date.fromisoformat(value)
            except ValueError as exc:
                self.problem(path, f"'{value}' is not a date: {exc}")
                return None
        self.problem(path, f"expected a date YYYY-MM-DD, got {_kind_of(value)} {value!r}")
        return None

    def minutes(self, value: object, path: str, *, end_of_day: bool = False) -> int | None:
        """A local clock time `HH:MM` as minutes after midnight; "24:00" if `end_of_day`."""
        if isinstance(value, time) and value.second == value.microsecond == 0 and not value.tzinfo:
            return value.hour * 60 + value.minute
        match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
        if match is not None:
            minutes = int(match[1]) * 60 + int(match[2])
            if int(match[2]) < 60 and (
                minutes < _END_OF_DAY or (end_of_day and minutes == _END_OF_DAY)
            ):
                return minutes
        latest = "24:00" if end_of_day else "23:59"
        self.problem(path, f'expected a time "HH:MM" from 00:00 to {latest}, got {value!r}')
        return None

    def decimal(self, value: object, path: str) -> Fraction | None:
        """An exact decimal from text ("0.48") or a TOML number; never through a float."""
        text = value if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif isinstance(value, float):
            # repr is the shortest text that reads back as this float: what was written.
            text = repr(value)
        if text is None or not _DECIMAL.fullmatch(text):
            self.problem(
                path, f'expected a decimal such as "0.48", got {_kind_of(value)} {value!r}'
            )
            return None
        return Fraction(text)

    def ids(self, value: object, path: str, *, at_least: int = 1) -> list[str] | None:
        """A list of distinct non-empty ids."""
        if value is None:
            return None
        if not isinstance(value, list):
            self.problem(path, f"expected an array of text, got {_kind_of(value)}")
            return None
        found = [self.text_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
        ids = [v for v in found if v is not None]
        if len(ids) != len(found):
            return None
        if len(ids) < at_least:
            self.problem(path, f"needs at least {at_least} entr{'y' if at_least == 1 else 'ies'}")
            return None
        for i, v in enumerate(ids):
            if v in ids[:i]:
                self.problem(f"{path}[{i}]", f"'{v}' is listed twice")
                return None
        return ids

    def dated(self, table: Mapping[str, object], path: str) -> Dated | None:
        start = self.day(table.get("effective_from"), _at(path, "effective_from"))
        end = self.day(table.get("effective_to"), _at(path, "effective_to"))
        if start is None:
            return None
        if end is not None and end <= start:
            self.problem(
                _at(path, "effective_to"),
                f"{end} must be later than effective_from {start} (effective_to is exclusive)",
            )
            return None
        return Dated(start, end)

    def choice(self, table: Mapping[str, object], key: str, path: str, kind: type[_E]) -> _E | None:
        value = self.text(table, key, path)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            self.problem(_at(path, key), f"'{value}' is not one of {allowed}")
            return None

    def agency(self, value: str, path: str) -> None:
        if self.known_agencies is not None and value not in self.known_agencies:
            known = ", ".join(sorted(self.known_agencies))
            self.problem(path, f"unknown agency '{value}' (the feed's agencies: {known})")

    def network(self, value: str, path: str) -> None:
        if self.known_networks is not None and value not in self.known_networks:
            known = ", ".join(sorted(self.known_networks))
            self.problem(path, f"unknown network '{value}' (the feed's networks: {known})")

    def area(self, value: str, path: str) -> None:
        if self.known_areas is not None and value not in self.known_areas:
            known = ", ".join(sorted(self.known_areas))
            self.problem(path, f"unknown area '{value}' (the feed's areas: {known})")


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


# -- reading items ----------------------------------------------------------------------


def _calendar(r: _Reader, value: object, path: str) -> SettlementCalendar | None:
    t = r.table(value, path)
    if t is None:
        return None
    mark = len(r.problems)
    r.keys(t, path, ("timezone", "cutoff"), ("reference_rider_category",))
    zone = r.text(t, "timezone", path)
    if zone is not None and not _valid_zone(zone):
        r.problem(_at(path, "timezone"), f"'{zone}' is not an IANA time zone (e.g. Europe/London)")
    cutoff = r.minutes(t["cutoff"], _at(path, "cutoff")) if "cutoff" in t else None
    reference = r.text(t, "reference_rider_category", path) or "ADULT"
    if len(r.problems) > mark or zone is None or cutoff is None:
        return None
    return SettlementCalendar(zone, time(cutoff // 60, cutoff % 60), reference)


_PARTY_KEYS = ("id", "name", "bank", "effective_from")
_OPERATOR_KEYS = ("agency_ids", "tier")


def _party(r: _Reader, t: Mapping[str, object], path: str) -> Party | None:
    mark = len(r.problems)
    r.keys(t, path, _PARTY_KEYS, ("effective_to", *_OPERATOR_KEYS, "categories", "areas"))
    party_id = r.text(t, "id", path)
    kind = _party_kind(r, party_id, _at(path, "id")) if party_id else None
    name = r.text(t, "name", path)
    bank = _bank(r, t.get("bank"), _at(path, "bank"))
    dates = r.dated(t, path)
    agency_ids, tier = _operator_keys(r, t, path, kind)
    categories, areas = _provider_and_funder_keys(r, t, path, kind)
    if len(r.problems) > mark or not (party_id and kind and name and bank and dates):
        return None
    return Party(
        party_id,
        kind,
        name,
        bank,
        dates,
        frozenset(agency_ids),
        tier,
        categories=frozenset(categories),
        areas=frozenset(areas),
    )


def is_party_id(value: str) -> bool:
    """Whether `value` is a party id as a scheme file may write one: `<kind>:<name>`, the
    kind a PartyKind, the name of the scheme's name shape."""
    prefix, colon, name = value.partition(":")
    return bool(colon) and prefix in set(PartyKind) and _NAME.fullmatch(name) is not None


def _party_kind(r: _Reader, party_id: str, path: str) -> PartyKind | None:
    prefix, colon, name = party_id.partition(":")
    if not colon or prefix not in set(PartyKind):
        kinds = "|".join(k.value for k in PartyKind)
        r.problem(path, f"'{party_id}' is not <kind>:<name> with kind one of {kinds}")
        return None
    if not _NAME.fullmatch(name):
        r.problem(path, f"'{name}' in '{party_id}' is not {_NAME_SHAPE}")
        return None
    return PartyKind(prefix)


def _operator_keys(
    r: _Reader, t: Mapping[str, object], path: str, kind: PartyKind | None
) -> tuple[list[str], Tier | None]:
    """An operator's agency ids (checked against the feed's) and tier; refused on others."""
    mine, this = kind is PartyKind.OPERATOR, f"{_a(kind)} party" if kind else None
    owner = ("operator parties", "an operator party")
    _own_keys(r, t, path, _OPERATOR_KEYS, mine=mine, owner=owner, this=this)
    if not mine:
        return [], None
    agencies = r.ids(t.get("agency_ids"), _at(path, "agency_ids")) or []
    for i, agency in enumerate(agencies):
        r.agency(agency, f"{_at(path, 'agency_ids')}[{i}]")
    return agencies, r.choice(t, "tier", path, Tier)


def _provider_and_funder_keys(
    r: _Reader, t: Mapping[str, object], path: str, kind: PartyKind | None
) -> tuple[list[str], list[str]]:
    """A provider's service categories; a funder's areas (checked against the feed's)."""
    this = f"{_a(kind)} party" if kind else None
    provider, funder = kind is PartyKind.PROVIDER, kind is PartyKind.FUNDER
    owner = ("provider parties", "a provider party")
    _own_keys(r, t, path, ("categories",), mine=provider, owner=owner, this=this)
    owner = ("funder parties", "a funder party")
    _own_keys(r, t, path, ("areas",), mine=funder, owner=owner, this=this, required=False)
    categories = r.ids(t.get("categories"), _at(path, "categories")) if provider else None
    areas = r.ids(t.get("areas"), _at(path, "areas")) if funder else None
    for i, area in enumerate(areas or ()):
        r.area(area, f"{_at(path, 'areas')}[{i}]")
    return categories or [], areas or []


def _own_keys(
    r: _Reader,
    t: Mapping[str, object],
    path: str,
    keys: Sequence[str],
    *,
    mine: bool,
    owner: tuple[str, str],
    this: str | None,
    required: bool = True,
) -> None:
    """Keys only some items have (`mine`: this item is one): required (or optional) on
    them, refused on others. `owner` names them ("operator parties", "an operator party"),
    `this` what the item is ("a funder party"; None when unknown: not checked)."""
    plural, one = owner
    for key in keys:
        if mine and required and key not in t:
            r.problem(_at(path, key), f"missing (required for {one})")
        elif not mine and this is not None and key in t:
            r.problem(_at(path, key), f"only {plural} have {key}, not {this}")


def _a(word: str) -> str:
    """`word` with its indefinite article ("an operator", "a funder")."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _bank(r: _Reader, value: object, path: str) -> BankAccount | None:
    t = r.table(value, path)
    if t is None:
        return None
    mark = len(r.problems)
    r.keys(t, path, (), ("iban", "bic", "sort_code", "account_number"))
    uk = "sort_code" in t or "account_number" in t
    if "iban" in t and uk:
        r.problem(path, "give an iban (and bic) or a sort_code and account_number, not both")
        return None
    if "iban" in t:
        iban = _iban(r, t["iban"], _at(path, "iban"))
        bic = _bic(r, t["bic"], _at(path, "bic")) if "bic" in t else None
        return BankAccount(iban=iban, bic=bic) if len(r.problems) == mark else None
    if not uk:
        r.problem(path, "needs an iban (and optional bic), or a UK sort_code and account_number")
        return None
    if "bic" in t:
        r.problem(_at(path, "bic"), "a bic goes with an iban, not with a sort code")
    for key in ("sort_code", "account_number"):
        if key not in t:
            r.problem(_at(path, key), "missing (a UK account needs sort_code and account_number)")
    sort_code = _sort_code(r, t.get("sort_code"), _at(path, "sort_code"))
    account = r.text(t, "account_number", path, pattern=_ACCOUNT_NUMBER, shape="8 digits")
    if len(r.problems) > mark:
        return None
    return BankAccount(sort_code=sort_code, account_number=account)


def _iban(r: _Reader, value: object, path: str) -> str | None:
    text = r.text_value(value, path)
    if text is None:
        return None
    iban = "".join(text.split()).upper()
    problem = iban_problem(iban)
    if problem is not None:
        r.problem(path, f"IBAN '{text}': {problem}")
        return None
    return iban


def _bic(r: _Reader, value: object, path: str) -> str | None:
    text = r.text_value(value, path)
    if text is None:
        return None
    bic = "".join(text.split()).upper()
    if not _BIC.fullmatch(bic):
        r.problem(
            path,
            f"BIC '{text}' is not 8 or 11 characters AAAABBCC(DDD) (ISO 9362): a 4-character "
            "bank code, a 2-letter country code, a 2-character location, an optional "
            "3-character branch, letters and digits",
        )
        return None
    return bic


def _sort_code(r: _Reader, value: object, path: str) -> str | None:
    text = r.text_value(value, path)
    match = _SORT_CODE.fullmatch(text) if text is not None else None
    if text is not None and match is None:
        r.problem(path, f'sort code \'{text}\' is not 6 digits (e.g. "04-00-04" or "040004")')
    return "".join(match.groups()) if match else None


def _fees(r: _Reader, t: Mapping[str, object], path: str) -> Fees | None:
    mark = len(r.problems)
    amounts = ("clearing_fee_bps", "clearing_fee_per_journey_minor", "retailer_commission_bps")
    r.keys(t, path, ("effective_from",), ("effective_to", *amounts))
    dates = r.dated(t, path)
    fee_bps = r.integer(t, "clearing_fee_bps", path, 0, 10_000)
    per_journey = r.integer(t, "clearing_fee_per_journey_minor", path, 0, None)
    commission_bps = r.integer(t, "retailer_commission_bps", path, 0, 10_000)
    if len(r.problems) > mark or dates is None:
        return None
    return Fees(dates, fee_bps or 0, per_journey or 0, commission_bps or 0)


def _apportionment(
    r: _Reader, value: object, path: str
) -> tuple[list[tuple[str, DefaultMethod]], list[tuple[str, MethodRule]]]:
    t = r.table(value, path)
    if t is None:
        return [], []
    r.keys(t, path, ("default",), ("rule",))
    defaults: list[tuple[str, DefaultMethod]] = []
    default_tables = r.tables(t, "default", path)
    for p, d in default_tables:
        r.keys(d, p, ("method", "effective_from"), ("effective_to",))
        method, dates = r.choice(d, "method", p, Method), r.dated(d, p)
        if method is Method.FIXED:
            r.problem(_at(p, "method"), "fixed needs operators and percentages: declare a rule")
        elif method is not None and dates is not None:
            defaults.append((p, DefaultMethod(method, dates)))
    if "default" in t and not default_tables:
        r.problem(_at(path, "default"), "declare at least one default method")
    rules = [(p, x) for p, rt in r.tables(t, "rule", path) if (x := _method_rule(r, rt, p))]
    return defaults, rules


def _method_rule(r: _Reader, t: Mapping[str, object], path: str) -> MethodRule | None:
    mark = len(r.problems)
    optional = ("effective_to", "network", "operators", "percentages")
    r.keys(t, path, ("id", "method", "effective_from"), optional)
    rule_id = r.text(t, "id", path, pattern=_NAME, shape=_NAME_SHAPE)
    method = r.choice(t, "method", path, Method)
    dates = r.dated(t, path)
    network, operators = _rule_selector(r, t, path)
    percentages = _percentages(r, t, path, method, operators)
    if len(r.problems) > mark or not (rule_id and method and dates):
        return None
    agency_ids = frozenset(operators) if operators is not None else None
    return MethodRule(rule_id, method, dates, network, agency_ids, percentages)


def _rule_selector(
    r: _Reader, t: Mapping[str, object], path: str
) -> tuple[str | None, list[str] | None]:
    if ("network" in t) == ("operators" in t):
        both = " (both given)" if "network" in t else ""
        r.problem(path, f'give exactly one of network = "..." or operators = [...]{both}')
        return None, None
    if "network" in t:
        network = r.text(t, "network", path)
        if network is not None:
            r.network(network, _at(path, "network"))
        return network, None
    return None, r.ids(t["operators"], _at(path, "operators"), at_least=2)


def _percentages(
    r: _Reader,
    t: Mapping[str, object],
    path: str,
    method: Method | None,
    operators: list[str] | None,
) -> tuple[tuple[str, Fraction], ...]:
    """A fixed rule's percentages per agency, exact, summing to 100."""
    where = _at(path, "percentages")
    if method is not Method.FIXED:
        if "percentages" in t and method is not None:
            r.problem(where, f"only a fixed rule has percentages, not a {method} rule")
        return ()
    if "network" in t:
        r.problem(_at(path, "method"), "a fixed rule needs operators = [...], not a network")
    table = r.table(t.get("percentages"), where)
    if table is None:
        if "percentages" not in t:
            r.problem(where, "missing (required for a fixed rule)")
        return ()
    read = {agency: r.decimal(v, _at(where, agency)) for agency, v in table.items()}
    shares = {agency: share for agency, share in read.items() if share is not None}
    if len(shares) != len(read):
        return ()
    for agency, share in shares.items():
        if not 0 <= share <= 100:
            r.problem(_at(where, agency), f"{_show(share)} is not between 0 and 100")
    if operators is not None and set(shares) != set(operators):
        keys, wanted = ", ".join(sorted(shares)), ", ".join(sorted(operators))
        r.problem(where, f"keys {keys} must be the rule's operators {wanted}")
    total = sum(shares.values(), Fraction(0))
    if total != 100:
        r.problem(where, f"percentages sum to {_show(total)}, not 100")
    return tuple(shares.items())


_FUNDING_KEYS = (
    "id",
    "funder",
    "rider_categories",
    "networks",
    "hours",
    "reimbursement",
    "effective_from",
)


def _funding(r: _Reader, t: Mapping[str, object], path: str) -> FundingRule | None:
    mark = len(r.problems)
    r.keys(t, path, _FUNDING_KEYS, ("effective_to",))
    rule_id = r.text(t, "id", path, pattern=_NAME, shape=_NAME_SHAPE)
    funder = r.text(t, "funder", path)
    categories = r.ids(t.get("rider_categories"), _at(path, "rider_categories"))
    networks = r.ids(t.get("networks"), _at(path, "networks"))
    for i, network in enumerate(networks or ()):
        r.network(network, f"{_at(path, 'networks')}[{i}]")
    hours = _windows(r, t, path)
    reimbursement = _reimbursement(r, t.get("reimbursement"), _at(path, "reimbursement"))
    dates = r.dated(t, path)
    if len(r.problems) > mark or not (rule_id and funder and categories and networks):
        return None
    if reimbursement is None or dates is None:
        return None
    return FundingRule(
        rule_id,
        funder,
        frozenset(categories),
        frozenset(networks),
        tuple(hours),
        reimbursement,
        dates,
    )


_ENTITLEMENT_KEYS = (
    "id",
    "funder",
    "name",
    "kind",
    "min_age",
    "max_age",
    "areas",
    "validity_days",
    "renewal_window_days",
    "monthly_budget_minor",
    "effective_from",
)
_ALLOWANCE_KEYS = ("allowance_per_month_minor", "categories", "per_visit_limit_minor")
_MAX_AGE = 130


def _entitlement_scheme(
    r: _Reader, t: Mapping[str, object], path: str, sold: frozenset[str] | None
) -> EntitlementScheme | None:
    """An entitlement scheme; an allowance's categories must be in `sold` (the providers'
    categories; None: not checked)."""
    mark = len(r.problems)
    kind = r.choice(t, "kind", path, EntitlementKind)
    r.keys(t, path, _ENTITLEMENT_KEYS, ("effective_to", *_ALLOWANCE_KEYS, "rider_category"))
    this = f"{_a(kind)} scheme" if kind else None
    allowance, travel_pass = kind is EntitlementKind.ALLOWANCE, kind is EntitlementKind.TRAVEL_PASS
    owner = ("allowance schemes", "an allowance scheme")
    _own_keys(r, t, path, _ALLOWANCE_KEYS, mine=allowance, owner=owner, this=this)
    owner = ("travel_pass schemes", "a travel_pass scheme")
    _own_keys(r, t, path, ("rider_category",), mine=travel_pass, owner=owner, this=this)
    scheme_id = r.text(t, "id", path, pattern=_NAME, shape=_NAME_SHAPE)
    funder, name = r.text(t, "funder", path), r.text(t, "name", path)
    ages = _ages(r, t, path)
    areas = r.ids(t.get("areas"), _at(path, "areas"))
    validity, renewal = _validity(r, t, path)
    budget = r.integer(t, "monthly_budget_minor", path, 0, None)
    per_month, categories, per_visit = _allowance(r, t, path, sold) if allowance else (0, [], 0)
    rider_category = r.text(t, "rider_category", path) if travel_pass else ""
    dates = r.dated(t, path)
    if len(r.problems) > mark or not (scheme_id and funder and name and kind and ages):
        return None
    if areas is None or validity is None or renewal is None or budget is None or not dates:
        return None
    return EntitlementScheme(
        scheme_id=scheme_id,
        funder_id=funder,
        name=name,
        kind=kind,
        dates=dates,
        min_age=ages[0],
        max_age=ages[1],
        areas=frozenset(areas),
        validity_days=validity,
        renewal_window_days=renewal,
        monthly_budget_minor=budget,
        allowance_per_month_minor=per_month or 0,
        categories=frozenset(categories or ()),
        per_visit_limit_minor=per_visit or 0,
        rider_category=rider_category or "",
    )


def _ages(r: _Reader, t: Mapping[str, object], path: str) -> tuple[int, int] | None:
    """`min_age` and `max_age`, inclusive, min not above max."""
    low = r.integer(t, "min_age", path, 0, _MAX_AGE)
    high = r.integer(t, "max_age", path, 0, _MAX_AGE)
    if low is None or high is None:
        return None
    if high < low:
        r.problem(_at(path, "max_age"), f"{high} is less than min_age {low}")
        return None
    return low, high


def _validity(r: _Reader, t: Mapping[str, object], path: str) -> tuple[int | None, int | None]:
    """`validity_days` (at least 1) and `renewal_window_days` (less than the validity)."""
    validity = r.integer(t, "validity_days", path, 1, None)
    renewal = r.integer(t, "renewal_window_days", path, 0, None)
    if validity is not None and renewal is not None and renewal >= validity:
        r.problem(
            _at(path, "renewal_window_days"),
            f"{renewal} must be less than validity_days {validity} "
            "(re-enrolment opens this many days before a grant expires)",
        )
        return validity, None
    return validity, renewal


def _allowance(
    r: _Reader, t: Mapping[str, object], path: str, sold: frozenset[str] | None
) -> tuple[int | None, list[str] | None, int | None]:
    """An allowance's amount per month, categories (each in `sold`) and per-visit limit
    (not above the amount); a missing or refused one is None (its problem is reported)."""
    per_month = r.integer(t, "allowance_per_month_minor", path, 1, None)
    categories = r.ids(t.get("categories"), _at(path, "categories"))
    for i, category in enumerate(categories or ()):
        if sold is not None and category not in sold:
            known = ", ".join(sorted(sold)) or "none"
            r.problem(
                f"{_at(path, 'categories')}[{i}]",
                f"unknown category '{category}': no provider party sells it "
                f"(the providers' categories: {known})",
            )
    per_visit = r.integer(t, "per_visit_limit_minor", path, 1, None)
    if per_month is not None and per_visit is not None and per_visit > per_month:
        r.problem(
            _at(path, "per_visit_limit_minor"),
            f"{per_visit} is more than allowance_per_month_minor {per_month}",
        )
    return per_month, categories, per_visit


_REWARD_KEYS = (
    "id",
    "funder",
    "name",
    "kind",
    "amount_minor",
    "credit",
    "period",
    "effective_from",
)


def _reward_rule(r: _Reader, t: Mapping[str, object], path: str) -> RewardRule | None:
    mark = len(r.problems)
    kind = r.choice(t, "kind", path, RewardKind)
    credit = r.choice(t, "credit", path, RewardCredit)
    r.keys(t, path, _REWARD_KEYS, ("effective_to", "entitlement_scheme", "hours"))
    _reward_keys(r, t, path, kind, credit)
    rule_id = r.text(t, "id", path, pattern=_NAME, shape=_NAME_SHAPE)
    funder, name = r.text(t, "funder", path), r.text(t, "name", path)
    amount = r.integer(t, "amount_minor", path, 1, None)
    period = r.choice(t, "period", path, RewardPeriod)
    scheme_id = r.text(t, "entitlement_scheme", path, pattern=_NAME, shape=_NAME_SHAPE)
    hours = _windows(r, t, path) if kind is RewardKind.OFF_PEAK_TRAVEL else []
    dates = r.dated(t, path)
    if len(r.problems) > mark or not (rule_id and funder and name and kind and credit):
        return None
    if amount is None or period is None or dates is None:
        return None
    return RewardRule(
        rule_id, funder, name, kind, amount, credit, period, dates, scheme_id or "", tuple(hours)
    )


def _reward_keys(
    r: _Reader,
    t: Mapping[str, object],
    path: str,
    kind: RewardKind | None,
    credit: RewardCredit | None,
) -> None:
    """`hours` on, and only on, an off_peak_travel rule; `entitlement_scheme` on, and only
    on, a rule crediting an entitlement."""
    owner = ("off_peak_travel rules", "an off_peak_travel rule")
    this = f"{_a(kind)} rule" if kind else None
    off_peak = kind is RewardKind.OFF_PEAK_TRAVEL
    _own_keys(r, t, path, ("hours",), mine=off_peak, owner=owner, this=this)
    owner = ("rules crediting an entitlement", "a rule crediting an entitlement")
    this = f"a rule crediting {credit}" if credit else None
    to_entitlement = credit is RewardCredit.ENTITLEMENT
    _own_keys(r, t, path, ("entitlement_scheme",), mine=to_entitlement, owner=owner, this=this)


def _windows(r: _Reader, t: Mapping[str, object], path: str) -> list[HoursWindow]:
    """The hours windows at `hours` ([] when absent; at least one when present)."""
    mark = len(r.problems)
    hours = [w for p, h in r.tables(t, "hours", path) if (w := _hours(r, h, p))]
    if "hours" in t and not hours and len(r.problems) == mark:
        r.problem(_at(path, "hours"), "needs at least one window")
    return hours


def _hours(r: _Reader, t: Mapping[str, object], path: str) -> HoursWindow | None:
    mark = len(r.problems)
    r.keys(t, path, ("days", "from", "to"))
    days = _weekdays(r, t.get("days"), _at(path, "days"))
    start = r.minutes(t["from"], _at(path, "from")) if "from" in t else None
    end = r.minutes(t["to"], _at(path, "to"), end_of_day=True) if "to" in t else None
    if start is not None and end is not None and end <= start:
        r.problem(
            _at(path, "to"),
            f'{t["to"]} must be later than from {t["from"]} ("24:00" is the end of the day)',
        )
    if len(r.problems) > mark or days is None or start is None or end is None:
        return None
    until = None if end == _END_OF_DAY else time(end // 60, end % 60)
    return HoursWindow(days, time(start // 60, start % 60), until)


def _weekdays(r: _Reader, value: object, path: str) -> frozenset[int] | None:
    """ "Mon-Fri", "Sat,Sun", "Mon", "Mon-Wed,Fri" as weekday numbers (0 = Monday)."""
    text = r.text_value(value, path)
    if text is None:
        return None
    days: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        lo = _weekday(first)
        hi = _weekday(last) if dash else lo
        if lo is None or hi is None or hi < lo:
            r.problem(
                path,
                f'\'{text}\' is not days such as "Mon-Fri", "Sat,Sun" or "Mon" '
                "(Mon Tue Wed Thu Fri Sat Sun; a range runs Monday to Sunday)",
            )
            return None
        days.update(range(lo, hi + 1))
    return frozenset(days)


def _weekday(name: str) -> int | None:
    key = name.strip().lower()
    return _WEEKDAYS.index(key) if key in _WEEKDAYS else None


def _reimbursement(r: _Reader, value: object, path: str) -> Reimbursement | None:
    t = r.table(value, path)
    if t is None:
        return None
    mark = len(r.problems)
    form = r.choice(t, "form", path, ReimbursementForm)
    if form is ReimbursementForm.PERCENT_OF_FARE_FORGONE:
        r.keys(t, path, ("form", "percent"))
        percent = r.decimal(t["percent"], _at(path, "percent")) if "percent" in t else None
        if percent is not None and not 0 < percent <= 100:
            r.problem(
                _at(path, "percent"), f"{_show(percent)} is out of range (more than 0, at most 100)"
            )
        if len(r.problems) > mark or percent is None:
            return None
        return Reimbursement(form, percent=percent)
    if form is ReimbursementForm.NO_BETTER_NO_WORSE:
        r.keys(t, path, ("form", "factor"), ("additional_per_journey_minor",))
        factor = r.decimal(t["factor"], _at(path, "factor")) if "factor" in t else None
        if factor is not None and factor <= 0:
            r.problem(_at(path, "factor"), f"{_show(factor)} is out of range (more than 0)")
        additional = r.integer(t, "additional_per_journey_minor", path, 0, None)
        if len(r.problems) > mark or factor is None:
            return None
        return Reimbursement(form, factor=factor, additional_per_journey_minor=additional or 0)
    r.keys(t, path, ("form",), ("percent", "factor", "additional_per_journey_minor"))
    return None


# -- checks across items ----------------------------------------------------------------


class _HasDates(Protocol):
    @property
    def dates(self) -> Dated: ...


@dataclass(frozen=True, slots=True)
class _Declared(Generic[_T]):
    """The ids a kind of table declares, and the items read: None when one was refused,
    so a check that needs every item waits and the one bad item is reported once."""

    ids: frozenset[str]
    items: Sequence[tuple[str, _T]] | None


def _first_uncovered(dated: Dated, covers: Sequence[Dated]) -> date | None:
    """The first day of `dated` on which none of `covers` is in force, if any."""
    day = dated.effective_from
    while dated.effective_to is None or day < dated.effective_to:
        ends = [c.effective_to for c in covers if c.applies_on(day)]
        if not ends:
            return day
        if None in ends:
            return None
        day = max(end for end in ends if end is not None)
    return None


def _check_no_overlap(r: _Reader, items: Sequence[tuple[str, _HasDates]], what: str) -> None:
    for j, (pj, b) in enumerate(items):
        for pi, a in items[:j]:
            if _overlap(a.dates, b.dates):
                r.problem(
                    pj,
                    f"{what} {_span(b.dates)} overlaps {pi} ({_span(a.dates)}): "
                    f"only one {what} may be in force on a day",
                )


def _check_parties(r: _Reader, parties: Sequence[tuple[str, Party]]) -> None:
    """One id only on dates that do not overlap; one scheme party at a time; an agency
    mapped to one operator at a time."""
    for j, (pj, b) in enumerate(parties):
        for pi, a in parties[:j]:
            if not _overlap(a.dates, b.dates):
                continue
            if a.party_id == b.party_id:
                r.problem(
                    pj,
                    f"{b.party_id} {_span(b.dates)} overlaps {pi} ({_span(a.dates)}): one id "
                    "may be declared several times only on dates that do not overlap",
                )
            elif a.kind is b.kind is PartyKind.SCHEME:
                r.problem(
                    pj,
                    f"scheme party {b.party_id} {_span(b.dates)} overlaps {a.party_id} at "
                    f"{pi} ({_span(a.dates)}): only one scheme party may be in force on a day",
                )
            for agency in sorted(a.agency_ids & b.agency_ids if a.party_id != b.party_id else ()):
                r.problem(
                    _at(pj, "agency_ids"),
                    f"agency '{agency}' is mapped to {b.party_id} and to {a.party_id} at {pi} "
                    "on overlapping dates",
                )


def _check_scheme_party(
    r: _Reader, parties: Sequence[tuple[str, Party]], others: Sequence[Dated]
) -> None:
    """Exactly one scheme party on every day another party, fee or rule is in force."""
    schemes = [x.dates for _, x in parties if x.kind is PartyKind.SCHEME]
    every = [*schemes, *others]
    points = sorted(
        {d.effective_from for d in every} | {d.effective_to for d in every if d.effective_to}
    )
    gaps: list[tuple[date, date | None]] = []
    for k, day in enumerate(points):
        if not any(o.applies_on(day) for o in others) or any(s.applies_on(day) for s in schemes):
            continue
        until = points[k + 1] if k + 1 < len(points) else None
        if gaps and gaps[-1][1] == day:
            gaps[-1] = (gaps[-1][0], until)
        else:
            gaps.append((day, until))
    for start, until in gaps:
        r.problem(
            "party",
            f"no scheme party (id scheme:<name>) is in force {_span(Dated(start, until))}, "
            "while other parties, fees or rules are: exactly one must be",
        )


def _selector_of(rule: MethodRule) -> str:
    if rule.network_id is not None:
        return f"network {rule.network_id}"
    return f"operators {', '.join(sorted(rule.agency_ids or ()))}"


def _check_method_rules(
    r: _Reader,
    rules: Sequence[tuple[str, MethodRule]],
    parties: Sequence[tuple[str, Party]] | None,
) -> None:
    """Operators mapped to operator parties in force; one rule per selector at a time."""
    operators = [x for _, x in parties or () if x.kind is PartyKind.OPERATOR]
    for p, rule in rules if parties is not None else ():
        for agency in sorted(rule.agency_ids or ()):
            runs = [o.dates for o in operators if agency in o.agency_ids]
            gap = _first_uncovered(rule.dates, runs)
            if gap is not None:
                r.problem(
                    _at(p, "operators"),
                    f"agency '{agency}' is not mapped to an operator party in force on {gap}",
                )
    for j, (pj, b) in enumerate(rules):
        for pi, a in rules[:j]:
            if not _overlap(a.dates, b.dates):
                continue
            if _selector_of(a) == _selector_of(b):
                r.problem(
                    pj,
                    f"rule for {_selector_of(b)} {_span(b.dates)} overlaps {pi} "
                    f"({_span(a.dates)}): one selector may have one rule in force on a day",
                )
            elif a.rule_id == b.rule_id:
                r.problem(_at(pj, "id"), f"'{b.rule_id}' is also the id of {pi} on those dates")


def _check_payer(
    r: _Reader,
    where: str,
    party_id: str,
    dates: Dated,
    parties: _Declared[Party],
    *,
    kinds: Sequence[PartyKind],
    why: str = "",
) -> None:
    """`party_id` a declared party of one of `kinds`, in force on every day of `dates`."""
    found = [x for _, x in parties.items or () if x.party_id == party_id]
    if party_id not in parties.ids:
        listed = sorted(i for i in parties.ids if i.partition(":")[0] in kinds)
        plural = " and ".join(f"{k}s" for k in kinds)
        r.problem(
            where, f"unknown party '{party_id}' (declared {plural}: {', '.join(listed) or 'none'})"
        )
    elif found and found[0].kind not in kinds:
        wanted = " or ".join(_a(k) for k in kinds)
        r.problem(where, f"'{party_id}' is {_a(found[0].kind)} party, not {wanted}{why}")
    elif parties.items is not None:
        gap = _first_uncovered(dates, [x.dates for x in found])
        if gap is not None:
            r.problem(where, f"party '{party_id}' is not in force on {gap}")


def _check_ids_apart(r: _Reader, items: Sequence[tuple[str, str, Dated]]) -> None:
    """One id may be declared several times, on dates that do not overlap."""
    for j, (pj, b, dates_b) in enumerate(items):
        for pi, a, dates_a in items[:j]:
            if a == b and _overlap(dates_a, dates_b):
                r.problem(
                    pj,
                    f"{b} {_span(dates_b)} overlaps {pi} ({_span(dates_a)}): one id may be "
                    "declared several times only on dates that do not overlap",
                )


def _check_funding(
    r: _Reader, funding: Sequence[tuple[str, FundingRule]], parties: _Declared[Party]
) -> None:
    """Funders declared and in force; one rule per (rider category, network) at a time."""
    for p, rule in funding:
        _check_payer(r, _at(p, "funder"), rule.funder_id, rule.dates, parties, kinds=_COUNCIL)
    for j, (pj, b) in enumerate(funding):
        for pi, a in funding[:j]:
            if not _overlap(a.dates, b.dates):
                continue
            shared = [
                f"{c} on {n}"
                for c in sorted(a.rider_categories & b.rider_categories)
                for n in sorted(a.network_ids & b.network_ids)
            ]
            if shared:
                r.problem(
                    pj,
                    f"funds {', '.join(shared)} {_span(b.dates)}, as {pi} does "
                    f"({_span(a.dates)}): one rule per rider category and network on a day",
                )
            elif a.rule_id == b.rule_id:
                r.problem(_at(pj, "id"), f"'{b.rule_id}' is also the id of {pi} on those dates")


_COUNCIL = (PartyKind.FUNDER,)


def _check_entitlement_schemes(
    r: _Reader, schemes: Sequence[tuple[str, EntitlementScheme]], parties: _Declared[Party]
) -> None:
    """Each of a council's, in force while the scheme is; one id at a time."""
    for p, e in schemes:
        _check_payer(r, _at(p, "funder"), e.funder_id, e.dates, parties, kinds=_COUNCIL)
    _check_ids_apart(r, [(p, e.scheme_id, e.dates) for p, e in schemes])


_PAYERS = (PartyKind.FUNDER, PartyKind.OPERATOR)


def _check_reward_rules(
    r: _Reader,
    rules: Sequence[tuple[str, RewardRule]],
    parties: _Declared[Party],
    schemes: _Declared[EntitlementScheme],
) -> None:
    """Paid by a council or an operator (an officer's grant by a council), in force while
    the rule is; an entitlement credited is its own council's allowance; one id at a time."""
    for p, rule in rules:
        where = _at(p, "funder")
        if rule.kind is RewardKind.OFFICER_GRANT:
            why = ": an officer_grant rule is paid by a council (officers belong to councils)"
            _check_payer(r, where, rule.funder_id, rule.dates, parties, kinds=_COUNCIL, why=why)
        else:
            _check_payer(r, where, rule.funder_id, rule.dates, parties, kinds=_PAYERS)
        if rule.credit is RewardCredit.ENTITLEMENT:
            _check_credited_scheme(r, _at(p, "entitlement_scheme"), rule, schemes)
    _check_ids_apart(r, [(p, x.rule_id, x.dates) for p, x in rules])


def _check_credited_scheme(
    r: _Reader, where: str, rule: RewardRule, schemes: _Declared[EntitlementScheme]
) -> None:
    """The entitlement scheme a reward credits: an allowance of the rule's own funder, in
    force on every day of the rule."""
    scheme_id = rule.entitlement_scheme_id
    if scheme_id not in schemes.ids:
        known = ", ".join(sorted(schemes.ids)) or "none"
        r.problem(where, f"unknown entitlement scheme '{scheme_id}' (declared: {known})")
        return
    found = [e for _, e in schemes.items or () if e.scheme_id == scheme_id]
    own = [e for e in found if e.funder_id == rule.funder_id]
    allowances = [e for e in own if e.kind is EntitlementKind.ALLOWANCE]
    if found and not own:
        councils = ", ".join(sorted({e.funder_id for e in found}))
        r.problem(
            where,
            f"'{scheme_id}' is a scheme of {councils}, not of the rule's funder "
            f"{rule.funder_id}: a reward credits an entitlement of its own funder",
        )
    elif own and not allowances:
        r.problem(
            where, f"'{scheme_id}' is {_a(own[0].kind)} scheme: a reward credits only an allowance"
        )
    elif allowances:
        gap = _first_uncovered(rule.dates, [e.dates for e in allowances])
        if gap is not None:
            r.problem(where, f"entitlement scheme '{scheme_id}' is not in force on {gap}")
