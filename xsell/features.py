"""Point-in-time customer features: one row per customer as of a cutoff.

Only order lines strictly before the cutoff are used, whatever the caller passes in: features as of t
never see t or later, which is what makes time-split training honest.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from xsell.baskets import sold
from xsell.schemas import CHANNELS

WINDOWS = (30, 90, 365)
#: Days back at which "the same window a year earlier" starts.
YEAR = 365
#: Stands in for "never" in day counts, so that the column stays numeric for the model.
NEVER_DAYS = 9999


def slug(name: str) -> str:
    """A column-safe form of a category or family name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _days_before(cutoff: dt.date, column: str = "order_ts") -> Column:
    return F.datediff(F.lit(cutoff), F.to_date(column))


def customer_features(order_lines: DataFrame, products: DataFrame, customers: DataFrame, *, cutoff: dt.date,
                      categories: Sequence[str], families: Sequence[str], regions: Sequence[str] = ()) -> DataFrame:
    """Recency, frequency and spend over several windows and the same windows a year earlier, lifetime
    orders and the order rate since the first purchase, category shares and days since each category, the
    highest tier owned and days since the first and the last purchase per family, channel mix, region,
    tenure and the returns rate.

    ``categories``, ``families`` and ``regions`` fix the set of columns, so that features built at
    different cutoffs line up. Customers without any purchase before the cutoff get zeros and
    ``NEVER_DAYS``.
    """
    lines = (
        order_lines.filter(F.col("order_ts") < F.lit(cutoff).cast("timestamp"))
        .filter(F.col("customer_id").isNotNull())
        .join(products.select("product_id", "category", "family", "tier"), on="product_id", how="inner")
        .withColumn("amount", F.col("quantity") * F.col("unit_price"))
        .withColumn("days_ago", _days_before(cutoff))
    )
    sales = lines.filter(sold())
    aggregates = [F.min("days_ago").alias("recency_days"), F.max("days_ago").alias("first_order_days")]
    # Orders are counted from one row per order (its newest line's age): an order has a line in a window
    # exactly when that age is in it. Several distinct counts in one aggregation would make Spark copy
    # every line once per count (an Expand) before aggregating.
    orders = (sales.groupBy("customer_id", "order_id").agg(F.min("days_ago").alias("order_days"))
              .groupBy("customer_id").agg(F.count("*").alias("orders_total"), *[
                  F.sum((F.col("order_days") <= days).cast("long")).alias(f"orders_{days}d") for days in WINDOWS]))
    for days in WINDOWS:
        in_window = F.col("days_ago") <= days
        year_before = (F.col("days_ago") > YEAR) & (F.col("days_ago") <= YEAR + days)
        aggregates += [
            F.sum(F.when(in_window, F.col("amount")).otherwise(0.0)).alias(f"spend_{days}d"),
            F.sum(F.when(year_before, F.col("amount")).otherwise(0.0)).alias(f"spend_{days}d_year_before"),
        ]
    # The same season one year earlier: spend in the 30 days that followed the cutoff's date last year.
    last_year = (F.col("days_ago") > 335) & (F.col("days_ago") <= 365)
    aggregates.append(F.sum(F.when(last_year, F.col("amount")).otherwise(0.0)).alias("spend_next30d_last_year"))
    aggregates.append(F.sum("amount").alias("spend_total"))
    for category in categories:
        is_category = F.col("category") == category
        aggregates += [
            F.sum(F.when(is_category, F.col("amount")).otherwise(0.0)).alias(f"spend__{slug(category)}"),
            F.min(F.when(is_category, F.col("days_ago"))).alias(f"days_since__{slug(category)}"),
        ]
    for family in families:
        in_family = F.col("family") == family
        aggregates += [
            F.max(F.when(in_family, F.col("tier"))).alias(f"tier__{slug(family)}"),
            F.min(F.when(in_family, F.col("days_ago"))).alias(f"days_since_family__{slug(family)}"),
            # The first purchase opens "bought later" windows (the maintenance kit a month after the bike).
            F.max(F.when(in_family, F.col("days_ago"))).alias(f"days_since_first_family__{slug(family)}"),
            # Days since the highest tier owned was first bought: how long the customer has had the
            # product an up-sell would replace (the earliest line of the top tier: ordered by tier,
            # then by age).
            F.max_by(F.when(in_family, F.col("days_ago")),
                     F.when(in_family, F.col("tier") * F.lit(1_000_000) + F.col("days_ago")))
            .alias(f"days_since_top_tier__{slug(family)}"),
        ]
    for channel in CHANNELS:
        aggregates.append(F.avg((F.col("channel") == channel).cast("double")).alias(f"channel__{channel}"))
    history = sales.groupBy("customer_id").agg(*aggregates).join(orders, on="customer_id", how="inner")
    returns = (
        lines.groupBy("customer_id")
        .agg(F.sum(F.when(F.col("status") == "returned", 1).otherwise(0)).alias("returned_lines"), F.count("*").alias("all_lines"))
        .select("customer_id", (F.col("returned_lines") / F.col("all_lines")).alias("returns_rate"))
    )
    base = customers.filter(F.col("signup_date") < F.lit(cutoff)).select(
        "customer_id", F.datediff(F.lit(cutoff), F.col("signup_date")).alias("tenure_days"),
        *[(F.col("region") == region).cast("double").alias(f"region__{slug(region)}") for region in regions])
    features = base.join(history, on="customer_id", how="left").join(returns, on="customer_id", how="left")
    shares = [
        F.coalesce(F.col(f"spend__{slug(category)}") / F.when(F.col("spend_total") > 0, F.col("spend_total")), F.lit(0.0))
        .alias(f"share__{slug(category)}")
        for category in categories
    ]
    day_columns = ["recency_days"] + [f"days_since__{slug(c)}" for c in categories] + [
        f"days_since_family__{slug(f)}" for f in families] + [f"days_since_first_family__{slug(f)}" for f in families] + [
        f"days_since_top_tier__{slug(f)}" for f in families]
    filled = features.fillna(NEVER_DAYS, subset=day_columns).fillna(0)
    # Orders per 30 days since the first purchase (at least a month, so one order is not a huge rate):
    # a customer's visit rate, which windows cut short for newcomers.
    rate = (F.col("orders_total") * 30.0 / F.greatest(F.col("first_order_days"), F.lit(30))).alias("order_rate_30d")
    return filled.select("*", *shares, rate).withColumn("cutoff", F.lit(cutoff))


def model_columns(features: DataFrame) -> list[str]:
    """The numeric feature columns a model uses (everything but the id and the cutoff)."""
    return [name for name, kind in features.dtypes if name not in ("customer_id", "cutoff") and kind != "string"]


#: Prefixes of the non-negative, heavy-tailed columns: counts, amounts, rates and day counts.
HEAVY_TAILED = ("orders_", "spend", "days_since", "recency_days", "first_order_days", "tenure_days", "order_rate_",
                "rule_lift")


def heavy_tailed(columns: Sequence[str]) -> list[str]:
    """The counts, amounts, rates and day counts among ``columns`` (not shares, flags, tiers or rates
    bounded by 1), which a linear model should see on a log scale."""
    return [column for column in columns if column.startswith(HEAVY_TAILED)]


def lookback_days(column: str) -> int | None:
    """How far back before the cutoff a windowed feature looks (``spend_30d_year_before``: 395 days);
    None for the others, which summarise whatever history there is."""
    if column == "spend_next30d_last_year":
        return YEAR
    found = re.fullmatch(r"[a-z]+_(\d+)d(_year_before)?", column)
    if not found:
        return None
    return int(found.group(1)) + (YEAR if found.group(2) else 0)


def covered(columns: Sequence[str], *, history_days: int) -> tuple[list[str], list[str]]:
    """``columns`` split into those whose window fits into ``history_days`` of order history before the
    oldest cutoff a model sees, and those it does not. A window reaching back before the first order is
    empty (or cut short) at early cutoffs and filled at later ones: a model trained on the early cutoffs
    learns nothing from it, or the wrong thing, and is then scored out of time on filled values (on the
    demo's 13 months, ``spend_next30d_last_year`` was zero at every training cutoff and turned three
    up-sell models' rankings upside down out of time)."""
    kept, left_out = [], []
    for column in columns:
        days = lookback_days(column)
        (left_out if days is not None and days > history_days else kept).append(column)
    return kept, left_out
