"""Travel passes reaching the taps, as pure rules: the concession an account's passes give
its cards, the records that takes, and how a record is encoded."""

from datetime import UTC, date, datetime, timedelta

from clearway.events.v1 import events_pb2
from services.accounts.domain.concessions import (
    Concession,
    TravelPass,
    concession_changes,
    concession_of,
)
from services.accounts.domain.entitlements import Entitlement, EntitlementStatus
from services.accounts.service_layer.concessions import CardConcessions, concession_message
from services.accounts.tests.benefits_scheme import SENIOR, YOUTH, benefits_scheme

TODAY = date(2026, 11, 20)
CAMDEN = "funder:camden"


def senior(
    entitlement_id: str, start: date, days: int = 365, *, category: str = "SENIOR"
) -> TravelPass:
    return TravelPass(entitlement_id, SENIOR, CAMDEN, category, start, start + timedelta(days=days))


def carried(p: TravelPass, start: date | None = None) -> Concession:
    return Concession(
        p.rider_category_id,
        start or p.valid_from,
        p.valid_to,
        p.entitlement_id,
        p.scheme_id,
        p.funder_id,
    )


# -- the concession of an account --------------------------------------------------------


def test_no_pass_gives_no_concession():
    assert concession_of([], TODAY) is None


def test_a_pass_gives_its_category_for_its_validity():
    granted = senior("ent_a", TODAY)
    assert concession_of([granted], TODAY) == carried(granted)


def test_a_renewal_extends_the_concession_to_its_end():
    current = senior("ent_a", TODAY - timedelta(days=300))
    renewal = senior("ent_b", current.valid_to)
    assert concession_of([current, renewal], TODAY) == carried(renewal, current.valid_from)
    # The current grant expiring changes nothing: the run still starts where it did.
    later = current.valid_to + timedelta(days=3)
    assert concession_of([current, renewal], later) == carried(renewal, current.valid_from)


def test_once_every_pass_has_ended_there_is_no_concession():
    ended = senior("ent_a", TODAY - timedelta(days=365))
    assert ended.valid_to == TODAY
    assert concession_of([ended], TODAY) is None
    assert concession_of([ended], TODAY - timedelta(days=1)) == carried(ended)


def test_a_pass_after_a_gap_starts_a_new_run_the_card_carries_once_the_first_has_ended():
    first = senior("ent_a", TODAY - timedelta(days=100), 110)
    later = senior("ent_b", first.valid_to + timedelta(days=30))
    assert concession_of([later, first], TODAY) == carried(first)
    assert concession_of([later, first], first.valid_to) == carried(later)


def test_of_passes_of_two_categories_the_earliest_live_one_is_carried():
    senior_pass = senior("ent_a", TODAY - timedelta(days=10))
    other = senior("ent_b", TODAY - timedelta(days=20), 15, category="DISABLED")
    assert concession_of([senior_pass, other], TODAY) == carried(senior_pass)
    assert concession_of([senior_pass, other], TODAY - timedelta(days=12)) == carried(other)


# -- the records ---------------------------------------------------------------------------


WANTED = carried(senior("ent_a", TODAY))


def test_each_card_not_carrying_the_concession_gets_a_record_in_card_order():
    assert concession_changes(["tok_b", "sc_a"], {}, WANTED) == [
        ("sc_a", WANTED),
        ("tok_b", WANTED),
    ]


def test_a_card_already_carrying_it_gets_nothing_and_a_new_card_gets_one():
    published = {"sc_a": WANTED, "tok_b": WANTED}
    assert concession_changes(["sc_a", "tok_b"], published, WANTED) == []
    assert concession_changes(["sc_a", "tok_b", "bk_c"], published, WANTED) == [("bk_c", WANTED)]


def test_a_renewed_concession_is_published_again_to_every_card():
    renewed = Concession("SENIOR", TODAY, date(2036, 1, 1), "ent_b", SENIOR, CAMDEN)
    assert concession_changes(["sc_a"], {"sc_a": WANTED}, renewed) == [("sc_a", renewed)]


def test_no_concession_ends_the_cards_that_carry_one_and_a_removed_card_is_ended():
    published = {"sc_a": WANTED, "tok_b": WANTED}
    assert concession_changes(["sc_a", "tok_b", "tok_c"], published, None) == [
        ("sc_a", None),
        ("tok_b", None),
    ]
    assert concession_changes(["sc_a"], published, WANTED) == [("tok_b", None)]


# -- from grants to records ------------------------------------------------------------------


def grant(entitlement_id: str, scheme_id: str, status: EntitlementStatus) -> Entitlement:
    return Entitlement(
        entitlement_id,
        "trv_1",
        scheme_id,
        CAMDEN,
        status,
        TODAY,
        TODAY + timedelta(days=365),
        datetime(2026, 11, 20, 12, tzinfo=UTC),
        "trv_officer",
    )


def test_only_travel_passes_not_revoked_count_with_their_scheme_s_category():
    concessions = CardConcessions(benefits_scheme())
    held = [
        grant("ent_youth", YOUTH, EntitlementStatus.ACTIVE),
        grant("ent_revoked", SENIOR, EntitlementStatus.REVOKED),
        grant("ent_expired", SENIOR, EntitlementStatus.EXPIRED),
        grant("ent_unknown", "no-such-scheme", EntitlementStatus.ACTIVE),
    ]
    (only,) = concessions.travel_passes(held)
    assert (only.entitlement_id, only.rider_category_id) == ("ent_expired", "SENIOR")
    assert concessions.travel_pass_schemes == [SENIOR]


def test_a_record_is_a_card_concession_keyed_by_the_card_and_an_end_is_a_tombstone():
    message = concession_message("p.concessions", "sc_a", WANTED)
    assert (message.topic, message.key) == ("p.concessions", b"sc_a")
    assert message.value is not None
    event = events_pb2.CardConcession.FromString(message.value)
    assert (event.card_token, event.rider_category_id) == ("sc_a", "SENIOR")
    assert (event.valid_from, event.valid_to) == ("2026-11-20", "2027-11-20")
    assert (event.entitlement_id, event.funder_id, event.entitlement_scheme_id) == (
        "ent_a",
        CAMDEN,
        SENIOR,
    )
    assert concession_message("p.concessions", "sc_a", None).value is None
