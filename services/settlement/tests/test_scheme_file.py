"""The scheme file: the example loads and answers lookups; bad files are refused clearly.

Bad files are the example with one edit, so they stay in sync with it.
"""

from __future__ import annotations

import tomllib
import zipfile
from datetime import date, datetime, time
from fractions import Fraction
from pathlib import Path

import pytest

from clearway.scheme.file import known_agencies, known_areas, known_networks, load_scheme
from clearway.scheme.model import (
    EntitlementKind,
    Method,
    PartyKind,
    ReimbursementForm,
    RewardCredit,
    RewardKind,
    RewardPeriod,
    SchemeError,
    Tier,
)
from clearway.scheme.rules import iban_problem

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "schemes" / "london.toml"
FEED = ROOT / "examples" / "feeds" / "london"
BEFORE, IN_FORCE = date(2024, 12, 31), date(2025, 3, 3)


def _edited(tmp_path: Path, old: str, new: str, *more: tuple[str, str]) -> Path:
    """The example with `old` replaced by `new` (and each further pair of `more`)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for before, after in ((old, new), *more):
        assert text.count(before) == 1, f"the example no longer has exactly one {before!r}"
        text = text.replace(before, after)
    path = tmp_path / "scheme.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _appended(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "scheme.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def _refusal(path: Path, where: str, *fragments: str) -> SchemeError:
    """Load `path`, expect a refusal naming the file, `where` and every fragment."""
    with pytest.raises(SchemeError) as caught:
        load_scheme(path, agencies_from=FEED)
    err = caught.value
    assert err.code == "SCHEME_INVALID"
    matching = [
        p
        for p in err.problems
        if p.file == str(path) and p.path == where and all(f in p.message for f in fragments)
    ]
    assert matching, f"no problem at {where} saying {fragments}: {err.problems}"
    assert f"{path}: {where}: " in str(err)
    return err


def test_example_scheme_loads_with_the_feeds_agencies() -> None:
    scheme = load_scheme(EXAMPLE, agencies_from=FEED)

    assert scheme.source == str(EXAMPLE)
    assert (scheme.scheme_id, scheme.currency) == ("london-example", "GBP")
    assert scheme.calendar.timezone == "Europe/London"
    assert scheme.calendar.cutoff == time(10, 0)
    assert scheme.calendar.reference_rider_category == "ADULT"
    assert scheme.scheme_party(IN_FORCE).party_id == "scheme:clearway"
    tiers = {p.party_id: p.tier for p in scheme.parties_on(IN_FORCE) if p.tier}
    assert tiers == {
        "operator:BUSCO": Tier.LOCAL,
        "operator:ELIZ": Tier.REGIONAL,
        "operator:LUL": Tier.REGIONAL,
        "operator:NATRAIL": Tier.NATIONAL,
    }
    kinds = {p.kind for p in scheme.parties_on(IN_FORCE)}
    assert kinds == set(PartyKind)
    lul = scheme.operator_for("LUL", IN_FORCE)
    assert lul is not None
    assert lul.bank.iban == "GB79EXBK60912263178490"
    assert lul.bank.bic == "EXBKGB2L"
    busco = scheme.party("operator:BUSCO", IN_FORCE)
    assert busco is not None
    assert (busco.bank.sort_code, busco.bank.account_number) == ("309466", "18203974")


def test_example_lookups_follow_effective_dates() -> None:
    scheme = load_scheme(EXAMPLE, agencies_from=FEED)

    assert scheme.operator_for("LUL", BEFORE) is None
    assert scheme.parties_on(BEFORE) == []
    assert scheme.fees_on(BEFORE).clearing_fee_bps == 0
    assert scheme.rules_on(BEFORE) == []
    assert scheme.funding_on(BEFORE) == []

    fees = scheme.fees_on(IN_FORCE)
    assert (fees.clearing_fee_bps, fees.clearing_fee_per_journey_minor) == (150, 1)
    assert fees.retailer_commission_bps == 200
    assert scheme.default_method(IN_FORCE) is Method.DISTANCE
    rules = {r.rule_id: r for r in scheme.rules_on(IN_FORCE)}
    assert rules["bus-equal"].network_id == "BUS"
    assert rules["bus-equal"].method is Method.EQUAL
    assert rules["lul-eliz-fixed"].agency_ids == frozenset({"LUL", "ELIZ"})
    assert dict(rules["lul-eliz-fixed"].percentages) == {"LUL": 60, "ELIZ": 40}
    assert rules["natrail-lul-standalone"].method is Method.STANDALONE_FARE

    senior, youth = scheme.funding_on(IN_FORCE)
    assert senior.funder_id == youth.funder_id == "funder:camden"
    assert senior.reimbursement.form is ReimbursementForm.NO_BETTER_NO_WORSE
    assert senior.reimbursement.factor == Fraction("0.48")
    assert senior.reimbursement.additional_per_journey_minor == 12
    assert youth.reimbursement.form is ReimbursementForm.PERCENT_OF_FARE_FORGONE
    assert youth.reimbursement.percent == 55
    monday_morning, monday_evening = datetime(2025, 3, 3, 9, 0), datetime(2025, 3, 3, 22, 59)
    saturday_night = datetime(2025, 3, 8, 23, 59)
    assert not any(w.contains(monday_morning) for w in senior.hours)
    assert any(w.contains(monday_evening) for w in senior.hours)
    assert any(w.contains(saturday_night) for w in senior.hours)


def test_a_new_fee_schedule_applies_from_its_first_service_day(tmp_path: Path) -> None:
    path = _edited(
        tmp_path,
        "[[fees]]\neffective_from = 2025-01-01\n",
        "[[fees]]\neffective_from = 2026-01-01\nclearing_fee_bps = 175\n\n"
        "[[fees]]\neffective_from = 2025-01-01\neffective_to = 2026-01-01\n",
    )

    scheme = load_scheme(path, agencies_from=FEED)

    assert scheme.fees_on(date(2025, 12, 31)).clearing_fee_bps == 150
    assert scheme.fees_on(date(2026, 1, 1)).clearing_fee_bps == 175


def test_percentages_written_as_toml_numbers_are_read_exactly(tmp_path: Path) -> None:
    path = _edited(tmp_path, '{ LUL = "60", ELIZ = "40" }', "{ LUL = 59.99, ELIZ = 40.01 }")

    scheme = load_scheme(path, agencies_from=FEED)

    fixed = next(r for r in scheme.method_rules if r.method is Method.FIXED)
    assert dict(fixed.percentages) == {"LUL": Fraction(5999, 100), "ELIZ": Fraction(4001, 100)}


def test_known_agencies_and_networks_read_a_feed_directory_or_zip(tmp_path: Path) -> None:
    archive = tmp_path / "feed.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("agency.txt", "networks.txt", "routes.txt", "areas.txt", "stop_areas.txt"):
            z.write(FEED / name, f"london/{name}")

    for feed in (FEED, archive):
        assert known_agencies(feed) == {"LUL", "ELIZ", "NATRAIL", "BUSCO"}
        assert known_networks(feed) == {"RAIL", "BUS"}
        assert known_areas(feed) == {"Z1", "Z2"}


def test_a_feed_without_areas_does_not_check_the_funders_areas(tmp_path: Path) -> None:
    archive = tmp_path / "feed.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("agency.txt", "networks.txt", "routes.txt"):
            z.write(FEED / name, name)
    path = _edited(tmp_path, 'areas = ["Z1", "Z2"]', 'areas = ["camden"]')

    assert known_areas(archive) == frozenset()
    camden = load_scheme(path, agencies_from=archive).party("funder:camden", IN_FORCE)
    assert camden is not None
    assert camden.areas == {"camden"}


def test_example_providers_and_council_area_load() -> None:
    scheme = load_scheme(EXAMPLE, agencies_from=FEED)

    camden = scheme.party("funder:camden", IN_FORCE)
    assert camden is not None
    assert camden.areas == {"Z1", "Z2"}
    providers = {p.party_id: p for p in scheme.parties_on(IN_FORCE) if p.kind is PartyKind.PROVIDER}
    assert {k: p.categories for k, p in providers.items()} == {
        "provider:camden-leisure": {"swimming", "gym", "pitch_hire"},
        "provider:soundbox": {"studio_hire"},
    }
    soundbox = providers["provider:soundbox"]
    assert soundbox.name == "Soundbox recording studio (example)"
    assert (soundbox.bank.sort_code, soundbox.bank.account_number) == ("609177", "82046153")
    assert all(not p.categories for p in scheme.parties if p.kind is not PartyKind.PROVIDER)


def test_example_entitlement_schemes_load_with_their_values() -> None:
    scheme = load_scheme(EXAMPLE, agencies_from=FEED)

    assert scheme.entitlement_scheme("camden-youth-leisure", BEFORE) is None
    youth = scheme.entitlement_scheme("camden-youth-leisure", IN_FORCE)
    assert youth is not None
    assert (youth.funder_id, youth.kind) == ("funder:camden", EntitlementKind.ALLOWANCE)
    assert (youth.min_age, youth.max_age, youth.areas) == (11, 18, {"camden"})
    assert (youth.validity_days, youth.renewal_window_days) == (365, 30)
    assert youth.monthly_budget_minor == 500_000
    assert youth.allowance_per_month_minor == 2000
    assert youth.categories == {"swimming", "gym", "pitch_hire", "studio_hire"}
    assert youth.per_visit_limit_minor == 1000
    assert youth.rider_category == ""
    senior = scheme.entitlement_scheme("camden-senior-pass", IN_FORCE)
    assert senior is not None
    assert (senior.kind, senior.rider_category) == (EntitlementKind.TRAVEL_PASS, "SENIOR")
    assert (senior.min_age, senior.max_age, senior.areas) == (66, 130, {"camden"})
    assert (senior.validity_days, senior.renewal_window_days) == (1825, 60)
    assert senior.monthly_budget_minor == 0
    assert (senior.allowance_per_month_minor, senior.per_visit_limit_minor) == (0, 0)
    assert senior.categories == frozenset()
    assert scheme.entitlement_schemes_of("funder:camden", IN_FORCE) == [youth, senior]
    assert scheme.entitlement_schemes_of("operator:BUSCO", IN_FORCE) == []


def test_example_reward_rules_load_with_their_values() -> None:
    scheme = load_scheme(EXAMPLE, agencies_from=FEED)

    assert scheme.reward_rules_on(BEFORE) == []
    volunteering, bonus, off_peak = scheme.reward_rules_on(IN_FORCE)
    assert volunteering.rule_id == "camden-volunteering"
    assert (volunteering.funder_id, volunteering.kind) == (
        "funder:camden",
        RewardKind.OFFICER_GRANT,
    )
    assert (volunteering.amount_minor, volunteering.credit) == (500, RewardCredit.STORED_VALUE)
    assert (volunteering.period, volunteering.entitlement_scheme_id) == (RewardPeriod.MONTH, "")
    assert volunteering.hours == ()
    assert scheme.reward_rule("camden-youth-bonus", IN_FORCE) == bonus
    assert (bonus.kind, bonus.amount_minor) == (RewardKind.OFFICER_GRANT, 500)
    assert (bonus.credit, bonus.entitlement_scheme_id) == (
        RewardCredit.ENTITLEMENT,
        "camden-youth-leisure",
    )
    assert bonus.period is RewardPeriod.MONTH
    assert (off_peak.rule_id, off_peak.funder_id) == ("busco-off-peak", "operator:BUSCO")
    assert (off_peak.kind, off_peak.amount_minor) == (RewardKind.OFF_PEAK_TRAVEL, 50)
    assert (off_peak.credit, off_peak.period) == (RewardCredit.STORED_VALUE, RewardPeriod.DAY)
    friday_noon, friday_evening = datetime(2025, 3, 7, 12, 0), datetime(2025, 3, 7, 16, 0)
    saturday_noon = datetime(2025, 3, 8, 12, 0)
    assert any(w.contains(friday_noon) for w in off_peak.hours)
    assert not any(w.contains(friday_evening) for w in off_peak.hours)
    assert not any(w.contains(saturday_noon) for w in off_peak.hours)


def test_an_entitlement_scheme_id_may_recur_on_dates_that_do_not_overlap(tmp_path: Path) -> None:
    path = _edited(
        tmp_path,
        "per_visit_limit_minor = 1000\neffective_from = 2025-01-01\n",
        "per_visit_limit_minor = 1000\neffective_from = 2025-01-01\neffective_to = 2026-01-01\n",
    )
    path.write_text(path.read_text(encoding="utf-8") + _YOUTH_2026, encoding="utf-8")

    scheme = load_scheme(path, agencies_from=FEED)

    old = scheme.entitlement_scheme("camden-youth-leisure", date(2025, 12, 31))
    new = scheme.entitlement_scheme("camden-youth-leisure", date(2026, 1, 1))
    assert old is not None
    assert new is not None
    assert (old.allowance_per_month_minor, new.allowance_per_month_minor) == (2000, 2500)


_YOUTH_2026 = """
[[entitlement_scheme]]
id = "camden-youth-leisure"
funder = "funder:camden"
name = "Camden youth leisure allowance (example)"
kind = "allowance"
min_age = 11
max_age = 18
areas = ["camden"]
validity_days = 365
renewal_window_days = 30
monthly_budget_minor = 500000
allowance_per_month_minor = 2500
categories = ["swimming", "gym"]
per_visit_limit_minor = 1000
effective_from = 2026-01-01
"""


def test_unknown_funder_party_is_refused(tmp_path: Path) -> None:
    path = _edited(
        tmp_path,
        'funder = "funder:camden"\nrider_categories = ["SENIOR"]',
        'funder = "funder:islington"\nrider_categories = ["SENIOR"]',
    )

    _refusal(path, "funding[0].funder", "unknown party 'funder:islington'", "funder:camden")


def test_unknown_agency_is_refused_listing_the_feeds_agencies(tmp_path: Path) -> None:
    path = _edited(tmp_path, 'agency_ids = ["LUL"]', 'agency_ids = ["LUX"]')

    _refusal(path, "party[1].agency_ids[0]", "unknown agency 'LUX'", "BUSCO, ELIZ, LUL, NATRAIL")


def test_fixed_percentages_summing_to_99_99_are_refused(tmp_path: Path) -> None:
    path = _edited(tmp_path, 'LUL = "60", ELIZ = "40"', 'LUL = "59.99", ELIZ = "40"')

    _refusal(path, "apportionment.rule[1].percentages", "sum to 99.99, not 100")


def test_overlapping_fee_schedules_are_refused(tmp_path: Path) -> None:
    path = _appended(tmp_path, "\n[[fees]]\neffective_from = 2025-06-01\nclearing_fee_bps = 175\n")

    _refusal(path, "fees[1]", "overlaps fees[0]")


def test_a_party_declared_twice_on_overlapping_dates_is_refused(tmp_path: Path) -> None:
    path = _appended(
        tmp_path,
        '\n[[party]]\nid = "operator:LUL"\nname = "LUL again"\nagency_ids = ["LUL"]\n'
        'tier = "regional"\neffective_from = 2025-06-01\n'
        'bank = { sort_code = "040004", account_number = "12345678" }\n',
    )

    _refusal(path, "party[9]", "operator:LUL", "overlaps party[1]")


def test_two_rules_with_one_selector_on_overlapping_dates_are_refused(tmp_path: Path) -> None:
    path = _appended(
        tmp_path,
        '\n[[apportionment.rule]]\nid = "bus-distance"\nnetwork = "BUS"\n'
        'method = "distance"\neffective_from = 2025-06-01\n',
    )

    _refusal(path, "apportionment.rule[3]", "network BUS", "overlaps apportionment.rule[0]")


def test_iban_with_wrong_check_digits_is_refused(tmp_path: Path) -> None:
    path = _edited(tmp_path, "GB79 EXBK 6091 2263 1784 90", "GB97 EXBK 6091 2263 1784 90")

    _refusal(path, "party[1].bank.iban", "GB97 EXBK", "mod-97")


def test_bad_bic_is_refused(tmp_path: Path) -> None:
    path = _edited(tmp_path, 'bic = "SAMPGB21"', 'bic = "SAMPG821"')

    _refusal(path, "party[2].bank.bic", "SAMPG821", "ISO 9362")


def test_bad_sort_code_is_refused(tmp_path: Path) -> None:
    path = _edited(tmp_path, '"30-94-66"', '"30-94-6"')

    _refusal(path, "party[4].bank.sort_code", "'30-94-6' is not 6 digits")


def test_a_misspelt_key_is_refused_not_ignored(tmp_path: Path) -> None:
    path = _edited(
        tmp_path, "additional_per_journey_minor = 12", "additional_per_journey_minr = 12"
    )

    _refusal(
        path,
        "funding[0].reimbursement.additional_per_journey_minr",
        "unknown key",
        "did you mean 'additional_per_journey_minor'?",
    )


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _edited(tmp_path, 'cutoff = "10:00"', 'cutoff = "10:00')
    line = 1 + path.read_text(encoding="utf-8").split('cutoff = "10:00')[0].count("\n")

    _refusal(path, f"line {line}", "TOML syntax error")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _edited(
        tmp_path,
        'bic = "SAMPGB21"',
        'bic = "SAMPG821"',
        ('id = "operator:ELIZ"', 'id = "operator:ELIZ"\nnmae = "typo"'),
        ('percent = "55"', 'percent = "155"'),
    )

    err = _refusal(path, "party[2].bank.bic", "ISO 9362")
    assert {p.path for p in err.problems} == {
        "party[2].bank.bic",
        "party[2].nmae",
        "funding[1].reimbursement.percent",
    }


BAD_EDITS = {
    "currency": ('currency = "GBP"', 'currency = "gbp"', "currency", "3 upper-case"),
    "timezone": ('"Europe/London"', '"Europe/Londres"', "settlement.timezone", "IANA"),
    "cutoff": ('cutoff = "10:00"', 'cutoff = "25:00"', "settlement.cutoff", "HH:MM"),
    "dates reversed": (
        'id = "bus-equal"\nnetwork = "BUS"\nmethod = "equal"\neffective_from = 2025-01-01',
        'id = "bus-equal"\nnetwork = "BUS"\nmethod = "equal"\neffective_from = 2025-01-01'
        "\neffective_to = 2024-01-01",
        "apportionment.rule[0].effective_to",
        "must be later than effective_from",
    ),
    "party id kind": (
        'id = "retailer:cornershop"',
        'id = "shop:cornershop"',
        "party[5].id",
        "<kind>:<name>",
    ),
    "operator without tier": ('tier = "local"\n', "", "party[4].tier", "required for an operator"),
    "tier on a funder": (
        'name = "London Borough of Camden (example)"',
        'name = "London Borough of Camden (example)"\ntier = "local"',
        "party[6].tier",
        "only operator parties",
    ),
    "unknown network": (
        'network = "BUS"',
        'network = "BSU"',
        "apportionment.rule[0].network",
        "BSU",
    ),
    "percentage keys": (
        'LUL = "60", ELIZ = "40"',
        'LUL = "60", NATRAIL = "40"',
        "apportionment.rule[1].percentages",
        "must be the rule's operators ELIZ, LUL",
    ),
    "percentages on a non-fixed rule": (
        'method = "standalone_fare"',
        'method = "standalone_fare"\npercentages = { NATRAIL = "50", LUL = "50" }',
        "apportionment.rule[2].percentages",
        "only a fixed rule",
    ),
    "rule with both selectors": (
        'operators = ["NATRAIL", "LUL"]',
        'operators = ["NATRAIL", "LUL"]\nnetwork = "RAIL"',
        "apportionment.rule[2]",
        "exactly one of network",
    ),
    "hours backwards": ('to = "23:00"', 'to = "09:00"', "funding[0].hours[0].to", "later than"),
    "days": ('days = "Sat,Sun"', 'days = "Sun-Sat"', "funding[0].hours[1].days", "Mon-Fri"),
    "percent 0": (
        'percent = "55"',
        'percent = "0"',
        "funding[1].reimbursement.percent",
        "more than 0",
    ),
    "factor 0": (
        'factor = "0.48"',
        'factor = "0"',
        "funding[0].reimbursement.factor",
        "more than 0",
    ),
    "funding overlap": (
        'rider_categories = ["YOUTH"]\nnetworks = ["RAIL"]',
        'rider_categories = ["YOUTH", "SENIOR"]\nnetworks = ["RAIL", "BUS"]',
        "funding[1]",
        "SENIOR on BUS",
    ),
    "funder is not a funder": (
        'funder = "funder:camden"\nrider_categories = ["YOUTH"]',
        'funder = "retailer:cornershop"\nrider_categories = ["YOUTH"]',
        "funding[1].funder",
        "not a funder",
    ),
    "no scheme party at first": (
        'name = "Clearway clearing house (example)"\neffective_from = 2025-01-01',
        'name = "Clearway clearing house (example)"\neffective_from = 2025-02-01',
        "party",
        "no scheme party (id scheme:<name>) is in force from 2025-01-01 until 2025-02-01",
    ),
    "agency on two operators": (
        'agency_ids = ["ELIZ"]',
        'agency_ids = ["ELIZ", "LUL"]',
        "party[2].agency_ids",
        "agency 'LUL' is mapped to operator:ELIZ and to operator:LUL",
    ),
    "iban and sort code": (
        '"GB23 EXBK 6091 3390 6451 27", bic = "EXBKGB2L"',
        '"GB23 EXBK 6091 3390 6451 27", bic = "EXBKGB2L", sort_code = "040004"',
        "party[3].bank",
        "not both",
    ),
    "iban length": (
        "GB23 SAMP 3094 5571 0246 83",
        "GB23 SAMP 3094 5571 0246 8",
        "party[2].bank.iban",
        "22",
    ),
    "account number": ('"18203974"', '"1820397"', "party[4].bank.account_number", "8 digits"),
}


@pytest.mark.parametrize("case", BAD_EDITS.values(), ids=list(BAD_EDITS))
def test_other_bad_scheme_files_are_refused(tmp_path: Path, case: tuple[str, ...]) -> None:
    old, new, where, fragment = case
    _refusal(_edited(tmp_path, old, new), where, fragment)


_ISLINGTON = """
[[party]]
id = "funder:islington"
name = "London Borough of Islington (example)"
effective_from = 2025-01-01
bank = { sort_code = "30-94-21", account_number = "61730458" }
"""

BAD_BENEFIT_EDITS = {
    "unknown category": (
        'categories = ["swimming", "gym", "pitch_hire", "studio_hire"]',
        'categories = ["swimming", "gym", "pitch_hire", "karting"]',
        "entitlement_scheme[0].categories[3]",
        "unknown category 'karting': no provider party sells it (the providers' categories: "
        "gym, pitch_hire, studio_hire, swimming)",
    ),
    "per visit over the allowance": (
        "per_visit_limit_minor = 1000",
        "per_visit_limit_minor = 2500",
        "entitlement_scheme[0].per_visit_limit_minor",
        "2500 is more than allowance_per_month_minor 2000",
    ),
    "renewal window as long as the validity": (
        "renewal_window_days = 30",
        "renewal_window_days = 365",
        "entitlement_scheme[0].renewal_window_days",
        "365 must be less than validity_days 365",
    ),
    "travel pass with categories": (
        'rider_category = "SENIOR"',
        'rider_category = "SENIOR"\ncategories = ["gym"]',
        "entitlement_scheme[1].categories",
        "only allowance schemes have categories, not a travel_pass scheme",
    ),
    "travel pass without a rider category": (
        'rider_category = "SENIOR"\n',
        "",
        "entitlement_scheme[1].rider_category",
        "missing (required for a travel_pass scheme)",
    ),
    "allowance with a rider category": (
        'kind = "allowance"',
        'kind = "allowance"\nrider_category = "YOUTH"',
        "entitlement_scheme[0].rider_category",
        "only travel_pass schemes have rider_category, not an allowance scheme",
    ),
    "allowance without categories": (
        'categories = ["swimming", "gym", "pitch_hire", "studio_hire"]\n',
        "",
        "entitlement_scheme[0].categories",
        "missing (required for an allowance scheme)",
    ),
    "unknown entitlement kind": (
        'kind = "allowance"',
        'kind = "voucher"',
        "entitlement_scheme[0].kind",
        "'voucher' is not one of allowance, travel_pass",
    ),
    "ages reversed": (
        "max_age = 18",
        "max_age = 10",
        "entitlement_scheme[0].max_age",
        "10 is less than min_age 11",
    ),
    "age over 130": (
        "max_age = 130",
        "max_age = 131",
        "entitlement_scheme[1].max_age",
        "131 is out of range (0 to 130)",
    ),
    "validity of no days": (
        "validity_days = 1825",
        "validity_days = 0",
        "entitlement_scheme[1].validity_days",
        "0 is out of range (at least 1)",
    ),
    "no residence areas": (
        'areas = ["camden"]\nvalidity_days = 1825',
        "areas = []\nvalidity_days = 1825",
        "entitlement_scheme[1].areas",
        "needs at least 1 entry",
    ),
    "misspelt entitlement key": (
        "per_visit_limit_minor = 1000",
        "per_visit_limit_minr = 1000",
        "entitlement_scheme[0].per_visit_limit_minr",
        "did you mean 'per_visit_limit_minor'?",
    ),
    "entitlement scheme of an operator": (
        'id = "camden-senior-pass"\nfunder = "funder:camden"',
        'id = "camden-senior-pass"\nfunder = "operator:BUSCO"',
        "entitlement_scheme[1].funder",
        "'operator:BUSCO' is an operator party, not a funder",
    ),
    "entitlement scheme before its council": (
        "per_visit_limit_minor = 1000\neffective_from = 2025-01-01",
        "per_visit_limit_minor = 1000\neffective_from = 2024-12-01",
        "entitlement_scheme[0].funder",
        "party 'funder:camden' is not in force on 2024-12-01",
    ),
    "off-peak rule without hours": (
        'hours = [{ days = "Mon-Fri", from = "10:00", to = "16:00" }]\n',
        "",
        "reward_rule[2].hours",
        "missing (required for an off_peak_travel rule)",
    ),
    "officer grant with hours": (
        'credit = "stored_value"\nperiod = "month"',
        'credit = "stored_value"\nperiod = "month"\n'
        'hours = [{ days = "Sat", from = "10:00", to = "12:00" }]',
        "reward_rule[0].hours",
        "only off_peak_travel rules have hours, not an officer_grant rule",
    ),
    "officer grant paid by an operator": (
        'id = "camden-volunteering"\nfunder = "funder:camden"',
        'id = "camden-volunteering"\nfunder = "operator:BUSCO"',
        "reward_rule[0].funder",
        "'operator:BUSCO' is an operator party, not a funder: an officer_grant rule is paid "
        "by a council (officers belong to councils)",
    ),
    "reward paid by a retailer": (
        'funder = "operator:BUSCO"',
        'funder = "retailer:cornershop"',
        "reward_rule[2].funder",
        "'retailer:cornershop' is a retailer party, not a funder or an operator",
    ),
    "reward to an entitlement without its scheme": (
        'entitlement_scheme = "camden-youth-leisure"\n',
        "",
        "reward_rule[1].entitlement_scheme",
        "missing (required for a rule crediting an entitlement)",
    ),
    "stored value reward naming a scheme": (
        'credit = "stored_value"\nperiod = "month"',
        'credit = "stored_value"\nentitlement_scheme = "camden-youth-leisure"\nperiod = "month"',
        "reward_rule[0].entitlement_scheme",
        "only rules crediting an entitlement have entitlement_scheme, "
        "not a rule crediting stored_value",
    ),
    "reward to a travel pass": (
        'entitlement_scheme = "camden-youth-leisure"',
        'entitlement_scheme = "camden-senior-pass"',
        "reward_rule[1].entitlement_scheme",
        "'camden-senior-pass' is a travel_pass scheme: a reward credits only an allowance",
    ),
    "reward to an unknown scheme": (
        'entitlement_scheme = "camden-youth-leisure"',
        'entitlement_scheme = "camden-youth-sport"',
        "reward_rule[1].entitlement_scheme",
        "unknown entitlement scheme 'camden-youth-sport' (declared: camden-senior-pass, "
        "camden-youth-leisure)",
    ),
    "reward outlasting its scheme": (
        "per_visit_limit_minor = 1000\neffective_from = 2025-01-01",
        "per_visit_limit_minor = 1000\neffective_from = 2025-01-01\neffective_to = 2026-01-01",
        "reward_rule[1].entitlement_scheme",
        "entitlement scheme 'camden-youth-leisure' is not in force on 2026-01-01",
    ),
    "reward of nothing": (
        "amount_minor = 50\n",
        "amount_minor = 0\n",
        "reward_rule[2].amount_minor",
        "0 is out of range (at least 1)",
    ),
    "reward period": (
        'period = "day"',
        'period = "week"',
        "reward_rule[2].period",
        "'week' is not one of day, month",
    ),
    "provider without categories": (
        'categories = ["studio_hire"]\n',
        "",
        "party[8].categories",
        "missing (required for a provider party)",
    ),
    "categories on an operator": (
        'tier = "local"',
        'tier = "local"\ncategories = ["gym"]',
        "party[4].categories",
        "only provider parties have categories, not an operator party",
    ),
    "areas on a retailer": (
        'name = "Corner shop top-ups (example)"',
        'name = "Corner shop top-ups (example)"\nareas = ["Z1"]',
        "party[5].areas",
        "only funder parties have areas, not a retailer party",
    ),
    "area unknown to the feed": (
        'areas = ["Z1", "Z2"]',
        'areas = ["Z1", "Z9"]',
        "party[6].areas[1]",
        "unknown area 'Z9' (the feed's areas: Z1, Z2)",
    ),
}


@pytest.mark.parametrize("case", BAD_BENEFIT_EDITS.values(), ids=list(BAD_BENEFIT_EDITS))
def test_bad_providers_entitlement_schemes_and_rewards_are_refused(
    tmp_path: Path, case: tuple[str, ...]
) -> None:
    old, new, where, message = case
    _refusal(_edited(tmp_path, old, new), where, message)


def test_a_provider_refused_is_not_also_reported_as_an_unknown_category(tmp_path: Path) -> None:
    path = _edited(tmp_path, 'categories = ["studio_hire"]', 'categories = "studio_hire"')

    err = _refusal(path, "party[8].categories", "expected an array of text, got text")
    assert [p.path for p in err.problems] == ["party[8].categories"]


def test_a_reward_to_another_councils_scheme_is_refused(tmp_path: Path) -> None:
    path = _edited(
        tmp_path,
        'id = "camden-youth-bonus"\nfunder = "funder:camden"',
        'id = "camden-youth-bonus"\nfunder = "funder:islington"',
    )
    path.write_text(path.read_text(encoding="utf-8") + _ISLINGTON, encoding="utf-8")

    err = _refusal(
        path,
        "reward_rule[1].entitlement_scheme",
        "'camden-youth-leisure' is a scheme of funder:camden, not of the rule's funder "
        "funder:islington: a reward credits an entitlement of its own funder",
    )
    assert [p.path for p in err.problems] == ["reward_rule[1].entitlement_scheme"]


def test_an_entitlement_scheme_declared_twice_on_overlapping_dates_is_refused(
    tmp_path: Path,
) -> None:
    path = _appended(tmp_path, _YOUTH_2026.replace("2026-01-01", "2025-06-01"))

    _refusal(
        path,
        "entitlement_scheme[2]",
        "camden-youth-leisure from 2025-06-01 with no end overlaps entitlement_scheme[0] "
        "(from 2025-01-01 with no end)",
    )


def test_a_reward_rule_declared_twice_on_overlapping_dates_is_refused(tmp_path: Path) -> None:
    path = _appended(
        tmp_path,
        '\n[[reward_rule]]\nid = "camden-volunteering"\nfunder = "funder:camden"\n'
        'name = "Volunteering, more"\nkind = "officer_grant"\namount_minor = 1000\n'
        'credit = "stored_value"\nperiod = "month"\neffective_from = 2025-01-01\n'
        "effective_to = 2025-02-01\n",
    )

    _refusal(
        path,
        "reward_rule[3]",
        "camden-volunteering from 2025-01-01 until 2025-02-01 overlaps reward_rule[0]",
    )


@pytest.mark.parametrize(
    "iban",
    [
        "GB29NWBK60161331926819",
        "IE29AIBK93115212345678",
        "DE89370400440532013000",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "ES9121000418450200051332",
        "IT60X0542811101000000123456",
        "BE68539007547034",
        "CH9300762011623852957",
    ],
)
def test_published_example_ibans_are_valid(iban: str) -> None:
    assert iban_problem(iban) is None


@pytest.mark.parametrize(
    ("iban", "fragment"),
    [
        ("GB29NWBK60161331926818", "mod-97"),
        ("GB29NWBK6016133192681", "has 22 characters"),
        ("GB29NWBK601613319268AB", "layout"),
        ("gb29", "country code"),
    ],
)
def test_bad_ibans_are_explained(iban: str, fragment: str) -> None:
    problem = iban_problem(iban)
    assert problem is not None
    assert fragment in problem


def test_the_annotated_example_in_the_docs_reads_the_same_as_the_file() -> None:
    doc = (ROOT / "docs" / "scheme.md").read_text(encoding="utf-8")
    copy = doc.split("## The example, annotated", 1)[1].split("```toml\n", 1)[1].split("```")[0]

    assert copy == EXAMPLE.read_text(encoding="utf-8")
    assert tomllib.loads(copy) == tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
