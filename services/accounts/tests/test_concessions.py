"""Travel passes reaching the taps (docs/benefits.md#travel-passes), over accounts' real
gRPC server, PostgreSQL and Kafka: a grant, a renewal, a revocation, the expiry sweep and
the account's cards changing each publish the cards' `CardConcession` records (or their
tombstones) on the `concessions` topic through the outbox. The clock is injected."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, date, datetime, timedelta

import pytest

from clearway.accounts.v1 import accounts_pb2
from clearway.benefits.v1 import benefits_pb2
from clearway.events.v1 import events_pb2
from services.accounts.tests import test_benefits as benefits_tests
from services.accounts.tests.benefits_scheme import SENIOR
from services.accounts.tests.test_benefits import NOW, Desk, Person, new_card
from services.accounts.tests.test_stored_value import read_topic, wait_until

pytestmark = pytest.mark.integration

desk = benefits_tests.desk  # the officers' desk: accounts in-process, the clock injected
BORN = "1950-03-01"  # 76 on NOW: a senior
FIVE_YEARS = timedelta(days=365 * 5)  # the test scheme's validity of the senior pass

Record = tuple[str, events_pb2.CardConcession | None]


def bank_card() -> str:
    return "bk_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


async def records(desk: Desk, count: int) -> list[Record]:
    """The `concessions` topic once it holds `count` records: (key, the record or None
    for a tombstone), in order."""
    found: list[Record] = []

    async def enough() -> bool:
        nonlocal found
        raw = await read_topic(
            desk.settings.endpoints.kafka_bootstrap, desk.settings.topics.concessions
        )
        found = [
            (
                r.key.decode(),
                None if r.value is None else events_pb2.CardConcession.FromString(r.value),
            )
            for r in raw
        ]
        return len(found) >= count

    await wait_until(enough, 30)
    return found


async def add_card(desk: Desk, person: Person, card: str) -> None:
    await desk.travellers.AddCard(
        accounts_pb2.AddCardRequest(card_token=card), metadata=person.metadata
    )


def concession(
    card: str, granted: benefits_pb2.Entitlement, valid_from: str = ""
) -> events_pb2.CardConcession:
    return events_pb2.CardConcession(
        card_token=card,
        rider_category_id="SENIOR",
        valid_from=valid_from or granted.valid_from,
        valid_to=granted.valid_to,
        entitlement_id=granted.entitlement_id,
        funder_id="funder:camden",
        entitlement_scheme_id=SENIOR,
    )


async def test_a_senior_pass_reaches_every_card_of_the_account_until_it_is_revoked(
    desk: Desk,
) -> None:
    officer = await desk.officer()
    senior = await desk.person()
    second = new_card()
    await add_card(desk, senior, second)
    young = await desk.person()
    await desk.grant(officer, young)  # an allowance: nothing for the taps

    granted = (await desk.grant(officer, senior, SENIOR, born=BORN)).entitlement
    assert (granted.valid_from, granted.valid_to) == ("2026-11-20", "2031-11-19")
    first_two = await records(desk, 2)
    assert sorted(first_two, key=lambda r: r[0]) == sorted(
        [(senior.card, concession(senior.card, granted)), (second, concession(second, granted))],
        key=lambda r: r[0],
    )

    third = bank_card()  # a bank card carries taps too
    await add_card(desk, senior, third)
    assert (await records(desk, 3))[2:] == [(third, concession(third, granted))]

    await desk.officers.RevokeEntitlement(
        benefits_pb2.RevokeEntitlementRequest(entitlement_id=granted.entitlement_id),
        metadata=officer.metadata,
    )
    ended = (await records(desk, 6))[3:]
    assert sorted(ended) == sorted([(senior.card, None), (second, None), (third, None)])


async def test_a_renewal_extends_the_concession_and_cards_leaving_or_expiry_end_it(
    desk: Desk,
) -> None:
    officer = await desk.officer()
    senior = await desk.person()
    granted = (await desk.grant(officer, senior, SENIOR, born=BORN)).entitlement
    assert await records(desk, 1) == [(senior.card, concession(senior.card, granted))]

    desk.set_clock(datetime(2031, 10, 1, 12, 0, tzinfo=UTC))  # the renewal window is open
    renewed = (await desk.grant(officer, senior, SENIOR, born=BORN)).entitlement
    assert renewed.valid_from == granted.valid_to
    valid_to = date.fromisoformat(granted.valid_to) + FIVE_YEARS
    assert renewed.valid_to == valid_to.isoformat()
    extended = concession(senior.card, renewed, granted.valid_from)
    assert (await records(desk, 2))[1:] == [(senior.card, extended)]

    bus_card = new_card()
    await add_card(desk, senior, bus_card)
    added = concession(bus_card, renewed, granted.valid_from)
    assert (await records(desk, 3))[2:] == [(bus_card, added)]
    await desk.travellers.RemoveCard(
        accounts_pb2.RemoveCardRequest(card_token=senior.card), metadata=senior.metadata
    )
    assert (await records(desk, 4))[3:] == [(senior.card, None)]

    # The sweep the day both grants have ended: the remaining card's concession ends.
    desk.set_clock(datetime.combine(valid_to, datetime.min.time(), UTC) + timedelta(hours=12))
    sweep = desk.app.benefit_ports.get().entitlements
    assert await sweep.expire_once() == 2
    assert (await records(desk, 5))[4:] == [(bus_card, None)]
    assert await sweep.expire_once() == 0  # nothing more to publish
    assert len(await records(desk, 5)) == 5


async def test_the_sweep_publishes_a_pass_granted_before_concessions_were(desk: Desk) -> None:
    officer = await desk.officer()
    senior = await desk.person()
    granted = (await desk.grant(officer, senior, SENIOR, born=BORN)).entitlement
    await records(desk, 1)
    assert desk.app.pool is not None
    # As if the grant predated this version: the card has no record of what it carries.
    await desk.app.pool.execute("DELETE FROM card_concessions")
    desk.set_clock(NOW + timedelta(days=1))
    assert await desk.app.benefit_ports.get().entitlements.expire_once() == 0
    assert (await records(desk, 2))[1:] == [(senior.card, concession(senior.card, granted))]
