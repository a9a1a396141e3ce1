"""Evidence packs on disk: the layout's rules and the shelf's path checks, over packs the
real reports code writes into tmp dirs (no servers)."""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path

import pytest

from clearway.settings import REPO_ROOT
from services.portal.adapters.evidence import EvidenceShelf
from services.portal.app import REPORTS_DIR_VAR, PortalSettings
from services.portal.domain.evidence import (
    council_dir,
    newest_first,
    pack_file,
    pack_tables,
    parse_period,
)
from services.portal.tests.evidence_packs import (
    COUNCIL,
    MONTH,
    PERIOD,
    TABLES,
    write_day_pack,
)

OTHER = "funder:islington"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Camden's packs of the day and the month, and Islington's of another day."""
    root = tmp_path_factory.mktemp("written") / "reports"
    write_day_pack(root)
    write_day_pack(root, MONTH)
    write_day_pack(root, "2026-06-14", OTHER)
    return root


@pytest.fixture
def packs(written: Path, tmp_path: Path) -> Path:
    """A copy of the written packs, for a test to change."""
    return Path(shutil.copytree(written, tmp_path / "reports", symlinks=True))


def test_the_council_directory_is_the_funder_id_with_underscore() -> None:
    assert council_dir("funder:camden") == "funder_camden"
    assert council_dir("funder:a.b-c_d") == "funder_a.b-c_d"
    for not_a_council in (
        "operator:LUL",
        "funder",
        "funder:",
        "funder:..",
        "funder:a/b",
        "funder:a:b",
        "funder:" + "x" * 65,
        "funder:camden\x00",
    ):
        assert council_dir(not_a_council) is None, not_a_council


def test_a_period_is_a_real_day_or_month() -> None:
    day = parse_period("2026-06-15")
    assert day is not None and not day.month and day.text == "15 June 2026"
    month = parse_period("2026-02")
    assert month is not None and month.month and month.last == date(2026, 2, 28)
    assert month.text == "February 2026"
    for bad in ("2026-13", "2026-02-30", "2026-6", "2026-06-15/", "..", "", " 2026-06"):
        assert parse_period(bad) is None, bad


def test_newest_first_puts_each_month_above_its_days() -> None:
    labels = ["2026-05", "2026-06-01", "2026-06", "2026-05-31", "2026-06-30", "2026-06-15"]
    periods = [p for p in map(parse_period, labels) if p is not None]
    assert [p.label for p in newest_first(periods)] == [
        "2026-06",
        "2026-06-30",
        "2026-06-15",
        "2026-06-01",
        "2026-05",
        "2026-05-31",
    ]


def test_only_a_tables_csv_svg_or_png_may_be_served() -> None:
    assert pack_file("ridership.csv") == ("ridership", "text/csv")
    assert pack_file("budget.svg") == ("budget", "image/svg+xml")
    assert pack_file("budget.png") == ("budget", "image/png")
    for refused in (
        "index.html",
        "report.md",
        "../ridership.csv",
        "/etc/passwd",
        "..",
        ".ridership.csv",
        "Ridership.csv",
        "ridership.csv.png.sh",
        "ridership.CSV",
        "a%2Fb.csv",
        "ridership.csv\x00",
    ):
        assert pack_file(refused) is None, refused


def test_tables_follow_the_summarys_order_and_titles() -> None:
    summary = (
        "| report | table | chart |\n| --- | --- | --- |\n"
        "| Boardings by area | `ridership.csv` | `ridership.svg` |\n"
        "| Budget used | `budget.csv` | `budget.svg` |\n"
    )
    names = ["budget.csv", "budget.svg", "ridership.csv", "ridership.png", "zeta.csv", "x.md"]
    tables = pack_tables(names, summary)
    assert [(t.name, t.title, t.chart) for t in tables] == [
        ("ridership", "Boardings by area", "ridership.png"),
        ("budget", "Budget used", "budget.svg"),
        ("zeta", "Zeta", ""),
    ]


def test_the_list_has_the_councils_own_packs_newest_first(packs: Path) -> None:
    shelf = EvidenceShelf(packs)
    assert [p.period.label for p in shelf.list_packs(COUNCIL)] == [MONTH, PERIOD]
    assert [p.period.label for p in shelf.list_packs(OTHER)] == ["2026-06-14"]
    assert shelf.list_packs("funder:nowhere") == []
    assert shelf.list_packs("operator:LUL") == []
    assert EvidenceShelf(packs / "missing").list_packs(COUNCIL) == []


def test_the_list_ignores_what_is_not_a_finished_pack(packs: Path, tmp_path: Path) -> None:
    camden = packs / "funder_camden"
    (camden / f".{PERIOD}.0123456789ab.building").mkdir()  # a run in progress
    (camden / "2026-06-31").mkdir()  # no such day
    (camden / "notes").mkdir()
    (camden / "2026-07").write_text("a file, not a pack", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (camden / "2026-08").symlink_to(outside, target_is_directory=True)
    (camden / "2026-09").symlink_to(packs / "funder_islington" / "2026-06-14")
    assert [p.period.label for p in EvidenceShelf(packs).list_packs(COUNCIL)] == [MONTH, PERIOD]


def test_a_pack_has_every_table_and_its_summary(packs: Path) -> None:
    pack = EvidenceShelf(packs).read_pack(COUNCIL, PERIOD)
    assert pack is not None and pack.period.label == PERIOD
    assert pack.summary.startswith("# Usage evidence: London Borough of Camden (funder:camden)")
    tables = pack_tables(pack.names, pack.summary)
    assert [t.name for t in tables] == list(TABLES)
    assert tables[0].title == "Boardings by boarding area, hour and operator"
    assert all(t.svg and t.png for t in tables)


def test_a_file_is_read_only_from_the_councils_own_pack(packs: Path) -> None:
    shelf = EvidenceShelf(packs)
    csv = shelf.read_file(COUNCIL, PERIOD, "ridership.csv")
    assert csv is not None and csv.content_type == "text/csv"
    assert csv.body == (packs / "funder_camden" / PERIOD / "ridership.csv").read_bytes()
    svg = shelf.read_file(COUNCIL, PERIOD, "ridership.svg")
    assert svg is not None and svg.body.startswith(b"<svg")
    png = shelf.read_file(COUNCIL, PERIOD, "ridership.png")
    assert png is not None and png.body.startswith(b"\x89PNG")
    # Islington's day exists, but not in Camden's directory; and the other way round.
    assert shelf.read_file(COUNCIL, "2026-06-14", "ridership.csv") is None
    assert shelf.read_pack(COUNCIL, "2026-06-14") is None
    assert shelf.read_file(OTHER, PERIOD, "ridership.csv") is None


@pytest.mark.parametrize(
    ("period", "name"),
    [
        (PERIOD, "../../funder_islington/2026-06-14/ridership.csv"),
        (PERIOD, "..%2F..%2Ffunder_islington%2F2026-06-14%2Fridership.csv"),
        (PERIOD, "/etc/passwd"),
        (PERIOD, "index.html"),
        (PERIOD, "report.md"),
        (PERIOD, "missing.csv"),
        ("..", "funder_islington"),
        ("../funder_islington/2026-06-14", "ridership.csv"),
        ("/tmp", "ridership.csv"),
        ("2026-06-16", "ridership.csv"),
    ],
)
def test_no_name_reaches_outside_the_pack(packs: Path, period: str, name: str) -> None:
    assert EvidenceShelf(packs).read_file(COUNCIL, period, name) is None
    if "/" in period or period == "..":
        assert EvidenceShelf(packs).read_pack(COUNCIL, period) is None


def test_links_are_never_followed(packs: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("card_token\ntok-secret\n", encoding="utf-8")
    pack = packs / "funder_camden" / PERIOD
    (pack / "leak.csv").symlink_to(secret)
    (pack / "ridership.csv").unlink()
    (pack / "ridership.csv").symlink_to(pack / "budget.csv")  # even one inside the pack
    shelf = EvidenceShelf(packs)
    assert shelf.read_file(COUNCIL, PERIOD, "leak.csv") is None
    assert shelf.read_file(COUNCIL, PERIOD, "ridership.csv") is None
    listed = shelf.read_pack(COUNCIL, PERIOD)
    assert listed is not None and {"leak.csv", "ridership.csv"}.isdisjoint(listed.names)
    # A council directory that is a link (to another council's) is not the council's.
    (packs / "funder_camden").rename(packs / "camden-real")
    (packs / "funder_camden").symlink_to(packs / "funder_islington")
    assert shelf.list_packs(COUNCIL) == []
    assert shelf.read_file(COUNCIL, "2026-06-14", "ridership.csv") is None


def test_a_fifo_or_an_oversized_file_is_not_served(packs: Path) -> None:
    pack = packs / "funder_camden" / PERIOD
    os.mkfifo(pack / "pipe.csv")
    shelf = EvidenceShelf(packs, max_file_bytes=1024)
    assert shelf.read_file(COUNCIL, PERIOD, "pipe.csv") is None  # and does not hang
    assert (pack / "ridership.png").stat().st_size > 1024
    assert shelf.read_file(COUNCIL, PERIOD, "ridership.png") is None
    assert shelf.read_file(COUNCIL, PERIOD, "rewards.csv") is not None


def test_the_reports_directory_is_a_setting_with_a_repo_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(REPORTS_DIR_VAR, raising=False)
    assert PortalSettings.from_env().reports_dir == REPO_ROOT / "var" / "reports"
    monkeypatch.setenv(REPORTS_DIR_VAR, str(tmp_path))
    assert PortalSettings.from_env().reports_dir == tmp_path
