"""The fare engine: pure domain code (no I/O, no asyncio).

Taps in, priced journeys out; GTFS Fares v2 plus Clearway extensions (docs/fare-data.md).
Reading a feed's files is the adapter's (services/fares/adapters/gtfs_reader.py);
`load_fare_data` is kept here for the callers that import it from the domain.
"""

from os import PathLike

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


def load_fare_data(path: str | PathLike[str]) -> FareData:
    """Load and cross-check a feed (directory or .zip): `load_fare_data` of the GTFS reader
    adapter, re-exported for callers outside the fares service (demo, simulator, reports).
    Raises FeedError (code FEED_INVALID) listing every problem."""
    # Imported here: the adapter imports the domain, never the other way round at load.
    from services.fares.adapters.gtfs_reader import load_fare_data as load  # noqa: PLC0415

    return load(path)


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
