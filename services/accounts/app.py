"""Composition root of accounts: wiring only (the runtime owns the lifecycle)."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import grpc

from clearway.accounts.v1 import accounts_pb2_grpc
from clearway.benefits.v1 import benefits_pb2_grpc
from clearway.consumer import ConsumerLoop, KafkaCommits
from clearway.pki import service_channel
from clearway.rpc import Slot
from clearway.runtime import Resources
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from clearway.settings import REPO_ROOT, ServiceSettings, SettingsError, env_path, env_str
from services.accounts.adapters.balance_book import BalanceBook, BalanceRepository
from services.accounts.adapters.bank_charge_store import BankChargeRepository, BankDayClock
from services.accounts.adapters.cache import HistoryCache
from services.accounts.adapters.fares_caps import FaresCaps
from services.accounts.adapters.fares_client import FaresStopCheck
from services.accounts.adapters.journey_repository import MIGRATIONS, JourneyRepository
from services.accounts.adapters.outbox import OutboxRelay
from services.accounts.adapters.simulated_acquirer import SimulatedAcquirer
from services.accounts.adapters.traveller_repository import SignInLimiter, TravellerRepository
from services.accounts.domain.balance import DEFAULT_MAX_TOP_UP_MINOR, StoredValueRules
from services.accounts.domain.bank_charges import RecoverySchedule
from services.accounts.domain.history import JourneyRevision
from services.accounts.entrypoints.benefits_grpc import (
    BENEFITS_SERVICE_NAMES,
    BenefitsPorts,
    BenefitsServicer,
    OfficerServicer,
    RedemptionServicer,
)
from services.accounts.entrypoints.consumer import JourneyRecorder
from services.accounts.entrypoints.grpc import (
    SERVICE_NAME,
    TRAVELLER_SERVICE_NAME,
    AccountsPorts,
    AccountsServicer,
    TravellerServicer,
)
from services.accounts.service_layer.bank_charging import (
    BankChargeSettings,
    BankCharging,
    PaymentGateway,
)
from services.accounts.service_layer.benefits import (
    EXPIRY_SWEEP_S,
    BenefitsContext,
    Entitlements,
)
from services.accounts.service_layer.claims import Claims, ClaimSettings
from services.accounts.service_layer.concessions import CardConcessions, ConcessionsOfCards
from services.accounts.service_layer.journey_history import JourneyHistory
from services.accounts.service_layer.redemptions import Redemptions
from services.accounts.service_layer.rewards import OffPeakRewards, Rewards
from services.accounts.service_layer.stored_value import ServiceDayClock, StoredValue, TopUpSale
from services.accounts.service_layer.travellers import Travellers

SERVICE = "accounts"
DEFAULT_FARES_TARGET = "127.0.0.1:50052"
# The scheme file (entitlement schemes, providers, reward rules): the one settlement reads.
SCHEME_FILE_VAR = "CLEARWAY_SCHEME_FILE"
DEFAULT_SCHEME_FILE = REPO_ROOT / "examples" / "schemes" / "london.toml"


def cache_namespace(settings: ServiceSettings) -> str:
    """Redis key prefix: one per schema, so the cache always matches its database."""
    return f"clearway:{settings.db_schema}:journeys"


@dataclass(frozen=True, slots=True)
class StoredValueSettings:
    """Accounts' own settings: the scheme's stored-value rules and service day."""

    rules: StoredValueRules = field(default_factory=StoredValueRules)
    day_clock: ServiceDayClock = field(default_factory=ServiceDayClock)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoredValueSettings:
        """From CLEARWAY_SCHEME_CURRENCY, CLEARWAY_MAX_TOP_UP_MINOR, CLEARWAY_ONLINE_RETAILER,
        CLEARWAY_SCHEME_TIMEZONE and CLEARWAY_SERVICE_DAY_START (SettingsError if bad)."""
        env = os.environ if env is None else env
        currency = env.get("CLEARWAY_SCHEME_CURRENCY", "GBP")
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            raise SettingsError(f"CLEARWAY_SCHEME_CURRENCY must be an ISO 4217 code: {currency!r}")
        raw_max = env.get("CLEARWAY_MAX_TOP_UP_MINOR", str(DEFAULT_MAX_TOP_UP_MINOR))
        if not raw_max.isdigit() or int(raw_max) <= 0:
            raise SettingsError(f"CLEARWAY_MAX_TOP_UP_MINOR must be > 0, got {raw_max!r}")
        retailer = env.get("CLEARWAY_ONLINE_RETAILER", "retailer:cornershop")
        if not retailer:
            raise SettingsError("CLEARWAY_ONLINE_RETAILER must name the online shop's party id")
        zone = env.get("CLEARWAY_SCHEME_TIMEZONE", "Europe/London")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"CLEARWAY_SCHEME_TIMEZONE is not a timezone: {zone!r}") from None
        raw_start = env.get("CLEARWAY_SERVICE_DAY_START", "04:30")
        try:
            day_start = time.fromisoformat(raw_start)
        except ValueError:
            raise SettingsError(f"CLEARWAY_SERVICE_DAY_START is not HH:MM: {raw_start!r}") from None
        return cls(
            StoredValueRules(currency, int(raw_max), retailer), ServiceDayClock(zone, day_start)
        )


def _positive_float(env: Mapping[str, str], name: str, default: str, *, zero: bool) -> float:
    raw = env.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise SettingsError(f"{name} must be {'>=' if zero else '>'} 0, got {raw!r}")
    return value


def bank_charge_settings_from_env(env: Mapping[str, str] | None = None) -> BankChargeSettings:
    """From CLEARWAY_RECOVERY_SCALE, CLEARWAY_BANK_CHARGE_POLL_S and
    CLEARWAY_BANK_ATTEMPT_LEASE_S (SettingsError if bad)."""
    env = os.environ if env is None else env
    return BankChargeSettings(
        schedule=RecoverySchedule(
            scale=_positive_float(env, "CLEARWAY_RECOVERY_SCALE", "1", zero=False)
        ),
        poll_s=_positive_float(env, "CLEARWAY_BANK_CHARGE_POLL_S", "5", zero=False),
        lease=timedelta(
            seconds=_positive_float(env, "CLEARWAY_BANK_ATTEMPT_LEASE_S", "60", zero=False)
        ),
    )


def bank_day_delay_from_env(env: Mapping[str, str] | None = None) -> timedelta:
    """CLEARWAY_BANK_CHARGE_DELAY_S: how long after a service day's end it is charged."""
    env = os.environ if env is None else env
    return timedelta(
        seconds=_positive_float(env, "CLEARWAY_BANK_CHARGE_DELAY_S", "3600", zero=True)
    )


@dataclass
class AccountsApp:
    """The accounts service: journey history stored from Kafka, travellers' accounts and
    cards, served over gRPC to signed-in travellers."""

    settings: ServiceSettings
    stored_value_settings: StoredValueSettings = field(default_factory=StoredValueSettings)
    ports: Slot[AccountsPorts] = field(default_factory=lambda: Slot("accounts"))
    travellers: Travellers | None = None
    recorder: JourneyRecorder | None = None
    repository: JourneyRepository | None = None
    pool: asyncpg.Pool | None = None
    loop: ConsumerLoop[JourneyRevision | TopUpSale] | None = None
    stored_value: StoredValue | None = None
    relay: OutboxRelay | None = None
    claim_settings: ClaimSettings = field(default_factory=ClaimSettings)
    claims: Claims | None = None
    # Where fares answers QuoteFare (claims) and GetCapsProgress (CLEARWAY_FARES_TARGET).
    fares_target: str = field(
        default_factory=lambda: env_str("CLEARWAY_FARES_TARGET", DEFAULT_FARES_TARGET)
    )
    # The CA that signed fares' server certificate (CLEARWAY_FARES_TLS_CA): TLS to fares
    # when set, plaintext otherwise.
    fares_ca: Path | None = field(default_factory=lambda: env_path("CLEARWAY_FARES_TLS_CA"))
    caps: FaresCaps | None = None
    # Bank-card mode: the charging loop's settings, the day's charge delay, the gateway
    # (the simulated acquirer unless a test or a deployment gives another).
    bank_settings: BankChargeSettings = field(default_factory=BankChargeSettings)
    bank_delay: timedelta = timedelta(hours=1)
    gateway: PaymentGateway = field(default_factory=SimulatedAcquirer)
    bank: BankCharging | None = None
    # Benefits (docs/benefits.md): the scheme file (read at start unless given), the
    # expiry sweep's interval, and what the servicers use (its clock injectable).
    scheme_file: Path = DEFAULT_SCHEME_FILE
    scheme: Scheme | None = None
    expiry_sweep_s: float = EXPIRY_SWEEP_S
    benefit_ports: Slot[BenefitsPorts] = field(default_factory=lambda: Slot("benefits"))
    benefits: BenefitsContext | None = None

    @property
    def grpc_service_names(self) -> list[str]:
        """The gRPC services this process serves."""
        return [SERVICE_NAME, TRAVELLER_SERVICE_NAME, *BENEFITS_SERVICE_NAMES]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the AccountsService, TravellerService and benefits servicers."""
        accounts_pb2_grpc.add_AccountsServiceServicer_to_server(
            AccountsServicer(self.ports), server
        )
        accounts_pb2_grpc.add_TravellerServiceServicer_to_server(
            TravellerServicer(self.ports), server
        )
        benefits_pb2_grpc.add_OfficerServiceServicer_to_server(
            OfficerServicer(self.benefit_ports), server
        )
        benefits_pb2_grpc.add_BenefitsServiceServicer_to_server(
            BenefitsServicer(self.benefit_ports), server
        )
        benefits_pb2_grpc.add_RedemptionServiceServicer_to_server(
            RedemptionServicer(self.benefit_ports), server
        )

    async def start(self, resources: Resources) -> None:
        """The scheme file, PostgreSQL (migrated), Redis (PING), Kafka (topics, the outbox
        relay), then the consumer of `journeys` and `topups`."""
        topics = self.settings.topics
        rules = self.stored_value_settings.rules
        scheme = await self._scheme()
        self.pool = await resources.postgres(MIGRATIONS)
        book = BalanceBook(rules.currency, topics.denylist)
        day_clock = self.stored_value_settings.day_clock
        bank_days = BankDayClock(day_clock.timezone, day_clock.day_start, self.bank_delay)
        cache = HistoryCache.from_url(
            self.settings.endpoints.redis_url, cache_namespace(self.settings)
        )
        resources.on_close("redis", cache.close)
        await cache.ping()
        self.travellers = Travellers(
            TravellerRepository(self.pool),
            SignInLimiter(cache.client, cache_namespace(self.settings)),
        )
        self.benefits = BenefitsContext(
            self.pool,
            scheme,
            self.travellers,
            day_clock,
            benefits_topic=topics.benefits,
            concessions=CardConcessions(scheme, topics.concessions),
        )
        self.repository = JourneyRepository(
            self.pool, book, bank_days, rewards=OffPeakRewards(self.benefits)
        )
        history = JourneyHistory(self.repository, cache)
        # The relay's topics: denylist and concessions are created with their own spec
        # (one partition, compacted).
        await resources.topics(
            [topics.topups, topics.denylist, topics.benefits, topics.concessions]
        )
        producer = await resources.producer()
        self.relay = OutboxRelay(self.pool, producer)
        self.benefits.relay = self.relay
        # A card added to or removed from an account changes what its taps carry.
        benefits = self.benefits
        assert benefits.concessions is not None
        self.travellers.cards_changed = ConcessionsOfCards(
            benefits.concessions, lambda: benefits.service_day(benefits.now()), self.relay
        )
        resources.background("outbox relay", self.relay.run())
        self.stored_value = StoredValue(
            self.pool,
            book,
            BalanceRepository(self.pool),
            self.relay,
            rules,
            topics.topups,
            self.stored_value_settings.day_clock,
        )
        # fares (CLEARWAY_FARES_TARGET) checks claimed exits (QuoteFare) and prices caps
        # progress: one channel, connecting on first use, so accounts starts whether fares
        # is up or not.
        fares_channel = service_channel(self.fares_target, self.fares_ca)
        resources.on_close("fares channel", fares_channel.close)
        # Disputes: claims checked against fares' fare data, their correction taps relayed
        # from the outbox to `taps`.
        await resources.topics([topics.taps])
        stop_check = FaresStopCheck(fares_channel)
        self.claims = Claims(
            self.pool,
            self.relay,
            stop_check,
            topics.taps,
            self.claim_settings.rules,
            self.stored_value_settings.day_clock.timezone,
        )
        self.recorder = JourneyRecorder(
            history, self.stored_value, topics.topups, claims=self.claims
        )
        self.loop = await resources.consume(
            self.recorder,
            topics=[topics.journeys, topics.topups],
            commits=KafkaCommits(),
            producer=producer,
        )
        self.caps = FaresCaps(fares_channel)
        # Bank-card mode: the charging loop bills due days and recovers debts.
        self.bank = BankCharging(
            self.pool,
            self.gateway,
            BankChargeRepository(self.pool),
            self.relay,
            topics.denylist,
            self.bank_settings,
        )
        resources.background("bank charging", self.bank.run())
        entitlements = Entitlements(self.benefits)
        resources.background("entitlement expiry", entitlements.run_expiry(self.expiry_sweep_s))
        self.benefit_ports.fill(
            BenefitsPorts(
                self.benefits,
                entitlements,
                Redemptions(self.benefits),
                Rewards(self.benefits, book),
            )
        )
        self.ports.fill(
            AccountsPorts(
                history,
                self.travellers,
                self.stored_value,
                claims=self.claims,
                caps=self.caps,
                bank=self.bank,
            )
        )

    async def _scheme(self) -> Scheme:
        """The scheme given, else read from `scheme_file` (SchemeError stops start-up);
        its currency must be the stored-value currency."""
        if self.scheme is None:
            self.scheme = await asyncio.to_thread(load_scheme, self.scheme_file)
        currency = self.stored_value_settings.rules.currency
        if self.scheme.currency != currency:
            raise SettingsError(
                f"the scheme file's currency {self.scheme.currency} is not"
                f" CLEARWAY_SCHEME_CURRENCY {currency}"
            )
        return self.scheme


def build(settings: ServiceSettings) -> AccountsApp:
    """An accounts service for `settings` (nothing connects until started)."""
    return AccountsApp(
        settings=settings,
        stored_value_settings=StoredValueSettings.from_env(),
        claim_settings=ClaimSettings.from_env(),
        bank_settings=bank_charge_settings_from_env(),
        bank_delay=bank_day_delay_from_env(),
        gateway=SimulatedAcquirer.from_env(),
        scheme_file=Path(env_str(SCHEME_FILE_VAR, str(DEFAULT_SCHEME_FILE))),
        expiry_sweep_s=_positive_float(
            os.environ, "CLEARWAY_EXPIRY_SWEEP_S", str(EXPIRY_SWEEP_S), zero=False
        ),
    )


def build_from_env() -> AccountsApp:
    """An accounts service configured from CLEARWAY_* environment variables."""
    return build(ServiceSettings.from_env(SERVICE))
