"""The benefits rules, pure (docs/benefits.md): eligibility, validity and renewal, expiry,
which entitlement pays and the order of refusals, the scheme's limits, signed requests,
rewards' periods and off-peak hours, the report's age bands and suppression."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearway.device_keys import DeviceAuthError, DeviceRevokedError, public_key_from_file
from clearway.disclosure import MINIMUM_CELL
from clearway.money import Money
from clearway.scheme.model import (
    BankAccount,
    Dated,
    HoursWindow,
    Party,
    PartyKind,
    RewardCredit,
    RewardKind,
    RewardPeriod,
    RewardRule,
)
from services.accounts.domain.council_report import Cell, budget_table, disclosed, people_table
from services.accounts.domain.entitlements import (
    AgeBand,
    AlreadyGrantedError,
    BenefitsInputError,
    Entitlement,
    EntitlementStatus,
    NotEligibleError,
    age_bands,
    age_on,
    allowance_due,
    band_of,
    check_eligible,
    grant_period,
    month_of,
    month_start,
    next_month_start,
    parse_date_of_birth,
)
from services.accounts.domain.redemptions import (
    Held,
    ProviderDevice,
    RedemptionInputError,
    RedemptionRefusedError,
    authenticate_device,
    check_offered,
    check_redemption,
    check_spend,
    choose_entitlement,
)
from services.accounts.domain.rewards import (
    UnknownRewardRuleError,
    off_peak_rules,
    officer_rule,
    operator_runs,
    period_of,
)
from services.accounts.redemption_device import RedemptionDevice
from services.accounts.tests.benefits_scheme import SENIOR, STUDIO, benefits_scheme, youth_scheme

DAY = date(2026, 11, 20)
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SCHEME = benefits_scheme()
YOUTH_SCHEME = youth_scheme()


def grant(
    valid_from: date = DAY,
    days: int = 365,
    status: EntitlementStatus = EntitlementStatus.ACTIVE,
    scheme_id: str = YOUTH_SCHEME.scheme_id,
    entitlement_id: str = "ent_1",
) -> Entitlement:
    return Entitlement(
        entitlement_id,
        "trv_1",
        scheme_id,
        "funder:camden",
        status,
        valid_from,
        valid_from + timedelta(days=days),
        AT,
        "trv_officer",
    )


def code_of(error: pytest.ExceptionInfo[Exception]) -> str:
    return getattr(error.value, "code", "")


# -- eligibility -------------------------------------------------------------------------


def test_age_counts_whole_years_and_the_birthday_itself() -> None:
    assert age_on(date(2008, 11, 20), DAY) == 18
    assert age_on(date(2008, 11, 21), DAY) == 17
    assert age_on(date(2012, 2, 29), date(2023, 2, 28)) == 10
    assert age_on(date(2012, 2, 29), date(2023, 3, 1)) == 11


@pytest.mark.parametrize(
    ("born", "area", "code"),
    [
        (date(2015, 11, 21), "camden", "NOT_ELIGIBLE_AGE"),  # 10, 11 tomorrow
        (date(2007, 11, 20), "camden", "NOT_ELIGIBLE_AGE"),  # 19 today
        (date(2011, 5, 1), "hackney", "NOT_ELIGIBLE_AREA"),
        (date(2011, 5, 1), "", "NOT_ELIGIBLE_AREA"),
    ],
)
def test_eligibility_is_age_on_the_day_then_residence(born: date, area: str, code: str) -> None:
    with pytest.raises(NotEligibleError) as refused:
        check_eligible(YOUTH_SCHEME, born, area, DAY)
    assert code_of(refused) == code


def test_the_first_and_last_eligible_birthdays_are_eligible() -> None:
    check_eligible(YOUTH_SCHEME, date(2015, 11, 20), "camden", DAY)  # 11 today
    check_eligible(YOUTH_SCHEME, date(2007, 11, 21), "camden", DAY)  # 18 until tomorrow


@pytest.mark.parametrize("raw", ["", "2011-5-1", "01/05/2011", "2011-02-30", "2027-01-01"])
def test_a_date_of_birth_must_be_a_past_iso_date(raw: str) -> None:
    with pytest.raises(BenefitsInputError) as refused:
        parse_date_of_birth(raw, DAY)
    assert code_of(refused) == "BAD_DATE_OF_BIRTH"
    assert raw not in str(refused.value) or not raw


# -- validity, renewal, expiry ---------------------------------------------------------


def test_a_first_grant_runs_validity_days_from_the_day() -> None:
    period = grant_period(YOUTH_SCHEME, [], DAY)
    assert (period.valid_from, period.valid_to, period.renewal) == (
        DAY,
        date(2027, 11, 20),
        False,
    )


def test_renewal_opens_in_the_window_and_starts_where_the_current_grant_ends() -> None:
    held = grant()
    opens = held.valid_to - timedelta(days=30)
    with pytest.raises(AlreadyGrantedError):
        grant_period(YOUTH_SCHEME, [held], opens - timedelta(days=1))
    renewal = grant_period(YOUTH_SCHEME, [held], opens)
    assert (renewal.valid_from, renewal.renewal) == (held.valid_to, True)
    assert renewal.valid_to == held.valid_to + timedelta(days=365)
    renewed = grant(renewal.valid_from, entitlement_id="ent_2")
    with pytest.raises(AlreadyGrantedError):  # renewed already: no third grant
        grant_period(YOUTH_SCHEME, [held, renewed], opens)


def test_after_expiry_or_revocation_a_grant_starts_afresh() -> None:
    expired = grant(DAY - timedelta(days=400))
    assert grant_period(YOUTH_SCHEME, [expired], DAY).valid_from == DAY
    revoked = grant(status=EntitlementStatus.REVOKED)
    assert grant_period(YOUTH_SCHEME, [revoked], DAY).renewal is False


def test_status_expires_on_valid_to_and_revoked_stays_revoked() -> None:
    held = grant()
    assert held.status_on(held.valid_to - timedelta(days=1)) is EntitlementStatus.ACTIVE
    assert held.status_on(held.valid_to) is EntitlementStatus.EXPIRED
    revoked = grant(status=EntitlementStatus.REVOKED)
    assert revoked.status_on(revoked.valid_to) is EntitlementStatus.REVOKED
    later = grant(DAY + timedelta(days=10))
    assert not later.covers(DAY) and later.covers(DAY + timedelta(days=10))


def test_the_allowance_is_due_only_while_the_grant_covers_the_day() -> None:
    held = grant()
    assert allowance_due(YOUTH_SCHEME, held, DAY) == 2000
    assert allowance_due(YOUTH_SCHEME, held, held.valid_to) == 0
    senior = dataclasses.replace(held, scheme_id=SENIOR)
    assert allowance_due(SCHEME.entitlement_scheme(SENIOR, DAY), senior, DAY) == 0  # type: ignore[arg-type]


def test_months() -> None:
    assert month_of(DAY) == "2026-11"
    assert (month_start("2026-12"), next_month_start("2026-12")) == (
        date(2026, 12, 1),
        date(2027, 1, 1),
    )
    for bad in ("2026-13", "2026/11", "Nov", "2026-1"):
        with pytest.raises(BenefitsInputError):
            month_start(bad)


# -- redemptions ---------------------------------------------------------------------


def check(**overrides: object) -> object:
    fields: dict[str, object] = {
        "card_token": "tok_abcdef123456",
        "category": "swimming",
        "amount_minor": 500,
        "currency": "GBP",
        "idempotency_key": "visit-1",
        "entitlement_id": "",
        "scheme_currency": "GBP",
    }
    fields.update(overrides)
    return check_redemption(
        str(fields.pop("card_token")),
        str(fields.pop("category")),
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"card_token": ""}, "BAD_CARD_TOKEN"),
        ({"card_token": "4111111111111111"}, "BAD_CARD_TOKEN"),
        ({"category": ""}, "BAD_CATEGORY"),
        ({"category": "Swim"}, "BAD_CATEGORY"),
        ({"amount_minor": 0}, "BAD_AMOUNT"),
        ({"currency": ""}, "BAD_AMOUNT"),
        ({"amount_minor": 10**12}, "BAD_AMOUNT"),
        ({"currency": "EUR"}, "CURRENCY_MISMATCH"),
        ({"idempotency_key": ""}, "BAD_IDEMPOTENCY_KEY"),
        ({"idempotency_key": "a b"}, "BAD_IDEMPOTENCY_KEY"),
    ],
)
def test_redemption_fields_are_checked_in_order(overrides: dict[str, object], code: str) -> None:
    with pytest.raises(Exception) as refused:
        check(**overrides)
    assert code_of(refused) == code
    assert "4111111111111111" not in str(refused.value)


def test_a_provider_redeems_only_what_it_offers() -> None:
    leisure = SCHEME.party("provider:camden-leisure", DAY)
    assert leisure is not None
    check_offered(leisure, "gym")
    with pytest.raises(RedemptionRefusedError) as refused:
        check_offered(leisure, "studio_hire")
    assert code_of(refused) == "CATEGORY_NOT_OFFERED"


def held(entitlement: Entitlement) -> Held:
    return Held(entitlement, SCHEME.entitlement_scheme(entitlement.scheme_id, DAY))


def choose_code(
    entitlements: list[Entitlement], category: str = "swimming", named: str = ""
) -> str:
    with pytest.raises(RedemptionRefusedError) as refused:
        choose_entitlement([held(e) for e in entitlements], category, DAY, named)
    return code_of(refused)


def test_the_entitlement_that_pays_and_why_none_does() -> None:
    youth = grant()
    assert choose_entitlement([held(youth)], "swimming", DAY).entitlement is youth
    assert choose_code([]) == "NO_ENTITLEMENT"
    assert choose_code([youth], named="ent_other") == "NO_ENTITLEMENT"
    assert choose_code([grant(DAY - timedelta(days=365))]) == "ENTITLEMENT_EXPIRED"
    assert choose_code([grant(status=EntitlementStatus.REVOKED)]) == "ENTITLEMENT_REVOKED"
    studio = grant(scheme_id=STUDIO)
    assert choose_code([studio]) == "CATEGORY_NOT_ALLOWED"
    # An ended entitlement that allows it tells more than an active one that does not.
    assert choose_code([studio, grant(status=EntitlementStatus.REVOKED, entitlement_id="e2")]) == (
        "ENTITLEMENT_REVOKED"
    )
    senior = grant(scheme_id=SENIOR)
    assert choose_code([senior]) == "CATEGORY_NOT_ALLOWED"
    # Of two that fit, the first to end pays; a named one pays when it fits.
    later = grant(DAY - timedelta(days=10), entitlement_id="ent_0")
    assert choose_entitlement([held(youth), held(later)], "gym", DAY).entitlement is later
    assert choose_entitlement([held(youth), held(later)], "gym", DAY, "ent_1").entitlement is youth


def test_scheme_limits_are_checked_visit_then_balance_then_budget() -> None:
    check_spend(YOUTH_SCHEME, 1000, 1000, 499_000)
    cases = [
        ((1001, 0, 500_000), "OVER_VISIT_LIMIT"),
        ((900, 899, 500_000), "INSUFFICIENT_ENTITLEMENT"),
        ((900, 900, 499_101), "BUDGET_EXHAUSTED"),
    ]
    for (amount, balance, used), code in cases:
        with pytest.raises(RedemptionRefusedError) as refused:
            check_spend(YOUTH_SCHEME, amount, balance, used)
        assert code_of(refused) == code


@given(amount=st.integers(1, 5000), balance=st.integers(-5000, 5000), used=st.integers(0, 600_000))
def test_an_authorised_redemption_never_overspends(amount: int, balance: int, used: int) -> None:
    try:
        check_spend(YOUTH_SCHEME, amount, balance, used)
    except RedemptionRefusedError:
        return
    assert amount <= min(balance, YOUTH_SCHEME.per_visit_limit_minor)
    assert used + amount <= YOUTH_SCHEME.monthly_budget_minor


def test_a_device_is_its_registered_key_signing_the_redemption() -> None:
    device = RedemptionDevice.generate("pos-1")
    request = device.sign("tok_abcdef123456", "swimming", Money(500, "GBP"), "k")
    registered = ProviderDevice(
        "pos-1", "provider:camden-leisure", device.key_id, device.public_key, False, AT
    )
    assert authenticate_device(registered, request.key_id, request.redemption, request.signature)
    for stored, key_id, payload, code in [
        (None, request.key_id, request.redemption, "UNKNOWN_DEVICE"),
        (registered, "0" * 16, request.redemption, "UNKNOWN_KEY"),
        (registered, request.key_id, request.redemption + b"\x00", "BAD_SIGNATURE"),
    ]:
        with pytest.raises(DeviceAuthError) as refused:
            authenticate_device(stored, key_id, payload, request.signature)
        assert code_of(refused) == code
    with pytest.raises(DeviceRevokedError):
        authenticate_device(
            dataclasses.replace(registered, revoked=True),
            request.key_id,
            request.redemption,
            request.signature,
        )


def test_a_public_key_file_is_raw_or_pem_never_private() -> None:
    device = RedemptionDevice.generate("pos-1")
    assert public_key_from_file(device.public_key) == device.public_key
    assert public_key_from_file(device.public_pem()) == device.public_key
    for bad in (device.private_pem(), b"nonsense", b"\x00" * 31):
        with pytest.raises(ValueError):
            public_key_from_file(bad)


# -- rewards ---------------------------------------------------------------------------


def test_reward_periods() -> None:
    assert period_of(RewardPeriod.DAY, DAY) == "2026-11-20"
    assert period_of(RewardPeriod.MONTH, DAY) == "2026-11"


def test_an_officer_grants_only_their_councils_officer_rules() -> None:
    volunteering = SCHEME.reward_rule("camden-volunteering", DAY)
    assert officer_rule(volunteering, "funder:camden") is volunteering
    for rule, funder in [
        (volunteering, "funder:islington"),
        (SCHEME.reward_rule("busco-off-peak", DAY), "operator:BUSCO"),
        (None, "funder:camden"),
    ]:
        with pytest.raises(UnknownRewardRuleError):
            officer_rule(rule, funder)


def test_off_peak_hours_and_the_operator_of_the_journey() -> None:
    rules = SCHEME.reward_rules_on(DAY)
    friday = datetime(2026, 11, 20, 10, 0)
    assert [r.rule_id for r in off_peak_rules(rules, friday)] == ["busco-off-peak"]
    assert off_peak_rules(rules, friday.replace(hour=16)) == []  # the end is excluded
    assert off_peak_rules(rules, friday.replace(hour=9, minute=59)) == []
    assert off_peak_rules(rules, friday + timedelta(days=1)) == []  # Saturday
    (busco,) = off_peak_rules(rules, friday)
    assert operator_runs(busco, ["LUL", "BUSCO"], frozenset({"BUSCO"}))
    assert not operator_runs(busco, ["LUL"], frozenset({"BUSCO"}))
    council = RewardRule(
        "c",
        "funder:camden",
        "c",
        RewardKind.OFF_PEAK_TRAVEL,
        10,
        RewardCredit.STORED_VALUE,
        RewardPeriod.DAY,
        Dated(DAY),
        hours=(HoursWindow(frozenset({4}), time(10), None),),
    )
    assert operator_runs(council, ["LUL"], frozenset())


# -- the report ------------------------------------------------------------------------


def test_age_bands_of_the_report() -> None:
    assert [b.label for b in age_bands(YOUTH_SCHEME)] == ["11-13", "14-16", "17-18"]
    narrow = dataclasses.replace(YOUTH_SCHEME, min_age=13, max_age=16)
    assert [b.label for b in age_bands(narrow)] == ["13-13", "14-16"]
    senior = SCHEME.entitlement_scheme(SENIOR, DAY)
    assert senior is not None
    assert [b.label for b in age_bands(senior)] == ["66-120"]
    bands = age_bands(YOUTH_SCHEME)
    assert band_of(bands, 19) == AgeBand(17, 18)
    assert band_of(bands, 10) == AgeBand(11, 13)


def test_a_cell_under_the_minimum_is_suppressed_whole() -> None:
    assert MINIMUM_CELL == 10
    shown = disclosed(Cell(("swimming",), 10, 12, 3400))
    assert (shown.people, shown.redemptions, shown.amount_minor, shown.suppressed) == (
        10,
        12,
        3400,
        False,
    )
    hidden = disclosed(Cell(("gym",), 9, 40, 9000))
    assert (hidden.people, hidden.redemptions, hidden.amount_minor, hidden.suppressed) == (
        0,
        0,
        0,
        True,
    )
    table = people_table("t", ("x",), [Cell(("b",), 1), Cell(("a",), 12)])
    assert [r.labels for r in table.rows] == [("a",), ("b",)]
    budget = budget_table([Cell(("s", "S", "5000.00 GBP"), 3, 2, 700)])
    assert [(r.people, r.redemptions, r.amount_minor, r.suppressed) for r in budget.rows] == [
        (0, 0, 700, False)
    ]


def test_the_party_model_carries_provider_categories() -> None:
    party = Party(
        "provider:x",
        PartyKind.PROVIDER,
        "X",
        BankAccount(),
        Dated(DAY),
        categories=frozenset({"gym"}),
    )
    with pytest.raises(RedemptionRefusedError):
        check_offered(party, "swimming")
    with pytest.raises(RedemptionInputError):
        check(category="-gym")
