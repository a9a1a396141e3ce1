"""The fare engine: pure domain code (no I/O except `feed.load_fare_data`, no asyncio).

Taps in, priced journeys out; GTFS Fares v2 plus Clearway extensions (docs/fare-data.md).
"""

from .caps_progress import CapProgress, CardCapsProgress, caps_progress
from .errors import (
    FaresError,
    FeedError,
    NaiveTimeError,
    NoFareVersionError,
    Problem,
    UnknownRouteError,
    UnknownStopError,
)
from .fare_index import FareIndex
from .fare_legs import FareLeg
from .feed import load_fare_data
from .leg_rules import LegPrice
from .legs import Leg, LegKind
from .model import (
    Cap,
    CapPeriod,
    FareCatalog,
    FareData,
    FareMedia,
    FareProduct,
    FareVersions,
    MaximumFare,
    RiderCategory,
    Tap,
    TapKind,
)
from .priced import CapApplied, JourneyRevision, PricedJourney, PricedLeg
from .pricing import (
    CapSpent,
    PricingStart,
    ResumedPricing,
    cap_spend,
    check_tap,
    price_card,
    price_card_from,
)
from .revision import revise
from .transfers import Journey

__all__ = [
    "Cap",
    "CapApplied",
    "CapPeriod",
    "CapProgress",
    "CapSpent",
    "CardCapsProgress",
    "FareCatalog",
    "FareData",
    "FareIndex",
    "FareLeg",
    "FareMedia",
    "FareProduct",
    "FareVersions",
    "FaresError",
    "FeedError",
    "Journey",
    "JourneyRevision",
    "Leg",
    "LegKind",
    "LegPrice",
    "MaximumFare",
    "NaiveTimeError",
    "NoFareVersionError",
    "PricedJourney",
    "PricedLeg",
    "PricingStart",
    "Problem",
    "ResumedPricing",
    "RiderCategory",
    "Tap",
    "TapKind",
    "UnknownRouteError",
    "UnknownStopError",
    "cap_spend",
    "caps_progress",
    "check_tap",
    "load_fare_data",
    "price_card",
    "price_card_from",
    "revise",
]
