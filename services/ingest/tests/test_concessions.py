"""Cards' concessions as pure data and on the tap path, without servers: the service day of
a tap, which rider categories a concession replaces, the state the `concessions` records
build, and the taps `accept_taps` hands to the writer."""

from datetime import UTC, date, datetime, time, timedelta

import pytest
from aiokafka import ConsumerRecord

from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2
from services.ingest.adapters.concessions_topic import concession_of
from services.ingest.adapters.tap_writer import Message, TapToWrite
from services.ingest.domain.concessions import Concession, ConcessionRules, Concessions
from services.ingest.domain.devices import Device, DeviceStatus
from services.ingest.service_layer.accepting import AcceptPorts, accept_taps

SENIOR = Concession("SENIOR", date(2026, 11, 20), date(2031, 11, 19))
RULES = ConcessionRules()  # Europe/London, 04:30, ADULT
PASS_HOLDER = "tok_4f9a1c2b3d5e6f70"
OTHER_CARD = "sc_04a2b9c1d25e80"


def london(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A London wall-clock time as a UTC instant (November: GMT; July: BST)."""
    offset = timedelta(hours=1) if 4 <= month <= 9 else timedelta()
    return datetime(year, month, day, hour, minute, tzinfo=UTC) - offset


# -- the service day and the categories replaced -------------------------------------------


def test_a_tap_before_the_day_start_belongs_to_the_previous_service_day():
    assert RULES.service_day(london(2026, 11, 20, 4, 29)) == date(2026, 11, 19)
    assert RULES.service_day(london(2026, 11, 20, 4, 30)) == date(2026, 11, 20)
    assert RULES.service_day(london(2026, 11, 20, 23, 59)) == date(2026, 11, 20)
    # Summer time: 00:30 BST is 23:30 UTC the day before; still the local service day.
    assert RULES.service_day(london(2026, 7, 2, 0, 30)) == date(2026, 7, 1)
    assert RULES.service_day(london(2026, 7, 2, 5, 0)) == date(2026, 7, 2)


def test_the_service_day_follows_the_configured_zone_and_start():
    midnight_start = ConcessionRules("Europe/Amsterdam", time(0, 0))
    at = datetime(2026, 11, 19, 23, 30, tzinfo=UTC)  # 00:30 in Amsterdam
    assert midnight_start.service_day(at) == date(2026, 11, 20)
    assert RULES.service_day(at) == date(2026, 11, 19)


@pytest.mark.parametrize(
    ("category", "replaced"),
    [("", True), ("ADULT", True), ("SENIOR", False), ("YOUTH", False), ("adult", False)],
)
def test_only_an_empty_or_the_reference_category_is_replaced(category, replaced):
    assert RULES.replaces(category) is replaced


def test_the_reference_category_comes_from_the_rules():
    rules = ConcessionRules(reference_category="FULL_FARE")
    assert rules.replaces("FULL_FARE") and rules.replaces("")
    assert not rules.replaces("ADULT")


def test_a_concession_applies_on_the_service_days_from_valid_from_up_to_valid_to():
    first = london(2026, 11, 20, 4, 30)
    assert RULES.category_for("ADULT", SENIOR, first) == "SENIOR"
    assert RULES.category_for("", SENIOR, first) == "SENIOR"
    assert RULES.category_for("ADULT", SENIOR, first - timedelta(minutes=1)) is None
    assert RULES.category_for("ADULT", SENIOR, london(2031, 11, 19, 4, 29)) == "SENIOR"
    assert RULES.category_for("ADULT", SENIOR, london(2031, 11, 19, 4, 30)) is None


def test_a_tap_keeps_its_own_category_when_not_replaced_or_without_a_concession():
    at = london(2026, 11, 21, 9)
    assert RULES.category_for("YOUTH", SENIOR, at) is None
    assert RULES.category_for("ADULT", None, at) is None


# -- the state the records build ------------------------------------------------------------


def test_records_set_and_end_concessions_and_replays_change_nothing():
    state = Concessions()
    assert (state.version, len(state), state.concession(PASS_HOLDER)) == (0, 0, None)
    state.apply(1, PASS_HOLDER, SENIOR)
    state.apply(2, OTHER_CARD, SENIOR)
    assert state.concession(PASS_HOLDER) == SENIOR and len(state) == 2
    state.apply(5, PASS_HOLDER, None)  # a tombstone
    assert state.concession(PASS_HOLDER) is None and state.version == 5
    state.apply(4, PASS_HOLDER, SENIOR)  # a replay of an older record
    assert state.concession(PASS_HOLDER) is None and state.version == 5
    state.advance(7)
    assert state.version == 7 and len(state) == 1


def _record(key: bytes | None, value: bytes | None, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        "concessions", 0, offset, 0, 0, key, value, None, len(key or b""),
        len(value or b""), []
    )  # fmt: skip


def _message(**fields: str) -> bytes:
    values = {
        "card_token": PASS_HOLDER,
        "rider_category_id": "SENIOR",
        "valid_from": "2026-11-20",
        "valid_to": "2031-11-19",
        "entitlement_id": "ent_1",
        "funder_id": "funder:camden",
    }
    values.update(fields)
    return events_pb2.CardConcession(**values).SerializeToString()


def test_a_record_carries_a_concession_and_a_tombstone_ends_it():
    key = PASS_HOLDER.encode()
    assert concession_of(_record(key, _message())) == (PASS_HOLDER, SENIOR)
    assert concession_of(_record(key, None)) == (PASS_HOLDER, None)
    assert concession_of(_record(key, b"")) == (PASS_HOLDER, None)


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xff\xff",
        _message(card_token=OTHER_CARD),
        _message(rider_category_id=""),
        _message(valid_from="20/11/2026"),
        _message(valid_to="2026-11-20"),
    ],
)
def test_an_unusable_record_ends_the_card_s_concession_without_logging_it(value, caplog):
    assert concession_of(_record(PASS_HOLDER.encode(), value)) == (PASS_HOLDER, None)
    assert "concession record unusable" in caplog.text
    assert PASS_HOLDER not in caplog.text


def test_a_record_without_a_key_names_no_card():
    assert concession_of(_record(None, _message())) is None


# -- the tap path ----------------------------------------------------------------------------


class Writer:
    """An in-memory TapWrites: every tap new."""

    def __init__(self) -> None:
        self.taps: list[events_pb2.Tap] = []

    async def write(self, taps: list[TapToWrite], dead_letters: list[Message]) -> list[bool]:
        self.taps += [events_pb2.Tap.FromString(t.message[1]) for t in taps]
        return [True] * len(taps)


class NoDenyList:
    version = 0

    def blocked(self, card_token: str) -> bool:
        return False


class Registry:
    async def device(self, device_id: str) -> Device | None:
        return None


class Passes:
    def __init__(self, by_card: dict[str, Concession]) -> None:
        self.by_card = by_card

    def concession(self, card_token: str) -> Concession | None:
        return self.by_card.get(card_token)


GATE = Device(
    "gate-KSX-07",
    "LUL",
    frozenset({"940GZZLUKSX"}),
    frozenset(),
    DeviceStatus.ACTIVE,
    datetime(2025, 1, 1, tzinfo=UTC),
)


def _tap(seq: int, card: str, at: datetime, category: str) -> events_pb2.Tap:
    tap = events_pb2.Tap(
        device_id=GATE.device_id,
        sequence_number=seq,
        card_token=card,
        stop_id="940GZZLUKSX",
        kind=events_pb2.TAP_KIND_ENTRY,
        operator_id="LUL",
        rider_category_id=category,
    )
    tap.tapped_at.FromDatetime(at)
    return tap


async def test_accepted_taps_of_a_pass_holder_are_written_with_the_concession():
    now = london(2026, 11, 21, 9)
    writer = Writer()
    ports = AcceptPorts(
        Registry(),
        writer,
        NoDenyList(),
        "taps",
        clock=lambda: now,
        concessions=Passes({PASS_HOLDER: SENIOR}),
    )
    taps = [
        _tap(1, PASS_HOLDER, now - timedelta(minutes=5), "ADULT"),
        _tap(2, OTHER_CARD, now - timedelta(minutes=5), "ADULT"),
        _tap(3, PASS_HOLDER, now - timedelta(minutes=4), ""),
        _tap(4, PASS_HOLDER, now - timedelta(minutes=3), "YOUTH"),
        _tap(5, PASS_HOLDER, london(2026, 11, 20, 4, 0), "ADULT"),  # service day 19 Nov
    ]
    acks = await accept_taps(ports, GATE, taps)
    assert [a.status for a in acks] == [ingest_pb2.ACK_STATUS_ACCEPTED] * 5
    written = {t.sequence_number: t.rider_category_id for t in writer.taps}
    assert written == {1: "SENIOR", 2: "ADULT", 3: "SENIOR", 4: "YOUTH", 5: "ADULT"}
