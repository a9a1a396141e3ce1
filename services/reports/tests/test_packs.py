"""Evidence packs: `clearway reports usage --packs DIR` writes DIR/<council>/<period>/ as a
whole, replacing the period's earlier pack (no Kafka: the CLI's topic reading is faked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.reports.adapters import files
from services.reports.adapters.files import council_dir_name, write_pack
from services.reports.entrypoints.cli import main
from services.reports.tests.day import (
    CAMDEN_BUDGET,
    CAMDEN_RIDERSHIP,
    COUNCIL,
    PERIOD,
)
from services.reports.tests.test_archive import fake_topics
from services.reports.tests.test_usage import (
    LONDON_FEED,
    TABLES,
    build,
    read_csv,
)

PACK_FILES = sorted(
    [f"{t}.{ext}" for t in TABLES for ext in ("csv", "svg", "png")] + ["index.html", "report.md"]
)


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_council_directory_is_the_funder_id_with_underscore() -> None:
    assert council_dir_name("funder:camden") == "funder_camden"
    assert council_dir_name(None) == "network"


def test_a_pack_goes_under_its_council_and_period(tmp_path: Path) -> None:
    paths = write_pack(build(), tmp_path)
    pack = tmp_path / "funder_camden" / PERIOD
    assert sorted(p.name for p in paths) == PACK_FILES
    assert all(p.parent == pack for p in paths)
    assert names(pack) == PACK_FILES
    assert names(tmp_path / "funder_camden") == [PERIOD]  # nothing left beside it
    assert read_csv(pack / "ridership.csv") == CAMDEN_RIDERSHIP


def test_the_whole_networks_pack_goes_under_network(tmp_path: Path) -> None:
    write_pack(build("2026-06", council=None), tmp_path)
    assert names(tmp_path) == ["network"]
    assert names(tmp_path / "network" / "2026-06") == PACK_FILES


def test_rerunning_a_period_replaces_its_pack_whole(tmp_path: Path) -> None:
    write_pack(build(), tmp_path)
    pack = tmp_path / "funder_camden" / PERIOD
    (pack / "stale.csv").write_text("from an older run\n", encoding="utf-8")
    (pack / "ridership.csv").write_text("old\n", encoding="utf-8")
    write_pack(build(), tmp_path)
    assert names(pack) == PACK_FILES  # the old pack's extra file is gone with it
    assert read_csv(pack / "ridership.csv") == CAMDEN_RIDERSHIP
    assert names(tmp_path / "funder_camden") == [PERIOD]


def test_a_failed_build_leaves_the_earlier_pack_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pack(build(), tmp_path)
    pack = tmp_path / "funder_camden" / PERIOD
    before = {p.name: p.read_bytes() for p in pack.iterdir()}

    def broken(drawing: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(files, "drawing_png", broken)
    with pytest.raises(OSError, match="disk full"):
        write_pack(build(), tmp_path)
    assert {p.name: p.read_bytes() for p in pack.iterdir()} == before
    assert names(tmp_path / "funder_camden") == [PERIOD]


def test_a_failed_first_build_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(drawing: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(files, "drawing_png", broken)
    with pytest.raises(OSError):
        write_pack(build(), tmp_path)
    assert names(tmp_path / "funder_camden") == []


def test_cli_writes_the_councils_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_topics(monkeypatch)
    args = ["usage", "--period", PERIOD, "--council", COUNCIL, "--feed", str(LONDON_FEED)]
    assert main([*args, "--packs", str(tmp_path)]) == 0
    pack = tmp_path / "funder_camden" / PERIOD
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed) == PACK_FILES
    assert all(Path(p).parent == pack for p in printed)
    assert read_csv(pack / "ridership.csv") == CAMDEN_RIDERSHIP
    assert read_csv(pack / "budget.csv") == CAMDEN_BUDGET
    # Run again (the nightly job): the same pack, replaced.
    assert main([*args, "--packs", str(tmp_path)]) == 0
    assert names(tmp_path / "funder_camden") == [PERIOD]


def test_cli_wants_exactly_one_of_out_and_packs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for where in ([], ["--out", str(tmp_path / "a"), "--packs", str(tmp_path / "b")]):
        with pytest.raises(SystemExit) as exited:
            main(["usage", "--period", PERIOD, *where])
        assert exited.value.code == 2
        assert "--out" in capsys.readouterr().err
    assert names(tmp_path) == []


def test_a_missing_topic_writes_no_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_topics(monkeypatch, missing="journeys")
    assert main(["usage", "--period", PERIOD, "--packs", str(tmp_path)]) == 1
    assert "no topic" in capsys.readouterr().err
    assert names(tmp_path) == []
