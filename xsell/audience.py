"""From scores to the audience the CRM imports: consent, ranking, arbitration, control cell, reasons."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from xsell import schemas
from xsell.offers import CROSS_SELL, Offer

TREATMENT, CONTROL = "treatment", "control"
#: Buckets of the control hash; the control share is resolved to 1/10,000.
HASH_BUCKETS = 10_000


def consenting(customers: DataFrame) -> DataFrame:
    """Customers who may be profiled and contacted: consent must be explicitly true (fails closed)."""
    return customers.filter(F.col("marketing_consent") == F.lit(True)).select("customer_id")


def offer_margin(products: DataFrame, offer: Offer) -> float:
    """The offer's value if taken: the mean margin of its active target products (an action)."""
    column = "category" if offer.offer_type == CROSS_SELL else "family"
    row = (
        products.filter((F.col(column) == offer.target) & F.col("active"))
        .agg(F.avg(F.col("list_price") * F.col("margin_rate")).alias("margin"))
        .first()
    )
    return float(row["margin"] or 0.0)


def rank_offer(scored: DataFrame, offer: Offer, *, margin: float, category: str) -> DataFrame:
    """Rank within the offer by score: rank, decile and the expected value ``score x margin``."""
    order = Window.orderBy(F.desc("score"), "customer_id")
    return scored.select(
        F.lit(offer.offer_id).alias("offer_id"),
        F.lit(offer.offer_type).alias("offer_type"),
        "customer_id",
        "score",
        (F.col("score") * F.lit(margin)).alias("expected_value"),
        F.row_number().over(order).alias("rank"),
        F.ntile(10).over(order).alias("decile"),
        "reason",
        F.lit(category).alias("category"),
    )


def arbitrate(ranked: DataFrame, *, max_offers: int, diversity_column: str | None = None) -> DataFrame:
    """At most ``max_offers`` offers per customer, those of highest expected value; with
    ``diversity_column``, at most one offer per value of it (for example the product category)."""
    if diversity_column is not None:
        per_value = Window.partitionBy("customer_id", diversity_column).orderBy(F.desc("expected_value"), "offer_id")
        ranked = ranked.withColumn("_in_value", F.row_number().over(per_value)).filter(F.col("_in_value") == 1).drop("_in_value")
    best_first = Window.partitionBy("customer_id").orderBy(F.desc("expected_value"), "offer_id")
    return ranked.withColumn("_choice", F.row_number().over(best_first)).filter(F.col("_choice") <= max_offers).drop("_choice")


def assign_cell(frame: DataFrame, *, control_share: float, salt: str) -> DataFrame:
    """A deterministic hash of (customer, offer, salt) puts each row in treatment or control; the same
    customer keeps the same cell for an offer across runs while the salt is unchanged."""
    bucket = F.pmod(F.xxhash64(F.col("customer_id"), F.col("offer_id"), F.lit(salt)), F.lit(HASH_BUCKETS))
    threshold = int(round(control_share * HASH_BUCKETS))
    return frame.withColumn("cell", F.when(bucket < threshold, CONTROL).otherwise(TREATMENT))


def describe_feature(name: str) -> str:
    """A feature column as a marketer reads it."""
    stem, _, subject = name.partition("__")
    subject = subject.replace("_", " ")
    phrases = {
        "spend": f"spends on {subject}", "share": f"large share of spend on {subject}",
        "days_since": f"time since the last {subject} purchase", "tier": f"owns a {subject}",
        "days_since_family": f"time since buying a {subject}",
    }
    if stem in phrases:
        return phrases[stem]
    return {"rule_lift": "strong basket rule", "tenure_days": "long-standing customer", "recency_days": "time since the last order",
            "returns_rate": "returns", "spend_total": "total spend", "spend_next30d_last_year": "bought in this season last year",
            }.get(name, name.replace("_", " "))


def reason(offer: Offer, *, max_reasons: int = 3) -> F.Column:
    """Up to ``max_reasons`` short reasons a marketer can read, separated by `` | ``: the strongest rule
    leading to the offer when there is one, then the model's top drivers for this customer."""
    rule_reason = F.format_string("bought %s; people who buy it buy %s (lift %.1f)", F.col("rule_antecedent_name"),
                                  F.col("rule_consequent_name"), F.col("rule_lift"))
    reasons = F.concat(
        F.when(F.col("rule_antecedent_name").isNotNull(), F.array(rule_reason)).otherwise(F.array().cast("array<string>")),
        F.coalesce(F.col("drivers_text"), F.array().cast("array<string>")),
    )
    chosen = F.slice(reasons, 1, max_reasons)
    return F.when(F.size(chosen) > 0, F.array_join(chosen, " | ")).otherwise(F.lit(f"propensity model for {offer.offer_id}"))


def describe_drivers(frame: DataFrame, feature_names: list[str]) -> DataFrame:
    """``drivers`` (feature names) to ``drivers_text`` (readable phrases)."""
    if "drivers" not in frame.columns:
        return frame.withColumn("drivers_text", F.lit(None).cast("array<string>"))
    mapping = F.create_map(*[item for name in feature_names for item in (F.lit(name), F.lit(describe_feature(name)))])
    return frame.withColumn("drivers_text", F.transform("drivers", lambda name: F.coalesce(mapping[name], name)))


def export(frame: DataFrame, *, run_date: dt.date, run_id: str, model_versions: dict[str, tuple[str, str]]) -> DataFrame:
    """The export contract: exactly the allowed columns, in order, nothing else can leak through."""
    names = F.create_map(*[item for offer_id, (name, _) in sorted(model_versions.items())
                           for item in (F.lit(offer_id), F.lit(name))])
    versions = F.create_map(*[item for offer_id, (_, version) in sorted(model_versions.items())
                              for item in (F.lit(offer_id), F.lit(version))])
    enriched = frame.select(
        "*",
        F.lit(run_date).alias("run_date"),
        names[F.col("offer_id")].alias("model_name"),
        versions[F.col("offer_id")].alias("model_version"),
        F.lit(run_id).alias("run_id"),
    )
    return enriched.select(*[name for name, _ in schemas.AUDIENCE_COLUMNS])
