"""Measure matured campaigns against their control cells, and monitor features, rules and scores.

With H the horizon: a campaign published for run date D is measured on the run of D + H (the first day
its window [D + 1, D + H] is complete) and on the runs of the ``measurement.remeasure_days`` days after
it, so late data for the window still counts; each run replaces the campaign's rows of
``campaign_results``. Results also go to MLflow (experiment ``measurement.experiment``, one run per
campaign and offer).

Monitoring rows (``monitoring``, source ``measure``, replaced on a rerun of the run date):
- ``psi_feature``: PSI of each configured feature, features as of the training fold's cutoff against
  those of the scoring cutoff;
- ``rule_overlap``: the share of the previous run's top product rules still in this run's top;
- ``realized_lift`` and ``calibration`` for every campaign measured, both on the control cell (its
  customers received nothing, so they behave as the score predicts): the lift by published decile
  against the one promised by the model version that scored it, and the adoption rate against the mean
  published score.

    python -m jobs.measure --run-date 2025-12-31 [--campaign-date 2025-11-30 ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import features as feature_job
from xsell import inputs, lake, measure, runtime, tracking, warehouse
from xsell.config import Settings
from xsell.spark import session

log = logging.getLogger("xsell.measure")
SOURCE = "measure"
ALL_OFFERS = "*"


def due(target: warehouse.Warehouse, settings: Settings, run_date: dt.date) -> list[dt.date]:
    """Published run dates whose horizon ended within the last ``remeasure_days`` days of ``run_date``."""
    horizon = settings.model.horizon_days
    newest = run_date - dt.timedelta(days=horizon)
    oldest = newest - dt.timedelta(days=settings.measurement.remeasure_days)
    rows = target.query(
        f"SELECT DISTINCT run_date FROM {target.table_name(warehouse.AUDIENCE_RUNS)} "
        f"WHERE status = 'published' AND run_date BETWEEN ? AND ? ORDER BY run_date", [oldest, newest])
    return [row[0] for row in rows]


def _row(check: str, offer_id: str, subject: str, value: float | None, expected: float | None,
         threshold: float | None, breach: bool, detail: str) -> dict[str, object]:
    return {"source": SOURCE, "check_name": check, "offer_id": offer_id, "subject": subject, "value": value,
            "expected": expected, "threshold": threshold, "breach": bool(breach), "detail": detail}


def promised_lifts(audience: DataFrame) -> dict[str, dict[str, float]]:
    """Per offer, the decile lifts the scoring model version was logged with at training
    (``lift_d1``..``lift_d10`` of its MLflow run; empty when the registry no longer knows it)."""
    import mlflow

    client = mlflow.MlflowClient()
    promised = {}
    for row in audience.select("offer_id", "model_name", "model_version").distinct().collect():
        try:
            run_id = client.get_model_version(row["model_name"], row["model_version"]).run_id
            promised[row["offer_id"]] = client.get_run(run_id).data.metrics
        except Exception as error:  # a deleted version: the check says so instead of failing the run
            log.warning("%s: model %s v%s not found in the registry (%s)", row["offer_id"], row["model_name"],
                        row["model_version"], error)
            promised[row["offer_id"]] = {}
    return promised


def campaign_checks(settings: Settings, campaign: dt.date, tables: dict[str, list[dict[str, float]]],
                    promised: dict[str, dict[str, float]]) -> list[dict[str, object]]:
    """``realized_lift`` per published decile and ``calibration`` of the control cell, per offer."""
    chosen = settings.monitoring
    rows = []
    for offer_id, table in sorted(tables.items()):
        positives = sum(item["control_positives"] for item in table)
        metrics = promised.get(offer_id, {})
        for item in table:
            decile = int(item["decile"])
            expected = metrics.get(f"lift_d{decile}")
            judged = decile == 1 and expected is not None and positives >= chosen.min_positives
            threshold = chosen.min_lift_ratio * expected if expected is not None else None
            breach = judged and item["lift"] < threshold
            rows.append(_row("realized_lift", offer_id, f"campaign {campaign} decile {decile}", item["lift"], expected,
                             threshold if decile == 1 else None, breach,
                             f"control cell: {int(item['control_positives'])} of {int(item['control_rows'])} adopted"
                             + ("" if decile != 1 or judged else f"; not judged (fewer than {chosen.min_positives} "
                                                                    f"control adopters or no promised lift)")))
        control_rows = sum(item["control_rows"] for item in table)
        observed = sum(item["control_positives"] for item in table)
        expected_adopters = sum(item["control_score"] for item in table)
        if control_rows:
            rate, predicted = observed / control_rows, expected_adopters / control_rows
            judged = expected_adopters >= chosen.min_positives or observed >= chosen.min_positives
            factor = chosen.max_calibration_factor
            breach = judged and (predicted == 0 or not 1 / factor <= rate / predicted <= factor)
            rows.append(_row("calibration", offer_id, f"campaign {campaign}", rate, predicted, factor, breach,
                             f"control cell: {int(observed)} adopters of {int(control_rows)}, "
                             f"{expected_adopters:.1f} expected" + ("" if judged else "; not judged (too few)")))
    return rows


def drift_checks(spark: SparkSession, settings: Settings, run_date: dt.date) -> list[dict[str, object]]:
    """``psi_feature`` (training fold's cutoff against the scoring cutoff) and ``rule_overlap``."""
    chosen = settings.monitoring
    dates = feature_job.cutoffs(run_date, settings.model)
    reference, current = feature_job.read(spark, settings, dates.valid).cache(), feature_job.read(spark, settings, dates.score).cache()
    rows = []
    if reference.limit(1).count() and current.limit(1).count():
        present = [name for name in chosen.features if name in current.columns]
        for name, value in measure.feature_psi(reference, current, present, bins=chosen.psi_bins).items():
            rows.append(_row("psi_feature", ALL_OFFERS, name, value, 0.0, chosen.max_psi, value > chosen.max_psi,
                             f"features as of {dates.score} against {dates.valid}"))
    else:
        log.warning("features as of %s or %s are missing: no feature PSI", dates.valid, dates.score)
    reference.unpersist()
    current.unpersist()
    if lake.exists(settings.lake, lake.BASKET_RULES):
        rules = lake.read(spark, settings.lake, lake.BASKET_RULES)
        earlier = rules.filter(F.col("run_date") < F.lit(run_date)).agg(F.max("run_date")).first()[0]
        if earlier is not None:
            now = measure.top_rules(rules.filter(F.col("run_date") == F.lit(run_date)), top=chosen.rule_top_n)
            before = measure.top_rules(rules.filter(F.col("run_date") == F.lit(earlier)), top=chosen.rule_top_n)
            kept = measure.overlap(before, now)
            rows.append(_row("rule_overlap", ALL_OFFERS, f"top {chosen.rule_top_n} product rules vs {earlier}", kept,
                             1.0, chosen.min_rule_overlap, kept < chosen.min_rule_overlap,
                             f"{len(before & now)} of {len(before)} kept, {len(now)} today"))
    return rows


def measure_campaign(spark: SparkSession, settings: Settings, target: warehouse.Warehouse, data: inputs.Inputs,
                     campaign: dt.date, *, run_date: dt.date, run_id: str) -> tuple[list[dict], list[dict]]:
    """``campaign_results`` rows of one campaign (replaced in the warehouse) and its monitoring rows."""
    start = campaign + dt.timedelta(days=1)
    end = start + dt.timedelta(days=settings.model.horizon_days)
    audience = target.read_run_date(spark, warehouse.AUDIENCES, campaign)
    scored_on = feature_job.read(spark, settings, start)
    if not scored_on.limit(1).count():
        raise FileNotFoundError(f"campaign {campaign}: the features it was scored on (cutoff {start}) are not in "
                                f"the lake: rerun `python -m jobs.features --run-date {campaign}`")
    outcome = measure.outcomes(audience, data.order_lines, data.products, scored_on, data.offers,
                               start=start, end=end).cache()
    offer_types = {offer.offer_id: offer.offer_type for offer in data.offers}
    results = measure.campaign_results(outcome, offer_types, confidence=settings.measurement.confidence,
                                       min_control=settings.measurement.min_control_customers)
    rows = [{**result, "run_date": campaign, "window_start": start, "window_end": end, "measured_on": run_date,
             "run_id": run_id} for result in results]
    target.replace_rows(warehouse.CAMPAIGN_RESULTS, rows, where={"run_date": campaign})
    checks = campaign_checks(settings, campaign, measure.realized_by_decile(outcome), promised_lifts(audience))
    outcome.unpersist()
    audience.unpersist()
    for row in rows:
        log.info("campaign %s %s: %s", campaign, row["offer_id"], _summary(row))
    return rows, checks


def _summary(row: dict[str, object]) -> str:
    if row["status"] != measure.MEASURED:
        return str(row["status"])
    return (f"treated {row['treated_conversions']}/{row['treated']} ({row['treated_rate']:.2%}), control "
            f"{row['control_conversions']}/{row['control']} ({row['control_rate']:.2%}), uplift {row['uplift']:+.2%} "
            f"[{row['uplift_low']:+.2%}, {row['uplift_high']:+.2%}], p = {row['p_value']:.3g}")


def log_to_mlflow(experiment_id: str, rows: list[dict[str, object]]) -> None:
    """One MLflow run per campaign and offer (replacing none: a remeasure is a new run, tagged alike)."""
    import mlflow

    for row in rows:
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{row['offer_id']} campaign {row['run_date']}"):
            mlflow.set_tags({"offer_id": row["offer_id"], "campaign_date": str(row["run_date"]),
                             "measured_on": str(row["measured_on"]), "status": row["status"]})
            mlflow.log_metrics({key: float(value) for key, value in row.items()
                                if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None})


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str,
        campaigns: list[dt.date] | None = None) -> dict[str, list[dict]]:
    target = warehouse.open_warehouse(settings)
    # Configured first: a dead tracking server stops the job in seconds, before anything is written.
    experiment_id = tracking.configure(settings, experiment=settings.measurement.experiment,
                                       artifact_location=settings.mlflow_artifact_location + "/campaigns")
    chosen = campaigns if campaigns else due(target, settings, run_date)
    too_recent = [c for c in chosen if c + dt.timedelta(days=settings.model.horizon_days) > run_date]
    if too_recent:
        raise runtime.JobRefused(f"campaigns {', '.join(map(str, too_recent))} have not matured by {run_date} "
                                 f"(horizon {settings.model.horizon_days} days)")
    results, checks = [], drift_checks(spark, settings, run_date)
    # The order history and snapshots are needed only to measure campaigns.
    data = inputs.load(spark, settings, run_date) if chosen else None
    try:
        for campaign in chosen:
            rows, campaign_rows = measure_campaign(spark, settings, target, data, campaign, run_date=run_date,
                                                   run_id=run_id)
            results += rows
            checks += campaign_rows
    finally:
        if data is not None:
            data.release()
    target.replace_rows(warehouse.MONITORING, [{**row, "run_date": run_date, "run_id": run_id} for row in checks],
                        where={"run_date": run_date, "source": SOURCE})
    if results:
        log_to_mlflow(experiment_id, results)
    log.info("%s: %d campaigns measured (%s), %d monitoring rows, %d breaches", run_date, len(chosen),
             ", ".join(map(str, chosen)) or "none due", len(checks), sum(row["breach"] for row in checks))
    return {"campaign_results": results, "monitoring": checks}


def main(argv: list[str] | None = None) -> None:
    parser = runtime.parser(__doc__.splitlines()[0])
    parser.add_argument("--campaign-date", action="append", type=dt.date.fromisoformat,
                        help="measure this published run date (repeatable; default: the campaigns due)")
    args = parser.parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-measure"), settings, args.run_date, run_id=args.run_id,
            campaigns=args.campaign_date)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
