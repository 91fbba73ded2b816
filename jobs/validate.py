"""Validate the raw landing data of a run date and write the clean lake tables.

Reads the products and customers snapshots of the run date (the newest on or before it) and the order
lines of the run date (or of every landed day from ``--since`` up to the run date, for a backfill),
quarantines bad rows with their rule, and writes ``lake/{products,customers,order_lines,quarantine,
validation_runs}`` partitioned by date. A critical problem (schema, unparsable values, an empty run date,
the quarantine-rate gate, conservation, a failed GX expectation) stops the job before anything is
written, with a message naming the file, the column and the rule.

    python -m jobs.validate --run-date 2025-11-30 [--since 2024-10-01] [--env postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from expectations import customers as customer_suite
from expectations import order_lines as order_suite
from expectations import products as product_suite
from expectations.rules import TableSuite
from xsell import lake, runtime, schemas, validation
from xsell.config import Settings
from xsell.spark import session

log = logging.getLogger("xsell.validate")


def _validate(spark: SparkSession, settings: Settings, days: list[validation.LandingDay], suite: TableSuite,
              ddl: str, *, run_id: str) -> tuple[DataFrame, DataFrame, list[validation.DaySummary]]:
    validation.check_columns(days, suite.columns)
    raw = validation.read_raw(spark, days, suite.columns).cache()
    parsed = validation.parse(raw, ddl)
    validation.check_parsable(parsed, ddl)
    routed = validation.route(parsed, suite).cache()
    summaries = validation.summarize(raw, routed, table=suite.table)
    validation.check_gates(summaries, max_quarantine_rate=settings.validation.max_quarantine_rate)
    kept = validation.kept_rows(routed, suite).cache()
    validation.run_suite(kept, suite, what=f"{suite.table} {days[0].date}..{days[-1].date}")
    return kept, validation.quarantine_rows(routed, suite, run_id=run_id), summaries


def _order_days(settings: Settings, run_date: dt.date, since: dt.date | None) -> list[validation.LandingDay]:
    landed = [date for date in validation.landing_dates(settings.landing, schemas.ORDER_LINES)
              if since is not None and since <= date < run_date]
    days = [validation.landing_day(settings.landing, schemas.ORDER_LINES, date) for date in landed]
    today = validation.landing_day(settings.landing, schemas.ORDER_LINES, run_date)
    if not today.files and run_date.isoweekday() not in settings.validation.closed_weekdays:
        raise validation.DataQualityError(
            f"{validation.day_folder(settings.landing, schemas.ORDER_LINES, run_date)}: no order files for the "
            f"run date (rule: min_rows)"
        )
    return [day for day in (*days, today) if day.files]


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str,
        since: dt.date | None = None) -> list[validation.DaySummary]:
    """Validate and write; returns the per-table, per-day summaries."""
    order_days = _order_days(settings, run_date, since)  # first: an empty run date needs no Spark to fail
    product_day = validation.latest_snapshot(settings.landing, schemas.PRODUCTS, run_date)
    customer_day = validation.latest_snapshot(settings.landing, schemas.CUSTOMERS, run_date)
    products, product_quarantine, product_summary = _validate(
        spark, settings, [product_day], product_suite.suite(), schemas.PRODUCTS_DDL, run_id=run_id)
    customers, customer_quarantine, customer_summary = _validate(
        spark, settings, [customer_day], customer_suite.suite(), schemas.CUSTOMERS_DDL, run_id=run_id)

    catalogue_ids = [row.product_id for row in products.select("product_id").collect()]
    suite = order_suite.suite(currencies=settings.validation.currencies, catalogue_ids=catalogue_ids,
                              excluded_products=settings.validation.excluded_products,
                              min_rows=settings.validation.min_rows)
    summaries = product_summary + customer_summary
    if order_days:
        orders, order_quarantine, order_summary = _validate(
            spark, settings, order_days, suite, schemas.ORDER_LINES_DDL, run_id=run_id)
        today = [day for day in order_summary if day.date == run_date]
        if today and today[0].rows_in < settings.validation.min_rows:
            raise validation.DataQualityError(
                f"order_lines {run_date}: {today[0].rows_in} rows, fewer than {settings.validation.min_rows} "
                f"(rule: min_rows)"
            )
        summaries += order_summary
    else:
        log.warning("no order lines landed for %s (a closed weekday)", run_date)

    # Everything passed: write. Snapshots are stored under the run date they serve.
    lake.write_partitions(products.withColumn("date", F.lit(run_date)), settings.lake, schemas.PRODUCTS)
    lake.write_partitions(customers.withColumn("date", F.lit(run_date)), settings.lake, schemas.CUSTOMERS)
    quarantine = product_quarantine.unionByName(customer_quarantine).withColumn("date", F.lit(run_date))
    if order_days:
        lake.write_partitions(orders, settings.lake, lake.VALID_ORDER_LINES)
        quarantine = quarantine.unionByName(order_quarantine)
    lake.write_partitions(quarantine, settings.lake, lake.QUARANTINE, partition_by=("table_name", "date"))
    summary = validation.summary_frame(spark, summaries, run_id=run_id, gate_passed=True)
    lake.write_partitions(summary, settings.lake, lake.VALIDATION_RUNS, partition_by=("table_name", "date"))
    for day in summaries:
        log.info("%s %s: in %d, valid %d, quarantined %d %s, excluded %d %s", day.table_name, day.date,
                 day.rows_in, day.rows_valid, day.rows_quarantined, day.by_rule or "", day.rows_excluded,
                 day.excluded_by_reason or "")
    return summaries


def main(argv: list[str] | None = None) -> None:
    parser = runtime.parser(__doc__.splitlines()[0])
    parser.add_argument("--since", type=dt.date.fromisoformat, default=None,
                        help="also validate every landed order day from this date (a backfill)")
    args = parser.parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        spark = session(settings, "xsell-validate")
        run(spark, settings, args.run_date, run_id=args.run_id, since=args.since)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
