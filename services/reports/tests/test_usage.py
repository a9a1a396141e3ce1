"""Usage reports against a hand-counted small day (no Kafka)."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from xml.etree import ElementTree

import pytest
from PIL import Image

from clearway.scheme.file import load_scheme
from services.reports.adapters.benefits import posting_from_event
from services.reports.adapters.feed import network_places
from services.reports.adapters.files import write_reports
from services.reports.adapters.journeys import journey_from_event
from services.reports.domain.benefits import Posting
from services.reports.domain.chart import BarChart, bar_chart_svg
from services.reports.domain.reports import ReportScope, UsageReports, build_reports
from services.reports.domain.scope import (
    BadPeriodError,
    Period,
    UnknownCouncilError,
    council_of,
)
from services.reports.domain.usage import Journey, standing_journeys
from services.reports.entrypoints.cli import DEFAULT_SCHEME, main
from services.reports.tests.day import (
    CAMDEN_BUDGET,
    CAMDEN_CONCESSIONS,
    CAMDEN_MONTH_BUDGET,
    CAMDEN_MONTH_RIDERSHIP,
    CAMDEN_OD,
    CAMDEN_REWARDS,
    CAMDEN_RIDERSHIP,
    CAMDEN_VOUCHERS,
    COUNCIL,
    MONTH,
    NETWORK_CONCESSIONS,
    NETWORK_OD,
    NETWORK_RIDERSHIP,
    PERIOD,
    day_scheme,
    hand_counted_day,
    hand_counted_postings,
    identifiers,
)

REPO = Path(__file__).resolve().parents[3]
LONDON_FEED = REPO / "examples" / "feeds" / "london"
TABLES = (
    "ridership",
    "origin_destination",
    "concession_take_up",
    "voucher_spend",
    "budget",
    "rewards",
)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def as_lists(reports: UsageReports, name: str) -> list[list[str]]:
    table = reports.table(name)
    return [list(table.columns), *(list(r) for r in table.rows)]


def day_journeys() -> list[Journey]:
    return [journey_from_event(e) for e in hand_counted_day()]


def day_postings() -> list[Posting]:
    return [posting_from_event(e) for e in hand_counted_postings()]


def build(
    period: str = PERIOD,
    council: str | None = COUNCIL,
    *,
    journeys: list[Journey] | None = None,
    postings: list[Posting] | None = None,
    feed: Path | None = LONDON_FEED,
) -> UsageReports:
    scheme = day_scheme()
    places = network_places(feed)
    span = Period.parse(period)
    scope = ReportScope(
        period=span,
        timezone=places.timezone,
        currency=scheme.currency,
        council=council_of(scheme, council, span) if council else None,
        stop_areas=places.stop_areas,
        entitlement_schemes=scheme.entitlement_schemes,
    )
    return build_reports(
        day_journeys() if journeys is None else journeys,
        day_postings() if postings is None else postings,
        scope,
    )


def test_a_period_is_a_service_day_or_a_month() -> None:
    day = Period.parse("2026-06-15")
    assert (day.first, day.last, day.months()) == (day.first, day.first, ("2026-06",))
    month = Period.parse("2026-02")
    assert (month.first.isoformat(), month.last.isoformat()) == ("2026-02-01", "2026-02-28")
    assert month.contains("2026-02-28") and not month.contains("2026-03-01")
    assert not month.contains("2026-02-3")  # malformed: outside
    for bad in ("15/06/2026", "2026-13", "2026-02-30", "2026", ""):
        with pytest.raises(BadPeriodError):
            Period.parse(bad)


def test_feed_maps_stops_to_fare_areas() -> None:
    places = network_places(LONDON_FEED)
    assert places.stop_areas["KGX"] == {"Z1"} and places.stop_areas["BRX"] == {"Z2"}
    assert "BUS_A1" not in places.stop_areas
    assert places.area_ids == {"Z1", "Z2"}
    assert str(places.timezone) == "Europe/London"


def test_a_council_is_a_funder_party_with_its_areas() -> None:
    council = council_of(day_scheme(), COUNCIL, Period.parse(PERIOD))
    assert (council.name, council.area_ids) == ("London Borough of Camden", {"Z2"})
    for not_a_council in ("operator:LUL", "funder:nowhere"):
        with pytest.raises(UnknownCouncilError):
            council_of(day_scheme(), not_a_council, Period.parse(PERIOD))


def test_latest_revision_counts_and_withdrawn_drop_out() -> None:
    day = day_journeys()
    random.Random(7).shuffle(day)  # arrival order does not matter, the revision does
    standing = {j.journey_id: j for j in standing_journeys(day, Period.parse(PERIOD))}
    assert "jrnWDR01" not in standing
    assert "jrnLUL02n" not in standing
    assert standing["jrnLUL01b"].revision == 2
    assert standing["jrnLUL01b"].legs[0].to_stop_id == "BRX"
    assert len(standing) == 12 + 1 + 3 + 9 + 9


def test_whole_network_day_with_secondary_suppression() -> None:
    reports = build(council=None)
    assert as_lists(reports, "ridership") == NETWORK_RIDERSHIP
    assert as_lists(reports, "origin_destination") == NETWORK_OD
    assert as_lists(reports, "concession_take_up") == NETWORK_CONCESSIONS
    vouchers = as_lists(reports, "voucher_spend")
    assert [
        "islington-youth",
        "leisure_centre",
        "provider:islington-gym",
        "11",
        "3300",
        "GBP",
    ] in vouchers
    rewards = as_lists(reports, "rewards")
    assert ["lul-loyalty", "12", "1200", "GBP"] in rewards
    assert [r[0] for r in as_lists(reports, "budget")[1:]] == [
        "camden-senior-pass",
        "camden-youth-leisure",
        "islington-youth",
    ]


def test_camden_day_hand_counted(tmp_path: Path) -> None:
    """Only journeys touching Z2 and Camden's own postings count; every file is written."""
    paths = write_reports(build(), tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        [f"{t}.{ext}" for t in TABLES for ext in ("csv", "svg", "png")]
        + ["index.html", "report.md"]
    )
    assert read_csv(tmp_path / "ridership.csv") == CAMDEN_RIDERSHIP
    assert read_csv(tmp_path / "origin_destination.csv") == CAMDEN_OD
    assert read_csv(tmp_path / "concession_take_up.csv") == CAMDEN_CONCESSIONS
    assert read_csv(tmp_path / "voucher_spend.csv") == CAMDEN_VOUCHERS
    assert read_csv(tmp_path / "budget.csv") == CAMDEN_BUDGET
    assert read_csv(tmp_path / "rewards.csv") == CAMDEN_REWARDS


def test_no_identifier_in_any_output_file(tmp_path: Path) -> None:
    idents = identifiers(hand_counted_day(), hand_counted_postings())
    for council in (COUNCIL, None):
        out = tmp_path / str(council)
        for path in write_reports(build(council=council), out):
            data = path.read_bytes()
            for ident in idents:
                assert ident.encode() not in data, f"{ident} leaked into {path.name}"
            assert b"@" not in data or path.suffix == ".png", path.name  # no e-mail


def test_camden_month_takes_every_day_of_june() -> None:
    reports = build(MONTH)
    assert as_lists(reports, "ridership") == CAMDEN_MONTH_RIDERSHIP
    assert as_lists(reports, "budget") == CAMDEN_MONTH_BUDGET
    leisure = as_lists(reports, "voucher_spend")[1]
    assert leisure[1:5] == ["leisure_centre", "provider:camden-leisure", "14", "7000"]


def test_budget_is_the_version_in_force_in_the_period() -> None:
    july = as_lists(build("2026-07"), "budget")
    youth = next(r for r in july if r[0] == "camden-youth-leisure")
    # one pitch_hire redemption on 2026-07-01: under 10, so suppressed
    assert youth == [
        "camden-youth-leisure",
        "Youth leisure allowance",
        "2026-07",
        "600000",
        "<10",
        "<10",
        "<10",
        "GBP",
    ]


def test_cell_of_exactly_ten_cards_is_shown_nine_is_not() -> None:
    # drop two LUL cards (both journeys of tokLUL01): 10 cards remain in Z1 08 LUL
    kept = [j for j in day_journeys() if j.card_token not in {"tokLUL01", "tokLUL12"}]
    assert ["Z1", "08", "LUL", "10", "10"] in as_lists(build(journeys=kept), "ridership")
    kept9 = [j for j in kept if j.card_token != "tokLUL11"]
    assert ["Z1", "08", "LUL", "<10", "<10"] in as_lists(build(journeys=kept9), "ridership")


def test_voucher_cell_of_ten_redemptions_is_shown_nine_is_not() -> None:
    rows = {tuple(r[1:3]): r[3:5] for r in as_lists(build(), "voucher_spend")[1:]}
    assert rows[("pitch_hire", "provider:camden-pitches")] == ["10", "8000"]
    assert rows[("recording_studio", "provider:camden-studio")] == ["<10", "<10"]


def test_a_lone_suppressed_voucher_cell_withholds_the_smallest_other() -> None:
    """Without the swimming redemptions, the studio's 9 would be budget used minus the
    shown cells: the smallest shown cell (pitch hire, 10) is withheld too."""
    postings = [p for p in day_postings() if p.category != "swimming"]
    reports = build(postings=postings)
    rows = {tuple(r[1:3]): r[3:5] for r in as_lists(reports, "voucher_spend")[1:]}
    assert rows[("leisure_centre", "provider:camden-leisure")] == ["12", "6000"]
    assert rows[("pitch_hire", "provider:camden-pitches")] == ["withheld", "withheld"]
    assert rows[("recording_studio", "provider:camden-studio")] == ["<10", "<10"]
    youth = next(r for r in as_lists(reports, "budget") if r[0] == "camden-youth-leisure")
    assert youth[4:7] == ["31", "27500", "5.5"]


def test_a_posting_published_twice_counts_once() -> None:
    postings = day_postings()
    assert len(postings) != len({p.posting_id for p in postings})
    leisure = as_lists(build(postings=postings), "voucher_spend")[1]
    assert leisure[3:5] == ["12", "6000"]


def test_charts_draw_only_shown_cells(tmp_path: Path) -> None:
    write_reports(build(), tmp_path)
    for name in TABLES:
        svg = (tmp_path / f"{name}.svg").read_text(encoding="utf-8")
        root = ElementTree.fromstring(svg)  # well-formed
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.find("{http://www.w3.org/2000/svg}title") is not None
        with Image.open(tmp_path / f"{name}.png") as png:
            assert png.format == "PNG"
            assert png.size == (int(root.get("width", 0)) * 2, int(root.get("height", 0)) * 2)
    ridership = (tmp_path / "ridership.svg").read_text(encoding="utf-8")
    assert "Hour of entry (local time)" in ridership and ">Boardings<" in ridership
    assert "08:00, Z1 · LUL: 13" in ridership
    assert "10:00" not in ridership  # the 9-card cell is not drawn
    vouchers = (tmp_path / "voucher_spend.svg").read_text(encoding="utf-8")
    assert "pitch_hire, provider:camden-pitches: 80.00" in vouchers
    assert "recording_studio" not in vouchers
    budget = (tmp_path / "budget.svg").read_text(encoding="utf-8")
    assert "camden-youth-leisure, budget: 5000.00" in budget
    assert "camden-youth-leisure, used: 287.00" in budget


def test_an_empty_chart_says_so() -> None:
    chart = BarChart("x", "Title", "sub", "x", "y", (), ())
    assert "No cell large enough to show" in bar_chart_svg(chart)


def test_summary_and_index_state_the_rule_and_link_every_file(tmp_path: Path) -> None:
    write_reports(build(), tmp_path)
    summary = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert summary.startswith("# Usage evidence: London Borough of Camden (funder:camden)")
    assert "fewer than 10 people" in summary and "`<10`" in summary
    assert "count redemptions" in summary.lower() or "counting redemptions" in summary
    assert "GTFS areas Z2" in summary
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    for name in TABLES:
        for ext in ("csv", "svg", "png"):
            assert f'href="{name}.{ext}"' in index
    assert 'href="report.md"' in index


def test_without_feed_by_stop_in_london_time() -> None:
    reports = build(council=None, feed=None)
    od = reports.table("origin_destination")
    assert od.columns[:2] == ("origin_stop", "destination_stop")
    assert ("KGX", "BRX", "withheld", "withheld") in od.rows  # KGX -> OXC is 3 cards
    assert reports.table("ridership").columns[0] == "boarding_stop"


def test_a_leg_without_exit_goes_to_no_exit() -> None:
    events = [e for e in hand_counted_day() if e.journey_id.startswith("jrnLUL")]
    for e in events:
        for leg in e.legs:
            leg.to_stop_id = ""
    reports = build(council=None, journeys=[journey_from_event(e) for e in events])
    assert reports.table("origin_destination").rows == (("Z1", "(no exit)", "13", "12"),)


def test_cli_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path)
    assert main(["usage", "--period", "15/06/2026", "--out", out]) == 2
    assert main(["usage", "--period", MONTH, "--out", out, "--council", COUNCIL]) == 2
    assert "--council needs --feed" in capsys.readouterr().err
    feed = ["--feed", str(LONDON_FEED)]
    assert main(["usage", "--period", MONTH, "--out", out, "--council", "funder:x", *feed]) == 2
    assert "not a funder party" in capsys.readouterr().err
    bad_scheme = tmp_path / "bad.toml"
    bad_scheme.write_text("scheme_id = ", encoding="utf-8")
    assert main(["usage", "--period", MONTH, "--out", out, "--scheme", str(bad_scheme)]) == 2
    assert "TOML syntax error" in capsys.readouterr().err


def test_the_example_schemes_council_has_areas_of_the_example_feed() -> None:
    scheme = load_scheme(DEFAULT_SCHEME)
    council = council_of(scheme, COUNCIL, Period.parse(MONTH))
    assert council.area_ids and council.area_ids <= network_places(LONDON_FEED).area_ids


def test_councils_lists_the_funders_in_force_in_the_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scheme = tmp_path / "scheme.toml"
    scheme.write_text(
        DEFAULT_SCHEME.read_text()
        + '\n[[party]]\nid = "funder:islington"\nname = "Islington (test)"\nareas = ["Z2"]\n'
        'effective_from = 2026-06-15\nbank = { sort_code = "30-94-17", '
        'account_number = "55092842" }\n'
    )
    listed = {}
    for period in ("2026-06", "2026-06-14", "2026-06-15"):
        assert main(["councils", "--period", period, "--scheme", str(scheme)]) == 0
        listed[period] = capsys.readouterr().out.split()
    # Islington only from the day it comes into force (and in the month holding that day);
    # operators and retailers are never councils.
    assert listed == {
        "2026-06": ["funder:camden", "funder:islington"],
        "2026-06-14": ["funder:camden"],
        "2026-06-15": ["funder:camden", "funder:islington"],
    }
    assert main(["councils", "--period", "2026-13", "--scheme", str(scheme)]) == 2
    assert main(["councils", "--period", "2026-06", "--scheme", str(tmp_path / "no")]) == 2
