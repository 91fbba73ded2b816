"""Mine "bought together" and "bought later" over the lookback window ending on the run date and publish them.

Per configured level (product, category): association rules with every measure. From the product
level: bundles and the web shop's "bought together" list; from the customers' first purchases: the
follow-up rules. Writes ``lake/basket_rules/run_date=...`` (the model features read it) and replaces the
run date's rows of the warehouse tables ``basket_rules``, ``followup_rules``, ``bundles`` and
``bought_together`` (one transaction each).

    python -m jobs.basket_rules --run-date 2025-11-30 [--env postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xsell import baskets, followup, inputs, lake, offers, rules, runtime, schemas, warehouse
from xsell.config import RuleSettings, Settings
from xsell.spark import Cached, session

log = logging.getLogger("xsell.basket_rules")

#: The lake's copy of the rules: the warehouse columns, with the antecedent as an array.
LAKE_RULES_DDL = ", ".join(
    f"{name} {'ARRAY<STRING>' if name == 'antecedent' else _type}"
    for name, _type in (
        (name, {"DATE": "DATE", "VARCHAR": "STRING", "BIGINT": "BIGINT", "BOOLEAN": "BOOLEAN"}.get(sql, "DOUBLE"))
        for name, sql in schemas.BASKET_RULES_COLUMNS
    )
)


@dataclass(frozen=True)
class Outcome:
    """What a run mined, per level: the rules (pandas) and how they were mined."""

    rules: dict[str, pd.DataFrame]
    mined: dict[str, rules.Mined]


def _targets(products: DataFrame, offer_list: list[offers.Offer], level: str) -> list[str]:
    """The consequents worth mining when rules are restricted to the offers (an action)."""
    if level == "category":
        return sorted({offers.category_of(products, offer) for offer in offer_list})
    wanted = F.lit(False)
    for offer in offer_list:
        column = "category" if offer.offer_type == offers.CROSS_SELL else "family"
        wanted = wanted | (F.col(column) == offer.target)
    return sorted(row["product_id"] for row in products.filter(wanted).select("product_id").collect())


def mining_options(config: RuleSettings) -> dict:
    """The keyword arguments of :func:`xsell.rules.mine_rules` that come from the configuration."""
    return dict(min_support=config.min_support, min_confidence=config.min_confidence, max_len=config.max_len,
                excluded=config.excluded_items, max_items=config.max_basket_items, budget=config.max_itemsets,
                adaptive=config.adaptive_support, fdr=config.fdr)


def _level_baskets(product_baskets: DataFrame, products: DataFrame, level: str) -> DataFrame:
    if level == "product":
        return product_baskets
    hierarchy = products.select(F.col("product_id").alias("item"), F.col("category").alias("level_item"))
    return rules.to_level(product_baskets, hierarchy)


def mine(spark: SparkSession, settings: Settings, run_date: dt.date) -> tuple[Outcome, DataFrame, DataFrame]:
    """Mine every level; returns the outcome, the order lines of the window and the product snapshot."""
    config = settings.rules
    data = inputs.load(spark, settings, run_date)
    end = run_date + dt.timedelta(days=1)
    lines = data.order_lines.filter(
        F.col("order_ts") >= F.lit(end - dt.timedelta(days=config.lookback_days)).cast("timestamp"))
    product_baskets = baskets.build_baskets(lines).select("items").cache()
    mined_rules, mined = {}, {}
    try:
        for level in config.levels:
            consequents = _targets(data.products, data.offers, level) if config.restrict_to_offers else None
            found, how = rules.mine_rules(_level_baskets(product_baskets, data.products, level),
                                          consequents=consequents, **mining_options(config))
            for note in how.notes:
                log.warning("%s level: %s", level, note)
            log.info("%s level: %d rules from %d baskets (%d empty, %d over %d items left out), min count %d",
                     level, len(found), how.baskets.kept, how.baskets.empty, how.baskets.oversized,
                     config.max_basket_items, how.min_count)
            mined_rules[level], mined[level] = found, how
    finally:
        product_baskets.unpersist()
    return Outcome(mined_rules, mined), lines, data.products


def rules_frame(spark: SparkSession, outcome: Outcome, run_date: dt.date) -> DataFrame:
    """The lake's rule rows of ``outcome`` (antecedent as an array)."""
    parts = [
        found.rename(columns={"count": "rule_count"}).assign(
            level=level, run_date=run_date, min_count=outcome.mined[level].min_count,
            antecedent=found["antecedent"].map(list))
        for level, found in outcome.rules.items()
    ]
    columns = [name for name, _ in schemas.BASKET_RULES_COLUMNS]
    table = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    return spark.createDataFrame(table, LAKE_RULES_DDL)


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str) -> Outcome:
    config = settings.rules
    outcome, lines, products = mine(spark, settings, run_date)
    mined_frame = rules_frame(spark, outcome, run_date)
    lake.write_partitions(mined_frame, settings.lake, lake.BASKET_RULES, partition_by=("run_date",))
    stored = lake.read(spark, settings.lake, lake.BASKET_RULES).filter(F.col("run_date") == F.lit(run_date))
    target = warehouse.open_warehouse(settings)
    target.publish(warehouse.BASKET_RULES, stored.withColumn("antecedent", F.to_json("antecedent")), run_date=run_date, run_id=run_id)

    with Cached() as cache:  # the rules read the first purchases four times
        later = followup.followup_rules(
            cache(followup.first_purchases(lines)), min_lag_days=config.followup.min_lag_days,
            max_lag_days=config.followup.max_lag_days, min_customers=config.followup.min_customers,
            min_confidence=config.followup.min_confidence)
        target.publish(warehouse.FOLLOWUP_RULES, later.withColumn("run_date", F.lit(run_date)),
                       run_date=run_date, run_id=run_id)

    if "product" in outcome.rules:
        product_level = outcome.mined["product"]
        prices = products.select("product_id", "list_price", "margin_rate").toPandas()
        found_bundles = rules.bundles(product_level.itemsets, prices, baskets=product_level.baskets.kept,
                                      max_size=config.bundles.max_size, min_lift=config.bundles.min_lift,
                                      top=config.bundles.top)
        bundle_frame = spark.createDataFrame(
            found_bundles.assign(products=found_bundles["products"].map(json.dumps), run_date=run_date),
            "products STRING, size INT, basket_count BIGINT, support DOUBLE, lift DOUBLE, list_price DOUBLE, "
            "margin DOUBLE, expected_margin DOUBLE, rank INT, run_date DATE")
        target.publish(warehouse.BUNDLES, bundle_frame, run_date=run_date, run_id=run_id)
        shop = rules.bought_together(outcome.rules["product"], top=config.bought_together_top)
        shop_frame = spark.createDataFrame(
            shop.assign(run_date=run_date, rank=shop["rank"].astype("int32")),
            "product_id STRING, rank INT, recommended_product_id STRING, confidence DOUBLE, lift DOUBLE, "
            "support DOUBLE, run_date DATE")
        target.publish(warehouse.BOUGHT_TOGETHER, shop_frame, run_date=run_date, run_id=run_id)
    return outcome


def main(argv: list[str] | None = None) -> None:
    args = runtime.parser(__doc__.splitlines()[0]).parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-basket-rules"), settings, args.run_date, run_id=args.run_id)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
