"""The validate job on tiny landing zones built in each test."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from conftest import ORDER_COLUMNS, land, order_line, write_csv
from expectations import order_lines as order_suite
from jobs import validate
from xsell import lake, schemas, validation
from xsell.config import Settings

DAY = dt.date(2025, 3, 3)


def lenient(settings: Settings) -> Settings:
    """Settings whose quarantine gate lets a tiny, very dirty day through."""
    return settings.model_copy(update={"validation": settings.validation.model_copy(update={"max_quarantine_rate": 0.9, "max_guest_rate": 1.0})})


def dirty_day() -> list[tuple]:
    return [
        order_line("O1", 1, "C1", DAY, "P1"),
        order_line("O1", 2, "C1", DAY, "P3"),
        order_line("O1", 2, "C1", DAY, "P3"),  # exact duplicate: excluded
        order_line("O2", 1, None, DAY, "P4"),  # guest checkout: valid
        order_line("O3", 1, "C3", DAY, "P9"),  # unknown product: quarantined
        order_line("O4", 1, "C3", DAY, "P4", quantity=-1),  # negative on a completed line: quarantined
        order_line("O5", 1, "C1", DAY, "P4", status="returned", quantity=-1),  # a return: valid
        order_line("O6", 1, "C1", DAY + dt.timedelta(days=2), "P4"),  # timestamp after the interval
        order_line("O7", 1, "C1", DAY, "P4", price=0.0),  # zero price: quarantined
        order_line("O8", 1, "C3", DAY, "P1"),
        order_line("O8", 1, "C3", DAY, "P2"),  # same key, different content: both quarantined
    ]


def test_rows_are_routed_and_conserved(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, dirty_day())
    summaries = validate.run(spark, lenient(settings), DAY, run_id="r1")

    orders = [s for s in summaries if s.table_name == "order_lines"][0]
    assert (orders.rows_in, orders.rows_valid, orders.rows_quarantined, orders.rows_excluded) == (11, 4, 6, 1)
    assert orders.by_rule == {"known:product_id": 1, "range:quantity": 1, "interval:order_ts": 1,
                              "range:unit_price": 1, "unique:order_id+line_number": 2}
    kept = lake.read(spark, settings.lake, "order_lines").select("order_id", "line_number", "customer_id", "quantity")
    expected = spark.createDataFrame(
        [("O1", 1, "C1", 1), ("O1", 2, "C1", 1), ("O2", 1, None, 1), ("O5", 1, "C1", -1)],
        "order_id STRING, line_number INT, customer_id STRING, quantity INT")
    assertDataFrameEqual(kept, expected)
    quarantine = lake.read(spark, settings.lake, "quarantine").filter(F.col("table_name") == "order_lines")
    records = {(json.loads(row.record)["order_id"], row.rule_id) for row in quarantine.collect()}
    assert records == {("O3", "known:product_id"), ("O4", "range:quantity"), ("O6", "interval:order_ts"),
                       ("O7", "range:unit_price"), ("O8", "unique:order_id+line_number")}
    assert all(row.run_id == "r1" and row.source_file.endswith("part-0.csv") for row in quarantine.collect())
    runs = lake.read(spark, settings.lake, "validation_runs").filter(F.col("table_name") == "order_lines").first()
    assert runs.rows_in == runs.rows_valid + runs.rows_quarantined + runs.rows_excluded


@pytest.mark.parametrize("max_shared_keys", [0, validation.MAX_SHARED_KEYS], ids=["window", "census"])
def test_census_routing_equals_one_window_over_every_row(spark: SparkSession, settings: Settings,
                                                         monkeypatch: pytest.MonkeyPatch, max_shared_keys: int) -> None:
    # Shared keys: an exact copy (O1/2), a conflict (O8/1), two null keys that are copies of each other
    # and one that differs (no key conflict without a key, but the copy is excluded).
    lines = dirty_day() + [order_line(None, None, "C1", DAY, "P1")] * 2 + [order_line(None, None, "C1", DAY, "P2")]
    land(settings.landing, DAY, lines)
    monkeypatch.setattr(validation, "MAX_SHARED_KEYS", max_shared_keys)
    summaries = validate.run(spark, lenient(settings), DAY, run_id="r1")
    orders = [s for s in summaries if s.table_name == "order_lines"][0]
    assert (orders.rows_in, orders.rows_valid, orders.rows_quarantined, orders.rows_excluded) == (14, 4, 8, 2)
    assert orders.by_rule == {"known:product_id": 1, "range:quantity": 1, "interval:order_ts": 1, "range:unit_price": 1,
                              "unique:order_id+line_number": 2, "not_null:order_id": 2}
    assert orders.excluded_by_reason == {"duplicate": 2}


def test_the_counts_and_profile_of_one_aggregation_equal_those_of_the_rows_kept(spark: SparkSession,
                                                                                settings: Settings) -> None:
    # The job counts outcomes and builds GX's day profile in one aggregation by date and routing code;
    # the profile must be what the reference, an aggregation over the rows kept, gives.
    lines = dirty_day() + [order_line("O9", 1, None, DAY, "P2"), order_line("O9", 2, "C1", DAY, "P1", quantity=0)]
    land(settings.landing, DAY, lines)
    suite = order_suite.suite(currencies=settings.validation.currencies)
    raw = validation.read_raw(spark, [validation.landing_day(settings.landing, "order_lines", DAY)], suite.columns)
    parsed = validation.parse(raw, schemas.ORDER_LINES_DDL)
    catalogue = spark.createDataFrame([(f"P{i}",) for i in range(1, 5)], "product_id STRING")
    prepared = validation.prepare(validation.flag_known(parsed, catalogue, column="product_id",
                                                        flag=order_suite.IN_CATALOGUE), suite).cache()
    shared = validation.shared_keys(prepared, suite).cache()
    routed, may_share = validation.route(prepared, suite, shared=shared)
    counts = validation.count_outcomes(routed, suite, ddl=schemas.ORDER_LINES_DDL, guest_column="customer_id")
    kept = validation.kept_rows(routed, suite)
    repeated = validation.key_duplicates(validation.kept_rows(may_share, suite), suite)
    found = validation.profile(counts, suite, repeated)
    reference = validation.day_profile(kept, suite)
    assert list(found.columns) == list(reference.columns)
    pd.testing.assert_frame_equal(found, reference, check_dtype=False)
    assert found.loc[0, "rows"] == 5 and found.loc[0, "quantity__zeros"] == 0 and found.loc[0, "key_duplicates"] == 0
    [day] = validation.summarize(prepared, counts, suite, dates=[DAY], ddl=schemas.ORDER_LINES_DDL)
    assert (day.rows_in, day.rows_valid, day.rows_quarantined, day.rows_excluded, day.rows_guest) == (13, 5, 7, 1, 2)
    assert day.by_rule["range:quantity"] == 2 and day.excluded_by_reason == {"duplicate": 1}
    stored = validation.quarantine_rows(routed, suite, run_id="r1").collect()
    assert sorted((json.loads(row.record)["order_id"], row.rule_id) for row in stored)[-2:] == [
        ("O8", "unique:order_id+line_number"), ("O9", "range:quantity")]
    assert {row.reason for row in stored if row.rule_id == "range:quantity"} == {
        "quantity is zero, or negative on a completed line"}
    prepared.unpersist()
    shared.unpersist()


def test_a_hash_collision_in_the_census_routes_no_row_differently(spark: SparkSession, settings: Settings) -> None:
    # The census finds shared keys by a 64-bit hash of (date, key); a collision makes a key that one row
    # holds look shared. Simulated by adding the hashes of every key: the rows must route as before.
    land(settings.landing, DAY, dirty_day())
    suite = order_suite.suite(currencies=settings.validation.currencies)
    raw = validation.read_raw(spark, [validation.landing_day(settings.landing, "order_lines", DAY)], suite.columns)
    catalogue = spark.createDataFrame([(f"P{i}",) for i in range(1, 5)], "product_id STRING")
    parsed = validation.flag_known(validation.parse(raw, schemas.ORDER_LINES_DDL), catalogue, column="product_id",
                                   flag=order_suite.IN_CATALOGUE)
    prepared = validation.prepare(parsed, suite).cache()
    shared = validation.shared_keys(prepared, suite)
    colliding = prepared.select(validation.key_hash(suite).alias("_key_hash")).distinct()
    assert colliding.count() > shared.count() == 2

    def codes(census):
        routed, _ = validation.route(prepared, suite, shared=census)
        return sorted((row.order_id, row.line_number, row.product_id, row._code)
                      for row in routed.select("order_id", "line_number", "product_id", "_code").collect())

    assert codes(colliding) == codes(shared)
    prepared.unpersist()


def test_the_profile_judged_by_gx_names_the_measure_and_the_value(spark: SparkSession) -> None:
    suite = order_suite.suite(currencies=["GBP"])
    typed = spark.createDataFrame([order_line("O1", 1, "C1", DAY, "P1"), order_line("O1", 2, "C1", DAY, "P1")],
                                  ",".join(f"{c} STRING" for c in ORDER_COLUMNS))
    typed = typed.select(*[F.col(c).cast(t) for c, t in zip(ORDER_COLUMNS, [
        "string", "int", "string", "timestamp", "string", "int", "double", "string", "string", "string"])])
    kept = typed.withColumn("date", F.lit(DAY))
    profile = validation.day_profile(kept, suite)
    assert profile.loc[0, "rows"] == 2 and profile.loc[0, "key_duplicates"] == 0
    assert profile.loc[0, "currency__values"] == "GBP" and profile.loc[0, "unit_price__min"] > 0
    assert profile.loc[0, "order_id__nulls"] == 0 and str(profile.loc[0, "order_ts__max_date"]) == str(DAY)
    late = kept.withColumn("order_ts", F.when(F.col("line_number") == 2, F.lit("2025-03-05 10:00:00").cast("timestamp"))
                           .otherwise(F.col("order_ts")))
    with pytest.raises(validation.DataQualityError, match=r"expect_column_pair_values_to_be_equal on order_ts__max_date"):
        validation.run_suite(late, suite, what="late")
    twice = kept.withColumn("line_number", F.lit(1))
    with pytest.raises(validation.DataQualityError, match=r"key_duplicates \(found \[1\]\)"):
        validation.run_suite(twice, suite, what="twice")


def test_rerun_replaces_the_day(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, dirty_day())
    validate.run(spark, lenient(settings), DAY, run_id="r1")
    before = lake.read(spark, settings.lake, "order_lines")
    first = spark.createDataFrame(before.collect(), schema=before.schema)
    validate.run(spark, lenient(settings), DAY, run_id="r2")
    assertDataFrameEqual(lake.read(spark, settings.lake, "order_lines"), first)
    assert lake.read(spark, settings.lake, "quarantine").filter(F.col("table_name") == "order_lines").count() == 6


def test_backfill_validates_every_landed_day(spark: SparkSession, settings: Settings) -> None:
    days = [DAY - dt.timedelta(days=2), DAY - dt.timedelta(days=1), DAY]
    for day in days:
        land(settings.landing, day, [order_line(f"O{day.day}", 1, "C1", day, "P1")], snapshot=day == DAY)
    summaries = validate.run(spark, settings, DAY, run_id="r1", since=days[0])
    assert sorted(s.date for s in summaries if s.table_name == "order_lines") == days
    assert lake.read(spark, settings.lake, "order_lines").count() == 3


def _assert_nothing_written(settings: Settings) -> None:
    assert not lake.exists(settings.lake, "order_lines")
    assert not lake.exists(settings.lake, "validation_runs")


def test_missing_column_stops_naming_file_and_column(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, [])
    header = [c for c in ORDER_COLUMNS if c != "currency"]
    write_csv(settings.landing / "order_lines" / f"date={DAY}" / "part-0.csv", header,
              [tuple(v for c, v in zip(ORDER_COLUMNS, order_line("O1", 1, "C1", DAY, "P1")) if c != "currency")])
    with pytest.raises(validation.DataQualityError, match=r"part-0\.csv: missing column\(s\) currency .*rule: schema"):
        validate.run(spark, settings, DAY, run_id="r1")
    _assert_nothing_written(settings)


def test_renamed_column_stops(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, [])
    header = ["qty" if c == "quantity" else c for c in ORDER_COLUMNS]
    write_csv(settings.landing / "order_lines" / f"date={DAY}" / "part-0.csv", header, [order_line("O1", 1, "C1", DAY, "P1")])
    with pytest.raises(validation.DataQualityError, match=r"missing column\(s\) quantity; unexpected column\(s\) qty"):
        validate.run(spark, settings, DAY, run_id="r1")
    _assert_nothing_written(settings)


def test_unparsable_value_stops_naming_file_and_column(spark: SparkSession, settings: Settings) -> None:
    bad = list(order_line("O2", 1, "C1", DAY, "P1"))
    bad[ORDER_COLUMNS.index("quantity")] = "two"
    land(settings.landing, DAY, [order_line("O1", 1, "C1", DAY, "P1"), tuple(bad)])
    with pytest.raises(validation.DataQualityError, match=r"part-0\.csv: column quantity .*'two' \(rule: parsable:quantity\)"):
        validate.run(spark, settings, DAY, run_id="r1")
    _assert_nothing_written(settings)


def test_empty_run_date_stops(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, [])
    with pytest.raises(validation.DataQualityError, match=r"no order files for the run date \(rule: min_rows\)"):
        validate.run(spark, settings, DAY, run_id="r1")
    _assert_nothing_written(settings)


def test_quarantine_rate_gate_stops(spark: SparkSession, settings: Settings) -> None:
    lines = [order_line(f"O{i}", 1, "C1", DAY, "P1") for i in range(6)] + [order_line("O9", 1, "C1", DAY, "P9")]
    land(settings.landing, DAY, lines)
    with pytest.raises(validation.DataQualityError, match=r"14\.3% of rows quarantined.*known:product_id"):
        validate.run(spark, settings, DAY, run_id="r1")
    _assert_nothing_written(settings)


def test_suite_passes_a_good_frame_and_fails_a_bad_one(spark: SparkSession) -> None:
    suite = order_suite.suite(currencies=["GBP"])
    good = spark.createDataFrame([order_line("O1", 1, "C1", DAY, "P1")], ",".join(
        f"{c} STRING" for c in ORDER_COLUMNS))
    typed = good.select(*[F.col(c).cast(t) for c, t in zip(ORDER_COLUMNS, [
        "string", "int", "string", "timestamp", "string", "int", "double", "string", "string", "string"])])
    validation.run_suite(typed.withColumn("date", F.lit(DAY)), suite, what="good")
    bad = typed.withColumn("currency", F.lit("XXX"))
    with pytest.raises(validation.DataQualityError, match="currency"):
        validation.run_suite(bad.withColumn("date", F.lit(DAY)), suite, what="bad")


def test_empty_frame_fails_the_suite(spark: SparkSession) -> None:
    suite = order_suite.suite(currencies=["GBP"])
    empty = spark.createDataFrame([], ",".join(f"{c} STRING" for c in ORDER_COLUMNS)).withColumn("date", F.lit(DAY))
    with pytest.raises(validation.DataQualityError, match="expect_table_row_count_to_be_between"):
        validation.run_suite(empty, suite, what="empty")


def test_landing_dates_ignores_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "order_lines" / "date=2025-01-02").mkdir(parents=True)
    (tmp_path / "order_lines" / "date=garbage").mkdir(parents=True)
    assert validation.landing_dates(tmp_path, "order_lines") == [dt.date(2025, 1, 2)]
