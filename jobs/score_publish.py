"""Score every offer's eligible, consenting customers with its champion and publish the audience.

Features are as of the day after the run date (everything up to and including the run date). Opted-out
customers are removed before scoring; the champion of each offer is resolved once and its version is
recorded on every row and in ``audience_runs``. The run date's audience is replaced in one transaction.

    python -m jobs.score_publish --run-date 2025-11-30 [--env postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import features as feature_job
from xsell import audience, inputs, lake, model, offers, runtime, tracking, warehouse
from xsell.config import Settings
from xsell.spark import session

log = logging.getLogger("xsell.score_publish")


def _consent_snapshot_fresh(settings: Settings, run_date: dt.date, snapshot_date: dt.date) -> None:
    age = (run_date - snapshot_date).days
    if age > settings.audience.max_consent_age_days:
        raise runtime.PublishBlocked(
            f"the customers (consent) snapshot is from {snapshot_date}, {age} days before the run date "
            f"{run_date}; at most {settings.audience.max_consent_age_days} allowed: publish blocked")


def _named(frame: DataFrame, products: DataFrame) -> DataFrame:
    names = products.select("product_id", "name")
    return (
        frame.join(names.withColumnRenamed("product_id", "rule_antecedent").withColumnRenamed("name", "rule_antecedent_name"),
                   on="rule_antecedent", how="left")
        .join(names.withColumnRenamed("product_id", "rule_consequent").withColumnRenamed("name", "rule_consequent_name"),
              on="rule_consequent", how="left")
    )


def build_audience(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str
                   ) -> tuple[DataFrame, dict[str, tuple[str, str]]]:
    import mlflow.spark

    tracking.configure(settings)
    data = inputs.load(spark, settings, run_date)
    _consent_snapshot_fresh(settings, run_date, data.snapshot_date)
    cutoff = feature_job.cutoffs(run_date, settings.model.horizon_days)[-1]
    allowed = audience.consenting(data.customers)
    # Profiling for direct marketing needs consent too: the feature table holds consenting customers
    # only, and today's snapshot is applied again in case consent was withdrawn since it was built.
    feature_frame = feature_job.read(spark, settings, cutoff).join(allowed, on="customer_id", how="left_semi").cache()
    rules = lake.read(spark, settings.lake, lake.BASKET_RULES).filter(F.col("run_date") == F.lit(run_date))
    ranked_offers, versions = [], {}
    for offer in data.offers:
        champion = tracking.champion(offer.model_name)
        if champion is None:
            log.warning("%s has no champion model: not scored", offer.offer_id)
            continue
        versions[offer.offer_id] = (offer.model_name, champion.version)
        rule = offers.rule_feature(rules, data.order_lines, data.products, offer, cutoff=cutoff)
        candidates = (
            feature_frame.filter(offers.eligible(offer))
            .join(rule, on="customer_id", how="left")
            .fillna(0.0, subset=["rule_lift"])
        )
        scored = model.score(mlflow.spark.load_model(champion.uri), candidates)
        described = _named(scored, data.products).withColumn("reason", audience.reason(offer))
        ranked_offers.append(audience.rank_offer(described, offer, margin=audience.offer_margin(data.products, offer)))
    if not ranked_offers:
        raise runtime.PublishBlocked(f"no offer has a champion model for {run_date}: nothing to publish")
    ranked = ranked_offers[0]
    for frame in ranked_offers[1:]:
        ranked = ranked.unionByName(frame)
    chosen = audience.arbitrate(ranked, max_offers=settings.audience.max_offers_per_customer)
    celled = audience.assign_cell(chosen, control_share=settings.audience.control_share,
                                  salt=settings.audience.control_salt)
    # Consent again on the final rows: nothing joined in later may bring an opted-out customer back.
    final = celled.join(allowed, on="customer_id", how="left_semi")
    return audience.export(final, run_date=run_date, run_id=run_id, model_versions=versions), versions


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str) -> str:
    """Build and publish; returns the content hash of the published run date."""
    rows, versions = build_audience(spark, settings, run_date, run_id=run_id)
    rows = rows.cache()
    counts = {f"{row.offer_id}|{row.cell}": row.n for row in rows.groupBy("offer_id", "cell").agg(F.count("*").alias("n")).collect()}
    record = warehouse.RunRecord(run_date=run_date, run_id=run_id, rows_total=sum(counts.values()),
                                 rows_by_offer=counts, model_versions={k: v[1] for k, v in versions.items()})
    content_hash = warehouse.open_warehouse(settings).publish(warehouse.AUDIENCES, rows, run_date=run_date,
                                                              run_id=run_id, record=record)
    log.info("audience for %s: %d rows over %d offers, hash %s", run_date, record.rows_total, len(versions),
             content_hash[:12])
    return content_hash


def main(argv: list[str] | None = None) -> None:
    args = runtime.parser(__doc__.splitlines()[0]).parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-score-publish"), settings, args.run_date, run_id=args.run_id)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
