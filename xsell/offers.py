"""Offers, their eligibility and their labels.

- cross-sell: a category the customer has never bought; adopting = a first purchase in the category;
- up-sell: a tiered family in which the customer owns a tier below the top and none higher; adopting =
  buying a higher tier than the highest owned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from xsell import schemas
from xsell.baskets import sold
from xsell.config import OfferSettings
from xsell.features import slug

CROSS_SELL, UP_SELL = "cross-sell", "up-sell"


@dataclass(frozen=True)
class Offer:
    offer_id: str
    offer_type: str
    target: str

    @property
    def model_name(self) -> str:
        """The registered model's name: one model per offer."""
        return f"xsell_{slug(self.offer_type)}_{slug(self.target)}"


def resolve(configured: str | Sequence[OfferSettings], *, categories: Sequence[str], families: Sequence[str]) -> list[Offer]:
    """The configured offers, or with ``auto`` one cross-sell per category and one up-sell per family."""
    if configured == "auto":
        return [Offer(f"{CROSS_SELL}:{c}", CROSS_SELL, c) for c in sorted(categories)] + [
            Offer(f"{UP_SELL}:{f}", UP_SELL, f) for f in sorted(families)]
    offers = [Offer(o.offer_id, o.offer_type, o.target) for o in configured]
    for offer in offers:
        known = categories if offer.offer_type == CROSS_SELL else families
        if offer.target not in known:
            raise ValueError(f"offer {offer.offer_id}: target {offer.target!r} is not a known "
                             f"{'category' if offer.offer_type == CROSS_SELL else 'family'} of the catalogue")
    return offers


def catalogue_levels(products: DataFrame) -> tuple[list[str], list[str]]:
    """Categories and tiered families of a catalogue (an action: they fix the feature columns)."""
    rows = products.select("category", "family").distinct().collect()
    categories = sorted({row.category for row in rows})
    families = sorted({row.family for row in rows if row.family is not None})
    return categories, families


def eligible(offer: Offer, *, cooldown_days: int = 0) -> Column:
    """Eligibility on a feature row as of the cutoff: cross-sell to customers who never bought the
    category; up-sell to owners of a lower tier with no higher one, not within ``cooldown_days`` of
    their last purchase in the family."""
    if offer.offer_type == CROSS_SELL:
        return F.col(f"spend__{slug(offer.target)}") == 0
    tier = F.col(f"tier__{slug(offer.target)}")
    cooled = F.col(f"days_since_family__{slug(offer.target)}") > cooldown_days
    return (tier >= 1) & (tier < schemas.MAX_TIER) & cooled


def category_of(products: DataFrame, offer: Offer) -> str:
    """The product category an offer sells into (an action for up-sell offers)."""
    if offer.offer_type == CROSS_SELL:
        return offer.target
    row = products.filter(F.col("family") == offer.target).select("category").first()
    return row["category"] if row else offer.target


def labels(order_lines: DataFrame, products: DataFrame, features: DataFrame, offer: Offer, *, start: dt.date,
           end: dt.date) -> DataFrame:
    """``customer_id, label`` for the customers of ``features``: 1 when they adopt in [start, end)."""
    window = (
        order_lines.filter(sold())
        .filter((F.col("order_ts") >= F.lit(start).cast("timestamp")) & (F.col("order_ts") < F.lit(end).cast("timestamp")))
        .join(products.select("product_id", "category", "family", "tier"), on="product_id", how="inner")
    )
    if offer.offer_type == CROSS_SELL:
        adopters = window.filter(F.col("category") == offer.target).select("customer_id").distinct()
        adopted = features.join(adopters.withColumn("label", F.lit(1.0)), on="customer_id", how="left")
    else:
        bought = window.filter(F.col("family") == offer.target).groupBy("customer_id").agg(F.max("tier").alias("new_tier"))
        adopted = features.join(bought, on="customer_id", how="left").withColumn(
            "label", F.when(F.col("new_tier") > F.col(f"tier__{slug(offer.target)}"), 1.0))
    return adopted.select("customer_id", F.coalesce(F.col("label"), F.lit(0.0)).alias("label"))


def rule_feature(rules: DataFrame, order_lines: DataFrame, products: DataFrame, offer: Offer, *,
                 cutoff: dt.date) -> DataFrame:
    """Per customer, the strongest single-item rule leading from a product they bought before the cutoff
    to a product of the offer's target: ``customer_id, rule_lift, rule_antecedent, rule_consequent``."""
    target_column = "category" if offer.offer_type == CROSS_SELL else "family"
    targets = products.filter(F.col(target_column) == offer.target).select(F.col("product_id").alias("consequent"))
    strongest = (
        rules.filter((F.col("level") == "product") & (F.size("antecedent") == 1))
        .join(targets, on="consequent", how="inner")
        .select(F.col("antecedent")[0].alias("product_id"), "consequent", "lift")
    )
    bought = (
        order_lines.filter(sold() & (F.col("order_ts") < F.lit(cutoff).cast("timestamp")))
        .filter(F.col("customer_id").isNotNull())
        .select("customer_id", "product_id").distinct()
    )
    ranked = bought.join(strongest, on="product_id", how="inner").withColumn(
        "rank", F.row_number().over(
            Window.partitionBy("customer_id").orderBy(F.desc("lift"), "product_id", "consequent")))
    return ranked.filter(F.col("rank") == 1).select(
        "customer_id", F.col("lift").alias("rule_lift"), F.col("product_id").alias("rule_antecedent"),
        F.col("consequent").alias("rule_consequent"))
