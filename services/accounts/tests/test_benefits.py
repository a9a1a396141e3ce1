"""Benefits over accounts' real gRPC server, PostgreSQL and Kafka (docs/benefits.md):
officers grant entitlements, providers' signed devices redeem them (once per key, with the
BenefitPosting on `benefits` once), the refusals with their reason codes, expiry and
revocation, rewards once per rule and period, the officers' permissions, the council
report's suppression, and off-peak rewards from journeys. The clock is injected."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from clearway.common.v1.money_pb2 import Money as MoneyMessage
from clearway.events.v1 import events_pb2
from clearway.kafka import idempotent_producer
from clearway.money import Money
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from services.accounts.app import AccountsApp, build
from services.accounts.redemption_device import RedemptionDevice
from services.accounts.service_layer.benefits_admin import (
    add_officer,
    register_device,
    revoke_device,
)
from services.accounts.tests.benefits_scheme import (
    ISLINGTON_YOUTH,
    STUDIO,
    YOUTH,
    benefits_scheme,
)
from services.accounts.tests.test_stored_value import read_topic, wait_until

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
# A Friday: service day 2026-11-20 (London, 04:30 day start).
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FIFTEEN = "2011-05-01"  # 15 on NOW
TWELVE = "2014-03-01"
LEISURE = "provider:camden-leisure"


def gbp(minor: int) -> Money:
    return Money(minor, "GBP")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def refusal(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None]:
    return exc.code(), reason_of(exc.trailing_metadata())


def new_card() -> str:
    return f"tok_{uuid.uuid4().hex[:16]}"


@dataclasses.dataclass
class Person:
    email: str
    metadata: tuple[tuple[str, str], ...]
    card: str


@dataclasses.dataclass
class Desk:
    settings: ServiceSettings
    running: RunningService
    app: AccountsApp
    channel: grpc.aio.Channel
    travellers: accounts_pb2_grpc.TravellerServiceAsyncStub
    officers: benefits_pb2_grpc.OfficerServiceAsyncStub
    benefits: benefits_pb2_grpc.BenefitsServiceAsyncStub
    now: datetime = NOW

    def set_clock(self, at: datetime) -> None:
        self.now = at

    async def person(self, *, card: bool = True) -> Person:
        email = f"t{uuid.uuid4().hex[:10]}@example.org"
        await self.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=PASSWORD))
        reply = await self.travellers.SignIn(
            accounts_pb2.SignInRequest(email=email, password=PASSWORD)
        )
        metadata = bearer(reply.session_token)
        token = ""
        if card:
            token = new_card()
            await self.travellers.AddCard(
                accounts_pb2.AddCardRequest(card_token=token), metadata=metadata
            )
        return Person(email, metadata, token)

    async def officer(self, funder_id: str = "funder:camden") -> Person:
        person = await self.person(card=False)
        assert self.app.pool is not None
        await add_officer(self.app.pool, person.email, funder_id)
        return person

    async def device(self, provider_id: str = LEISURE) -> RedemptionDevice:
        device = RedemptionDevice.generate(f"pos-{uuid.uuid4().hex[:8]}")
        assert self.app.pool is not None and self.app.scheme is not None
        await register_device(
            self.app.pool, device.device_id, provider_id, device.public_key, self.app.scheme
        )
        return device

    async def grant(
        self,
        officer: Person,
        person: Person,
        scheme_id: str = YOUTH,
        born: str = FIFTEEN,
        area: str = "camden",
        key: str = "",
    ) -> benefits_pb2.GrantEntitlementResponse:
        return await self.officers.GrantEntitlement(
            benefits_pb2.GrantEntitlementRequest(
                traveller_email=person.email,
                scheme_id=scheme_id,
                date_of_birth=born,
                residence_area=area,
                evidence="passport seen, ref 1234",
                idempotency_key=key or uuid.uuid4().hex,
            ),
            metadata=officer.metadata,
        )

    async def entitlements(self, person: Person) -> list[benefits_pb2.Entitlement]:
        reply = await self.benefits.ListEntitlements(
            benefits_pb2.ListEntitlementsRequest(), metadata=person.metadata
        )
        return list(reply.entitlements)

    async def audit(self, officer: Person) -> list[benefits_pb2.AuditEvent]:
        reply = await self.officers.ListAuditEvents(
            benefits_pb2.ListAuditEventsRequest(page_size=100), metadata=officer.metadata
        )
        return list(reply.events)

    async def postings(self) -> list[events_pb2.BenefitPosting]:
        records = await read_topic(
            self.settings.endpoints.kafka_bootstrap, self.settings.topics.benefits
        )
        for record in records:
            assert (
                record.key == events_pb2.BenefitPosting.FromString(record.value).posting_id.encode()
            )
        return [events_pb2.BenefitPosting.FromString(r.value) for r in records]

    async def balance(self, person: Person) -> accounts_pb2.GetBalanceResponse:
        return await self.travellers.GetBalance(
            accounts_pb2.GetBalanceRequest(card_token=person.card), metadata=person.metadata
        )


@pytest.fixture
async def desk(settings_for) -> AsyncIterator[Desk]:
    settings = settings_for("accounts")
    app = build(settings)
    app.scheme = benefits_scheme()
    running = RunningService(app)
    port = await running.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    made = Desk(
        settings,
        running,
        app,
        channel,
        accounts_pb2_grpc.TravellerServiceStub(channel),
        benefits_pb2_grpc.OfficerServiceStub(channel),
        benefits_pb2_grpc.BenefitsServiceStub(channel),
    )
    assert app.benefits is not None
    app.benefits.clock = lambda: made.now
    try:
        yield made
    finally:
        await channel.close()
        await running.stop()


async def refused(call) -> tuple[grpc.StatusCode, str | None]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return refusal(caught.value)


async def test_officer_grants_a_device_redeems_and_the_posting_appears_once(desk: Desk) -> None:
    officer = await desk.officer()
    young = await desk.person()
    device = await desk.device()
    granted = await desk.grant(officer, young, key="grant-1")
    e = granted.entitlement
    assert (granted.replayed, e.scheme_id, e.status, e.funder_id) == (
        False,
        YOUTH,
        "ACTIVE",
        "funder:camden",
    )
    assert (e.valid_from, e.valid_to, e.renewal_opens) == ("2026-11-20", "2027-11-20", "2027-10-21")
    assert e.balance == MoneyMessage(amount_minor=2000, currency="GBP")
    again = await desk.grant(officer, young, key="grant-1")
    assert (again.replayed, again.entitlement.entitlement_id) == (True, e.entitlement_id)

    first = await device.redeem(desk.channel, young.card, "swimming", gbp(800), "visit-1")
    assert (first.replayed, first.provider_id, first.entitlement_id, first.service_day) == (
        False,
        LEISURE,
        e.entitlement_id,
        "2026-11-20",
    )
    assert first.balance_after.amount_minor == 1200
    replay = await device.redeem(desk.channel, young.card, "swimming", gbp(800), "visit-1")
    assert (replay.replayed, replay.redemption_id, replay.balance_after.amount_minor) == (
        True,
        first.redemption_id,
        1200,
    )
    # The same key for another redemption is refused, and moves nothing.
    assert await refused(
        device.redeem(desk.channel, young.card, "swimming", gbp(300), "visit-1")
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")

    async def posted() -> bool:
        return len(await desk.postings()) >= 1

    await wait_until(posted)
    postings = await desk.postings()
    assert len(postings) == 1
    p = postings[0]
    assert (p.posting_id, p.kind, p.funder_id, p.provider_id) == (
        f"redemption:{first.redemption_id}",
        events_pb2.BenefitPosting.KIND_REDEMPTION,
        "funder:camden",
        LEISURE,
    )
    assert (p.amount.amount_minor, p.service_day, p.entitlement_scheme_id, p.category) == (
        800,
        "2026-11-20",
        YOUTH,
        "swimming",
    )

    (held,) = await desk.entitlements(young)
    assert held.balance.amount_minor == 1200
    moves = await desk.benefits.ListEntitlementMovements(
        benefits_pb2.ListEntitlementMovementsRequest(entitlement_id=e.entitlement_id, page_size=1),
        metadata=young.metadata,
    )
    assert [
        (m.kind, m.amount.amount_minor, m.provider_name, m.category) for m in moves.movements
    ] == [("REDEMPTION", -800, "Camden Leisure", "swimming")]
    rest = await desk.benefits.ListEntitlementMovements(
        benefits_pb2.ListEntitlementMovementsRequest(
            entitlement_id=e.entitlement_id, page_token=moves.next_page_token
        ),
        metadata=young.metadata,
    )
    assert [(m.kind, m.month, m.amount.amount_minor) for m in rest.movements] == [
        ("ALLOWANCE", "2026-11", 2000)
    ]
    assert rest.next_page_token == ""
    # Another traveller cannot read them.
    other = await desk.person()
    assert await refused(
        desk.benefits.ListEntitlementMovements(
            benefits_pb2.ListEntitlementMovementsRequest(entitlement_id=e.entitlement_id),
            metadata=other.metadata,
        )
    ) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_ENTITLEMENT")

    schemes = await desk.officers.ListEntitlementSchemes(
        benefits_pb2.ListEntitlementSchemesRequest(), metadata=officer.metadata
    )
    youth = next(s for s in schemes.schemes if s.scheme_id == YOUTH)
    assert youth.budget_used.amount_minor == 800
    (event,) = await desk.audit(officer)
    assert (event.action, event.entitlement_id, event.actor) == (
        "GRANTED",
        e.entitlement_id,
        officer.email,
    )
    assert FIFTEEN not in event.detail and "passport seen" in event.detail
    grants = await desk.officers.ListGrants(
        benefits_pb2.ListGrantsRequest(), metadata=officer.metadata
    )
    assert [(g.traveller_email, g.granted_by) for g in grants.grants] == [
        (young.email, officer.email)
    ]


async def test_refusals_carry_their_reason_codes_and_statuses(desk: Desk) -> None:
    officer = await desk.officer()
    young = await desk.person()
    studio_only = await desk.person()
    await desk.grant(officer, young)
    await desk.grant(officer, studio_only, STUDIO)
    device = await desk.device()
    fp = grpc.StatusCode.FAILED_PRECONDITION
    bad = grpc.StatusCode.INVALID_ARGUMENT

    async def redeem(card: str, category: str, minor: int, key: str = "", currency: str = "GBP"):
        return await device.redeem(
            desk.channel, card, category, Money(minor, currency), key or uuid.uuid4().hex
        )

    assert await refused(redeem(young.card, "swimming", 1001)) == (fp, "OVER_VISIT_LIMIT")
    await redeem(young.card, "gym", 1000)
    await redeem(young.card, "pitch_hire", 900)
    assert await refused(redeem(young.card, "gym", 101)) == (fp, "INSUFFICIENT_ENTITLEMENT")
    await redeem(young.card, "gym", 100)  # exactly what is left
    assert await refused(redeem(young.card, "studio_hire", 100)) == (fp, "CATEGORY_NOT_OFFERED")
    assert await refused(redeem(studio_only.card, "swimming", 100)) == (
        fp,
        "CATEGORY_NOT_ALLOWED",
    )
    nobody = await desk.person()
    assert await refused(redeem(nobody.card, "swimming", 100)) == (fp, "NO_ENTITLEMENT")
    assert await refused(redeem(new_card(), "swimming", 100)) == (fp, "NO_ENTITLEMENT")
    for args, reason in [
        ((young.card, "swimming", 0), "BAD_AMOUNT"),
        ((young.card, "swimming", -5), "BAD_AMOUNT"),
        ((young.card, "Swimming!", 100), "BAD_CATEGORY"),
        (("4111 1111 1111 1111", "swimming", 100), "BAD_CARD_TOKEN"),
        ((young.card, "swimming", 100, "bad key!"), "BAD_IDEMPOTENCY_KEY"),
        ((young.card, "swimming", 100, "k", "EUR"), "CURRENCY_MISMATCH"),
    ]:
        assert await refused(redeem(*args)) == (bad, reason), args
    stub = benefits_pb2_grpc.RedemptionServiceStub(desk.channel)
    garbage = b"\xff\xff not a redemption"
    assert await refused(
        stub.Redeem(
            benefits_pb2.RedeemRequest(
                device_id=device.device_id,
                key_id=device.key_id,
                redemption=garbage,
                signature=device.private_key.sign(b"clearway.benefits.v1.Redemption\x00" + garbage),
            )
        )
    ) == (bad, "UNDECODABLE_REQUEST")
    (held,) = await desk.entitlements(young)
    assert held.balance.amount_minor == 0


async def test_the_councils_monthly_budget_of_a_scheme_is_never_overspent(desk: Desk) -> None:
    officer = await desk.officer()
    first, second = await desk.person(), await desk.person()
    await desk.grant(officer, first, STUDIO)
    await desk.grant(officer, second, STUDIO)
    studio = await desk.device("provider:soundbox")
    await studio.redeem(desk.channel, first.card, "studio_hire", gbp(1500), "a")
    assert await refused(
        studio.redeem(desk.channel, second.card, "studio_hire", gbp(1500), "b")
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "BUDGET_EXHAUSTED")
    assert (
        await studio.redeem(desk.channel, second.card, "studio_hire", gbp(1000), "c")
    ).balance_after.amount_minor == 1000
    # Next month: a new budget and a new allowance (the unspent 10.00 does not roll over).
    desk.set_clock(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    again = await studio.redeem(desk.channel, second.card, "studio_hire", gbp(1500), "d")
    assert again.balance_after.amount_minor == 500


async def test_an_expired_or_revoked_entitlement_cannot_be_spent(desk: Desk) -> None:
    officer = await desk.officer()
    young, other = await desk.person(), await desk.person()
    device = await desk.device()
    granted = (await desk.grant(officer, young)).entitlement
    await device.redeem(desk.channel, young.card, "swimming", gbp(100), "before")
    desk.set_clock(NOW + timedelta(days=365))  # the service day valid_to: expired
    assert await refused(
        device.redeem(desk.channel, young.card, "swimming", gbp(100), "after")
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "ENTITLEMENT_EXPIRED")
    assert [e.status for e in await desk.entitlements(young)] == ["EXPIRED"]
    benefits = desk.app.benefit_ports.get()
    assert await benefits.entitlements.expire_once() == 0  # written once, lazily
    expired = [a for a in await desk.audit(officer) if a.action == "EXPIRED"]
    assert [(a.entitlement_id, a.actor) for a in expired] == [
        (granted.entitlement_id, "service/accounts")
    ]

    desk.set_clock(NOW)
    held = (await desk.grant(officer, other)).entitlement
    revoked = await desk.officers.RevokeEntitlement(
        benefits_pb2.RevokeEntitlementRequest(
            entitlement_id=held.entitlement_id, reason="moved away"
        ),
        metadata=officer.metadata,
    )
    assert revoked.entitlement.status == "REVOKED"
    assert await refused(
        device.redeem(desk.channel, other.card, "swimming", gbp(100), "revoked")
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "ENTITLEMENT_REVOKED")
    actions = [a.action for a in await desk.audit(officer)]
    assert actions[0] == "REVOKED" and actions.count("REVOKED") == 1


async def test_the_periodic_sweep_writes_expired_once(desk: Desk) -> None:
    officer = await desk.officer()
    young = await desk.person()
    await desk.grant(officer, young)
    benefits = desk.app.benefit_ports.get()
    desk.set_clock(NOW + timedelta(days=400))
    assert await benefits.entitlements.expire_once() == 1
    assert await benefits.entitlements.expire_once() == 0
    assert [a.action for a in await desk.audit(officer)] == ["EXPIRED", "GRANTED"]


async def test_eligibility_renewal_and_grant_refusals(desk: Desk) -> None:
    officer = await desk.officer()
    young = await desk.person()
    fp = grpc.StatusCode.FAILED_PRECONDITION
    assert await refused(desk.grant(officer, young, born="2016-01-01")) == (fp, "NOT_ELIGIBLE_AGE")
    assert await refused(desk.grant(officer, young, born="2007-11-20")) == (fp, "NOT_ELIGIBLE_AGE")
    assert await refused(desk.grant(officer, young, area="hackney")) == (fp, "NOT_ELIGIBLE_AREA")
    assert await refused(desk.grant(officer, young, born="20-11-2011")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_DATE_OF_BIRTH",
    )
    assert await refused(desk.grant(officer, young, scheme_id="nope")) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_ENTITLEMENT_SCHEME",
    )
    stranger = Person("nobody-here@example.org", (), "")
    assert await refused(desk.grant(officer, stranger)) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_TRAVELLER",
    )
    # 18 on the day of the grant (the birthday is today) is eligible.
    first = (await desk.grant(officer, young, born="2008-11-20", key="g1")).entitlement
    assert await refused(desk.grant(officer, young, key="g2")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_GRANTED",
    )
    assert await refused(desk.grant(officer, await desk.person(), key="g1")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "IDEMPOTENCY_KEY_REUSED",
    )
    desk.set_clock(datetime(2027, 10, 21, 12, 0, tzinfo=UTC))  # the renewal window opens
    renewed = (await desk.grant(officer, young, born="2008-11-20", key="g3")).entitlement
    assert (renewed.valid_from, renewed.valid_to) == (first.valid_to, "2028-11-19")
    assert await refused(desk.grant(officer, young, key="g4")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_GRANTED",
    )
    assert [a.action for a in await desk.audit(officer)] == ["RENEWED", "GRANTED"]


async def test_devices_prove_themselves_by_signature(desk: Desk) -> None:
    officer = await desk.officer()
    young = await desk.person()
    await desk.grant(officer, young)
    device = await desk.device()
    stub = benefits_pb2_grpc.RedemptionServiceStub(desk.channel)
    signed = device.sign(young.card, "swimming", gbp(100), "k1")
    tampered = benefits_pb2.RedeemRequest()
    tampered.CopyFrom(signed)
    tampered.redemption = signed.redemption.replace(b"swimming", b"gym\x00\x00\x00\x00\x00")
    unauth = grpc.StatusCode.UNAUTHENTICATED
    assert await refused(stub.Redeem(tampered)) == (unauth, "BAD_SIGNATURE")
    forged = RedemptionDevice(device.device_id, RedemptionDevice.generate("x").private_key)
    wrong_key = forged.sign(young.card, "swimming", gbp(100), "k2")
    assert await refused(stub.Redeem(wrong_key)) == (unauth, "UNKNOWN_KEY")
    wrong_key.key_id = device.key_id
    assert await refused(stub.Redeem(wrong_key)) == (unauth, "BAD_SIGNATURE")
    unknown = RedemptionDevice.generate("pos-unknown")
    assert await refused(unknown.redeem(desk.channel, young.card, "swimming", gbp(100), "k3")) == (
        unauth,
        "UNKNOWN_DEVICE",
    )
    assert (await stub.Redeem(signed)).amount.amount_minor == 100
    assert desk.app.pool is not None
    await revoke_device(desk.app.pool, device.device_id)
    assert await refused(device.redeem(desk.channel, young.card, "swimming", gbp(100), "k4")) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "DEVICE_REVOKED",
    )


async def test_rewards_are_credited_once_per_rule_and_period(desk: Desk) -> None:
    officer = await desk.officer()
    young = await desk.person()
    await desk.grant(officer, young)

    async def reward(person: Person, rule: str, key: str) -> benefits_pb2.GrantRewardResponse:
        return await desk.officers.GrantReward(
            benefits_pb2.GrantRewardRequest(
                traveller_email=person.email,
                rule_id=rule,
                reason="litter pick",
                idempotency_key=key,
            ),
            metadata=officer.metadata,
        )

    first = await reward(young, "camden-volunteering", "r1")
    assert (first.amount.amount_minor, first.period, first.replayed) == (500, "2026-11", False)
    replay = await reward(young, "camden-volunteering", "r1")
    assert (replay.replayed, replay.reward_id) == (True, first.reward_id)
    assert await refused(reward(young, "camden-volunteering", "r2")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "REWARD_ALREADY_GRANTED",
    )
    assert (await desk.balance(young)).balance.amount_minor == 500
    movements = await desk.travellers.ListBalanceMovements(
        accounts_pb2.ListBalanceMovementsRequest(card_token=young.card), metadata=young.metadata
    )
    assert [(m.kind, m.source_id, m.amount.amount_minor) for m in movements.movements] == [
        (accounts_pb2.BalanceMovement.KIND_REWARD, first.reward_id, 500)
    ]
    bonus = await reward(young, "camden-youth-bonus", "r3")
    assert bonus.amount.amount_minor == 500
    (held,) = await desk.entitlements(young)
    assert held.balance.amount_minor == 2500
    assert await refused(reward(young, "camden-youth-bonus", "r4")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "REWARD_ALREADY_GRANTED",
    )
    no_card = await desk.person(card=False)
    assert await refused(reward(no_card, "camden-volunteering", "r5")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_CARD",
    )
    assert await refused(reward(no_card, "camden-youth-bonus", "r6")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_ENTITLEMENT",
    )
    assert await refused(reward(young, "busco-off-peak", "r7")) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_REWARD_RULE",
    )
    # The next period: credited again.
    desk.set_clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    december = await reward(young, "camden-volunteering", "r8")
    assert (december.period, december.replayed) == ("2026-12", False)
    assert (await desk.balance(young)).balance.amount_minor == 1000

    async def two_postings() -> bool:
        return len(await desk.postings()) >= 2

    await wait_until(two_postings)
    postings = await desk.postings()
    assert sorted(
        (p.posting_id, p.kind, p.reward_rule_id, p.amount.amount_minor) for p in postings
    ) == sorted(
        [
            (
                f"reward:{first.reward_id}",
                events_pb2.BenefitPosting.KIND_REWARD,
                "camden-volunteering",
                500,
            ),
            (
                f"reward:{december.reward_id}",
                events_pb2.BenefitPosting.KIND_REWARD,
                "camden-volunteering",
                500,
            ),
        ]
    )
    rewarded = [a for a in await desk.audit(officer) if a.action == "REWARDED"]
    assert len(rewarded) == 3


async def test_a_reward_that_clears_a_debt_lifts_the_deny_listing(desk: Desk) -> None:
    officer = await desk.officer()
    young = await desk.person()
    producer = idempotent_producer(desk.settings.endpoints.kafka_bootstrap)
    await producer.start()
    try:
        journey = events_pb2.PricedJourney(
            journey_id=f"j-{uuid.uuid4().hex[:8]}",
            card_token=young.card,
            revision=1,
            service_day="2026-11-20",
            charge=MoneyMessage(amount_minor=300, currency="GBP"),
        )
        leg = journey.legs.add(leg_id="l0", operator_id="LUL", from_stop_id="s1")
        leg.entry_at.FromDatetime(datetime(2026, 11, 20, 8, 0, tzinfo=UTC))  # peak: no reward
        await producer.send_and_wait(
            desk.settings.topics.journeys, journey.SerializeToString(), key=young.card.encode()
        )
    finally:
        await producer.stop()

    async def in_debt() -> bool:
        return (await desk.balance(young)).deny_listed

    await wait_until(in_debt)
    await desk.officers.GrantReward(
        benefits_pb2.GrantRewardRequest(
            traveller_email=young.email, rule_id="camden-volunteering", idempotency_key="lift"
        ),
        metadata=officer.metadata,
    )
    after = await desk.balance(young)
    assert (after.balance.amount_minor, after.deny_listed) == (200, False)

    async def lifted() -> bool:
        records = await read_topic(
            desk.settings.endpoints.kafka_bootstrap, desk.settings.topics.denylist
        )
        return len(records) >= 2

    await wait_until(lifted)
    records = await read_topic(
        desk.settings.endpoints.kafka_bootstrap, desk.settings.topics.denylist
    )
    assert [events_pb2.DenyListChange.FromString(r.value).action for r in records] == [
        events_pb2.DenyListChange.ACTION_ADD,
        events_pb2.DenyListChange.ACTION_REMOVE,
    ]


async def test_officer_rpcs_need_an_officer_of_the_council(desk: Desk) -> None:
    camden = await desk.officer()
    islington = await desk.officer("funder:islington")
    young = await desk.person()
    granted = (await desk.grant(camden, young)).entitlement
    traveller = await desk.person()
    assert await refused(
        desk.officers.ListEntitlementSchemes(
            benefits_pb2.ListEntitlementSchemesRequest(), metadata=traveller.metadata
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_AN_OFFICER")
    assert await refused(desk.grant(traveller, young)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_AN_OFFICER",
    )
    assert await refused(
        desk.officers.GetCouncilReport(benefits_pb2.GetCouncilReportRequest(month="2026-11"))
    ) == (grpc.StatusCode.UNAUTHENTICATED, "NOT_SIGNED_IN")

    theirs = await desk.officers.ListEntitlementSchemes(
        benefits_pb2.ListEntitlementSchemesRequest(), metadata=islington.metadata
    )
    assert theirs.funder_id == "funder:islington"
    assert [s.scheme_id for s in theirs.schemes] == [ISLINGTON_YOUTH]
    assert list(theirs.reward_rules) == []
    assert await refused(desk.grant(islington, await desk.person())) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_ENTITLEMENT_SCHEME",
    )
    assert await refused(
        desk.officers.RevokeEntitlement(
            benefits_pb2.RevokeEntitlementRequest(entitlement_id=granted.entitlement_id),
            metadata=islington.metadata,
        )
    ) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_ENTITLEMENT")
    assert await refused(
        desk.officers.GrantReward(
            benefits_pb2.GrantRewardRequest(
                traveller_email=young.email, rule_id="camden-volunteering", idempotency_key="x"
            ),
            metadata=islington.metadata,
        )
    ) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_REWARD_RULE")
    grants = await desk.officers.ListGrants(
        benefits_pb2.ListGrantsRequest(), metadata=islington.metadata
    )
    assert list(grants.grants) == []
    assert await desk.audit(islington) == []
    # The traveller sees their own entitlement (a traveller RPC needs no role).
    assert [e.entitlement_id for e in await desk.entitlements(young)] == [granted.entitlement_id]


async def test_the_council_report_suppresses_a_cell_of_nine_and_shows_ten(desk: Desk) -> None:
    officer = await desk.officer()
    device = await desk.device()
    swimmers = [await desk.person() for _ in range(10)]
    gym_goers = [await desk.person() for _ in range(9)]
    for i, person in enumerate(swimmers):  # keys are the provider's: one per visit
        await desk.grant(officer, person, born=FIFTEEN)
        await device.redeem(desk.channel, person.card, "swimming", gbp(300), f"s{i}")
        await device.redeem(desk.channel, person.card, "swimming", gbp(200), f"t{i}")
    for i, person in enumerate(gym_goers):
        await desk.grant(officer, person, born=TWELVE)
        await device.redeem(desk.channel, person.card, "gym", gbp(400), f"g{i}")
    report = await desk.officers.GetCouncilReport(
        benefits_pb2.GetCouncilReportRequest(month="2026-11"), metadata=officer.metadata
    )
    assert (report.funder_id, report.month, report.minimum_cell) == ("funder:camden", "2026-11", 10)
    tables = {t.name: t for t in report.tables}
    assert list(tables) == ["spend_by_category", "spend_by_provider", "budget", "take_up"]
    rows = {tuple(r.labels): r for r in tables["spend_by_category"].rows}
    swim, gym = rows[("swimming",)], rows[("gym",)]
    assert (swim.people, swim.redemptions, swim.amount.amount_minor, swim.suppressed) == (
        10,
        20,
        5000,
        False,
    )
    assert (gym.people, gym.redemptions, gym.amount.amount_minor, gym.suppressed) == (
        0,
        0,
        0,
        True,
    )
    (provider,) = tables["spend_by_provider"].rows
    assert (tuple(provider.labels), provider.people, provider.amount.amount_minor) == (
        (LEISURE, "Camden Leisure"),
        19,
        8600,
    )
    budget = {r.labels[0]: r for r in tables["budget"].rows}
    assert budget[YOUTH].amount.amount_minor == 8600 and not budget[YOUTH].suppressed
    assert budget[YOUTH].labels[2] == "5000.00 GBP"
    take_up = {tuple(r.labels): r for r in tables["take_up"].rows}
    assert take_up[(YOUTH, "14-16")].people == 10
    assert take_up[(YOUTH, "11-13")].suppressed and take_up[(YOUTH, "11-13")].people == 0
    text = str(report)
    assert all(p.card not in text and p.email not in text for p in swimmers + gym_goers)
    assert await refused(
        desk.officers.GetCouncilReport(
            benefits_pb2.GetCouncilReportRequest(month="November"), metadata=officer.metadata
        )
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_MONTH")


def bus_journey(card: str, journey_id: str, at: datetime, operator: str = "BUSCO"):
    journey = events_pb2.PricedJourney(
        journey_id=journey_id,
        card_token=card,
        revision=1,
        service_day="2026-11-20",
        charge=MoneyMessage(amount_minor=175, currency="GBP"),
    )
    leg = journey.legs.add(leg_id=f"{journey_id}:0", operator_id=operator, from_stop_id="s1")
    leg.entry_at.FromDatetime(at)
    return journey


async def test_off_peak_journeys_earn_the_operator_reward_once_per_card_and_day(
    desk: Desk,
) -> None:
    young = await desk.person()
    await desk.travellers.TopUp(
        accounts_pb2.TopUpRequest(
            card_token=young.card,
            amount=MoneyMessage(amount_minor=1000, currency="GBP"),
            idempotency_key="seed",
        ),
        metadata=young.metadata,
    )
    off_peak = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)  # 11:00 in London on a Friday
    journeys = [
        bus_journey(young.card, "j-peak", datetime(2026, 11, 20, 8, 0, tzinfo=UTC)),
        bus_journey(young.card, "j-tube", off_peak, operator="LUL"),  # not BUSCO's
        bus_journey(young.card, "j-1", off_peak),
        bus_journey(young.card, "j-2", off_peak + timedelta(hours=1)),  # same day: no more
    ]
    producer = idempotent_producer(desk.settings.endpoints.kafka_bootstrap)
    await producer.start()
    try:
        for _ in range(2):  # a replay credits nothing twice
            for j in journeys:
                await producer.send_and_wait(
                    desk.settings.topics.journeys, j.SerializeToString(), key=young.card.encode()
                )
    finally:
        await producer.stop()

    async def stored() -> bool:
        recorder = desk.app.recorder
        return recorder is not None and recorder.stats.stored >= 8

    await wait_until(stored)
    assert (await desk.balance(young)).balance.amount_minor == 1000 - 4 * 175 + 50
    movements = await desk.travellers.ListBalanceMovements(
        accounts_pb2.ListBalanceMovementsRequest(card_token=young.card), metadata=young.metadata
    )
    rewards = [m for m in movements.movements if m.kind == accounts_pb2.BalanceMovement.KIND_REWARD]
    assert [m.amount.amount_minor for m in rewards] == [50]

    async def posted() -> bool:
        return any(p.kind == events_pb2.BenefitPosting.KIND_REWARD for p in await desk.postings())

    await wait_until(posted)
    (posting,) = [
        p for p in await desk.postings() if p.kind == events_pb2.BenefitPosting.KIND_REWARD
    ]
    assert (posting.funder_id, posting.reward_rule_id, posting.service_day) == (
        "operator:BUSCO",
        "busco-off-peak",
        "2026-11-20",
    )


async def test_concurrent_retries_redeem_once_and_the_budget_holds_under_contention(
    desk: Desk,
) -> None:
    officer = await desk.officer()
    young = await desk.person()
    await desk.grant(officer, young)
    device = await desk.device()
    answers = await asyncio.gather(
        *(device.redeem(desk.channel, young.card, "gym", gbp(600), "same") for _ in range(6))
    )
    assert len({a.redemption_id for a in answers}) == 1
    assert sorted(a.replayed for a in answers) == [False] + [True] * 5
    (held,) = await desk.entitlements(young)
    moves = await desk.benefits.ListEntitlementMovements(
        benefits_pb2.ListEntitlementMovementsRequest(entitlement_id=held.entitlement_id),
        metadata=young.metadata,
    )
    assert [m.kind for m in moves.movements] == ["REDEMPTION", "ALLOWANCE"]

    async def posted() -> bool:
        return len(await desk.postings()) >= 1

    await wait_until(posted)
    assert len(await desk.postings()) == 1

    # Three people at once against a budget of 25.00: two visits of 10.00 fit, not three.
    people = [await desk.person() for _ in range(3)]
    for person in people:
        await desk.grant(officer, person, STUDIO)
    studio = await desk.device("provider:soundbox")
    outcomes = await asyncio.gather(
        *(
            studio.redeem(desk.channel, p.card, "studio_hire", gbp(1000), f"k{i}")
            for i, p in enumerate(people)
        ),
        return_exceptions=True,
    )
    refusals = [refusal(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert refusals == [(grpc.StatusCode.FAILED_PRECONDITION, "BUDGET_EXHAUSTED")]


async def test_a_backdated_grant_and_a_queued_redemption_count_from_their_own_days(
    desk: Desk,
) -> None:
    officer = await desk.officer()
    young = await desk.person()
    device = await desk.device()

    def grant_from(valid_from: str):  # type: ignore[no-untyped-def]
        return desk.officers.GrantEntitlement(
            benefits_pb2.GrantEntitlementRequest(
                traveller_email=young.email,
                scheme_id=YOUTH,
                date_of_birth=FIFTEEN,
                residence_area="camden",
                idempotency_key=uuid.uuid4().hex,
                valid_from=valid_from,
            ),
            metadata=officer.metadata,
        )

    bad = (grpc.StatusCode.INVALID_ARGUMENT, "BAD_VALID_FROM")
    assert await refused(grant_from("2026-11-21")) == bad  # tomorrow
    assert await refused(grant_from("2026-10-19")) == bad  # 32 days back
    assert await refused(grant_from("20-11-2026")) == bad
    granted = await grant_from("2026-10-20")  # the application's day, 31 days back
    assert (granted.entitlement.valid_from, granted.entitlement.valid_to) == (
        "2026-10-20",
        "2027-10-20",
    )

    # A till that lost its link sends the visit it queued yesterday: it counts on that day.
    yesterday = NOW - timedelta(days=1)
    queued = await device.redeem(
        desk.channel, young.card, "swimming", gbp(500), "queued", requested_at=yesterday
    )
    assert queued.service_day == "2026-11-19"
    too_old = device.redeem(
        desk.channel,
        young.card,
        "swimming",
        gbp(100),
        "old",
        requested_at=NOW - timedelta(hours=73),
    )
    assert await refused(too_old) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUESTED_AT")
    ahead = device.redeem(
        desk.channel,
        young.card,
        "swimming",
        gbp(100),
        "ahead",
        requested_at=NOW + timedelta(minutes=6),
    )
    assert await refused(ahead) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUESTED_AT")
