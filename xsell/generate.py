"""``xsell generate``: a deterministic demo world with a known truth.

The generator writes a raw landing zone in the contract of :mod:`xsell.schemas` (order lines every day,
product and customer snapshots for the last days) and, beside it, the truth that was planted: the
complement pairs, the up-sell ladders, the per-customer latent state, and on request the exact adoption
probability of every customer for every offer at a cutoff (:func:`true_propensity`).

The generative model, in one paragraph. Customer ``i`` visits on day ``d`` with probability
``q_i(d) = min(VISIT_CAP, rate_i * weekday(d) * season(d))``. A visit holds every catalogue *slot* (a plain
product, or a tiered family as a whole) independently with probability
``pi = min(INCLUSION_CAP, BASKET_SCALE * affinity_i[category] * slot_weight * category_season(d) + boost)``,
where ``boost`` is the planted "later" complement (the customer's *first* purchase of the antecedent
family opened a lag window), plus one up-sell slot per family the customer owns below the top tier,
whose probability rises with the time since the owned tier was bought and with the customer's spend
level. A family slot buys the owned tier again for owners (a renewal or a replacement, never another
tier) and a spend-dependent tier for non-owners; only the up-sell slot ever buys a tier above the owned
one. Same-basket complements add their consequent to the basket with a fixed probability whenever the
antecedent slot is held. A visit that holds nothing is no order; a basket is cancelled with probability
``P_CANCEL`` and written as orders of at most ``MAX_ORDER_LINES`` lines. Only completed purchases change
the state (owned categories, tiers, trigger windows). Guest checkouts, returns and dirty lines are
written on top and never change it.

Because every slot is an independent daily event whose probability is a function of the latent
parameters, the calendar and the state at the cutoff, the chance of adopting an offer in the horizon is
a product over days, computed exactly in :func:`true_propensity` (with one small dynamic programme, see
:func:`_cross_sell_probability`). The catalogue is built so that this stays exact: complement
antecedents are never complement consequents, consequents are plain products, add-ons come from the
family slot and not from upgrades, and each category has at most one antecedent family that triggers it
from another category (:func:`_check_world` enforces what the constants could break).

The world begins at ``spec.start``: customers who signed up earlier have no purchases before it, so a
pipeline that reads every landing partition sees the whole history that the truth conditions on.

Campaigns and drift, for measuring a published audience against its control cell and for monitoring. A
:class:`Campaign` is an audience published for a run date ``D`` (customer, offer, cell) with a planted
uplift ``u`` per offer: each treated row is a responder with probability ``u``, drawn with a stream of
its own, and a responder places one extra completed order on a uniform day of ``D+1 .. D+horizon`` that
adopts the offer's target (one plain product of the category, or the tier just above the one owned on
that day); control rows are untouched. Since the response is independent of the natural adoption, a
treated customer adopts with probability ``1 - (1 - p0) (1 - u)``, ``p0`` being :func:`true_propensity`
at ``D``: an offer's expected absolute uplift is ``u`` times the mean of ``1 - p0`` over its eligible
audience (``truth/campaigns/run_date=D/planted.csv``). A :class:`Drift` multiplies every customer's visit
rate and every price from its start day on; :func:`true_propensity` models the rate factor exactly.
Neither draws from the streams of the natural world, so every day before a campaign's delivery or a
drift's start is written byte for byte as without them; both are part of the world's identity.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyspark.sql.types import (
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
)

from xsell.schemas import (
    CHANNELS,
    CUSTOMERS,
    CUSTOMERS_DDL,
    MAX_TIER,
    ORDER_LINES,
    ORDER_LINES_DDL,
    PRODUCTS,
    PRODUCTS_DDL,
    column_names,
    struct,
)

#: Bumped whenever a change to the model would change the files written for the same spec.
WORLD_VERSION = 1

CROSS_SELL = "cross-sell"
UP_SELL = "up-sell"
DIRT_KINDS = ("duplicate", "missing_product", "negative_quantity", "unknown_product", "future_ts")

# --- the catalogue ---------------------------------------------------------------------------------
CATEGORIES = ("bikes", "bike_care", "computers", "printing", "office", "coffee", "home", "garden")


@dataclass(frozen=True)
class _Item:
    """One catalogue row plus what only the generator knows: how often its slot is bought."""

    name: str
    category: str
    list_price: float
    margin_rate: float
    weight: float = 0.0  # slot weight; a family's weight sits on its tier-1 row
    family: str | None = None
    tier: int | None = None
    consumable: bool = False  # bought 1-3 at a time
    active: bool = True


def _family(family: str, category: str, names: tuple[str, str, str], prices: tuple[float, float, float],
            margins: tuple[float, float, float], weight: float) -> list[_Item]:
    return [
        _Item(name, category, price, margin, weight if tier == 1 else 0.0, family, tier)
        for tier, (name, price, margin) in enumerate(zip(names, prices, margins, strict=True), start=1)
    ]


# Order matters: product ids are assigned in this order (P0001, P0002, ...).
_ITEMS: tuple[_Item, ...] = (
    *_family("bike", "bikes", ("Velo City Bike", "Velo Trail Bike", "Velo Pro Bike"),
             (299.0, 649.0, 1299.0), (0.22, 0.25, 0.28), 0.10),
    _Item("Kids Balance Bike", "bikes", 89.0, 0.30, 0.05),
    _Item("Folding Commuter Bike", "bikes", 499.0, 0.20, 0.03),
    _Item("E-Bike Conversion Kit", "bikes", 399.0, 0.18, 0.02),
    _Item("Bike Trailer", "bikes", 149.0, 0.30, 0.03),
    _Item("Vintage Tandem Bike", "bikes", 799.0, 0.20, active=False),
    _Item("Bike Lock", "bikes", 35.0, 0.40, 0.04),
    _Item("Bike Maintenance Kit", "bike_care", 39.0, 0.45, 0.04),
    _Item("Chain Oil", "bike_care", 8.0, 0.50, 0.20, consumable=True),
    _Item("Puncture Repair Kit", "bike_care", 6.0, 0.50, 0.14, consumable=True),
    _Item("Tyre Pump", "bike_care", 22.0, 0.40, 0.07),
    _Item("Bike Lights Set", "bike_care", 29.0, 0.42, 0.09),
    _Item("Cycling Helmet", "bike_care", 49.0, 0.38, 0.06),
    _Item("Inner Tube", "bike_care", 7.0, 0.48, 0.14, consumable=True),
    _Item("Cycling Gloves", "bike_care", 18.0, 0.45, 0.07),
    *_family("laptop", "computers", ("Nimbus 14 Laptop", "Nimbus 14 Plus Laptop", "Nimbus 16 Pro Laptop"),
             (549.0, 899.0, 1599.0), (0.12, 0.15, 0.18), 0.08),
    _Item("Laptop Bag", "computers", 45.0, 0.45, 0.04),
    _Item("Wireless Mouse", "computers", 25.0, 0.45, 0.14),
    _Item("USB-C Hub", "computers", 39.0, 0.42, 0.10),
    _Item("Mechanical Keyboard", "computers", 79.0, 0.40, 0.07),
    _Item("27in Monitor", "computers", 229.0, 0.20, 0.05),
    _Item("HD Webcam", "computers", 59.0, 0.35, 0.05),
    _Item("External SSD 1TB", "computers", 89.0, 0.25, 0.06),
    _Item("Screen Cleaner", "computers", 6.0, 0.50, 0.12, consumable=True),
    _Item("HDMI Cable", "computers", 9.0, 0.50, 0.10),
    *_family("printer", "printing", ("PrintJet Home", "PrintJet Office", "PrintJet Pro"),
             (89.0, 199.0, 449.0), (0.15, 0.18, 0.22), 0.07),
    _Item("Ink Cartridge Set", "printing", 34.0, 0.50, 0.12, consumable=True),
    _Item("Photo Paper", "printing", 15.0, 0.45, 0.08, consumable=True),
    _Item("Toner Cartridge", "printing", 59.0, 0.45, 0.06, consumable=True),
    _Item("Label Maker", "printing", 39.0, 0.35, 0.04),
    _Item("Flatbed Scanner", "printing", 129.0, 0.25, 0.03),
    _Item("Fax Machine", "printing", 99.0, 0.15, active=False),
    _Item("Ergonomic Desk Chair", "office", 219.0, 0.30, 0.03),
    _Item("Printer Paper A4 500", "office", 7.0, 0.35, 0.25, consumable=True),
    _Item("Notebook Pack", "office", 9.0, 0.50, 0.18, consumable=True),
    _Item("Gel Pens 12-pack", "office", 8.0, 0.50, 0.16, consumable=True),
    _Item("Desk Lamp", "office", 35.0, 0.40, 0.06),
    _Item("Stapler", "office", 11.0, 0.45, 0.06),
    _Item("Filing Box", "office", 14.0, 0.45, 0.08),
    _Item("Whiteboard", "office", 49.0, 0.35, 0.03),
    *_family("coffee_machine", "coffee", ("Brewmaster Mini", "Brewmaster Plus", "Brewmaster Barista"),
             (129.0, 299.0, 699.0), (0.20, 0.24, 0.28), 0.07),
    _Item("Coffee Beans 1kg", "coffee", 19.0, 0.40, 0.25, consumable=True),
    _Item("Milk Frother Jug", "coffee", 24.0, 0.45, 0.04),
    _Item("Descaler", "coffee", 9.0, 0.50, 0.12, consumable=True),
    _Item("Ground Coffee 250g", "coffee", 7.0, 0.40, 0.20, consumable=True),
    _Item("Coffee Mug Set", "coffee", 22.0, 0.45, 0.06),
    _Item("Coffee Grinder", "coffee", 59.0, 0.30, 0.04),
    *_family("care_plan", "home", ("CareWell Plan Light", "CareWell Plan Standard", "CareWell Plan Pro"),
             (59.0, 99.0, 149.0), (0.40, 0.45, 0.50), 0.07),
    _Item("Scented Candle", "home", 14.0, 0.50, 0.15, consumable=True),
    _Item("Storage Baskets", "home", 19.0, 0.45, 0.10),
    _Item("Cushion Set", "home", 29.0, 0.45, 0.08),
    _Item("Bath Towels", "home", 25.0, 0.40, 0.10),
    _Item("LED Bulbs 4-pack", "home", 12.0, 0.45, 0.15, consumable=True),
    _Item("Electric Kettle", "home", 39.0, 0.35, 0.05),
    _Item("Cordless Vacuum", "home", 179.0, 0.25, 0.03),
    _Item("Air Purifier", "home", 149.0, 0.25, 0.03),
    *_family("mower", "garden", ("Lawnmaster Push", "Lawnmaster Cordless", "Lawnmaster Robot"),
             (149.0, 329.0, 899.0), (0.20, 0.24, 0.30), 0.06),
    _Item("Garden Hose", "garden", 29.0, 0.40, 0.08),
    _Item("Hose Nozzle", "garden", 12.0, 0.45, 0.03),
    _Item("Plant Seeds", "garden", 4.0, 0.50, 0.20, consumable=True),
    _Item("Compost 40L", "garden", 9.0, 0.35, 0.15, consumable=True),
    _Item("Pruning Shears", "garden", 24.0, 0.40, 0.05),
    _Item("Garden Gloves", "garden", 12.0, 0.45, 0.08),
    _Item("Plant Pot Set", "garden", 18.0, 0.45, 0.08),
    _Item("Bird Feeder", "garden", 16.0, 0.45, 0.05),
)

#: Same-basket complements: (antecedent family or product name, consequent product name, probability
#: that the consequent joins a basket holding the antecedent slot).
SAME_BASKET = (
    ("laptop", "Laptop Bag", 0.35),
    ("printer", "Ink Cartridge Set", 0.55),
    ("printer", "Printer Paper A4 500", 0.40),
    ("bike", "Bike Lock", 0.40),
    ("coffee_machine", "Milk Frother Jug", 0.30),
    ("Garden Hose", "Hose Nozzle", 0.45),
)
#: "Later" complements: (antecedent family, consequent product name, lag_min, lag_max, boost). From day
#: first_purchase + lag_min to first_purchase + lag_max, the consequent's slot probability per visit
#: rises by ``boost``.
LATER = (
    ("bike", "Bike Maintenance Kit", 14, 45, 0.35),
    ("coffee_machine", "Coffee Beans 1kg", 7, 30, 0.35),
    ("laptop", "Ergonomic Desk Chair", 10, 40, 0.30),
    ("printer", "Ink Cartridge Set", 45, 90, 0.30),
)
#: Up-sell base probability per visit, reached some months after the owned tier was bought.
UPGRADE_BASE = {"bike": 0.10, "laptop": 0.10, "printer": 0.10, "coffee_machine": 0.12, "care_plan": 0.16,
                "mower": 0.09}
#: No upgrade within this many days of buying the owned tier.
UPGRADE_MIN_DAYS = 30
UPGRADE_RAMP_DAYS = 75.0
UPGRADE_SPEND_POWER = 0.8
#: Tier bought by a first-time family buyer: base shares, tilted towards higher tiers by spend level.
TIER_BASE_SHARE = (0.60, 0.30, 0.10)
TIER_SPEND_TILT = 1.0

# --- customers --------------------------------------------------------------------------------------
#: (segment, share, mean visits per day). The average customer orders about 1.5 times a month.
SEGMENTS = (("occasional", 0.45, 0.022), ("regular", 0.40, 0.060), ("frequent", 0.15, 0.150))
RATE_SIGMA = 0.35
SPEND_SIGMA = 0.5
#: Interest profiles: (name, share, mean category affinity in CATEGORIES order). Affinities are
#: Dirichlet(AFFINITY_CONCENTRATION * mean), so related categories go together (learnable cross-sell).
PROFILES = (
    ("cyclist", 0.22, (0.28, 0.28, 0.06, 0.03, 0.04, 0.10, 0.08, 0.13)),
    ("home_office", 0.25, (0.04, 0.03, 0.27, 0.20, 0.22, 0.12, 0.08, 0.04)),
    ("homemaker", 0.23, (0.04, 0.03, 0.05, 0.05, 0.08, 0.20, 0.30, 0.25)),
    ("generalist", 0.30, (0.125,) * 8),
)
AFFINITY_CONCENTRATION = 6.0
#: Customers who signed up before the range (spread over the years before it); the rest join during it.
PRE_RANGE_SIGNUP_SHARE = 0.7
PRE_RANGE_SIGNUP_YEARS = 3
CONSENT_CHANGE_SHARE = 0.03
#: (region, share, currency). unit_price is in the order's currency.
REGIONS = (
    ("london", 0.20, "GBP"), ("south", 0.22, "GBP"), ("midlands", 0.16, "GBP"), ("north", 0.20, "GBP"),
    ("scotland", 0.08, "GBP"), ("wales", 0.05, "GBP"), ("ireland", 0.06, "EUR"), ("international", 0.03, "USD"),
)
FX_PER_GBP = {"GBP": 1.0, "EUR": 1.17, "USD": 1.27}
CHANNEL_SHARES = (0.52, 0.30, 0.13, 0.05)  # in CHANNELS order

# --- visits and baskets ----------------------------------------------------------------------------
WEEKDAY_FACTOR = (0.92, 0.88, 0.90, 0.95, 1.02, 1.20, 1.13)  # Monday first; mean 1
YEAR_PEAK_DAY, YEAR_PEAK_WIDTH, YEAR_PEAK_LIFT = 335, 22.0, 0.55  # day of year (0-based): early December
#: (amplitude, peak day of year) of each category's own season.
CATEGORY_SEASON = {"bikes": (0.35, 170), "bike_care": (0.30, 160), "garden": (0.55, 135), "coffee": (0.15, 345),
                   "home": (0.10, 340)}
VISIT_CAP = 0.9
BASKET_SCALE = 1.6
INCLUSION_CAP = 0.95
P_CANCEL = 0.02
MAX_ORDER_LINES = 5
ORDER_ID_DIGITS = 10
P_RETURN = 0.01
RETURN_DELAY_DAYS = (3, 29)
DISCOUNTS = ((1.0, 0.85), (0.9, 0.10), (0.8, 0.05))  # (price factor, share)
#: Hour of day weights for order timestamps (UTC): quiet nights, a lunch bump and a long evening.
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 7, 6, 6, 6, 7, 8, 9, 9, 8, 5, 2)
GUEST_LINES_PER_ORDER = (0.6, 0.3, 0.1)
FUTURE_TS_DAYS = (1, 10)
TRUTH_BLOCK = 100_000

# --- campaigns and drift ------------------------------------------------------------------------------
#: Planted uplift per offer of ``offers(catalogue())``: the chance that a treated customer responds by
#: adopting the offer's target within the campaign's horizon. Cross-sells 3-10 %, up-sells 2-6 %, and one
#: offer of each kind at exactly 0: a campaign that changes nothing, which a measurement must not call a
#: success. ``xsell simulate-campaign --uplift OFFER=U`` overrides single offers.
DEFAULT_UPLIFT: dict[str, float] = {
    "cross-sell:bikes": 0.03, "cross-sell:bike_care": 0.08, "cross-sell:computers": 0.05,
    "cross-sell:printing": 0.06, "cross-sell:office": 0.10, "cross-sell:coffee": 0.07, "cross-sell:home": 0.0,
    "cross-sell:garden": 0.04,
    "up-sell:bike": 0.03, "up-sell:laptop": 0.02, "up-sell:printer": 0.05, "up-sell:coffee_machine": 0.06,
    "up-sell:care_plan": 0.04, "up-sell:mower": 0.0,
}
CELLS = ("treatment", "control")
CAMPAIGN_AUDIENCE_COLUMNS = ("customer_id", "offer_id", "cell")
#: Columns of ``truth/campaigns/run_date=D/planted.csv`` (one row per offer of the audience).
PLANTED_COLUMNS = ("offer_id", "planted_uplift", "treated", "control", "expected_control_rate",
                   "expected_absolute_uplift", "responders", "eligible")

_NEVER = np.iinfo(np.int32).max
_EPOCH = date(1970, 1, 1)
_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class WorldSpec:
    """What to generate. Every field is part of the world's identity (see ``world.json``)."""

    customers: int = 4000
    start: datetime.date = date(2024, 10, 1)
    end: datetime.date = date(2025, 12, 31)  # inclusive; > 1 year of daily orders
    seed: int = 7
    dirty_share: float = 0.005  # share of order lines made dirty
    opt_out_share: float = 0.08
    guest_share: float = 0.03  # lines of guest checkouts (empty customer_id): legitimate, not dirt
    snapshot_days: int = 7  # products/customers snapshots written for the last N days of the range
    fmt: str = "csv"  # "csv" or "parquet"
    # Last day of the customer draw (signups and consent changes); None: `end`. The customers depend on it,
    # so a world continued past its end keeps the old end here: its customers, and every day up to the old
    # end, stay as they were (and nobody new signs up after it).
    population_end: datetime.date | None = None

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError("customers must be at least 1")
        if self.end < self.start:
            raise ValueError("end must not be before start")
        if self.population_end is not None and self.population_end < self.start:
            raise ValueError("population_end must not be before start")
        for name in ("dirty_share", "opt_out_share", "guest_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if self.snapshot_days < 1:
            raise ValueError("snapshot_days must be at least 1")
        if self.fmt not in ("csv", "parquet"):
            raise ValueError("fmt must be 'csv' or 'parquet'")

    def to_json(self) -> dict:
        # population_end only when set, so that a world that never used it keeps the world.json it had.
        return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in dataclasses.asdict(self).items()
                if not (k == "population_end" and v is None)}

    @classmethod
    def from_json(cls, values: dict) -> WorldSpec:
        dates = {k: date.fromisoformat(values[k]) for k in ("start", "end", "population_end") if k in values}
        return cls(**{**values, **dates})

    def continued(self, end: date) -> WorldSpec:
        """The same world observed up to ``end``: same customers, the same data up to this spec's end."""
        return dataclasses.replace(self, end=end, population_end=self.population_end or self.end)


@dataclass(frozen=True, eq=False)  # eq=False: a DataFrame field has no single truth value to compare by
class Campaign:
    """An audience published for ``run_date`` and the response planted in its treatment cell.

    ``audience`` holds one row per (customer_id, offer_id) with ``cell`` "treatment" or "control" (other
    columns are dropped; rows are kept sorted by offer and customer); ``uplift`` maps every offer of the
    audience to u in [0, 1), the chance that a treated row responds. The offer is delivered on
    ``run_date + 1``; a responder adopts on a uniform day of ``run_date + 1 .. run_date + horizon_days``.
    """

    run_date: date
    audience: pd.DataFrame
    uplift: dict[str, float]
    horizon_days: int

    def __post_init__(self) -> None:
        missing = set(CAMPAIGN_AUDIENCE_COLUMNS) - set(self.audience.columns)
        if missing:
            raise ValueError(f"campaign {self.run_date}: the audience has no column {', '.join(sorted(missing))}")
        audience = (self.audience[list(CAMPAIGN_AUDIENCE_COLUMNS)].astype(str)
                    .sort_values(["offer_id", "customer_id"], kind="stable").reset_index(drop=True))
        if audience.duplicated(["offer_id", "customer_id"]).any():
            raise ValueError(f"campaign {self.run_date}: a customer appears twice for the same offer")
        if not audience["cell"].isin(CELLS).all():
            raise ValueError(f"campaign {self.run_date}: cells must be {' or '.join(CELLS)}")
        if self.horizon_days < 1:
            raise ValueError(f"campaign {self.run_date}: horizon_days must be at least 1")
        unknown = sorted(set(audience["offer_id"]) - set(self.uplift))
        if unknown:
            raise ValueError(f"campaign {self.run_date}: no uplift for {', '.join(unknown)}")
        # Only the offers of the audience matter, so only they are part of the world's identity.
        uplift = {offer: float(self.uplift[offer]) for offer in sorted(set(audience["offer_id"]))}
        if not all(0.0 <= u < 1.0 for u in uplift.values()):
            raise ValueError(f"campaign {self.run_date}: an uplift must be in [0, 1)")
        object.__setattr__(self, "audience", audience)
        object.__setattr__(self, "uplift", uplift)

    def digest(self) -> str:
        """sha256 of the audience as sorted CSV: what ``world.json`` records of it."""
        return hashlib.sha256(self.audience.to_csv(index=False, lineterminator="\n").encode()).hexdigest()

    def to_json(self) -> dict:
        return {"run_date": self.run_date.isoformat(), "horizon_days": self.horizon_days, "uplift": self.uplift,
                "audience_rows": len(self.audience), "audience_sha256": self.digest()}


@dataclass(frozen=True)
class Drift:
    """From ``start`` on, every customer's visit rate is multiplied by ``rate_factor`` and every price
    (customers' and guests' lines, campaign orders) by ``spend_factor``."""

    start: date
    rate_factor: float = 1.0
    spend_factor: float = 1.0

    def __post_init__(self) -> None:
        if not (self.rate_factor > 0 and self.spend_factor > 0):
            raise ValueError("drift factors must be positive")

    def to_json(self) -> dict:
        return {"start": self.start.isoformat(), "rate_factor": self.rate_factor, "spend_factor": self.spend_factor}

    @classmethod
    def from_json(cls, values: dict) -> Drift:
        return cls(date.fromisoformat(values["start"]), values["rate_factor"], values["spend_factor"])


# --- public catalogue and offers ---------------------------------------------------------------------
def catalogue() -> pd.DataFrame:
    """The fixed product catalogue in the PRODUCTS contract columns (``tier`` as nullable Int32)."""
    frame = pd.DataFrame({
        "product_id": [_product_id(k) for k in range(len(_ITEMS))],
        "name": [item.name for item in _ITEMS],
        "category": [item.category for item in _ITEMS],
        "family": pd.array([item.family for item in _ITEMS], dtype=object),
        "tier": pd.array([item.tier for item in _ITEMS], dtype="Int32"),
        "list_price": [item.list_price for item in _ITEMS],
        "margin_rate": [item.margin_rate for item in _ITEMS],
        "active": [item.active for item in _ITEMS],
    })
    return frame[column_names(PRODUCTS_DDL)]


def offers(catalogue: pd.DataFrame) -> pd.DataFrame:
    """One cross-sell offer per category and one up-sell offer per tiered family of ``catalogue``.

    Columns ``offer_id`` (``cross-sell:<category>`` / ``up-sell:<family>``), ``offer_type`` and ``target``
    (the category or the family), cross-sells first, each in order of first appearance in the catalogue.
    A family counts only if it has a product at tier 1 and one above it.
    """
    categories = list(dict.fromkeys(catalogue["category"]))
    ladders = catalogue.dropna(subset=["family"]).groupby("family", sort=False)["tier"]
    families = [family for family, tiers in ladders if tiers.min() == 1 and tiers.max() > 1]
    rows = [(f"{CROSS_SELL}:{c}", CROSS_SELL, c) for c in categories]
    rows += [(f"{UP_SELL}:{f}", UP_SELL, f) for f in families]
    return pd.DataFrame(rows, columns=["offer_id", "offer_type", "target"])


def _product_id(index: int) -> str:
    return f"P{index + 1:04d}"


# --- the compiled world (index arrays shared by the simulation and the truth) -------------------------
@dataclass(frozen=True)
class _World:
    """The catalogue and complements as index arrays."""

    product_ids: np.ndarray  # (P,) str
    prod_cat: np.ndarray  # (P,) category index
    prod_family: np.ndarray  # (P,) family index or -1
    prod_tier: np.ndarray  # (P,) 1..3 or 0
    list_price: np.ndarray
    consumable: np.ndarray
    families: tuple[str, ...]
    fam_cat: np.ndarray  # (F,)
    fam_products: np.ndarray  # (F, MAX_TIER) product index per tier
    upgrade_base: np.ndarray  # (F,)
    slot_cat: np.ndarray  # (S,)
    slot_weight: np.ndarray  # (S,)
    slot_product: np.ndarray  # (S,) product index for plain slots, -1 for family slots
    slot_family: np.ndarray  # (S,) family index for family slots, -1 for plain slots
    sb_slot: np.ndarray  # (B,) antecedent slot of each same-basket pair
    sb_product: np.ndarray  # (B,) consequent product
    sb_prob: np.ndarray  # (B,)
    lt_family: np.ndarray  # (L,) antecedent family of each later pair
    lt_product: np.ndarray  # (L,) consequent product
    lt_slot: np.ndarray  # (L,) consequent slot
    lt_lag: np.ndarray  # (L, 2) lag_min, lag_max
    lt_boost: np.ndarray  # (L,)


def _compile_world() -> _World:
    products = catalogue()
    by_name = {item.name: k for k, item in enumerate(_ITEMS)}
    families = tuple(dict.fromkeys(item.family for item in _ITEMS if item.family))
    fam_index = {f: k for k, f in enumerate(families)}
    cat_index = {c: k for k, c in enumerate(CATEGORIES)}
    fam_products = np.full((len(families), MAX_TIER), -1, dtype=np.int64)
    for k, item in enumerate(_ITEMS):
        if item.family:
            fam_products[fam_index[item.family], item.tier - 1] = k
    slots = [(cat_index[item.category], item.weight, k, -1) for k, item in enumerate(_ITEMS)
             if item.family is None and item.active and item.weight > 0]
    slots += [(cat_index[_ITEMS[fam_products[f, 0]].category], _ITEMS[fam_products[f, 0]].weight, -1, f)
              for f in range(len(families))]
    slots.sort(key=lambda s: (s[0], s[2] if s[2] >= 0 else fam_products[s[3], 0]))
    slot_cat, slot_weight, slot_product, slot_family = (np.array(col) for col in zip(*slots, strict=True))
    slot_of_product = {int(p): s for s, p in enumerate(slot_product) if p >= 0}
    slot_of_family = {int(f): s for s, f in enumerate(slot_family) if f >= 0}

    def antecedent_slot(name: str) -> int:
        return slot_of_family[fam_index[name]] if name in fam_index else slot_of_product[by_name[name]]

    world = _World(
        product_ids=products["product_id"].to_numpy(dtype=object),
        prod_cat=np.array([cat_index[item.category] for item in _ITEMS]),
        prod_family=np.array([fam_index[item.family] if item.family else -1 for item in _ITEMS]),
        prod_tier=np.array([item.tier or 0 for item in _ITEMS]),
        list_price=np.array([item.list_price for item in _ITEMS]),
        consumable=np.array([item.consumable for item in _ITEMS]),
        families=families,
        fam_cat=np.array([cat_index[_ITEMS[fam_products[f, 0]].category] for f in range(len(families))]),
        fam_products=fam_products,
        upgrade_base=np.array([UPGRADE_BASE[f] for f in families]),
        slot_cat=slot_cat.astype(np.int64),
        slot_weight=slot_weight.astype(np.float64),
        slot_product=slot_product.astype(np.int64),
        slot_family=slot_family.astype(np.int64),
        sb_slot=np.array([antecedent_slot(a) for a, _, _ in SAME_BASKET]),
        sb_product=np.array([by_name[c] for _, c, _ in SAME_BASKET]),
        sb_prob=np.array([p for _, _, p in SAME_BASKET]),
        lt_family=np.array([fam_index[a] for a, *_ in LATER]),
        lt_product=np.array([by_name[c] for _, c, *_ in LATER]),
        lt_slot=np.array([slot_of_product[by_name[c]] for _, c, *_ in LATER]),
        lt_lag=np.array([(lo, hi) for _, _, lo, hi, _ in LATER]),
        lt_boost=np.array([b for *_, b in LATER]),
    )
    _check_world(world)
    return world


def _check_world(world: _World) -> None:
    """The structural conditions under which :func:`true_propensity` is exact."""
    antecedent_slots = set(world.sb_slot) | {int(np.flatnonzero(world.slot_family == f)[0]) for f in world.lt_family}
    consequent_slots = {int(np.flatnonzero(world.slot_product == p)[0]) for p in world.sb_product}
    consequent_slots |= set(world.lt_slot)
    if antecedent_slots & consequent_slots:
        raise ValueError("a complement antecedent is also a consequent")
    for category in range(len(CATEGORIES)):
        cross = {int(f) for f, p in zip(world.lt_family, world.lt_product, strict=True)
                 if world.prod_cat[p] == category and world.fam_cat[f] != category}
        if len(cross) > 1:
            raise ValueError(f"category {CATEGORIES[category]} has more than one cross-category trigger")
    if not all(world.prod_family[p] < 0 for p in (*world.sb_product, *world.lt_product)):
        raise ValueError("complement consequents must be plain products")


# --- hazards: the single source of truth for the simulation and true_propensity ------------------------
def _day_of_year(days: np.ndarray) -> np.ndarray:
    dates = np.asarray(days, dtype="datetime64[D]")
    return (dates - dates.astype("datetime64[Y]")).astype(np.int64)


def _weekday(days: np.ndarray) -> np.ndarray:
    return (np.asarray(days, dtype=np.int64) + 3) % 7  # 1970-01-01 was a Thursday


def _day_factor(days: np.ndarray) -> np.ndarray:
    """Weekly times yearly seasonality of visits."""
    doy = _day_of_year(days)
    gap = np.abs(doy - YEAR_PEAK_DAY)
    gap = np.minimum(gap, 365 - gap)
    yearly = 1.0 + YEAR_PEAK_LIFT * np.exp(-0.5 * (gap / YEAR_PEAK_WIDTH) ** 2)
    return np.asarray(WEEKDAY_FACTOR)[_weekday(days)] * yearly


def _visit_factor(days: np.ndarray, drift: Drift | None) -> np.ndarray:
    """:func:`_day_factor`, times the drift's rate factor from its start day on."""
    factor = _day_factor(days)
    if drift is None:
        return factor
    return np.where(np.asarray(days) >= _day(drift.start), factor * drift.rate_factor, factor)


def _price_level(day: int, drift: Drift | None) -> float:
    return drift.spend_factor if drift is not None and day >= _day(drift.start) else 1.0


def _category_season(days: np.ndarray) -> np.ndarray:
    """(len(days), C) multiplier of each category's slot probabilities."""
    doy = _day_of_year(days).astype(np.float64)
    season = np.ones((len(doy), len(CATEGORIES)))
    for c, category in enumerate(CATEGORIES):
        if category in CATEGORY_SEASON:
            amplitude, peak = CATEGORY_SEASON[category]
            season[:, c] += amplitude * np.cos(2 * np.pi * (doy - peak) / 365.25)
    return season


def _visit_probability(rate: np.ndarray, day_factor: np.ndarray | float) -> np.ndarray:
    return np.minimum(VISIT_CAP, rate * day_factor)


def _slot_probability(affinity: np.ndarray, weight: np.ndarray | float, season: np.ndarray | float,
                      boost: np.ndarray | float = 0.0) -> np.ndarray:
    return np.minimum(INCLUSION_CAP, BASKET_SCALE * affinity * weight * season + boost)


def _upgrade_probability(base: np.ndarray | float, spend: np.ndarray, days_owned: np.ndarray) -> np.ndarray:
    """Per visit; 0 up to UPGRADE_MIN_DAYS after the owned tier was bought, then rising to its plateau."""
    ramp = 1.0 - np.exp(-np.maximum(days_owned - UPGRADE_MIN_DAYS, 0) / UPGRADE_RAMP_DAYS)
    return np.minimum(INCLUSION_CAP, base * spend**UPGRADE_SPEND_POWER * ramp)


def _in_window(days_since: np.ndarray, lag: np.ndarray) -> np.ndarray:
    return (days_since >= lag[0]) & (days_since <= lag[1])


# --- customers --------------------------------------------------------------------------------------
@dataclass
class _Customers:
    """Latent parameters (sorted by signup day, so the customers active on a day are a prefix)."""

    ids: np.ndarray
    signup_day: np.ndarray
    signup_second: np.ndarray
    segment: np.ndarray
    profile: np.ndarray
    rate: np.ndarray
    spend: np.ndarray
    affinity: np.ndarray  # (n, C)
    region: np.ndarray
    consent: np.ndarray  # consent at signup
    consent_change_day: np.ndarray  # _NEVER when it never changes
    consent_change_second: np.ndarray


def _draw_customers(spec: WorldSpec, rng: np.random.Generator) -> _Customers:
    n = spec.customers
    start, end = _day(spec.start), _day(spec.population_end or spec.end)
    pre = rng.random(n) < PRE_RANGE_SIGNUP_SHARE
    signup = np.where(pre, rng.integers(start - 365 * PRE_RANGE_SIGNUP_YEARS, start, n),
                      rng.integers(start, end + 1, n))
    segment = rng.choice(len(SEGMENTS), n, p=[s for _, s, _ in SEGMENTS])
    rate = np.array([r for *_, r in SEGMENTS])[segment] * np.exp(rng.normal(-RATE_SIGMA**2 / 2, RATE_SIGMA, n))
    profile = rng.choice(len(PROFILES), n, p=[s for _, s, _ in PROFILES])
    alpha = AFFINITY_CONCENTRATION * np.array([m for *_, m in PROFILES])[profile]
    gamma = rng.gamma(alpha)
    affinity = gamma / gamma.sum(axis=1, keepdims=True)
    spend = np.exp(rng.normal(-SPEND_SIGMA**2 / 2, SPEND_SIGMA, n))
    region = rng.choice(len(REGIONS), n, p=[s for _, s, _ in REGIONS])
    consent = rng.random(n) >= spec.opt_out_share
    signup_second = rng.integers(0, _SECONDS_PER_DAY, n)
    changes = rng.random(n) < CONSENT_CHANGE_SHARE
    first_change = np.maximum(signup + 1, start)
    change_day = first_change + np.floor(rng.random(n) * (end + 1 - first_change)).astype(np.int64)
    change_day = np.where(changes & (first_change <= end), change_day, _NEVER)
    change_second = rng.integers(0, _SECONDS_PER_DAY, n)

    order = np.argsort(signup, kind="stable")
    width = max(6, len(str(n)))
    return _Customers(
        ids=np.array([f"C{k + 1:0{width}d}" for k in range(n)], dtype=object),
        signup_day=signup[order], signup_second=signup_second[order], segment=segment[order],
        profile=profile[order], rate=rate[order], spend=spend[order], affinity=affinity[order],
        region=region[order], consent=consent[order], consent_change_day=change_day[order],
        consent_change_second=change_second[order],
    )


def _consent_at(customers: _Customers, day: int) -> tuple[np.ndarray, np.ndarray]:
    """(marketing_consent, consent_updated_at in epoch seconds) as known at the end of ``day``."""
    changed = customers.consent_change_day <= day
    value = np.where(changed, ~customers.consent, customers.consent)
    seconds = np.where(changed, customers.consent_change_day.astype(np.int64) * _SECONDS_PER_DAY
                       + customers.consent_change_second,
                       customers.signup_day.astype(np.int64) * _SECONDS_PER_DAY + customers.signup_second)
    return value, seconds


# --- the daily simulation -----------------------------------------------------------------------------
@dataclass
class _State:
    """What completed purchases have taught the world so far (day numbers, _NEVER if not yet)."""

    category_first: np.ndarray  # (n, C)
    tier_first: np.ndarray  # (n, F, MAX_TIER)
    top_tier: np.ndarray  # (n, F) 0 = not an owner
    top_tier_day: np.ndarray  # (n, F) first purchase day of top_tier

    @classmethod
    def empty(cls, n: int, world: _World) -> _State:
        f = len(world.families)
        return cls(np.full((n, len(CATEGORIES)), _NEVER, np.int32), np.full((n, f, MAX_TIER), _NEVER, np.int32),
                   np.zeros((n, f), np.int8), np.full((n, f), _NEVER, np.int32))


@dataclass
class _Lines:
    """Order lines of one day as columns (customer -1 = guest; product -1 = missing)."""

    order: np.ndarray  # order key, unique within the day
    line: np.ndarray
    customer: np.ndarray
    second: np.ndarray  # epoch seconds
    product: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    currency: np.ndarray  # index into _CURRENCIES
    channel: np.ndarray
    status: np.ndarray  # index into _STATUSES
    unknown: np.ndarray | None = None  # product id string for unknown products, else None

    @staticmethod
    def concat(parts: list[_Lines]) -> _Lines:
        fields = [f.name for f in dataclasses.fields(_Lines) if f.name != "unknown"]
        merged = {name: np.concatenate([getattr(p, name) for p in parts]) for name in fields}
        unknown = np.concatenate([p.unknown if p.unknown is not None else np.full(len(p.order), None, object)
                                  for p in parts])
        return _Lines(**merged, unknown=unknown)

    def __len__(self) -> int:
        return len(self.order)


_CURRENCIES = tuple(dict.fromkeys(c for *_, c in REGIONS))
_STATUSES = ("completed", "cancelled", "returned")
_COMPLETED, _CANCELLED, _RETURNED = range(3)


class _Simulation:
    """Day-by-day simulation; ``run`` yields each day's lines (clean, guests, returns and dirt)."""

    def __init__(self, spec: WorldSpec, world: _World, customers: _Customers, *,
                 campaigns: Sequence[Campaign] = (), drift: Drift | None = None) -> None:
        self.spec, self.world, self.customers, self.drift = spec, world, customers, drift
        streams = np.random.SeedSequence([spec.seed, WORLD_VERSION, 1]).spawn(5)
        self.rng_orders, self.rng_details, self.rng_guests, self.rng_returns, self.rng_dirt = (
            np.random.default_rng(s) for s in streams)
        self.state = _State.empty(spec.customers, world)
        self.pending_returns: dict[int, list[_Lines]] = {}
        self.region_currency = np.array([_CURRENCIES.index(c) for *_, c in REGIONS])
        self.fx = np.array([FX_PER_GBP[c] for c in _CURRENCIES])
        self.hour_p = np.asarray(HOUR_WEIGHTS, dtype=np.float64) / sum(HOUR_WEIGHTS)
        self.dirt_counts = dict.fromkeys(DIRT_KINDS, 0)
        self.guest_lines = 0
        # Guests buy by overall popularity; tiers by the base shares.
        self.guest_slot_p = world.slot_weight / world.slot_weight.sum()
        self.responses, self.responders = _plan_responses(spec, world, customers, campaigns, self.hour_p)
        self.campaign_orders = 0

    # -- customers' orders
    def _baskets(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """(customer index per basket, (baskets, P) bool purchases) for the visits of ``day``."""
        w, c, s = self.world, self.customers, self.state
        rng = self.rng_orders
        active = int(np.searchsorted(c.signup_day, day, side="right"))
        visit = rng.random(active) < _visit_probability(c.rate[:active], _visit_factor(np.array([day]), self.drift)[0])
        who = np.flatnonzero(visit)
        m = len(who)
        season = _category_season(np.array([day]))[0]
        affinity = c.affinity[who]
        pi = _slot_probability(affinity[:, w.slot_cat], w.slot_weight, season[w.slot_cat])
        for k in range(len(w.lt_family)):
            first = s.tier_first[who, w.lt_family[k]].min(axis=1).astype(np.int64)
            boost = w.lt_boost[k] * _in_window(day - first, w.lt_lag[k])
            slot = w.lt_slot[k]
            pi[:, slot] = _slot_probability(affinity[:, w.slot_cat[slot]], w.slot_weight[slot],
                                            season[w.slot_cat[slot]], boost)
        held = rng.random(pi.shape) < pi

        top = s.top_tier[who].astype(np.int64)
        owned_days = day - s.top_tier_day[who].astype(np.int64)
        upgradable = (top >= 1) & (top < MAX_TIER)
        p_up = np.where(upgradable, _upgrade_probability(w.upgrade_base, c.spend[who][:, None], owned_days), 0.0)
        upgrade = rng.random(p_up.shape) < p_up
        tier_draw = rng.random((m, len(w.families)))
        addon_draw = rng.random((m, len(w.sb_slot)))

        buy = np.zeros((m, len(w.product_ids)), dtype=bool)
        plain = w.slot_product >= 0
        buy[:, w.slot_product[plain]] = held[:, plain]
        new_tier = _draw_tier(c.spend[who], tier_draw)
        for slot in np.flatnonzero(~plain):
            f = w.slot_family[slot]
            tier = np.where(top[:, f] > 0, top[:, f], new_tier[:, f])
            rows = np.flatnonzero(held[:, slot])
            buy[rows, w.fam_products[f, tier[rows] - 1]] = True
            rows = np.flatnonzero(upgrade[:, f])
            buy[rows, w.fam_products[f, top[rows, f]]] = True  # tier top + 1, 0-based
        for k in range(len(w.sb_slot)):
            buy[:, w.sb_product[k]] |= held[:, w.sb_slot[k]] & (addon_draw[:, k] < w.sb_prob[k])
        placed = buy.any(axis=1)
        return who[placed], buy[placed]

    def _order_lines(self, day: int, who: np.ndarray, buy: np.ndarray, first_key: int) -> _Lines:
        rng = self.rng_details
        n_orders = len(who)
        status = np.where(rng.random(n_orders) < P_CANCEL, _CANCELLED, _COMPLETED)
        second = day * _SECONDS_PER_DAY + _seconds_in_day(rng, n_orders, self.hour_p)
        channel = rng.choice(len(CHANNELS), n_orders, p=CHANNEL_SHARES)
        currency = self.region_currency[self.customers.region[who]]
        basket, product = np.nonzero(buy)
        # A basket of more than MAX_ORDER_LINES products becomes several orders at the same time; they share
        # the basket's status, so a cancellation still takes the whole basket (the truth relies on it).
        part = (_line_numbers(basket) - 1) // MAX_ORDER_LINES
        _, order = np.unique(basket * (len(product) + 1) + part, return_inverse=True)
        quantity, price = self._quantity_price(rng, product, currency[basket], day)
        return _Lines(order=first_key + order, line=_line_numbers(order), customer=who[basket],
                      second=second[basket], product=product, quantity=quantity, price=price,
                      currency=currency[basket], channel=channel[basket], status=status[basket])

    def _quantity_price(self, rng: np.random.Generator, product: np.ndarray, currency: np.ndarray,
                        day: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(product)
        quantity = np.where(self.world.consumable[product], rng.integers(1, 4, n), 1)
        factor = rng.choice([f for f, _ in DISCOUNTS], n, p=[s for _, s in DISCOUNTS])
        return quantity, self._price(product, currency, factor, day)

    def _price(self, product: np.ndarray, currency: np.ndarray, factor: np.ndarray | float, day: int) -> np.ndarray:
        # Without drift the level is 1.0 and x * 1.0 == x: the prices of a world without drift do not move.
        level = _price_level(day, self.drift)
        return np.round(self.world.list_price[product] * self.fx[currency] * factor * level, 2)

    def _learn(self, day: int, lines: _Lines) -> None:
        """Completed purchases update the state; cancelled ones and returns do not."""
        w, s = self.world, self.state
        done = lines.status == _COMPLETED
        who, product = lines.customer[done], lines.product[done]
        cat = w.prod_cat[product]
        s.category_first[who, cat] = np.minimum(s.category_first[who, cat], day)
        fam = np.flatnonzero(w.prod_family[product] >= 0)
        who, product = who[fam], product[fam]
        f, tier = w.prod_family[product], w.prod_tier[product]
        s.tier_first[who, f, tier - 1] = np.minimum(s.tier_first[who, f, tier - 1], day)
        before = s.top_tier[who, f].copy()
        np.maximum.at(s.top_tier, (who, f), tier.astype(np.int8))
        raised = s.top_tier[who, f] > before
        s.top_tier_day[who[raised], f[raised]] = day

    def _schedule_returns(self, day: int, lines: _Lines) -> None:
        rng = self.rng_returns
        done = np.flatnonzero(lines.status == _COMPLETED)
        back = done[rng.random(len(done)) < P_RETURN]
        delay = rng.integers(RETURN_DELAY_DAYS[0], RETURN_DELAY_DAYS[1] + 1, len(back))
        for lag in np.unique(delay):
            k = back[delay == lag]
            self.pending_returns.setdefault(day + int(lag), []).append(_Lines(
                order=np.zeros(len(k), np.int64), line=np.ones(len(k), np.int64), customer=lines.customer[k],
                second=np.zeros(len(k), np.int64), product=lines.product[k], quantity=-lines.quantity[k],
                price=lines.price[k], currency=lines.currency[k], channel=np.zeros(len(k), np.int64),
                status=np.full(len(k), _RETURNED)))

    def _returns(self, day: int, first_key: int) -> _Lines | None:
        parts = self.pending_returns.pop(day, [])
        if not parts:
            return None
        rng = self.rng_returns
        lines = _Lines.concat(parts)
        n = len(lines)
        lines.order = first_key + np.arange(n)
        lines.second = day * _SECONDS_PER_DAY + _seconds_in_day(rng, n, self.hour_p)
        lines.channel = rng.choice(len(CHANNELS), n, p=CHANNEL_SHARES)
        lines.unknown = None
        return lines

    def _guests(self, day: int, customer_lines: int, first_key: int) -> _Lines | None:
        share = self.spec.guest_share
        rng = self.rng_guests
        target = rng.poisson(customer_lines * share / (1.0 - share)) if share > 0 else 0
        if target == 0:
            return None
        sizes = rng.choice(len(GUEST_LINES_PER_ORDER), target, p=GUEST_LINES_PER_ORDER) + 1
        sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), target)) + 1]
        order = np.repeat(np.arange(len(sizes)), sizes)
        w = self.world
        slot = rng.choice(len(w.slot_weight), len(order), p=self.guest_slot_p)
        tier = _draw_tier(np.ones(len(order)), rng.random((len(order), 1)))[:, 0]
        family = w.slot_family[slot]
        product = np.where(family >= 0, w.fam_products[np.maximum(family, 0), tier - 1], w.slot_product[slot])
        # A guest basket holds each product once: repeats collapse into the first line.
        keep = ~pd.DataFrame({"o": order, "p": product}).duplicated().to_numpy()
        order, product = order[keep], product[keep]
        n_orders = len(sizes)
        currency = rng.choice(len(REGIONS), n_orders, p=[s for _, s, _ in REGIONS])
        currency = self.region_currency[currency]
        status = np.where(rng.random(n_orders) < P_CANCEL, _CANCELLED, _COMPLETED)
        second = day * _SECONDS_PER_DAY + _seconds_in_day(rng, n_orders, self.hour_p)
        channel = rng.choice(len(CHANNELS), n_orders, p=CHANNEL_SHARES)
        quantity, price = self._quantity_price(rng, product, currency[order], day)
        self.guest_lines += len(order)
        return _Lines(order=first_key + order, line=_line_numbers(order), customer=np.full(len(order), -1),
                      second=second[order], product=product, quantity=quantity, price=price,
                      currency=currency[order], channel=channel[order], status=status[order])

    def _dirt(self, day: int, lines: _Lines) -> _Lines | None:
        """Dirty copies of completed clean lines; the clean lines themselves stay as they are."""
        share = self.spec.dirty_share
        source = np.flatnonzero(lines.status == _COMPLETED)
        if share == 0 or len(source) == 0:
            return None
        rng = self.rng_dirt
        n = rng.binomial(len(lines), share)
        if n == 0:
            return None
        pick = np.sort(rng.choice(source, n))
        kind = rng.integers(0, len(DIRT_KINDS), n)
        dirt = _Lines(**{f.name: getattr(lines, f.name)[pick].copy() for f in dataclasses.fields(_Lines)
                         if f.name != "unknown"})
        dirt.unknown = np.full(n, None, dtype=object)
        touched = np.unique(dirt.order)
        last = pd.Series(lines.line).groupby(lines.order).max()
        next_line = dict(zip(touched.tolist(), last.loc[touched].tolist(), strict=True))
        for k in range(n):
            name = DIRT_KINDS[kind[k]]
            self.dirt_counts[name] += 1
            if name == "duplicate":
                continue
            # Every other kind is an extra line of the same order, so the key (order, line) stays unique.
            next_line[dirt.order[k]] += 1
            dirt.line[k] = next_line[dirt.order[k]]
            if name == "missing_product":
                dirt.product[k] = -1
            elif name == "negative_quantity":
                dirt.quantity[k] = -dirt.quantity[k]
            elif name == "unknown_product":
                dirt.product[k] = -1
                dirt.unknown[k] = f"P9{rng.integers(0, 1000):03d}"
            else:  # future_ts
                days_ahead = rng.integers(FUTURE_TS_DAYS[0], FUTURE_TS_DAYS[1] + 1)
                dirt.second[k] = (day + days_ahead) * _SECONDS_PER_DAY + rng.integers(0, _SECONDS_PER_DAY)
        return dirt

    def _campaign_lines(self, day: int, first_key: int) -> _Lines | None:
        """Campaign responders' orders of ``day``: one completed line each, never cancelled, returned or dirty.

        Built after the day's own purchases were learnt, so an up-sell buys the tier above the one owned
        at the end of the day's natural orders; a responder already at the top tier buys nothing.
        """
        events = self.responses.pop(day, None)
        if events is None:
            return None
        w, s = self.world, self.state
        customer, product = events["customer"].to_numpy(), events["product"].to_numpy().copy()
        up = np.flatnonzero(product < 0)
        family = events["family"].to_numpy()[up]
        top = s.top_tier[customer[up], family].astype(np.int64)
        product[up] = np.where((top >= 1) & (top < MAX_TIER), w.fam_products[family, np.minimum(top, MAX_TIER - 1)], -1)
        keep = np.flatnonzero(product >= 0)
        if len(keep) == 0:
            return None
        customer, product = customer[keep], product[keep]
        currency = self.region_currency[self.customers.region[customer]]
        n = len(keep)
        self.campaign_orders += n
        return _Lines(order=first_key + np.arange(n), line=np.ones(n, np.int64), customer=customer,
                      second=day * _SECONDS_PER_DAY + events["second"].to_numpy()[keep], product=product,
                      quantity=np.ones(n, np.int64), price=self._price(product, currency, 1.0, day),
                      currency=currency, channel=events["channel"].to_numpy()[keep],
                      status=np.full(n, _COMPLETED))

    def run(self, first_day: int, last_day: int) -> Iterator[tuple[int, _Lines, int]]:
        """Yields (day, lines, orders) for every day; lines are unsorted with day-local order keys."""
        for day in range(first_day, last_day + 1):
            who, buy = self._baskets(day)
            clean = self._order_lines(day, who, buy, first_key=0)
            self._learn(day, clean)
            self._schedule_returns(day, clean)
            parts, next_key = [clean], int(clean.order.max()) + 1 if len(clean) else 0
            returns = self._returns(day, next_key)
            if returns is not None:
                parts.append(returns)
                next_key += len(returns)
            guests = self._guests(day, len(clean), next_key)
            if guests is not None:
                parts.append(guests)
                next_key += int(guests.order.max() - next_key + 1)
            lines = _Lines.concat(parts)
            dirt = self._dirt(day, lines)
            if dirt is not None:
                lines = _Lines.concat([lines, dirt])
            # Last, and from a stream of their own: the natural world's draws of the day do not depend on them.
            responses = self._campaign_lines(day, next_key)
            if responses is not None:
                self._learn(day, responses)
                lines = _Lines.concat([lines, responses])
                next_key += len(responses)
            yield day, lines, next_key


def _plan_responses(spec: WorldSpec, world: _World, customers: _Customers, campaigns: Sequence[Campaign],
                    hour_p: np.ndarray) -> tuple[dict[int, pd.DataFrame], dict[tuple[date, str], int]]:
    """Campaign responses by day (customer, product or -1 for an up-sell, family, second, channel), and the
    number of responders per (run date, offer).

    One stream per campaign and offer, ``SeedSequence([seed, WORLD_VERSION, 2, run day, offer index])``,
    drawn for every customer of the world and read at the treated ones: no stream of the natural world is
    touched, and a customer's response does not depend on who else is in the audience.
    """
    table = offers(catalogue())
    index = pd.Index(customers.ids)
    n = len(customers.ids)
    events, responders = [], {}
    for campaign in campaigns:
        run_day = _day(campaign.run_date)
        for k, offer in enumerate(table.itertuples(index=False)):
            rows = campaign.audience[campaign.audience["offer_id"] == offer.offer_id]
            if rows.empty:
                continue
            rng = np.random.default_rng(np.random.SeedSequence([spec.seed, WORLD_VERSION, 2, run_day, k]))
            respond = rng.random(n) < campaign.uplift[offer.offer_id]
            lag = rng.integers(1, campaign.horizon_days + 1, n)
            pick = rng.random(n)
            second = _seconds_in_day(rng, n, hour_p)
            channel = rng.choice(len(CHANNELS), n, p=CHANNEL_SHARES)
            treated = index.get_indexer(rows.loc[rows["cell"] == "treatment", "customer_id"])
            who = treated[respond[treated]]
            responders[(campaign.run_date, offer.offer_id)] = len(who)
            cross = offer.offer_type == CROSS_SELL
            # A cross-sell's product does not depend on the state; an up-sell's tier is chosen on the day.
            product = _plain_product(world, CATEGORIES.index(offer.target), pick[who]) if cross else -1
            events.append(pd.DataFrame({
                "day": run_day + lag[who], "customer": who, "product": product,
                "family": -1 if cross else world.families.index(offer.target),
                "second": second[who], "channel": channel[who]}))
    if not events:
        return {}, responders
    frame = pd.concat(events, ignore_index=True)
    return {int(day): group.reset_index(drop=True) for day, group in frame.groupby("day", sort=True)}, responders


def _plain_product(world: _World, category: int, uniform: np.ndarray) -> np.ndarray:
    """A plain (active) product of ``category`` for each uniform draw, by slot weight."""
    slots = np.flatnonzero((world.slot_cat == category) & (world.slot_product >= 0))
    cdf = np.cumsum(world.slot_weight[slots])
    return world.slot_product[slots[np.searchsorted(cdf / cdf[-1], uniform, side="right")]]


def _draw_tier(spend: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Tier (1..MAX_TIER) of a first family purchase for each row of ``uniform`` (n, k)."""
    logits = np.log(TIER_BASE_SHARE)[None, :] + TIER_SPEND_TILT * np.log(spend)[:, None] * np.arange(MAX_TIER)
    p = np.exp(logits)
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    return 1 + (uniform[:, :, None] > cdf[:, None, :-1]).sum(axis=2)


def _seconds_in_day(rng: np.random.Generator, n: int, hour_p: np.ndarray) -> np.ndarray:
    return rng.choice(24, n, p=hour_p) * 3600 + rng.integers(0, 3600, n)


def _line_numbers(order: np.ndarray) -> np.ndarray:
    """1, 2, ... within each run of equal (sorted) order keys."""
    if len(order) == 0:
        return np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(order)) + 1]
    return np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)])) + 1


# --- writing ------------------------------------------------------------------------------------------
def _arrow_type(spark_type: DataType) -> pa.DataType:
    mapping = {StringType: pa.string(), IntegerType: pa.int32(), LongType: pa.int64(), DoubleType: pa.float64(),
               BooleanType: pa.bool_(), DateType: pa.date32(), TimestampType: pa.timestamp("us", tz="UTC")}
    return mapping[type(spark_type)]


def _arrow_schema(ddl: str) -> pa.Schema:
    return pa.schema([pa.field(f.name, _arrow_type(f.dataType)) for f in struct(ddl).fields])


def _write(table: pa.Table, folder: Path, fmt: str) -> None:
    """One partition file. CSV: a plain header, timestamps as ``YYYY-MM-DD HH:MM:SS`` (UTC), empty nulls."""
    folder.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata(None)
    if fmt == "parquet":
        pq.write_table(table, folder / "part-00000.parquet")
        return
    columns = [col.cast(pa.timestamp("s")) if pa.types.is_timestamp(col.type) else col for col in table.columns]
    body = io.BytesIO()
    # Unquoted, like most upstream exports: no value of this world holds a comma, a quote or a line break,
    # and pyarrow raises rather than write one unquoted. The header is written by hand for the same reason.
    pacsv.write_csv(pa.table(columns, names=table.column_names), body,
                    pacsv.WriteOptions(include_header=False, quoting_style="none"))
    (folder / "part-00000.csv").write_bytes((",".join(table.column_names) + "\n").encode() + body.getvalue())


def _epoch_seconds_to_arrow(seconds: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype=np.int64) * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _day_table(lines: _Lines, world: _World, customer_ids: pa.Array, first_order_number: int) -> pa.Table:
    """The day's lines as a contract table, sorted by time; order ids numbered in that order."""
    order_time = pd.Series(lines.second).groupby(lines.order).min()
    keys = order_time.index.to_numpy()
    rank = np.empty(len(keys), dtype=np.int64)
    rank[np.lexsort((keys, order_time.to_numpy()))] = np.arange(len(keys))
    numbers = pa.array(first_order_number + rank).cast(pa.string())
    order_ids = pc.binary_join_element_wise("O", pc.utf8_lpad(numbers, width=ORDER_ID_DIGITS, padding="0"), "")
    product = pa.array(world.product_ids, pa.string()).take(pa.array(lines.product, mask=lines.product < 0))
    if lines.unknown is not None and pd.notna(lines.unknown).any():
        unknown = pa.array(lines.unknown, pa.string())
        product = pc.if_else(unknown.is_valid(), unknown, product)
    columns = {
        "order_id": order_ids.take(pa.array(np.searchsorted(keys, lines.order))),
        "line_number": pa.array(lines.line, pa.int32()),
        "customer_id": customer_ids.take(pa.array(lines.customer, mask=lines.customer < 0)),
        "order_ts": _epoch_seconds_to_arrow(lines.second),
        "product_id": product,
        "quantity": pa.array(lines.quantity, pa.int32()),
        "unit_price": pa.array(lines.price, pa.float64()),
        "currency": pa.array(_CURRENCIES, pa.string()).take(pa.array(lines.currency)),
        "channel": pa.array(CHANNELS, pa.string()).take(pa.array(lines.channel)),
        "status": pa.array(_STATUSES, pa.string()).take(pa.array(lines.status)),
    }
    table = pa.table(columns, schema=_arrow_schema(ORDER_LINES_DDL))
    return table.take(pa.array(np.lexsort((lines.line, lines.order, lines.second))))


def _products_table() -> pa.Table:
    return pa.Table.from_pandas(catalogue(), schema=_arrow_schema(PRODUCTS_DDL), preserve_index=False)


def _customers_table(customers: _Customers, day: int) -> pa.Table:
    signed = int(np.searchsorted(customers.signup_day, day, side="right"))
    consent, seconds = _consent_at(customers, day)
    columns = {
        "customer_id": pa.array(customers.ids[:signed], pa.string()),
        "signup_date": pa.array(customers.signup_day[:signed].astype(np.int32), pa.int32()).cast(pa.date32()),
        "region": pa.array(np.asarray([r for r, *_ in REGIONS], dtype=object)[customers.region[:signed]],
                           pa.string()),
        "marketing_consent": pa.array(consent[:signed], pa.bool_()),
        "consent_updated_at": _epoch_seconds_to_arrow(seconds[:signed]),
    }
    return pa.table(columns, schema=_arrow_schema(CUSTOMERS_DDL))


def _truth_tables(world: _World) -> tuple[pd.DataFrame, pd.DataFrame]:
    """complements.csv and upgrades.csv."""
    rows = []
    for slot, product, prob in zip(world.sb_slot, world.sb_product, world.sb_prob, strict=True):
        f = world.slot_family[slot]
        antecedents = world.fam_products[f] if f >= 0 else [world.slot_product[slot]]
        rows += [(a, product, "same_basket", 0, 0, prob) for a in antecedents]
    for f, product, lag, boost in zip(world.lt_family, world.lt_product, world.lt_lag, world.lt_boost, strict=True):
        rows += [(a, product, "later", lag[0], lag[1], boost) for a in world.fam_products[f]]
    complements = pd.DataFrame({
        "antecedent_product": [world.product_ids[a] for a, *_ in rows],
        "consequent_product": [world.product_ids[c] for _, c, *_ in rows],
        "antecedent_category": [CATEGORIES[world.prod_cat[a]] for a, *_ in rows],
        "consequent_category": [CATEGORIES[world.prod_cat[c]] for _, c, *_ in rows],
        "kind": [k for _, _, k, *_ in rows],
        "lag_days_min": [int(lo) for *_, lo, _, _ in rows],
        "lag_days_max": [int(hi) for *_, hi, _ in rows],
        "strength": [float(s) for *_, s in rows],
    })
    upgrades = pd.DataFrame([
        (family, tier, tier + 1, world.product_ids[world.fam_products[f, tier - 1]],
         world.product_ids[world.fam_products[f, tier]], float(world.upgrade_base[f]), UPGRADE_MIN_DAYS)
        for f, family in enumerate(world.families) for tier in range(1, MAX_TIER)
    ], columns=["family", "from_tier", "to_tier", "from_product_id", "to_product_id", "base_probability_per_visit",
                "min_days_owned"])
    return complements, upgrades


def _latent_frame(customers: _Customers, state: _State, world: _World) -> pd.DataFrame:
    """Per-customer latent parameters and first-purchase days: everything true_propensity needs."""
    frame = pd.DataFrame({
        "customer_id": customers.ids,
        "signup_day": customers.signup_day.astype(np.int32),
        "segment": customers.segment.astype(np.int8),
        "profile": customers.profile.astype(np.int8),
        "rate": customers.rate,
        "spend": customers.spend,
        "consent": customers.consent,
        "consent_change_day": customers.consent_change_day.astype(np.int32),
    })
    for c, category in enumerate(CATEGORIES):
        frame[f"affinity_{category}"] = customers.affinity[:, c]
    for c, category in enumerate(CATEGORIES):
        frame[f"first_{category}"] = state.category_first[:, c]
    for f, family in enumerate(world.families):
        for t in range(MAX_TIER):
            frame[f"first_{family}_tier{t + 1}"] = state.tier_first[:, f, t]
    return frame


# --- generate -----------------------------------------------------------------------------------------
def _day(value: date) -> int:
    return (value - _EPOCH).days


def _date(day: int) -> date:
    return _EPOCH + datetime.timedelta(days=int(day))


_IDENTITY_KEYS = ("world_version", "spec", "campaigns", "drift")


def _identity(spec: WorldSpec, campaigns: Sequence[Campaign], drift: Drift | None) -> dict:
    """What ``world.json`` records of the world's make-up. Campaigns and drift appear only when present, so a
    world without them keeps the file it always had."""
    identity = {"world_version": WORLD_VERSION, "spec": spec.to_json()}
    if campaigns:
        identity["campaigns"] = [c.to_json() for c in sorted(campaigns, key=lambda c: c.run_date)]
    if drift is not None:
        identity["drift"] = drift.to_json()
    return identity


def _check_campaigns(spec: WorldSpec, customers: _Customers, campaigns: Sequence[Campaign]) -> tuple[Campaign, ...]:
    """The campaigns by run date, after checking what the world must hold for them."""
    ordered = tuple(sorted(campaigns, key=lambda c: c.run_date))
    dates = [c.run_date for c in ordered]
    if len(set(dates)) < len(dates):
        raise ValueError("two campaigns share a run date")
    known = set(offers(catalogue())["offer_id"])
    index = pd.Index(customers.ids)
    for campaign in ordered:
        name = f"campaign {campaign.run_date}"
        if not spec.start <= campaign.run_date <= spec.end:
            raise ValueError(f"{name}: the run date must lie within the generated range {spec.start}..{spec.end}")
        unknown = sorted(set(campaign.audience["offer_id"]) - known)
        if unknown:
            raise ValueError(f"{name}: not an offer of this world: {', '.join(unknown)}")
        where = index.get_indexer(campaign.audience["customer_id"])
        late = (where < 0) | (customers.signup_day[np.maximum(where, 0)] > _day(campaign.run_date))
        if late.any():
            raise ValueError(f"{name}: {campaign.audience['customer_id'][late].iloc[0]} is not a customer "
                             "signed up by the run date")
    return ordered


def _planted(campaign: Campaign, natural: pd.DataFrame, responders: dict[tuple[date, str], int]) -> pd.DataFrame:
    """``planted.csv`` of one campaign (see :func:`generate`), given the natural propensity at its run date."""
    rows = campaign.audience.merge(natural[["offer_id", "customer_id", "eligible", "true_probability"]],
                                   on=["offer_id", "customer_id"], how="left", validate="one_to_one")
    rows["gain"] = rows["eligible"] * (1.0 - rows["true_probability"])
    planted = []
    for offer_id in (o for o in offers(catalogue())["offer_id"] if o in campaign.uplift):
        group = rows[rows["offer_id"] == offer_id]
        control = group["cell"] == "control"
        u = campaign.uplift[offer_id]
        planted.append((offer_id, u, int((~control).sum()), int(control.sum()),
                        group.loc[control, "true_probability"].mean(), u * group["gain"].mean(),
                        responders[(campaign.run_date, offer_id)], int(group["eligible"].sum())))
    return pd.DataFrame(planted, columns=list(PLANTED_COLUMNS))


def generate(landing_dir: Path, truth_dir: Path, spec: WorldSpec, *, campaigns: Sequence[Campaign] = (),
             drift: Drift | None = None, log: Callable[[str], None] = print) -> dict:
    """Writes the landing zone and the planted truth; returns a summary.

    Landing (replaced as a whole on every run): ``order_lines/date=D/part-00000.<fmt>`` for every day with
    orders, ``products/date=D/...`` and ``customers/date=D/...`` for the last ``spec.snapshot_days`` days.
    Truth: ``complements.csv``, ``upgrades.csv``, ``world.json`` (spec, campaigns and drift if any, and the
    summary) and ``latent/customers.parquet`` (the state :func:`true_propensity` reads). The same spec,
    campaigns and drift write byte-identical files. The summary counts customers, products, days, orders,
    order lines (all rows written), guest lines, cancelled orders, returned lines and the dirty lines by
    kind (extra rows: the clean data is the same whatever ``dirty_share`` is), and campaign orders if any.

    ``campaigns`` (at most one per run date, each within the range; their customers signed up by the run
    date) plant responses after their run dates (see :class:`Campaign`); ``truth/campaigns/run_date=D/``
    gets ``audience.parquet`` (``customer_id, offer_id, cell``) and ``planted.csv``, one row per offer of the
    audience: ``planted_uplift`` (u), ``treated`` and ``control`` rows, ``expected_control_rate`` (mean
    true propensity p0 at D over the control rows, 0 for a row not eligible at D),
    ``expected_absolute_uplift`` (u times the mean of ``eligible * (1 - p0)`` over all the offer's rows,
    both cells: the treated-minus-control difference of first-time adoption rates it plants),
    ``responders`` (treated rows drawn as responders, including any whose day falls after ``spec.end`` or
    who own the top tier by then) and ``eligible`` (rows eligible at D by the conventions of
    :func:`true_propensity`). p0 uses the campaign's horizon. Another campaign's responses inside the
    horizon are not in p0, so overlapping campaigns make these expectations approximate. ``drift``
    changes visits and prices from its start day on (see :class:`Drift`).
    """
    started = time.perf_counter()
    landing_dir, truth_dir = Path(landing_dir), Path(truth_dir)
    world = _compile_world()
    seeds = np.random.SeedSequence([spec.seed, WORLD_VERSION, 0])
    customers = _draw_customers(spec, np.random.default_rng(seeds))
    campaigns = _check_campaigns(spec, customers, campaigns)  # before anything is deleted
    first_day, last_day = _day(spec.start), _day(spec.end)
    n_days = last_day - first_day + 1
    log(f"generate: {spec.customers} customers, {len(world.product_ids)} products, "
        f"{spec.start}..{spec.end} ({n_days} days), seed {spec.seed}, {spec.fmt}")

    for table in (ORDER_LINES, PRODUCTS, CUSTOMERS):
        shutil.rmtree(landing_dir / table, ignore_errors=True)
    shutil.rmtree(truth_dir / "propensity", ignore_errors=True)
    shutil.rmtree(truth_dir / "campaigns", ignore_errors=True)
    customer_ids = pa.array(customers.ids, pa.string())
    simulation = _Simulation(spec, world, customers, campaigns=campaigns, drift=drift)
    orders = rows = partitions = cancelled = returned = 0
    report_every = max(1, math.ceil(n_days / 4))
    for day, lines, n_orders in simulation.run(first_day, last_day):
        if len(lines):
            table = _day_table(lines, world, customer_ids, first_order_number=orders + 1)
            _write(table, landing_dir / ORDER_LINES / f"date={_date(day)}", spec.fmt)
            partitions += 1
            rows += len(lines)
            orders += n_orders  # dirt only adds lines to orders that exist, so it adds no order
            first_line = lines.line == 1
            cancelled += int((first_line & (lines.status == _CANCELLED)).sum())
            returned += int((lines.status == _RETURNED).sum())
        if (day - first_day + 1) % report_every == 0 and day != last_day:
            log(f"generate: {_date(day)} done, {orders} orders and {rows} lines so far "
                f"({time.perf_counter() - started:.1f} s)")
    for day in range(max(first_day, last_day - spec.snapshot_days + 1), last_day + 1):
        _write(_products_table(), landing_dir / PRODUCTS / f"date={_date(day)}", spec.fmt)
        _write(_customers_table(customers, day), landing_dir / CUSTOMERS / f"date={_date(day)}", spec.fmt)

    summary = {
        "customers": spec.customers,
        "products": len(world.product_ids),
        "days": partitions,
        "orders": orders,
        "order_lines": rows,
        "guest_lines": simulation.guest_lines,
        "cancelled_orders": cancelled,
        "returned_lines": returned,
        "dirty_lines": dict(simulation.dirt_counts),
        "dirty_total": sum(simulation.dirt_counts.values()),
    }
    if campaigns:
        summary["campaign_orders"] = simulation.campaign_orders
    truth_dir.mkdir(parents=True, exist_ok=True)
    complements, upgrades = _truth_tables(world)
    complements.to_csv(truth_dir / "complements.csv", index=False, lineterminator="\n")
    upgrades.to_csv(truth_dir / "upgrades.csv", index=False, lineterminator="\n")
    (truth_dir / "latent").mkdir(exist_ok=True)
    latent_frame = _latent_frame(customers, simulation.state, world)
    latent = pa.Table.from_pandas(latent_frame, preserve_index=False)
    pq.write_table(latent.replace_schema_metadata(None), truth_dir / "latent" / "customers.parquet")
    for campaign in campaigns:
        folder = truth_dir / "campaigns" / f"run_date={campaign.run_date}"
        folder.mkdir(parents=True)
        audience = pa.Table.from_pandas(campaign.audience, preserve_index=False)
        pq.write_table(audience.replace_schema_metadata(None), folder / "audience.parquet")
        natural = _propensity(world, latent_frame, spec, drift, cutoff=campaign.run_date,
                              horizon_days=campaign.horizon_days)
        planted = _planted(campaign, natural, simulation.responders)
        planted.to_csv(folder / "planted.csv", index=False, lineterminator="\n")
    world_json = {**_identity(spec, campaigns, drift), "summary": summary,
                  "offers": offers(catalogue()).to_dict(orient="records")}
    (truth_dir / "world.json").write_text(json.dumps(world_json, indent=2, sort_keys=True) + "\n")
    log(f"generate: wrote {orders} orders, {rows} lines over {partitions} days "
        f"({summary['dirty_total']} dirty) in {time.perf_counter() - started:.1f} s")
    return summary


# --- the truth ------------------------------------------------------------------------------------------
def true_propensity(truth_dir: Path, spec: WorldSpec, *, cutoff: date, horizon_days: int = 30,
                    campaigns: Sequence[Campaign] = (), drift: Drift | None = None) -> pd.DataFrame:
    """The exact probability that each customer adopts each offer in (cutoff, cutoff + horizon_days].

    Reads the state :func:`generate` saved for the same ``spec``, ``campaigns`` and ``drift`` (a different
    world is an error; :func:`read_world` gives them back) and
    returns one row per offer and customer signed up by ``cutoff``, sorted by offer (in :func:`offers`
    order) and customer id, with
    columns ``cutoff, horizon_days, offer_id, offer_type, target, customer_id, marketing_consent`` (as known
    at the end of the cutoff day), ``eligible`` and ``true_probability`` (0 where not eligible). Also writes
    it to ``truth_dir/propensity/cutoff=YYYY-MM-DD/propensity.parquet``.

    Conventions, which a pipeline must share to be compared with this truth:
    - history is every order up to and including the cutoff day; the horizon is the days cutoff + 1 ..
      cutoff + horizon_days; a purchase counts if its line is clean and ``completed`` with quantity > 0;
    - cross-sell ``<category>``: eligible if the customer has never bought the category; adopting is
      buying any product of it;
    - up-sell ``<family>``: eligible if the highest tier owned is below MAX_TIER; adopting is buying a
      higher tier.

    The probability is ``1 - P(no adoption)``, with ``P(no adoption)`` the product over horizon days of
    the generator's daily chance of not adopting, given the latent parameters and the state at the
    cutoff. It ignores nothing the simulation does, for any horizon: until the adoption, the only event
    inside the horizon that changes a relevant hazard is the first purchase of a "later" antecedent
    family from another category, and it is summed over exactly (see :func:`_cross_sell_probability`);
    everything else that can happen in the horizon (upgrades, repeat purchases, same-category
    triggers, returns, dirt, guests) leaves the hazard of the offer's target unchanged by construction
    (:func:`_check_world`). A Monte-Carlo re-simulation of the horizon agrees pair by pair. Days past
    ``spec.end`` are computed like any other but have no realized outcome in the landing data.

    Campaigns: this is the natural propensity. Campaign orders up to the cutoff are in the state it
    conditions on; campaign responses inside the horizon are not in the probability (they are the planted
    treatment effect, see :class:`Campaign`). Drift: the rate factor is in the visit probability of the
    horizon's days, exactly as the simulation applies it; the spend factor changes no adoption hazard.
    """
    truth_dir = Path(truth_dir)
    saved = json.loads((truth_dir / "world.json").read_text())
    if {key: saved[key] for key in _IDENTITY_KEYS if key in saved} != _identity(spec, campaigns, drift):
        raise ValueError("truth_dir holds a world generated from a different spec, campaigns or drift")
    latent = pq.read_table(truth_dir / "latent" / "customers.parquet").to_pandas()
    result = _propensity(_compile_world(), latent, spec, drift, cutoff=cutoff, horizon_days=horizon_days)
    folder = truth_dir / "propensity" / f"cutoff={cutoff}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(result, preserve_index=False).replace_schema_metadata(None),
                   folder / "propensity.parquet")
    return result


def _propensity(world: _World, latent: pd.DataFrame, spec: WorldSpec, drift: Drift | None, *, cutoff: date,
                horizon_days: int) -> pd.DataFrame:
    """:func:`true_propensity`'s frame, from the latent frame of the whole world (read or just simulated)."""
    if horizon_days < 1:
        raise ValueError("horizon_days must be at least 1")
    t = _day(cutoff)
    if not _day(spec.start) <= t <= _day(spec.end):
        raise ValueError("cutoff must lie within the generated range")
    table = offers(catalogue())
    latent = latent[latent["signup_day"] <= t].reset_index(drop=True)
    n = len(latent)
    probability = np.zeros((len(table), n))
    eligible = np.zeros((len(table), n), dtype=bool)
    # Blocks of customers bound the memory of the (customers, horizon) arrays at benchmark sizes.
    for lo in range(0, n, TRUTH_BLOCK):
        block = slice(lo, min(n, lo + TRUTH_BLOCK))
        eligible[:, block], probability[:, block] = _offer_probabilities(world, table, latent.iloc[block], t,
                                                                         horizon_days, drift)
    changed = latent["consent_change_day"].to_numpy() <= t
    consent = np.where(changed, ~latent["consent"].to_numpy(), latent["consent"].to_numpy())
    k = len(table)
    result = pd.DataFrame({
        "cutoff": np.full(k * n, cutoff, dtype=object),
        "horizon_days": np.full(k * n, horizon_days, dtype=np.int32),
        "offer_id": np.repeat(table["offer_id"].to_numpy(dtype=object), n),
        "offer_type": np.repeat(table["offer_type"].to_numpy(dtype=object), n),
        "target": np.repeat(table["target"].to_numpy(dtype=object), n),
        "customer_id": np.tile(latent["customer_id"].to_numpy(dtype=object), k),
        "marketing_consent": np.tile(consent, k),
        "eligible": eligible.ravel(),
        "true_probability": probability.ravel(),
    })
    return result


def read_world(truth_dir: Path) -> tuple[WorldSpec, tuple[Campaign, ...], Drift | None]:
    """The spec, campaigns and drift of the world saved in ``truth_dir``, ready for :func:`generate` or
    :func:`true_propensity`. Raises FileNotFoundError without ``world.json`` (or a campaign's audience),
    ValueError for another WORLD_VERSION or an audience that is not the one ``world.json`` recorded."""
    truth_dir = Path(truth_dir)
    saved = json.loads((truth_dir / "world.json").read_text())
    if saved["world_version"] != WORLD_VERSION:
        raise ValueError(f"{truth_dir} holds a world of version {saved['world_version']}, not {WORLD_VERSION}")
    campaigns = []
    for entry in saved.get("campaigns", []):
        folder = truth_dir / "campaigns" / f"run_date={entry['run_date']}"
        audience = pq.read_table(folder / "audience.parquet").to_pandas()
        campaign = Campaign(date.fromisoformat(entry["run_date"]), audience, entry["uplift"], entry["horizon_days"])
        if campaign.to_json() != entry:
            raise ValueError(f"{folder / 'audience.parquet'} is not the audience world.json recorded")
        campaigns.append(campaign)
    drift = Drift.from_json(saved["drift"]) if "drift" in saved else None
    return WorldSpec.from_json(saved["spec"]), tuple(campaigns), drift


def _offer_probabilities(world: _World, table: pd.DataFrame, latent: pd.DataFrame, t: int,
                         horizon_days: int, drift: Drift | None) -> tuple[np.ndarray, np.ndarray]:
    """(eligible, probability), each (offers, customers), for a block of customers signed up by ``t``."""
    days = t + 1 + np.arange(horizon_days)
    affinity = latent[[f"affinity_{c}" for c in CATEGORIES]].to_numpy()
    # Completed orders per day: a visit that is not cancelled (a visit holding nothing is no order, but
    # the slots are independent given the visit, so it changes nothing below).
    completed = (_visit_probability(latent["rate"].to_numpy()[:, None], _visit_factor(days, drift)[None, :])
                 * (1 - P_CANCEL))
    season = _category_season(days)
    cat_first = latent[[f"first_{c}" for c in CATEGORIES]].to_numpy()
    tier_first = np.stack([latent[[f"first_{f}_tier{k + 1}" for k in range(MAX_TIER)]].to_numpy()
                           for f in world.families], axis=1)
    spend = latent["spend"].to_numpy()
    eligible = np.zeros((len(table), len(latent)), dtype=bool)
    probability = np.zeros((len(table), len(latent)))
    for row, offer in enumerate(table.itertuples(index=False)):
        if offer.offer_type == CROSS_SELL:
            c = CATEGORIES.index(offer.target)
            chosen = cat_first[:, c] > t
            prob = _cross_sell_probability(world, c, t, affinity[chosen], completed[chosen], season,
                                           tier_first[chosen])
        else:
            f = world.families.index(offer.target)
            owned = tier_first[:, f, :] <= t
            top = np.where(owned.any(axis=1), MAX_TIER - np.argmax(owned[:, ::-1], axis=1), 0)
            chosen = (top >= 1) & (top < MAX_TIER)
            top_day = tier_first[chosen, f, top[chosen] - 1].astype(np.int64)
            p_up = _upgrade_probability(world.upgrade_base[f], spend[chosen, None], days[None, :] - top_day[:, None])
            prob = 1.0 - np.prod(1.0 - completed[chosen] * p_up, axis=1)
        eligible[row] = chosen
        probability[row, chosen] = prob
    return eligible, probability


def _cross_sell_probability(world: _World, c: int, t: int, affinity: np.ndarray, completed: np.ndarray,
                            season: np.ndarray, tier_first: np.ndarray) -> np.ndarray:
    """P(first purchase of category ``c`` in the horizon) for customers who never bought it.

    Per completed order, category ``c`` is missed if none of its slots is held and no same-basket add-on
    from another category lands in it. The one state-dependent part is the "later" trigger from an
    antecedent family ``A`` in another category: if the customer first bought ``A`` by the cutoff, its lag
    window is known; otherwise the first purchase of ``A`` may happen inside the horizon, and the sum over
    its day (or never) is exact because, before it, ``A``'s slot probability does not depend on the state.
    """
    n, horizon = completed.shape
    days = t + 1 + np.arange(horizon)
    in_c = world.slot_cat == c
    cross = [k for k in range(len(world.lt_family))
             if world.prod_cat[world.lt_product[k]] == c and world.fam_cat[world.lt_family[k]] != c]
    triggered_slots = {int(world.lt_slot[k]) for k in cross}

    # No slot of c held (same-category "later" pairs never fire: their antecedent is in c, never bought).
    miss = np.ones((n, horizon))
    for slot in np.flatnonzero(in_c):
        if slot not in triggered_slots:
            miss *= 1.0 - _slot_probability(affinity[:, [c]], world.slot_weight[slot], season[None, :, c])
    antecedent = int(world.lt_family[cross[0]]) if cross else -1
    antecedent_slot = int(np.flatnonzero(world.slot_family == antecedent)[0]) if cross else -1
    no_addon_from_antecedent = 1.0
    for k in range(len(world.sb_slot)):
        slot = int(world.sb_slot[k])
        if world.prod_cat[world.sb_product[k]] != c or world.slot_cat[slot] == c:
            continue  # an add-on into another category, or one whose antecedent is itself in c
        if slot == antecedent_slot:
            no_addon_from_antecedent *= 1.0 - world.sb_prob[k]
            continue
        a = world.slot_cat[slot]
        held = _slot_probability(affinity[:, [a]], world.slot_weight[slot], season[None, :, a])
        miss *= 1.0 - held * world.sb_prob[k]
    if not cross:
        return 1.0 - np.prod(1.0 - completed + completed * miss, axis=1)

    a_cat = world.slot_cat[antecedent_slot]
    held_a = _slot_probability(affinity[:, [a_cat]], world.slot_weight[antecedent_slot], season[None, :, a_cat])
    p_addon = 1.0 - no_addon_from_antecedent

    def miss_triggered(since_first: np.ndarray) -> np.ndarray:
        """Miss factor of the triggered slots given days since the first antecedent purchase (n, H)."""
        out = np.ones((n, horizon))
        for k in cross:
            slot = world.lt_slot[k]
            boost = world.lt_boost[k] * _in_window(since_first, world.lt_lag[k])
            out *= 1.0 - _slot_probability(affinity[:, [c]], world.slot_weight[slot], season[None, :, c], boost)
        return out

    first = tier_first[:, antecedent, :].min(axis=1).astype(np.int64)
    # A first purchase by the cutoff fixes the window; later purchases of A only bring add-ons.
    after_known = 1.0 - completed + completed * miss * miss_triggered(days[None, :] - first[:, None]) \
        * (1.0 - held_a * p_addon)
    known = np.prod(after_known, axis=1)

    # No purchase of A yet: sum over the day j of the first one (or none), each path without c.
    idle = miss * miss_triggered(np.full((n, horizon), -1))  # no window open
    stay = 1.0 - completed + completed * idle * (1.0 - held_a)  # neither A nor c today
    first_today = completed * idle * held_a * (1.0 - p_addon)  # A today, c not
    before = np.cumprod(np.c_[np.ones(n), stay[:, :-1]], axis=1)
    unknown = before[:, -1] * stay[:, -1]
    for j in range(horizon):
        since = np.broadcast_to(np.arange(horizon) - j, (n, horizon))
        after = 1.0 - completed + completed * miss * miss_triggered(since) * (1.0 - held_a * p_addon)
        unknown += before[:, j] * first_today[:, j] * np.prod(after[:, j + 1:], axis=1)
    return 1.0 - np.where(first <= t, known, unknown)
