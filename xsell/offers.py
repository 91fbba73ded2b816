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


def model_features(offer: Offer, columns: Sequence[str], *, up_sell_scope: str = "family") -> list[str]:
    """The feature columns ``offer``'s model uses. Cross-sells use all of them: the other categories'
    spend says which kind of customer this is. Up-sells with ``up_sell_scope="family"`` use the
    customer-wide columns (activity, spend, tenure, rule lift) and the target family's own (tier owned,
    days since its purchases); with a few hundred owners per family, every other category's and
    family's columns mostly add noise (on the demo world: 0.02-0.07 ROC-AUC out of time)."""
    if offer.offer_type != UP_SELL or up_sell_scope == "all":
        return list(columns)
    own = f"__{slug(offer.target)}"
    return [column for column in columns if "__" not in column or column.endswith(own)]


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


def column(kind: str, offer: Offer) -> str:
    """The column of ``offer`` in frames that hold one column per offer (``label``, ``rule_lift``)."""
    return f"{kind}__{slug(offer.offer_id)}"


def labels_of_all(order_lines: DataFrame, products: DataFrame, features: DataFrame, offers: Sequence[Offer], *,
                  start: dt.date, end: dt.date) -> DataFrame:
    """``customer_id`` and one ``label__<offer>`` per offer for the customers of ``features``, in one pass
    over the window: 1 when they adopt in [start, end). Meaningful for eligible customers only."""
    window = (
        order_lines.filter(sold())
        .filter((F.col("order_ts") >= F.lit(start).cast("timestamp")) & (F.col("order_ts") < F.lit(end).cast("timestamp")))
        .join(products.select("product_id", "category", "family", "tier"), on="product_id", how="inner")
    )
    bought = window.groupBy("customer_id").agg(*[
        (F.max((F.col("category") == offer.target).cast("double")) if offer.offer_type == CROSS_SELL
         else F.max(F.when(F.col("family") == offer.target, F.col("tier")))).alias(f"_bought_{k}")
        for k, offer in enumerate(offers)
    ])
    adopted = []
    for k, offer in enumerate(offers):
        if offer.offer_type == CROSS_SELL:
            adopted.append(F.coalesce(F.col(f"_bought_{k}"), F.lit(0.0)).alias(column("label", offer)))
        else:
            higher = F.col(f"_bought_{k}") > F.col(f"tier__{slug(offer.target)}")
            adopted.append(F.when(higher, 1.0).otherwise(0.0).alias(column("label", offer)))
    return features.join(bought, on="customer_id", how="left").select("customer_id", *adopted)


def labels(order_lines: DataFrame, products: DataFrame, features: DataFrame, offer: Offer, *, start: dt.date,
           end: dt.date) -> DataFrame:
    """``customer_id, label`` for the customers of ``features``: 1 when they adopt in [start, end)."""
    every = labels_of_all(order_lines, products, features, [offer], start=start, end=end)
    return every.withColumnRenamed(column("label", offer), "label")


def _rules_from_history(rules: DataFrame, order_lines: DataFrame, *, cutoff: dt.date) -> DataFrame:
    """``customer_id, product_id, consequent, lift``: every single-item product rule whose antecedent the
    customer bought before the cutoff."""
    single = (
        rules.filter((F.col("level") == "product") & (F.size("antecedent") == 1))
        .select(F.col("antecedent")[0].alias("product_id"), "consequent", "lift")
    )
    bought = (
        order_lines.filter(sold() & (F.col("order_ts") < F.lit(cutoff).cast("timestamp")))
        .filter(F.col("customer_id").isNotNull())
        .select("customer_id", "product_id").distinct()
    )
    return bought.join(single, on="product_id", how="inner")


def rule_lifts_of_all(rules: DataFrame, order_lines: DataFrame, products: DataFrame, offers: Sequence[Offer], *,
                      cutoff: dt.date) -> DataFrame:
    """``customer_id`` and one ``rule_lift__<offer>`` per offer (null without a rule): the lift of the
    strongest single-item rule from a product bought before the cutoff to a product of the target."""
    targets = products.select(F.col("product_id").alias("consequent"), "category", "family")
    matched = _rules_from_history(rules, order_lines, cutoff=cutoff).join(targets, on="consequent", how="inner")
    return matched.groupBy("customer_id").agg(*[
        F.max(F.when(F.col("category" if offer.offer_type == CROSS_SELL else "family") == offer.target,
                     F.col("lift"))).alias(column("rule_lift", offer))
        for offer in offers
    ])


def rule_feature(rules: DataFrame, order_lines: DataFrame, products: DataFrame, offer: Offer, *,
                 cutoff: dt.date) -> DataFrame:
    """Per customer, the strongest single-item rule leading from a product they bought before the cutoff
    to a product of the offer's target: ``customer_id, rule_lift, rule_antecedent, rule_consequent``."""
    target_column = "category" if offer.offer_type == CROSS_SELL else "family"
    targets = products.filter(F.col(target_column) == offer.target).select(F.col("product_id").alias("consequent"))
    ranked = _rules_from_history(rules, order_lines, cutoff=cutoff).join(targets, on="consequent", how="inner").withColumn(
        "rank", F.row_number().over(
            Window.partitionBy("customer_id").orderBy(F.desc("lift"), "product_id", "consequent")))
    return ranked.filter(F.col("rank") == 1).select(
        "customer_id", F.col("lift").alias("rule_lift"), F.col("product_id").alias("rule_antecedent"),
        F.col("consequent").alias("rule_consequent"))
