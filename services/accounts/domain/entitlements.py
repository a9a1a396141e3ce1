"""Council entitlements (docs/benefits.md): who may be granted one, for which service days,
when it may be renewed, when it has expired, and what an allowance leaves to spend.

Pure rules over the scheme file's `EntitlementScheme`s. Dates are service days; a grant is
valid from `valid_from` up to, not including, `valid_to`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from clearway.errors import ClearwayError, ErrorKind
from clearway.scheme.model import EntitlementKind, EntitlementScheme

MAX_NOTE_CHARS = 200  # an officer's evidence note or revocation reason


class BenefitsInputError(ClearwayError):
    """A request field that can never be right; `code` says which."""

    kind = ErrorKind.INVALID_ARGUMENT


class NotAnOfficerError(ClearwayError):
    """The signed-in account holds no officer role."""

    code = "NOT_AN_OFFICER"
    kind = ErrorKind.PERMISSION_DENIED


class UnknownTravellerError(ClearwayError):
    """No traveller account has this email."""

    code = "UNKNOWN_TRAVELLER"
    kind = ErrorKind.NOT_FOUND


class UnknownEntitlementSchemeError(ClearwayError):
    """No entitlement scheme of the officer's council has this id (another council's is
    unknown too)."""

    code = "UNKNOWN_ENTITLEMENT_SCHEME"
    kind = ErrorKind.NOT_FOUND


class UnknownEntitlementError(ClearwayError):
    """No entitlement with this id that the caller may see."""

    code = "UNKNOWN_ENTITLEMENT"
    kind = ErrorKind.NOT_FOUND


class NotEligibleError(ClearwayError):
    """The evidence does not meet the scheme's eligibility (`NOT_ELIGIBLE_AGE`,
    `NOT_ELIGIBLE_AREA`)."""

    code = "NOT_ELIGIBLE"
    kind = ErrorKind.FAILED_PRECONDITION


class AlreadyGrantedError(ClearwayError):
    """The traveller holds an active grant of the scheme whose renewal has not opened (or
    was renewed already)."""

    code = "ALREADY_GRANTED"
    kind = ErrorKind.ALREADY_EXISTS


class EntitlementStatus(StrEnum):
    """What an entitlement is today."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class AuditAction(StrEnum):
    """What the audit trail records."""

    GRANTED = "granted"
    RENEWED = "renewed"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REWARDED = "rewarded"


class EntitlementMovementKind(StrEnum):
    """What moved an entitlement's month balance."""

    ALLOWANCE = "allowance"
    REDEMPTION = "redemption"
    REWARD = "reward"


@dataclass(frozen=True, slots=True)
class Entitlement:
    """A grant as stored (the date of birth is kept on the grant only, for eligibility)."""

    entitlement_id: str
    traveller_id: str
    scheme_id: str
    funder_id: str
    status: EntitlementStatus  # as stored; see `status_on`
    valid_from: date
    valid_to: date
    granted_at: datetime
    granted_by: str  # the officer's account id

    def status_on(self, day: date) -> EntitlementStatus:
        """The status on service day `day`: revoked stays revoked; expired once `day`
        reaches `valid_to`."""
        if self.status is EntitlementStatus.REVOKED:
            return EntitlementStatus.REVOKED
        if self.status is EntitlementStatus.EXPIRED or self.valid_to <= day:
            return EntitlementStatus.EXPIRED
        return EntitlementStatus.ACTIVE

    def covers(self, day: date) -> bool:
        """Whether it may be spent on `day`: active, and `day` in its validity."""
        return self.status_on(day) is EntitlementStatus.ACTIVE and self.valid_from <= day


def may_be_entitlement_id(value: str) -> bool:
    """Whether `value` could name a stored entitlement: at most 128 characters, none of
    them NUL (PostgreSQL text cannot hold it). One that cannot is unknown without a query."""
    return 0 < len(value) <= 128 and "\x00" not in value


def check_note(value: str, field: str) -> str:
    """An officer's free-text note: at most MAX_NOTE_CHARS printable characters."""
    if len(value) > MAX_NOTE_CHARS or not value.isprintable():
        raise BenefitsInputError(
            f"{field} is at most {MAX_NOTE_CHARS} printable characters", code=f"BAD_{field.upper()}"
        )
    return value


def parse_date_of_birth(value: str, today: date) -> date:
    """The verified date of birth (YYYY-MM-DD, not in the future); BAD_DATE_OF_BIRTH
    otherwise (never echoed: it is personal data)."""
    try:
        born = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        born = None
    if born is None or born > today:
        raise BenefitsInputError(
            "date_of_birth must be a past date as YYYY-MM-DD", code="BAD_DATE_OF_BIRTH"
        )
    return born


MAX_BACKDATE = timedelta(days=31)


def parse_valid_from(value: str, today: date) -> date:
    """The first day of a grant: `today` when `value` is empty, else a YYYY-MM-DD day at
    most `MAX_BACKDATE` before today and not after it (the application's day);
    BAD_VALID_FROM otherwise."""
    if not value:
        return today
    try:
        day = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        day = None
    if day is None or day > today or day < today - MAX_BACKDATE:
        raise BenefitsInputError(
            f"valid_from must be a YYYY-MM-DD day from {today - MAX_BACKDATE} to {today}",
            code="BAD_VALID_FROM",
        )
    return day


def age_on(born: date, day: date) -> int:
    """Age in whole years on `day` (a 29 February birthday counts from 1 March)."""
    years = day.year - born.year
    return years - ((day.month, day.day) < (born.month, born.day))


def check_eligible(scheme: EntitlementScheme, born: date, area: str, day: date) -> None:
    """Nothing when a person born on `born` living in `area` may be granted `scheme` on
    `day`; NOT_ELIGIBLE_AGE or NOT_ELIGIBLE_AREA otherwise."""
    age = age_on(born, day)
    if not scheme.min_age <= age <= scheme.max_age:
        raise NotEligibleError(
            f"{scheme.scheme_id} is for ages {scheme.min_age}-{scheme.max_age} on the day of"
            " the grant",
            code="NOT_ELIGIBLE_AGE",
        )
    if scheme.areas and area not in scheme.areas:
        raise NotEligibleError(
            f"{scheme.scheme_id} is for residents of {', '.join(sorted(scheme.areas))}",
            code="NOT_ELIGIBLE_AREA",
        )


def renewal_opens(scheme: EntitlementScheme, valid_to: date) -> date:
    """The first service day a grant ending on `valid_to` may be renewed."""
    return valid_to - timedelta(days=scheme.renewal_window_days)


@dataclass(frozen=True, slots=True)
class GrantPeriod:
    """The validity of a new grant, and whether it renews one."""

    valid_from: date
    valid_to: date
    renewal: bool


def grant_period(scheme: EntitlementScheme, held: Iterable[Entitlement], day: date) -> GrantPeriod:
    """The validity of a grant of `scheme` made on `day` to someone holding `held` (their
    grants of this scheme): from `day` when none is active; a renewal starting at the
    current grant's end once its renewal window has opened; ALREADY_GRANTED otherwise."""
    active = [e for e in held if e.status_on(day) is EntitlementStatus.ACTIVE]
    if not active:
        return GrantPeriod(day, day + timedelta(days=scheme.validity_days), renewal=False)
    latest = max(active, key=lambda e: e.valid_to)
    opens = renewal_opens(scheme, latest.valid_to)
    if latest.valid_from > day or day < opens:
        # Renewed already (a grant starting later), or the window has not opened.
        raise AlreadyGrantedError(
            f"an active grant of {scheme.scheme_id} runs until {latest.valid_to}; renewal"
            f" opens on {opens}"
        )
    end = latest.valid_to + timedelta(days=scheme.validity_days)
    return GrantPeriod(latest.valid_to, end, renewal=True)


def expired_on(held: Iterable[Entitlement], day: date) -> list[Entitlement]:
    """The grants stored active that have expired by `day` (their EXPIRED is due)."""
    return [e for e in held if e.status is EntitlementStatus.ACTIVE and e.valid_to <= day]


def month_of(day: date) -> str:
    """The calendar month (YYYY-MM) a service day counts in."""
    return f"{day.year:04d}-{day.month:02d}"


def month_start(month: str) -> date:
    """The first day of month YYYY-MM; BAD_MONTH when it is not one."""
    try:
        if len(month) != 7 or month[4] != "-":
            raise ValueError(month)
        return date(int(month[:4]), int(month[5:]), 1)
    except ValueError:
        raise BenefitsInputError("month must be YYYY-MM", code="BAD_MONTH") from None


def next_month_start(month: str) -> date:
    """The first day of the month after YYYY-MM."""
    first = month_start(month)
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def allowance_due(scheme: EntitlementScheme, entitlement: Entitlement, day: date) -> int:
    """The allowance an entitlement is credited for the month of `day` (once per month,
    whenever first needed): the scheme's monthly allowance while it covers `day`, else 0."""
    if scheme.kind is not EntitlementKind.ALLOWANCE or not entitlement.covers(day):
        return 0
    return scheme.allowance_per_month_minor


@dataclass(frozen=True, slots=True)
class AgeBand:
    """An age band of the take-up report, inclusive."""

    low: int
    high: int

    @property
    def label(self) -> str:
        """How the report names it: "11-13"."""
        return f"{self.low}-{self.high}"


_YOUTH_BANDS = (AgeBand(11, 13), AgeBand(14, 16), AgeBand(17, 18))


def age_bands(scheme: EntitlementScheme) -> tuple[AgeBand, ...]:
    """The take-up report's bands: 11-13, 14-16, 17-18 cut to the scheme's ages when they
    lie within 11-18; otherwise the scheme's whole range (a senior pass) as one band."""
    if scheme.min_age >= 11 and scheme.max_age <= 18:
        return tuple(
            AgeBand(max(b.low, scheme.min_age), min(b.high, scheme.max_age))
            for b in _YOUTH_BANDS
            if b.high >= scheme.min_age and b.low <= scheme.max_age
        )
    return (AgeBand(scheme.min_age, scheme.max_age),)


def band_of(bands: Sequence[AgeBand], age: int) -> AgeBand:
    """The band `age` falls in (the nearest end band when outside them all)."""
    for band in bands:
        if band.low <= age <= band.high:
            return band
    return bands[0] if age < bands[0].low else bands[-1]
