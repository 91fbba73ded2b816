"""A design study for the validation's 2x goal: the order lines' checks in one pass over the text, no cache.

Not the job's code. It measures the core of a design that ``jobs.validate`` could adopt, against the same
plain pass as ``validation_speed.py``, on the same synthetic day (with its exact copies and reused keys):

1. **one pass over the text**: strict string read, parse, the catalogue flag, the row-local rules (the job's
   own :func:`xsell.validation.parse` and :func:`~xsell.validation.prepare`), then one aggregation by the
   hash of (date, key) whose groups are aggregated again by (date, outcome): rows, guests, unparsable
   bits, the profile's measures, and the hashes of the keys two or more rows hold (collected in the same
   aggregation, so no census pass comes first);
2. **the rows of those keys** read again (a broadcast semi-join on the hashes) and sent through the job's
   copies-and-conflicts window (:func:`xsell.validation.route`), to correct their outcomes.

Two designs without the second read are timed too: :func:`single_pass` (each key's distinct rows travel
through the aggregation as small structs) and :func:`narrow_pass` (per key only the smallest and largest
of two row hashes and of the row-local code: enough for every key but those of three or more rows that
are not all copies).

Before timing each size, each design's rows per outcome are checked to equal ``jobs.validate``'s on the
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
from jobs import validate  # noqa: E402
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


def first_pass(prepared: DataFrame, suite: TableSuite) -> tuple[Counter[int], list[int]]:
    """Rows per outcome code of the rows alone on their key (their profile is aggregated alongside), and
    the hashes of the keys held more than once."""
    per_key = (prepared.groupBy(validation.key_hash(suite).alias("_key_hash"))
               .agg(F.count("*").alias("rows"), F.first("date").alias("date"), F.first("_local").alias("code"),
                    F.bit_or(validation.UNPARSABLE).alias("unparsable"),
                    F.max(F.col("customer_id").isNull().cast("int")).alias("guest"),
                    F.min("unit_price").alias("min_price"), F.max((F.col("quantity") == 0).cast("int")).alias("zeros"),
                    F.min("order_ts").alias("first_ts"), F.max("order_ts").alias("last_ts")))
    shared = F.col("rows") > 1
    found = (per_key.groupBy("date", F.when(shared, F.lit(-1)).otherwise(F.col("code")).alias("code"))
             .agg(F.sum("rows").alias("rows"), F.sum("guest").alias("guests"), F.bit_or("unparsable").alias("unparsable"),
                  F.min("min_price").alias("min_price"), F.sum("zeros").alias("zeros"),
                  F.min("first_ts").alias("first_ts"), F.max("last_ts").alias("last_ts"),
                  F.collect_list(F.when(shared, F.col("_key_hash"))).alias("shared"))
             .collect())
    return _known_counts(found), [value for group in found for value in group["shared"]]


def _known_counts(groups: list) -> Counter[int]:
    """Rows per outcome code of aggregated ``groups``, leaving out the unresolved (code -1)."""
    counts: Counter[int] = Counter()
    for group in groups:
        if group["code"] != -1:
            counts[int(group["code"])] += group["rows"]
    return counts


def single_pass(prepared: DataFrame, suite: TableSuite) -> Counter[int]:
    """Rows per outcome code from one aggregation, with no second read: each key's distinct rows travel
    through the aggregation as a small struct (two hashes of the contract columns, the row-local code
    and the profile's inputs), since exact copies share all of them. A key's copies are its rows less its
    distinct rows; each distinct row takes its row-local code, or the key-conflict code when the key is
    present and held by two or more distinct rows. Two different rows of one key are taken for copies
    only if both 64- and 32-bit hashes of their columns collide."""
    conflict = validation.conflict_code(suite)
    present = validation.key_present(suite)
    row = F.struct(F.xxhash64(*suite.columns).alias("h"), F.hash(*suite.columns).alias("h2"),
                   F.col("_local").alias("local"), F.col("customer_id").isNull().alias("guest"),
                   F.col(validation.UNPARSABLE).alias("unparsable"), "unit_price", "quantity", "order_ts")
    per_key = (prepared.groupBy(validation.key_hash(suite).alias("_key_hash"))
               .agg(F.count("*").alias("n"), F.first("date").alias("date"), F.first(present).alias("present"),
                    F.array_distinct(F.collect_list(row)).alias("rows")))
    distinct = (per_key.select("date", "present", "n", F.size("rows").alias("d"), F.posexplode("rows").alias("pos", "r"))
                .withColumn("code", F.when(F.col("r.local") != validation.VALID_CODE, F.col("r.local"))
                            .when(F.col("present") & (F.col("d") > 1), F.lit(conflict))
                            .otherwise(F.lit(validation.VALID_CODE))))
    found = (distinct.groupBy("date", "code")
             .agg(F.count("*").alias("rows"),
                  F.sum(F.when(F.col("pos") == 0, F.col("n") - F.col("d")).otherwise(0)).alias("copies"),
                  F.sum(F.col("r.guest").cast("long")).alias("guests"), F.bit_or("r.unparsable").alias("unparsable"),
                  F.min("r.unit_price").alias("min_price"), F.sum((F.col("r.quantity") == 0).cast("long")).alias("zeros"),
                  F.min("r.order_ts").alias("first_ts"), F.max("r.order_ts").alias("last_ts"))
             .collect())
    counts: Counter[int] = Counter()
    for group in found:
        counts[int(group["code"])] += group["rows"]
        counts[validation.DUPLICATE_CODE] += group["copies"]
    return +counts


def narrow_pass(prepared: DataFrame, suite: TableSuite) -> tuple[Counter[int], list[int]]:
    """Rows per outcome code from one aggregation of narrow per-key columns, and the hashes of the keys it
    cannot resolve alone. A key's rows are all exact copies when the smallest and largest of two hashes
    of their columns agree (one row kept, the rest duplicates); a key of two rows that differ holds two
    distinct rows, each taking its row-local code or the key-conflict code. Only keys of three or more
    rows, not all copies, are left for the window (none on the bench's day)."""
    conflict = validation.conflict_code(suite)
    present = validation.key_present(suite)
    wide, narrow = F.xxhash64(*suite.columns), F.hash(*suite.columns)
    per_key = (prepared.groupBy(validation.key_hash(suite).alias("_key_hash"))
               .agg(F.count("*").alias("n"), F.first("date").alias("date"), F.first(present).alias("present"),
                    F.min(wide).alias("h0"), F.max(wide).alias("h1"), F.min(narrow).alias("g0"),
                    F.max(narrow).alias("g1"), F.min("_local").alias("l0"), F.max("_local").alias("l1"),
                    F.max(F.col("customer_id").isNull().cast("int")).alias("guest"),
                    F.bit_or(validation.UNPARSABLE).alias("unparsable"), F.min("unit_price").alias("min_price"),
                    F.max((F.col("quantity") == 0).cast("int")).alias("zeros"),
                    F.min("order_ts").alias("first_ts"), F.max("order_ts").alias("last_ts")))
    copies = (F.col("h0") == F.col("h1")) & (F.col("g0") == F.col("g1"))

    def own(local: str):  # a distinct row's code in a key of two distinct rows
        return (F.when(F.col(local) != validation.VALID_CODE, F.col(local))
                .when(F.col("present"), F.lit(conflict)).otherwise(F.lit(validation.VALID_CODE)))

    entries = (F.when(copies, F.array(F.struct(F.col("l0").cast("int").alias("code"), F.lit(1).alias("rows")),
                                      F.struct(F.lit(validation.DUPLICATE_CODE).alias("code"), (F.col("n") - 1).alias("rows"))))
               .when(F.col("n") == 2, F.array(F.struct(own("l0").cast("int").alias("code"), F.lit(1).alias("rows")),
                                             F.struct(own("l1").cast("int").alias("code"), F.lit(1).alias("rows"))))
               .otherwise(F.array(F.struct(F.lit(-1).alias("code"), F.col("n").alias("rows")))))
    kept = copies & (F.col("l0") == validation.VALID_CODE) & (F.col("e.code") == validation.VALID_CODE)
    found = (per_key.select("*", F.explode(entries).alias("e"))
             .groupBy("date", F.col("e.code").alias("code"))
             .agg(F.sum("e.rows").alias("rows"), F.sum(F.when(kept, F.col("guest"))).alias("guests"),
                  F.bit_or("unparsable").alias("unparsable"), F.min(F.when(kept, F.col("min_price"))).alias("min_price"),
                  F.sum(F.when(kept, F.col("zeros"))).alias("zeros"), F.min(F.when(kept, F.col("first_ts"))).alias("first_ts"),
                  F.max(F.when(kept, F.col("last_ts"))).alias("last_ts"),
                  F.collect_list(F.when(F.col("e.code") == -1, F.col("_key_hash"))).alias("unresolved"))
             .collect())
    return +_known_counts(found), [value for group in found for value in group["unresolved"]]


def second_pass(spark: SparkSession, prepared: DataFrame, suite: TableSuite, hashes: list[int]) -> list:
    """The rows of the keys held more than once, routed by the job's window, counted by outcome."""
    shared = spark.createDataFrame([(value,) for value in hashes], "_key_hash long")
    _, together = validation.route(validation.holding(prepared, shared, suite), suite, shared=None)
    return together.groupBy("date", "_code").agg(F.count("*").alias("rows")).collect()


def same_counts_as_the_job(spark: SparkSession, settings: Settings) -> None:
    """Each design's rows per outcome must equal ``jobs.validate``'s on the same day (else the study
    measures something else)."""
    suite = validate.order_lines_suite(settings)
    counts, hashes = first_pass(prepared_rows(spark, settings, suite), suite)
    for row in second_pass(spark, prepared_rows(spark, settings, suite), suite, hashes):
        counts[int(row["_code"])] += row["rows"]
    known = validation.outcomes(suite)
    single = single_pass(prepared_rows(spark, settings, suite), suite)
    assert single == +counts, f"the single pass's counts {dict(single)} differ from the two passes' {dict(counts)}"
    narrow, unresolved = narrow_pass(prepared_rows(spark, settings, suite), suite)
    assert narrow == +counts and not unresolved, f"the narrow pass's counts {dict(narrow)} differ from {dict(counts)}"
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
    suite = validate.order_lines_suite(settings)
    started = time.perf_counter()
    _, hashes = first_pass(prepared_rows(spark, settings, suite), suite)
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
             "| both (s) | ratio | single pass (s) | ratio | narrow pass (s) | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(overrides={"home": home})
        spark = session(settings, "xsell-bench-one-pass")
        for rows in args.rows:
            path = land_day(settings.landing, rows, copy_share=0.005, reused_share=0.001)
            plain_pass(spark, path)  # warm-up
            same_counts_as_the_job(spark, settings)
            plain = statistics.median(_timed(lambda: plain_pass(spark, path)) for _ in range(args.repeat))
            runs = [one_pass(spark, settings) for _ in range(args.repeat)]
            suite = validate.order_lines_suite(settings)
            single = statistics.median(_timed(lambda: single_pass(prepared_rows(spark, settings, suite), suite))
                                       for _ in range(args.repeat))
            narrow = statistics.median(_timed(lambda: narrow_pass(prepared_rows(spark, settings, suite), suite))
                                       for _ in range(args.repeat))
            first, second = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            both = statistics.median(r[0] + r[1] for r in runs)
            lines.append(f"| {rows:,d} | {runs[0][2]:,d} | {plain:.2f} | {first:.2f} | {second:.2f} | {both:.2f} "
                         f"| {both / plain:.2f}x | {single:.2f} | {single / plain:.2f}x | {narrow:.2f} | {narrow / plain:.2f}x |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


def _timed(function) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
