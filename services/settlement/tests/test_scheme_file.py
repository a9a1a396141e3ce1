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

from clearway.scheme.file import known_agencies, known_networks, load_scheme
from clearway.scheme.model import (
    Method,
    PartyKind,
    ReimbursementForm,
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
        for name in ("agency.txt", "networks.txt", "routes.txt"):
            z.write(FEED / name, f"london/{name}")

    for feed in (FEED, archive):
        assert known_agencies(feed) == {"LUL", "ELIZ", "NATRAIL", "BUSCO"}
        assert known_networks(feed) == {"RAIL", "BUS"}


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

    _refusal(path, "party[7]", "operator:LUL", "overlaps party[1]")


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

    assert tomllib.loads(copy) == tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
