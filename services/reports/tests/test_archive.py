"""The day archive (docs/reports.md, "The day archive"): `clearway reports archive` over real
Kafka topics, merging each service day into what earlier runs saved, and `clearway reports
usage --archive` building the same reports from it as from the topics."""

from __future__ import annotations

import asyncio
import stat
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from clearway.events.v1 import events_pb2
from clearway.money import Money
from services.reports.adapters.archive import (
    JOURNEYS_FILE,
    POSTINGS_FILE,
    journey_of_record,
    journey_record,
    posting_of_record,
    posting_record,
    records_of,
)
from services.reports.adapters.journeys import journey_from_event
from services.reports.adapters.topics import TopicNotFoundError
from services.reports.domain.archive import day_ranges, merge_journeys, merge_postings
from services.reports.domain.benefits import Posting, PostingKind
from services.reports.domain.scope import Period
from services.reports.domain.usage import Journey, Leg
from services.reports.entrypoints import cli
from services.reports.entrypoints.cli import main
from services.reports.tests.day import (
    COUNCIL,
    MONTH,
    NETWORK_CONCESSIONS,
    NETWORK_OD,
    NETWORK_RIDERSHIP,
    PERIOD,
    day_scheme,
    hand_counted_day,
    hand_counted_postings,
    journey,
    leg,
    posting,
)
from services.reports.tests.test_kafka import LONDON_FEED, publish, read_csv
from services.reports.tests.test_usage import TABLES, day_journeys, day_postings

REDEEM = events_pb2.BenefitPosting.KIND_REDEMPTION
# The hand-counted day's journeys and postings fall on these service days.
HAND_COUNTED_DAYS = ("2026-06-15", "2026-06-16", "2026-06-20", "2026-07-01")
HAND_COUNTED_MONTH_GAPS = (
    "2026-06-01 to 2026-06-14, 2026-06-17 to 2026-06-19, 2026-06-21 to 2026-06-30"
)


@dataclass(frozen=True)
class Ran:
    status: int
    out: list[str]
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Ran:
    """`clearway reports ARGV`: its exit status, standard output's lines and standard error."""
    capsys.readouterr()
    status = main(list(argv))
    captured = capsys.readouterr()
    return Ran(status, captured.out.split(), captured.err)


def archive(capsys: pytest.CaptureFixture[str], bootstrap: str, prefix: str, into: Path) -> Ran:
    ran = run(
        capsys, "archive", "--into", str(into), "--topic-prefix", prefix, "--bootstrap", bootstrap
    )
    assert ran.status == 0, ran.err
    return ran


def day_file(into: Path, day: str, name: str) -> Path:
    return into / day / name


def archived_journeys(into: Path, day: str = PERIOD) -> list[Journey]:
    path = day_file(into, day, JOURNEYS_FILE)
    return records_of(path, path.read_bytes(), journey_of_record)


def archived_postings(into: Path, day: str = PERIOD) -> list[Posting]:
    path = day_file(into, day, POSTINGS_FILE)
    return records_of(path, path.read_bytes(), posting_of_record)


def snapshot(into: Path) -> dict[str, bytes]:
    """Every file of the archive, by path, and its bytes."""
    return {
        str(p.relative_to(into)): p.read_bytes() for p in sorted(into.rglob("*")) if p.is_file()
    }


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 6, 15, hour, minute, tzinfo=UTC)


def redemption(serial: int, amount: int = 500) -> events_pb2.BenefitPosting:
    return posting(
        serial,
        REDEEM,
        COUNCIL,
        amount,
        provider="provider:camden-leisure",
        scheme="camden-youth-leisure",
        category="leisure_centre",
    )


# -- records and rules (no Kafka) -------------------------------------------------------------


def test_a_record_reads_back_as_the_journey_or_posting_it_was() -> None:
    british_summer = timezone(timedelta(hours=1))
    travelled = Journey(
        "jrn1",
        "tok1",
        3,
        PERIOD,
        "SENIOR",
        (
            Leg("LUL", "KGX", "BRX", datetime(2026, 6, 15, 8, 1, 2, 345678, british_summer)),
            Leg("BUSCO", "BUS_A1", "", datetime(2026, 6, 15, 7, 30, tzinfo=UTC)),
        ),
    )
    withdrawn = Journey("jrn2", "tok2", 2, PERIOD, "", ())
    for j in (travelled, withdrawn):
        assert journey_of_record(journey_record(j)) == j
    assert journey_record(travelled)["legs"][0]["entry_at"] == "2026-06-15T07:01:02.345678+00:00"
    for p in (
        Posting(
            "redemption:1",
            PostingKind.REDEMPTION,
            COUNCIL,
            Money(500, "GBP"),
            PERIOD,
            "p",
            "s",
            "c",
        ),
        Posting(
            "reward:1", PostingKind.REWARD, COUNCIL, Money(50, "GBP"), PERIOD, reward_rule_id="r"
        ),
    ):
        assert posting_of_record(posting_record(p)) == p


def test_a_day_keeps_the_latest_revision_of_each_journey_and_each_posting_once() -> None:
    a1 = Journey("A", "tokA", 1, PERIOD, "ADULT", (Leg("LUL", "KGX", "OXC", at(7, 0)),))
    a2 = Journey("A", "tokA", 2, PERIOD, "ADULT", (Leg("LUL", "KGX", "BRX", at(7, 0)),))
    a3 = Journey("A", "tokA", 3, PERIOD, "ADULT", ())  # withdrawn
    b = Journey("B", "tokB", 1, PERIOD, "ADULT", (Leg("LUL", "CMD", "KGX", at(8, 0)),))
    # What the topic no longer holds stays; a later revision replaces; an earlier does not.
    assert merge_journeys([a2, b], [a1]) == [a2, b]
    assert merge_journeys([b, a1], [a2]) == [a2, b]
    assert merge_journeys([a2, b], [a3]) == [a3, b], "a withdrawal supersedes"
    p1 = Posting("redemption:1", PostingKind.REDEMPTION, COUNCIL, Money(500, "GBP"), PERIOD)
    p2 = Posting("redemption:2", PostingKind.REDEMPTION, COUNCIL, Money(800, "GBP"), PERIOD)
    assert merge_postings([p2, p1], [p1, p2]) == [p1, p2]


def test_days_without_data_are_named_as_runs_of_days() -> None:
    assert day_ranges([]) == ""
    assert day_ranges([date(2026, 6, 3)]) == "2026-06-03"
    days = [date(2026, 6, 3), *(date(2026, 6, d) for d in range(11, 31)), date(2026, 6, 1)]
    assert day_ranges(days) == "2026-06-01, 2026-06-03, 2026-06-11 to 2026-06-30"


def fake_topics(
    monkeypatch: pytest.MonkeyPatch,
    journeys: list[Journey] | None = None,
    postings: list[Posting] | None = None,
    *,
    missing: str = "",
) -> None:
    """The CLI's topic reading answers `journeys` and `postings` (the hand-counted day's),
    or a missing topic (`missing="journeys"`)."""

    async def read_journeys(bootstrap: str, topic: str, period: Period | None) -> list[Journey]:
        if missing == "journeys":
            raise TopicNotFoundError(topic)
        found = day_journeys() if journeys is None else journeys
        return [j for j in found if period is None or period.contains(j.service_day)]

    async def read_postings(
        bootstrap: str, topic: str, period: Period | None, funder_id: str | None = None
    ) -> list[Posting]:
        return day_postings() if postings is None else postings

    monkeypatch.setattr(cli, "read_journeys", read_journeys)
    monkeypatch.setattr(cli, "read_postings", read_postings)
    monkeypatch.setattr(cli, "load_scheme", lambda path: day_scheme())


def test_the_archive_holds_card_tokens_so_only_its_owner_may_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_topics(monkeypatch)
    into = tmp_path / "archive"
    ran = run(capsys, "archive", "--into", str(into))
    assert ran.status == 0, ran.err
    assert sorted(p.name for p in into.iterdir()) == list(HAND_COUNTED_DAYS)
    assert len(ran.out) == 2 * len(HAND_COUNTED_DAYS)
    for path in [into, *into.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    # A day with journeys but no posting still gets both files: it was archived.
    assert archived_postings(into, "2026-06-16") == []
    assert [j.journey_id for j in archived_journeys(into, "2026-06-16")] == ["jrnLUL02n"]


def test_keep_days_removes_the_days_older_than_that_and_only_day_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_topics(monkeypatch)
    into = tmp_path / "archive"
    assert run(capsys, "archive", "--into", str(into)).status == 0  # default: keep every day
    assert sorted(p.name for p in into.iterdir()) == list(HAND_COUNTED_DAYS)
    (into / "notes").mkdir()  # not a day: never removed
    (into / "2026-06-01.txt").write_text("not a day directory either")
    monkeypatch.setattr(cli, "_today", lambda: date(2026, 7, 16))
    kept = {day: snapshot(into / day) for day in ("2026-06-16", "2026-06-20", "2026-07-01")}
    ran = run(capsys, "archive", "--into", str(into), "--keep-days", "30")
    assert ran.status == 0, ran.err
    # 30 days before 2026-07-16 is 2026-06-16: the days before it go, that day stays.
    assert sorted(p.name for p in into.iterdir()) == [
        "2026-06-01.txt",
        "2026-06-16",
        "2026-06-20",
        "2026-07-01",
        "notes",
    ]
    assert "removed service days 2026-06-15 (older than 30 days)" in ran.err
    assert not any("2026-06-15" in line for line in ran.out)  # written, then removed
    assert {day: snapshot(into / day) for day in kept} == kept
    for bad in ("0", "-3", "x", "1.5"):
        with pytest.raises(SystemExit) as exited:
            main(["archive", "--into", str(into), "--keep-days", bad])
        assert exited.value.code == 2


def test_a_damaged_day_file_fails_the_run_and_is_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_topics(monkeypatch)
    into = tmp_path / "archive"
    assert run(capsys, "archive", "--into", str(into)).status == 0
    damaged = day_file(into, PERIOD, JOURNEYS_FILE)
    damaged.write_bytes(damaged.read_bytes()[:-9])  # cut short: a disk filled up, say
    before = snapshot(into)
    ran = run(capsys, "archive", "--into", str(into))
    assert ran.status == 1
    assert str(damaged) in ran.err
    assert snapshot(into) == before
    # Nor is a report built from it.
    packs = tmp_path / "packs"
    ran = run(capsys, "usage", "--period", PERIOD, "--packs", str(packs), "--archive", str(into))
    assert ran.status == 1
    assert str(damaged) in ran.err
    assert not packs.exists()


def test_usage_reads_the_archive_or_the_topics_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["usage", "--period", PERIOD, "--out", str(tmp_path / "out")]
    for topic_option in (["--topic-prefix", "x."], ["--bootstrap", "localhost:1"]):
        ran = run(capsys, *out, "--archive", str(tmp_path), *topic_option)
        assert ran.status == 2
        assert "--archive" in ran.err
    ran = run(capsys, *out, "--archive", str(tmp_path / "nowhere"))
    assert ran.status == 2
    assert "nowhere" in ran.err
    assert not (tmp_path / "out").exists()


# -- over real Kafka topics -------------------------------------------------------------------


def report_files(directory: Path) -> dict[str, bytes]:
    """The tables and charts of a report directory (report.md names its source: not these)."""
    return {
        f"{name}.{ext}": (directory / f"{name}.{ext}").read_bytes()
        for name in TABLES
        for ext in ("csv", "svg", "png")
    }


@pytest.mark.integration
def test_reports_from_the_archive_are_those_from_the_topics(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"{unique_name}."
    asyncio.run(publish(kafka_bootstrap, prefix, hand_counted_day(), hand_counted_postings()))
    into = tmp_path / "archive"
    ran = archive(capsys, kafka_bootstrap, prefix, into)
    assert sorted(ran.out) == sorted(
        str(into / day / name)
        for day in HAND_COUNTED_DAYS
        for name in (JOURNEYS_FILE, POSTINGS_FILE)
    )
    topics = ["--topic-prefix", prefix, "--bootstrap", kafka_bootstrap]
    feed = ["--feed", str(LONDON_FEED)]
    compared = 0
    for period in (PERIOD, MONTH):
        for whose in ([*feed, "--council", COUNCIL], feed, []):
            name = f"{period}-{len(whose)}"
            usage = ["usage", "--period", period, *whose]
            by_topics = run(capsys, *usage, "--out", str(tmp_path / f"{name}-topics"), *topics)
            assert by_topics.status == 0, by_topics.err
            by_archive = run(
                capsys, *usage, "--out", str(tmp_path / f"{name}-archive"), "--archive", str(into)
            )
            assert by_archive.status == 0, by_archive.err
            assert report_files(tmp_path / f"{name}-archive") == report_files(
                tmp_path / f"{name}-topics"
            ), (period, whose)
            compared += 1
    assert compared == 6
    # And they are the hand-counted ones (the whole network's day, by fare area).
    network_day = tmp_path / f"{PERIOD}-2-archive"
    assert read_csv(network_day / "ridership.csv") == NETWORK_RIDERSHIP
    assert read_csv(network_day / "origin_destination.csv") == NETWORK_OD
    assert read_csv(network_day / "concession_take_up.csv") == NETWORK_CONCESSIONS


@pytest.mark.integration
def test_a_day_keeps_what_the_topic_no_longer_holds(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    into = tmp_path / "archive"
    a1 = journey("jrnA", "tokA", [leg("LUL", "KGX", "OXC", at(7, 1))])
    b = journey("jrnB", "tokB", [leg("LUL", "CMD", "KGX", at(7, 2))])
    first = f"{unique_name}.first."
    asyncio.run(publish(kafka_bootstrap, first, [a1, b], [redemption(1), redemption(2)]))
    archive(capsys, kafka_bootstrap, first, into)
    assert [(j.journey_id, j.revision) for j in archived_journeys(into)] == [
        ("jrnA", 1),
        ("jrnB", 1),
    ]

    # Days later retention has deleted the older segments: the topic (a fresh prefix stands
    # for it) holds only A's later revision, a new journey C of the same day, posting 2
    # again (a producer's retry) and a new posting 3.
    a2 = journey("jrnA", "tokA", [leg("LUL", "KGX", "BRX", at(7, 1))], revision=2)
    c = journey("jrnC", "tokC", [leg("LUL", "BRX", "KGX", at(9, 3))])
    later = f"{unique_name}.later."
    asyncio.run(publish(kafka_bootstrap, later, [a2, c], [redemption(2), redemption(3, 800)]))
    ran = archive(capsys, kafka_bootstrap, later, into)
    assert sorted(ran.out) == sorted(
        str(day_file(into, PERIOD, n)) for n in (JOURNEYS_FILE, POSTINGS_FILE)
    )

    kept = archived_journeys(into)
    assert [(j.journey_id, j.revision) for j in kept] == [("jrnA", 2), ("jrnB", 1), ("jrnC", 1)]
    assert kept == [journey_from_event(e) for e in (a2, b, c)]
    # Each posting once, across both runs and the retry.
    postings = archived_postings(into)
    assert [p.posting_id for p in postings] == [
        "redemption:pst00001",
        "redemption:pst00002",
        "redemption:pst00003",
    ]
    assert sum(p.amount.amount_minor for p in postings) == 500 + 500 + 800

    # Nothing new: nothing rewritten, the same bytes.
    before = snapshot(into)
    again = archive(capsys, kafka_bootstrap, later, into)
    assert again.out == []
    assert "0 day files written, 2 unchanged" in again.err
    assert snapshot(into) == before


@pytest.mark.integration
def test_a_withdrawal_archived_later_removes_the_journey_from_the_reports(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    into = tmp_path / "archive"
    students = [
        journey(
            f"jrnSTU{i:02d}",
            f"tokSTU{i:02d}",
            [leg("LUL", "KGX", "BRX", at(8, i))],
            category="STUDENT",
        )
        for i in range(1, 11)
    ]
    first = f"{unique_name}.first."
    asyncio.run(publish(kafka_bootstrap, first, students, []))
    archive(capsys, kafka_bootstrap, first, into)

    def concessions(label: str) -> list[list[str]]:
        out = tmp_path / label
        ran = run(capsys, "usage", "--period", PERIOD, "--out", str(out), "--archive", str(into))
        assert ran.status == 0, ran.err
        return read_csv(out / "concession_take_up.csv")

    assert concessions("before")[1:] == [["STUDENT", "10", "10"]]
    # The later run finds only the withdrawal (its taps now belong to another journey).
    withdrawn = journey("jrnSTU10", "tokSTU10", [], revision=2, category="STUDENT")
    later = f"{unique_name}.later."
    asyncio.run(publish(kafka_bootstrap, later, [withdrawn], []))
    archive(capsys, kafka_bootstrap, later, into)
    (kept,) = [j for j in archived_journeys(into) if j.journey_id == "jrnSTU10"]
    assert (kept.revision, kept.legs) == (2, ())
    assert concessions("after")[1:] == [["STUDENT", "<10", "<10"]]


@pytest.mark.integration
def test_archiving_again_gives_the_same_bytes(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"{unique_name}."
    asyncio.run(publish(kafka_bootstrap, prefix, hand_counted_day(), hand_counted_postings()))
    first, second = tmp_path / "first", tmp_path / "second"
    archive(capsys, kafka_bootstrap, prefix, first)
    written = snapshot(first)
    times = {p: p.stat().st_mtime_ns for p in first.rglob("*.gz")}
    # The same topics again: nothing rewritten (not even touched).
    assert archive(capsys, kafka_bootstrap, prefix, first).out == []
    assert snapshot(first) == written
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*.gz")} == times
    # A fresh archive from the same topics (read in another order across partitions): the
    # same bytes, no time stamp in the gzip header.
    archive(capsys, kafka_bootstrap, prefix, second)
    assert snapshot(second) == written
    for data in written.values():
        assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"


@pytest.mark.integration
def test_a_month_with_missing_days_warns_and_names_them(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"{unique_name}."
    asyncio.run(publish(kafka_bootstrap, prefix, hand_counted_day(), hand_counted_postings()))
    into = tmp_path / "archive"
    archive(capsys, kafka_bootstrap, prefix, into)

    month = run(
        capsys,
        "usage",
        "--period",
        MONTH,
        "--packs",
        str(tmp_path / "packs"),
        "--archive",
        str(into),
    )
    assert month.status == 0, month.err
    assert f"days without data in {into}: {HAND_COUNTED_MONTH_GAPS}" in month.err
    pack = tmp_path / "packs" / "network" / MONTH
    summary = (pack / "report.md").read_text()
    assert f"- Days without data: {HAND_COUNTED_MONTH_GAPS} (not in the day archive" in summary
    assert "- Sources: the day archive of the `journeys` and `benefits` topics" in summary
    assert f"Days without data: {HAND_COUNTED_MONTH_GAPS}" in (pack / "index.html").read_text()

    day = run(
        capsys, "usage", "--period", PERIOD, "--out", str(tmp_path / "day"), "--archive", str(into)
    )
    assert day.status == 0, day.err
    assert "without data" not in day.err
    assert "without data" not in (tmp_path / "day" / "report.md").read_text()
