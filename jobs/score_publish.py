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
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import features as feature_job
from xsell import audience, inputs, lake, measure, model, offers, runtime, tracking, warehouse
from xsell.config import Settings
from xsell.spark import Cached, session

log = logging.getLogger("xsell.score_publish")
#: The ``source`` of the monitoring rows this job writes.
SOURCE = "score_publish"


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


@dataclass
class Audience:
    rows: DataFrame
    versions: dict[str, tuple[str, str]]
    removed: dict[str, int]
    opt_outs: DataFrame
    checks: list[dict[str, object]]


def score_stability(settings: Settings, offer: offers.Offer, champion: tracking.Champion,
                    scored: DataFrame) -> dict[str, object] | None:
    """The ``psi_score`` monitoring row of an offer: today's scores of its eligible customers against the
    out-of-time fold its champion was checked on (None for a champion trained without that reference)."""
    import mlflow.artifacts

    try:
        reference = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/{measure.SCORE_REFERENCE}")
    except Exception as error:  # an older champion, or an artifact store that lost it
        log.warning("%s: no score reference for champion v%s (%s): no score PSI", offer.offer_id, champion.version,
                    error)
        return None
    current = measure.histogram(scored, model.SCORE, reference["splits"])
    value = measure.psi(reference["counts"], current)
    limit, rows = settings.monitoring.max_psi, (sum(reference["counts"]), sum(current))
    detail = f"eligible customers' scores against champion v{champion.version}'s out-of-time fold"
    judged = measure.psi_judged(*rows, min_rows=settings.monitoring.min_psi_rows)
    if not judged:
        detail += (f"; not judged: {rows[0]} and {rows[1]} rows, fewer than {settings.monitoring.min_psi_rows} "
                   f"(sampling alone gives about {measure.psi_noise(len(reference['splits']) - 1, *rows):.2f})")
    return {"source": SOURCE, "check_name": "psi_score", "offer_id": offer.offer_id, "subject": "score",
            "value": value, "expected": 0.0, "threshold": limit, "breach": judged and value > limit, "detail": detail}


def build_audience(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str,
                   cache: Cached) -> Audience:
    """Score, rank, arbitrate and cell the eligible, consenting customers; count what each rule removed
    (what it caches lives until ``cache`` is released)."""
    import mlflow.spark

    tracking.configure(settings)
    try:
        data = inputs.load(spark, settings, run_date)
        for frame in data.cached:
            cache(frame)
    except FileNotFoundError as missing:
        raise runtime.PublishBlocked(f"input missing, publish blocked: {missing}") from missing
    _consent_snapshot_fresh(settings, run_date, data.snapshot_date)
    cutoff = feature_job.cutoffs(run_date, settings.model).score
    allowed = audience.consenting(data.customers)
    opt_outs = data.customers.join(allowed, on="customer_id", how="left_anti").select("customer_id")
    removed = {"consent_opted_out_customers": opt_outs.count()}
    if removed["consent_opted_out_customers"] == data.customers.count():
        raise runtime.PublishBlocked(f"the customers (consent) snapshot of {data.snapshot_date} has no customer who "
                                     f"consented: publish blocked")
    # Profiling for direct marketing needs consent too: the feature table holds consenting customers
    # only, and today's snapshot is applied again in case consent was withdrawn since it was built.
    feature_frame = cache(feature_job.read(spark, settings, cutoff).join(allowed, on="customer_id", how="left_semi"))
    profiled = feature_frame.count()
    rules = lake.read(spark, settings.lake, lake.BASKET_RULES).filter(F.col("run_date") == F.lit(run_date))
    ranked_offers, versions, checks = [], {}, []
    for offer in data.offers:
        champion = tracking.champion(offer.model_name)
        if champion is None:
            log.warning("%s has no champion model: not scored", offer.offer_id)
            removed[f"no_champion:{offer.offer_id}"] = profiled
            continue
        versions[offer.offer_id] = (offer.model_name, champion.version)
        rule = offers.rule_feature(rules, data.order_lines, data.products, offer, cutoff=cutoff)
        candidates = cache(
            feature_frame.filter(offers.eligible(offer, cooldown_days=settings.audience.cooldown_days))
            .join(rule, on="customer_id", how="left")
            .fillna(0.0, subset=["rule_lift"])
        )
        removed[f"ineligible:{offer.offer_id}"] = profiled - candidates.count()
        champion_model = mlflow.spark.load_model(champion.uri)
        scored = model.score(champion_model, candidates, drivers=2, base_rate=champion.metrics.get(model.BASE_RATE))
        stability = score_stability(settings, offer, champion, scored)
        if stability is not None:
            checks.append(stability)
        described = audience.describe_drivers(_named(scored, data.products), model.feature_names(champion_model))
        described = described.withColumn("reason", audience.reason(offer))
        ranked_offers.append(audience.rank_offer(described, offer, margin=audience.offer_margin(data.products, offer),
                                                 category=offers.category_of(data.products, offer)))
    if not ranked_offers:
        raise runtime.PublishBlocked(f"no offer has a champion model for {run_date}: nothing to publish")
    ranked = ranked_offers[0]
    for frame in ranked_offers[1:]:
        ranked = ranked.unionByName(frame)
    ranked = cache(ranked)
    chosen = cache(audience.arbitrate(ranked, max_offers=settings.audience.max_offers_per_customer,
                                      diversity_column="category" if settings.audience.category_diversity else None))
    removed["arbitration"] = ranked.count() - chosen.count()
    celled = audience.assign_cell(chosen, control_share=settings.audience.control_share,
                                  salt=settings.audience.control_salt)
    # Consent again on the final rows: nothing joined in later may bring an opted-out customer back.
    final = celled.join(allowed, on="customer_id", how="left_semi")
    rows = audience.export(final, run_date=run_date, run_id=run_id, model_versions=versions)
    return Audience(rows, versions, removed, opt_outs, checks)


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str, attempt: int = 1) -> str:
    """Build and publish; returns the content hash of the published run date.

    A blocked publish (stale consent, too small an audience, doubled keys) leaves the live audience as
    it was, records the attempt in ``audience_runs`` with status ``blocked: ...`` and raises.
    """
    target = warehouse.open_warehouse(settings)
    with Cached() as cache:
        return _publish(spark, settings, target, run_date, run_id=run_id, attempt=attempt, cache=cache)


def _publish(spark: SparkSession, settings: Settings, target: warehouse.Warehouse, run_date: dt.date, *, run_id: str,
             attempt: int, cache: Cached) -> str:
    try:
        built = build_audience(spark, settings, run_date, run_id=run_id, cache=cache)
        rows = cache(built.rows)
        counts = {f"{row.offer_id}|{row.cell}": row.n
                  for row in rows.groupBy("offer_id", "cell").agg(F.count("*").alias("n")).collect()}
        record = warehouse.RunRecord(run_date=run_date, run_id=run_id, rows_total=sum(counts.values()),
                                     rows_by_offer=counts, model_versions={k: v[1] for k, v in built.versions.items()},
                                     rows_removed=built.removed, attempt=attempt)
        guard = warehouse.Guard(opt_outs=built.opt_outs, min_volume_fraction=settings.audience.min_volume_fraction,
                                retention_days=settings.audience.retention_days)
        content_hash = target.publish(warehouse.AUDIENCES, rows, run_date=run_date, run_id=run_id, record=record,
                                      guard=guard)
        target.replace_rows(warehouse.MONITORING, [{**row, "run_date": run_date, "run_id": run_id} for row in built.checks],
                            where={"run_date": run_date, "source": SOURCE})
    except runtime.PublishBlocked as blocked:
        target.record_blocked(warehouse.RunRecord(run_date=run_date, run_id=run_id, rows_total=0, rows_by_offer={},
                                                  model_versions={}, attempt=attempt, status=f"blocked: {blocked}"))
        raise
    log.info("audience for %s: %d rows over %d offers, removed %s, hash %s", run_date, record.rows_total,
             len(built.versions), built.removed, content_hash[:12])
    return content_hash


def main(argv: list[str] | None = None) -> None:
    parser = runtime.parser(__doc__.splitlines()[0])
    parser.add_argument("--attempt", type=int, default=1, help="the scheduler's try number, recorded per publish")
    args = parser.parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-score-publish"), settings, args.run_date, run_id=args.run_id,
            attempt=args.attempt)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
