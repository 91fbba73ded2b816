"""A design study for issue 3's 2x goal: the order lines' checks in one pass over the text, without a cache.

Not the job's code. It measures the core of a design that ``jobs.validate`` could adopt, against the same
plain pass as ``validation_speed.py``, on the same synthetic day (with its exact copies and reused keys):

1. **one pass over the text**: strict string read, parse, the catalogue flag, the row-local rules (the job's
   own :func:`xsell.validation.parse` and :func:`~xsell.validation.prepare`), then one aggregation by the
   hash of (date, key) whose groups are aggregated again by (date, outcome): rows, guests, unparsable
   bits, the profile's measures, and the hashes of the keys two or more rows hold (collected in the same
   aggregation, so no census pass comes first);
2. **the rows of those keys** read again (a broadcast semi-join on the hashes) and sent through the job's
   copies-and-conflicts window (:func:`xsell.validation.route`), to correct their outcomes.

Before timing each size, the two passes' rows per outcome are checked to equal ``jobs.validate``'s on the
same day.

What it leaves out: the two snapshot tables, GX on the profile, the record in ``validation_runs`` (about
3-4 s of fixed cost on a 2-core machine, whatever the day's size) and the lake writes, which would read
the text again.

    python bench/validation_one_pass.py --rows 1000000 5000000 [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.validation_speed import DAY, land_day, plain_pass  # noqa: E402
from expectations import order_lines as order_suite  # noqa: E402
from expectations.rules import TableSuite  # noqa: E402
from xsell import schemas, validation  # noqa: E402
from xsell.config import Settings, load_settings  # noqa: E402
from xsell.spark import session  # noqa: E402


def prepared_rows(spark: SparkSession, settings: Settings, suite: TableSuite) -> DataFrame:
    """The day's order lines from the text, parsed, with the catalogue flag and the row-local code."""
    day = validation.landing_day(settings.landing, schemas.ORDER_LINES, DAY)
    validation.check_columns([day], suite.columns)
    catalogue = spark.read.csv(str(settings.landing / schemas.PRODUCTS), header=True).select("product_id")
    raw = validation.read_raw(spark, [day], suite.columns)
    parsed = validation.parse(raw, schemas.ORDER_LINES_DDL)
    parsed = validation.flag_known(parsed, catalogue, column="product_id", flag=order_suite.IN_CATALOGUE)
    return validation.prepare(parsed, suite)


def first_pass(prepared: DataFrame, suite: TableSuite) -> list:
    """Counts and profile of the rows alone on their key, and the hashes of the keys held more than once."""
    per_key = (prepared.groupBy(validation.key_hash(suite).alias("_key_hash"))
               .agg(F.count("*").alias("rows"), F.first("date").alias("date"), F.first("_local").alias("code"),
                    F.bit_or(validation.UNPARSABLE).alias("unparsable"),
                    F.max(F.col("customer_id").isNull().cast("int")).alias("guest"),
                    F.min("unit_price").alias("min_price"), F.max((F.col("quantity") == 0).cast("int")).alias("zeros"),
                    F.min("order_ts").alias("first_ts"), F.max("order_ts").alias("last_ts")))
    shared = F.col("rows") > 1
    return (per_key.groupBy("date", F.when(shared, F.lit(-1)).otherwise(F.col("code")).alias("code"))
            .agg(F.sum("rows").alias("rows"), F.sum("guest").alias("guests"), F.bit_or("unparsable").alias("unparsable"),
                 F.min("min_price").alias("min_price"), F.sum("zeros").alias("zeros"),
                 F.min("first_ts").alias("first_ts"), F.max("last_ts").alias("last_ts"),
                 F.collect_list(F.when(shared, F.col("_key_hash"))).alias("shared"))
            .collect())


def second_pass(spark: SparkSession, prepared: DataFrame, suite: TableSuite, hashes: list[int]) -> list:
    """The rows of the keys held more than once, routed by the job's window, counted by outcome."""
    shared = spark.createDataFrame([(value,) for value in hashes], "_key_hash long")
    _, together = validation.route(validation.holding(prepared, shared, suite), suite, shared=None)
    return together.groupBy("date", "_code").agg(F.count("*").alias("rows")).collect()


def order_suite_of(settings: Settings) -> TableSuite:
    rules = settings.validation
    return order_suite.suite(currencies=rules.currencies, excluded_products=rules.excluded_products,
                             excluded_product_pattern=rules.excluded_product_pattern, min_rows=rules.min_rows)


def same_counts_as_the_job(spark: SparkSession, settings: Settings) -> None:
    """The two passes' rows per outcome must equal ``jobs.validate``'s on the same day (else the study
    measures something else)."""
    from jobs import validate

    suite = order_suite_of(settings)
    groups = first_pass(prepared_rows(spark, settings, suite), suite)
    counts: Counter[int] = Counter()
    for group in groups:
        if group["code"] != -1:
            counts[int(group["code"])] += group["rows"]
    hashes = [value for group in groups for value in group["shared"]]
    for row in second_pass(spark, prepared_rows(spark, settings, suite), suite, hashes):
        counts[int(row["_code"])] += row["rows"]
    known = validation.outcomes(suite)
    found = {(known[code].kind, known[code].rule_id): rows for code, rows in counts.items()}
    day = next(day for day in validate.run(spark, settings, DAY, run_id="bench-check")
               if day.table_name == schemas.ORDER_LINES)
    expected = {(validation.VALID, None): day.rows_valid,
                **{(validation.QUARANTINED, rule): rows for rule, rows in day.by_rule.items()},
                **{(validation.EXCLUDED, reason): rows for reason, rows in day.excluded_by_reason.items()}}
    assert found == expected, f"the study's counts {found} differ from the job's {expected}"
    spark.catalog.clearCache()


def one_pass(spark: SparkSession, settings: Settings) -> tuple[float, float, int]:
    """Seconds of the first and the second pass, and the keys held more than once."""
    suite = order_suite_of(settings)
    started = time.perf_counter()
    groups = first_pass(prepared_rows(spark, settings, suite), suite)
    hashes = [value for group in groups for value in group["shared"]]
    first = time.perf_counter() - started
    started = time.perf_counter()
    if hashes:
        second_pass(spark, prepared_rows(spark, settings, suite), suite, hashes)
    return first, time.perf_counter() - started, len(hashes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    lines = ["| order lines in the day | keys held twice | plain Spark pass (s) | first pass (s) | second pass (s) "
             "| both (s) | ratio |", "|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(overrides={"home": home})
        spark = session(settings, "xsell-bench-one-pass")
        for rows in args.rows:
            path = land_day(settings.landing, rows, copy_share=0.005, reused_share=0.001)
            plain_pass(spark, path)  # warm-up
            same_counts_as_the_job(spark, settings)
            plain = statistics.median(_timed(lambda: plain_pass(spark, path)) for _ in range(args.repeat))
            runs = [one_pass(spark, settings) for _ in range(args.repeat)]
            first, second = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            both = statistics.median(r[0] + r[1] for r in runs)
            lines.append(f"| {rows:,d} | {runs[0][2]:,d} | {plain:.2f} | {first:.2f} | {second:.2f} | {both:.2f} "
                         f"| {both / plain:.2f}x |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


def _timed(function) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
