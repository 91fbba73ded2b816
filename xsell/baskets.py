"""Baskets and association rules ("bought together").

A basket is one order's distinct products among its completed lines. Orders whose every line is
cancelled yield no basket; giant baskets (more than ``max_items`` products, such as wholesale orders)
are left out because FP-Growth's cost explodes with basket size.
"""

from __future__ import annotations

import datetime as dt

from pyspark.ml.fpm import FPGrowth
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from xsell import schemas



def sold() -> Column:
    """Lines that are a sale: completed with a positive quantity (a function: a Column needs a session)."""
    return (F.col("status") == "completed") & (F.col("quantity") > 0)


def build_baskets(order_lines: DataFrame, *, max_items: int) -> DataFrame:
    """One row per order with at least one product sold: ``order_id``, ``customer_id``, sorted ``items``.

    ``items`` holds each product once (FP-Growth rejects duplicate items in a basket).
    """
    baskets = (
        order_lines.filter(sold())
        .groupBy("order_id")
        .agg(
            F.first("customer_id", ignorenulls=True).alias("customer_id"),
            F.min("order_ts").alias("order_ts"),
            F.array_sort(F.collect_set("product_id")).alias("items"),
        )
    )
    return baskets.filter(F.size("items") <= max_items)


def mine_rules(baskets: DataFrame, *, min_support: float, min_confidence: float, run_date: dt.date) -> DataFrame:
    """Association rules with one consequent: support, confidence and lift, plus both sides' support.

    Uses Spark MLlib's FP-Growth (STYLE rule 12). Supports are fractions of all baskets given.
    """
    model = FPGrowth(itemsCol="items", minSupport=min_support, minConfidence=min_confidence).fit(baskets.select("items"))
    total = baskets.count()
    itemsets = model.freqItemsets.select(F.array_sort("items").alias("itemset"), (F.col("freq") / total).alias("itemset_support"))
    rules = model.associationRules.select(
        F.array_sort("antecedent").alias("antecedent"),
        F.col("consequent")[0].alias("consequent"),
        "confidence",
        "lift",
        "support",
    )
    singles = itemsets.filter(F.size("itemset") == 1).select(
        F.col("itemset")[0].alias("consequent"), F.col("itemset_support").alias("consequent_support")
    )
    return (
        rules.join(itemsets.withColumnRenamed("itemset", "antecedent")
                   .withColumnRenamed("itemset_support", "antecedent_support"), on="antecedent", how="inner")
        .join(singles, on="consequent", how="inner")
        .select(
            F.lit(run_date).alias("run_date"),
            "antecedent",
            "consequent",
            "antecedent_support",
            "consequent_support",
            "support",
            "confidence",
            "lift",
            F.lit(total).cast("long").alias("baskets"),
        )
    )


def rules_for_warehouse(rules: DataFrame) -> DataFrame:
    """The ``basket_rules`` warehouse columns: the antecedent as a JSON array of product ids."""
    columns = [name for name, _ in schemas.BASKET_RULES_COLUMNS]
    return rules.withColumn("antecedent", F.to_json("antecedent")).select(*columns)
