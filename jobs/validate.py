"""Validate the raw landing data of a run date and write the clean lake tables.

Reads the products and customers snapshots of the run date (the newest on or before it) and the order
lines of the run date (or of every landed day from ``--since`` up to the run date, for a backfill),
quarantines bad rows with their rule, and writes ``lake/{products,customers,order_lines,quarantine,
validation_runs}`` partitioned by date. A critical problem (schema, unparsable values, an empty run date,
conservation, the quarantine-rate and guest-rate gates, the day-over-day volume check, a failed GX
expectation) stops the job before anything is written, with a message naming the file, the column and
the rule. Each table's GX result is rendered as Data Docs (``<home>/data_docs``), and every run, also
one that stops, leaves one row per table and day in the warehouse table ``validation_runs``.

    python -m jobs.validate --run-date 2025-11-30 [--since 2024-10-01] [--env postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from expectations import customers as customer_suite
from expectations import order_lines as order_suite
from expectations import products as product_suite
from expectations.rules import TableSuite
from xsell import lake, runtime, schemas, validation, warehouse
from xsell.config import Settings
from xsell.spark import Cached, session

log = logging.getLogger("xsell.validate")


@dataclass
class _Report:
    """What a run has learned so far, so that a run that stops can still say what it saw."""

    run_date: dt.date
    run_id: str
    suites: validation.SuiteRunner
    summaries: list[validation.DaySummary] = field(default_factory=list)
    pages: dict[str, str] = field(default_factory=dict)
    table: str = ""
    #: This run's cached frames, dropped when the run ends. Spark serves a cached result to any later query
    #: with the same plan, so a second run over rewritten files in the same session (a notebook, ``xsell
    #: run``, the tests) would otherwise see the old rows; and the memory goes back to the next run.
    cache: Cached = field(default_factory=Cached)

    def render(self) -> None:
        """Data Docs of what was validated, also when the run stops (then they show why)."""
        try:
            self.pages = {table: str(page) for table, page in self.suites.build_docs().items()}
        except Exception:  # the docs are for people; their failure must not hide the run's own outcome
            log.exception("could not render the Data Docs")

    def rows(self, *, error: validation.DataQualityError | None) -> list[dict[str, Any]]:
        status = "passed" if error is None else "failed"
        rows = [self._row(day.table_name, day.date, status, error, day) for day in self.summaries]
        if error is not None and not any(day.table_name == self.table for day in self.summaries):
            rows.append(self._row(self.table, self.run_date, status, error, None))  # stopped before counting
        return rows

    def _row(self, table: str, date: dt.date, status: str, error: validation.DataQualityError | None,
             day: validation.DaySummary | None) -> dict[str, Any]:
        counts: dict[str, Any] = dict.fromkeys(
            ("rows_in", "rows_valid", "rows_quarantined", "rows_excluded", "rows_guest", "quarantined_by_rule",
             "excluded_by_reason", "quarantine_rate", "volume_ratio"))
        if day is not None:
            counts.update(rows_in=day.rows_in, rows_valid=day.rows_valid, rows_quarantined=day.rows_quarantined,
                          rows_excluded=day.rows_excluded, rows_guest=day.rows_guest,
                          quarantined_by_rule=json.dumps(day.by_rule, sort_keys=True),
                          excluded_by_reason=json.dumps(day.excluded_by_reason, sort_keys=True),
                          quarantine_rate=day.quarantine_rate, volume_ratio=day.volume_ratio)
        return {"run_date": self.run_date, "table_name": table, "data_date": date, "run_id": self.run_id,
                "status": status, **counts, "gate_passed": error is None,
                "failed_rule": None if error is None else error.rule,
                "message": None if error is None else str(error), "data_docs": self.pages.get(table)}


def _shared_keys(prepared: DataFrame, suite: TableSuite, report: _Report) -> DataFrame | None:
    """The keys two or more rows hold, cached, or None when they are too many to broadcast. With none,
    an empty frame Spark knows to be empty (``limit(0)``): the joins on it are then left out of the plan."""
    shared = report.cache(validation.shared_keys(prepared, suite))
    count = shared.count()
    if count > validation.MAX_SHARED_KEYS:
        log.info("%s: %d keys held by more than one row: routing every row through one window", suite.table, count)
        return None
    return shared if count else shared.limit(0)


def _validate(spark: SparkSession, settings: Settings, days: list[validation.LandingDay], suite: TableSuite,
              ddl: str, report: _Report, *, catalogue: DataFrame | None = None,
              history: dict[dt.date, int] | None = None) -> tuple[DataFrame, DataFrame]:
    """Check, parse, route, count and gate one table's days; returns the rows kept and the quarantine."""
    report.table = suite.table
    rules = settings.validation
    validation.check_columns(days, suite.columns)
    # The text is read once: the rows, parsed and with their row-local rule outcome, are cached, and the
    # counts, the census of shared keys, the routing, GX and the lake writes all read the cache.
    raw = validation.read_raw(spark, days, suite.columns, multiline=suite.multiline)
    parsed = validation.parse(raw, ddl)
    if catalogue is not None:
        parsed = validation.flag_known(parsed, catalogue, column="product_id", flag=order_suite.IN_CATALOGUE)
    prepared = report.cache(validation.prepare(parsed, suite))
    shared = _shared_keys(prepared, suite, report)
    routed, may_share = validation.route(prepared, suite, shared=shared, cache=report.cache)
    is_orders = suite.table == schemas.ORDER_LINES
    # One aggregation gives the counts and the day profile GX judges; rows in are counted on the rows as
    # read, before routing: conservation checks the routing.
    counts = validation.count_outcomes(routed, suite, ddl=ddl, guest_column="customer_id" if is_orders else None)
    summaries = validation.summarize(prepared, counts, suite, dates=[day.date for day in days], ddl=ddl)
    validation.check_parsable(parsed, summaries, ddl)
    if history is not None:
        summaries = validation.with_volume(summaries, history, trailing_days=rules.volume.trailing_days,
                                           min_history_days=rules.volume.min_history_days,
                                           min_average_rows=rules.volume.min_average_rows)
    report.summaries += summaries
    validation.check_gates(summaries, min_rows=suite.min_rows, max_quarantine_rate=rules.max_quarantine_rate,
                           max_guest_rate=rules.max_guest_rate if is_orders else None)
    validation.check_volume(summaries, min_ratio=rules.volume.min_ratio, max_ratio=rules.volume.max_ratio)
    # A key can be held twice among the rows kept only where the census found it held twice.
    repeated = validation.key_duplicates(validation.kept_rows(may_share, suite), suite)
    report.suites.judge(validation.profile(counts, suite, repeated), suite,
                        what=f"{suite.table} {days[0].date}..{days[-1].date}")
    return validation.kept_rows(routed, suite), validation.quarantine_rows(routed, suite, run_id=report.run_id)


def order_lines_suite(settings: Settings) -> TableSuite:
    """The order-line suite as the configuration's validation rules set it up."""
    rules = settings.validation
    return order_suite.suite(currencies=rules.currencies, excluded_products=rules.excluded_products,
                             excluded_product_pattern=rules.excluded_product_pattern, min_rows=rules.min_rows)


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


def _volume_history(spark: SparkSession, settings: Settings, before: dt.date) -> dict[dt.date, int]:
    """Raw order-line counts of days validated earlier, from the lake's ``validation_runs``."""
    if not lake.exists(settings.lake, lake.VALIDATION_RUNS):
        return {}
    start = before - dt.timedelta(days=settings.validation.volume.trailing_days)
    rows = (lake.read(spark, settings.lake, lake.VALIDATION_RUNS)
            .filter((F.col("table_name") == schemas.ORDER_LINES) & (F.col("date") >= F.lit(start))
                    & (F.col("date") < F.lit(before)))
            .select("date", "rows_in").collect())
    return {row["date"]: row["rows_in"] for row in rows}


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str,
        since: dt.date | None = None) -> list[validation.DaySummary]:
    """Validate and write; returns the per-table, per-day summaries.

    Every run, also one that stops, records its per-table, per-day outcome in the warehouse table
    ``validation_runs``.
    """
    suites = validation.SuiteRunner(docs=settings.data_docs if settings.validation.data_docs else None,
                                    run_name=f"{run_date.isoformat()}_{run_id}")
    report = _Report(run_date=run_date, run_id=run_id, suites=suites, table=schemas.ORDER_LINES)
    try:
        summaries = _run(spark, settings, run_date, report, since=since)
    except validation.DataQualityError as error:
        report.render()
        _record(settings, report.rows(error=error))
        raise
    finally:
        report.cache.release()
    report.render()
    _record(settings, report.rows(error=None))
    return summaries


def _record(settings: Settings, rows: list[dict[str, Any]]) -> None:
    try:
        warehouse.open_warehouse(settings).record_validation(rows)
    except Exception:  # the validation's own outcome matters more than its record: log and go on
        log.exception("could not record the validation outcome in the warehouse")


def _run(spark: SparkSession, settings: Settings, run_date: dt.date, report: _Report, *,
         since: dt.date | None) -> list[validation.DaySummary]:
    order_days = _order_days(settings, run_date, since)  # first: an empty run date needs no Spark to fail
    report.table = schemas.PRODUCTS
    product_day = validation.latest_snapshot(settings.landing, schemas.PRODUCTS, run_date)
    products, product_quarantine = _validate(spark, settings, [product_day], product_suite.suite(),
                                             schemas.PRODUCTS_DDL, report)
    report.table = schemas.CUSTOMERS
    customer_day = validation.latest_snapshot(settings.landing, schemas.CUSTOMERS, run_date)
    customers, customer_quarantine = _validate(spark, settings, [customer_day], customer_suite.suite(),
                                               schemas.CUSTOMERS_DDL, report)

    suite = order_lines_suite(settings)
    if order_days:
        history = _volume_history(spark, settings, order_days[0].date)
        orders, order_quarantine = _validate(spark, settings, order_days, suite, schemas.ORDER_LINES_DDL, report,
                                             catalogue=products.select("product_id"), history=history)
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
    # A rerun whose day now has no quarantined (or no valid) rows must not keep the old ones; the counts
    # say which partitions were written empty. Snapshot quarantines are stored under the run date.
    lake.drop_partitions(settings.lake, lake.QUARANTINE, [
        {"table_name": day.table_name, "date": day.date if day.table_name == schemas.ORDER_LINES else run_date}
        for day in report.summaries if day.rows_quarantined == 0])
    lake.drop_partitions(settings.lake, lake.VALID_ORDER_LINES, [
        {"date": day.date} for day in report.summaries if day.table_name == schemas.ORDER_LINES and day.rows_valid == 0])
    summary = validation.summary_frame(spark, report.summaries, run_id=report.run_id, gate_passed=True)
    lake.write_partitions(summary, settings.lake, lake.VALIDATION_RUNS, partition_by=("table_name", "date"))
    for day in report.summaries:
        log.info("%s %s: in %d, valid %d (guests %d), quarantined %d %s, excluded %d %s", day.table_name, day.date,
                 day.rows_in, day.rows_valid, day.rows_guest, day.rows_quarantined, day.by_rule or "",
                 day.rows_excluded, day.excluded_by_reason or "")
    return report.summaries


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
