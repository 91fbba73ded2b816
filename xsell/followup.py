""""Bought later" rules: a customer who first buys A first buys B some days later.

A follow-up offer (the maintenance kit a month after the bike) needs three things per pair: how many
customers did it, how much likelier B is after A than in general, and when B came. Each customer counts
once per pair, through the date of their first purchase of each product (B bought before A is not a
follow-up, and a cross-sell offer is about a first purchase anyway).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from xsell.baskets import net_sales


def first_purchases(order_lines: DataFrame) -> DataFrame:
    """``customer_id, product_id, first_date``: each known customer's first net purchase of each product."""
    return (
        net_sales(order_lines)
        .filter(F.col("customer_id").isNotNull())
        .groupBy("customer_id", "product_id")
        .agg(F.min(F.to_date("order_ts")).alias("first_date"))
    )


def followup_rules(firsts: DataFrame, *, min_lag_days: int, max_lag_days: int, min_customers: int,
                   min_confidence: float) -> DataFrame:
    """Pairs (A, B) where at least ``min_customers`` customers first bought B between ``min_lag_days``
    and ``max_lag_days`` days (inclusive) after first buying A; ``firsts`` is :func:`first_purchases`
    (read several times below: cache it, netting runs Python on the cancelled pairs).

    With N the customers with any purchase, n_A those who bought A and n_AB those who followed up:
    ``support`` = n_AB / N, ``confidence`` = n_AB / n_A, ``lift`` = confidence / (n_B / N), and
    ``median_lag_days`` the median of the customers' lags (the CRM's send date).
    """
    product_customers = firsts.groupBy("product_id").agg(F.count("*").alias("product_customers"))
    # A product bought by fewer than min_customers customers can be in no pair: prune before the self-join.
    common = firsts.join(product_customers.filter(F.col("product_customers") >= min_customers),
                         on="product_id", how="inner")
    a = common.select("customer_id", F.col("product_id").alias("antecedent"), F.col("first_date").alias("a_date"))
    b = common.select("customer_id", F.col("product_id").alias("consequent"), F.col("first_date").alias("b_date"))
    lag = F.datediff("b_date", "a_date")
    pairs = (
        a.join(b, on="customer_id", how="inner")
        .filter((F.col("antecedent") != F.col("consequent")) & lag.between(min_lag_days, max_lag_days))
        .groupBy("antecedent", "consequent")
        .agg(F.count("*").alias("followup_customers"), F.median(lag).alias("median_lag_days"))
        .filter(F.col("followup_customers") >= min_customers)
    )
    customers = firsts.agg(F.countDistinct("customer_id").alias("customers"))
    counts_a = product_customers.select(F.col("product_id").alias("antecedent"),
                                        F.col("product_customers").alias("antecedent_customers"))
    counts_b = product_customers.select(F.col("product_id").alias("consequent"),
                                        F.col("product_customers").alias("consequent_customers"))
    confidence = F.col("followup_customers") / F.col("antecedent_customers")
    return (
        pairs.join(counts_a, on="antecedent", how="inner")
        .join(counts_b, on="consequent", how="inner")
        .crossJoin(customers)
        .withColumn("support", F.col("followup_customers") / F.col("customers"))
        .withColumn("confidence", confidence)
        .withColumn("lift", confidence / (F.col("consequent_customers") / F.col("customers")))
        .filter(F.col("confidence") >= min_confidence)
        .select("antecedent", "consequent", "antecedent_customers", "consequent_customers", "followup_customers",
                "customers", "support", "confidence", "lift", F.col("median_lag_days").cast("double"),
                F.lit(min_lag_days).alias("min_lag_days"), F.lit(max_lag_days).alias("max_lag_days"))
    )
