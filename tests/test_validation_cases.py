"""The documented outcome of each kind of bad input, on a landing zone built in each test.

Row-level problems are routed (quarantined with their rule, or excluded by design) and the run goes on;
critical problems stop the run before anything reaches the lake. Either way the conservation sum holds
and the warehouse table ``validation_runs`` says what happened.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest
from pyspark.sql import SparkSession

from conftest import ORDER_COLUMNS, PRODUCT_COLUMNS, PRODUCTS, land, order_line, write_csv
from jobs import validate
from xsell import lake, validation
from xsell.config import Settings

DAY = dt.date(2025, 3, 3)  # a Monday
GOOD = [order_line(f"G{i}", 1, "C1", DAY, "P1") for i in range(40)]  # enough clean lines to keep gates quiet


def runs(settings: Settings) -> list[dict]:
    """The warehouse's ``validation_runs`` rows, as dicts, oldest first."""
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        cursor = connection.execute('SELECT * FROM "main"."validation_runs" ORDER BY validated_at, table_name, data_date')
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def order_run(settings: Settings, day: dt.date = DAY) -> dict:
    return next(row for row in runs(settings) if row["table_name"] == "order_lines" and row["data_date"] == day)


def assert_conserved(summary: validation.DaySummary) -> None:
    assert summary.rows_in == summary.rows_valid + summary.rows_quarantined + summary.rows_excluded


def orders_of(summaries: list[validation.DaySummary], day: dt.date = DAY) -> validation.DaySummary:
    return next(s for s in summaries if s.table_name == "order_lines" and s.date == day)


def assert_stopped(settings: Settings, rule: str) -> dict:
    """Nothing reached the lake; the warehouse records the failed run with its rule."""
    assert not lake.exists(settings.lake, "order_lines")
    assert not lake.exists(settings.lake, "quarantine")
    row = order_run(settings)
    assert (row["status"], row["gate_passed"], row["failed_rule"]) == ("failed", False, rule)
    if row["rows_in"] is not None:
        assert row["rows_in"] == row["rows_valid"] + row["rows_quarantined"] + row["rows_excluded"]
    return row


# --- row-level problems: routed, the run goes on ------------------------------------------------------
ROUTED = {
    "negative quantity on a completed line": (order_line("X", 1, "C1", DAY, "P1", quantity=-2), "quarantined", "range:quantity"),
    "zero price": (order_line("X", 1, "C1", DAY, "P1", price=0.0), "quarantined", "range:unit_price"),
    "negative price": (order_line("X", 1, "C1", DAY, "P1", price=-5.0), "quarantined", "range:unit_price"),
    "timestamp after the interval": (order_line("X", 1, "C1", DAY + dt.timedelta(days=1), "P1"), "quarantined",
                                     "interval:order_ts"),
    "unknown currency": (order_line("X", 1, "C1", DAY, "P1")[:7] + ("XYZ", "web", "completed"), "quarantined",
                         "in_set:currency"),
    "unknown product id": (order_line("X", 1, "C1", DAY, "P404"), "quarantined", "known:product_id"),
    "missing order id": (order_line(None, 1, "C1", DAY, "P1"), "quarantined", "not_null:order_id"),
    "adjustment line (non-product code)": (order_line("A1", 1, None, DAY, "ADJUST", price=-100.0), "excluded",
                                           "non_product"),
    "postage line (non-product code)": (order_line("X", 2, "C1", DAY, "POST"), "excluded", "non_product"),
    "a return": (order_line("R1", 1, "C1", DAY, "P1", quantity=-1, status="returned"), "valid", None),
    "a cancellation line": (order_line("C1", 1, "C1", DAY, "P1", quantity=-1, status="cancelled"), "valid", None),
    "a guest checkout": (order_line("X", 1, None, DAY, "P1"), "valid", None),
}


@pytest.mark.parametrize("case", list(ROUTED))
def test_row_problems_are_routed_with_their_rule(spark: SparkSession, settings: Settings, case: str) -> None:
    line, outcome, rule = ROUTED[case]
    settings = settings.model_copy(update={"validation": settings.validation.model_copy(
        update={"excluded_products": ("POST",), "excluded_product_pattern": "ADJ.*"})})
    land(settings.landing, DAY, [*GOOD, line])
    summary = orders_of(validate.run(spark, settings, DAY, run_id="r1"))
    assert_conserved(summary)
    counts = {"valid": summary.rows_valid - len(GOOD), "quarantined": summary.rows_quarantined,
              "excluded": summary.rows_excluded}
    assert counts == {kind: int(kind == outcome) for kind in counts}
    if outcome == "quarantined":
        assert summary.by_rule == {rule: 1}
        stored = lake.read(spark, settings.lake, "quarantine").filter("table_name = 'order_lines'").collect()
        assert [(row.rule_id, row.run_id, Path(row.source_file).name) for row in stored] == [(rule, "r1", "part-0.csv")]
        assert json.loads(stored[0].record)["product_id"] == line[4]  # the raw row as it arrived
    if outcome == "excluded":
        assert summary.excluded_by_reason == {rule: 1}
    assert lake.read(spark, settings.lake, "order_lines").count() == summary.rows_valid
    row = order_run(settings)
    assert (row["status"], row["gate_passed"], row["rows_in"]) == ("passed", True, len(GOOD) + 1)


def test_exact_duplicate_lines_keep_one_copy(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, [*GOOD, order_line("D", 1, "C1", DAY, "P3"), order_line("D", 1, "C1", DAY, "P3")])
    summary = orders_of(validate.run(spark, settings, DAY, run_id="r1"))
    assert_conserved(summary)
    assert (summary.rows_valid, summary.excluded_by_reason) == (len(GOOD) + 1, {"duplicate": 1})


def test_a_file_delivered_twice_is_counted_once(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, GOOD)
    folder = settings.landing / "order_lines" / f"date={DAY}"
    (folder / "part-0-redelivered.csv").write_bytes((folder / "part-0.csv").read_bytes())
    summary = orders_of(validate.run(spark, settings, DAY, run_id="r1"))
    assert_conserved(summary)
    assert (summary.rows_in, summary.rows_valid, summary.excluded_by_reason) == (80, 40, {"duplicate": 40})
    assert lake.read(spark, settings.lake, "order_lines").count() == 40


def test_a_late_file_is_picked_up_by_rerunning_its_day(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, GOOD)
    validate.run(spark, settings, DAY, run_id="r1")
    write_csv(settings.landing / "order_lines" / f"date={DAY}" / "part-1-late.csv", ORDER_COLUMNS,
              [order_line(f"L{i}", 1, "C3", DAY, "P4") for i in range(5)])
    summary = orders_of(validate.run(spark, settings, DAY, run_id="r2"))
    assert (summary.rows_in, summary.rows_valid) == (45, 45)
    day = lake.read(spark, settings.lake, "order_lines").filter(f"date = '{DAY}'")
    assert day.count() == 45 and day.filter("customer_id = 'C3'").count() == 5


def test_a_corrected_redelivery_leaves_no_stale_quarantine(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, [*GOOD, order_line("X", 1, "C1", DAY, "P1", price=0.0)])
    validate.run(spark, settings, DAY, run_id="r1")
    assert lake.read(spark, settings.lake, "quarantine").filter("table_name = 'order_lines'").count() == 1
    land(settings.landing, DAY, [*GOOD, order_line("X", 1, "C1", DAY, "P1", price=5.0)])  # the fixed file
    validate.run(spark, settings, DAY, run_id="r2")
    assert not (settings.lake / "quarantine" / "table_name=order_lines" / f"date={DAY}").exists()
    assert lake.read(spark, settings.lake, "order_lines").count() == len(GOOD) + 1


def test_a_quoted_name_with_an_embedded_newline_stays_one_row(spark: SparkSession, settings: Settings) -> None:
    products = [*PRODUCTS, ("P5", 'Poster "Sea",\nframed', "prints", None, None, 12.0, 0.3, "true")]
    land(settings.landing, DAY, GOOD, products=products)
    summaries = validate.run(spark, settings, DAY, run_id="r1")
    catalogue = next(s for s in summaries if s.table_name == "products")
    assert (catalogue.rows_in, catalogue.rows_valid) == (5, 5)
    stored = lake.read(spark, settings.lake, "products").filter("product_id = 'P5'").first()
    assert stored.name == 'Poster "Sea",\nframed'


# --- critical problems: the run stops before the lake -------------------------------------------------
def test_an_empty_day_stops(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, [])
    write_csv(settings.landing / "order_lines" / f"date={DAY}" / "part-0.csv", ORDER_COLUMNS, [])
    with pytest.raises(validation.DataQualityError, match=r"order_lines 2025-03-03: 0 rows, fewer than 1 \(rule: min_rows\)"):
        validate.run(spark, settings, DAY, run_id="r1")
    row = assert_stopped(settings, "min_rows")
    assert row["rows_in"] == 0


def test_a_missing_day_stops_unless_the_shop_is_closed(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, [])
    with pytest.raises(validation.DataQualityError, match=r"no order files for the run date \(rule: min_rows\)"):
        validate.run(spark, settings, DAY, run_id="r1")
    assert_stopped(settings, "min_rows")
    closed = settings.model_copy(update={"validation": settings.validation.model_copy(update={"closed_weekdays": (1,)})})
    summaries = validate.run(spark, closed, DAY, run_id="r2")
    assert [s.table_name for s in summaries] == ["products", "customers"]


def test_an_extra_column_stops(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, [])
    write_csv(settings.landing / "order_lines" / f"date={DAY}" / "part-0.csv", [*ORDER_COLUMNS, "coupon"],
              [(*line, "SPRING") for line in GOOD])
    with pytest.raises(validation.DataQualityError, match=r"part-0\.csv: unexpected column\(s\) coupon \(rule: schema"):
        validate.run(spark, settings, DAY, run_id="r1")
    assert_stopped(settings, "schema")


def test_a_string_in_a_numeric_column_stops(spark: SparkSession, settings: Settings) -> None:
    bad = list(order_line("B", 1, "C1", DAY, "P1"))
    bad[ORDER_COLUMNS.index("unit_price")] = "12,50"
    land(settings.landing, DAY, [*GOOD, tuple(bad)])
    with pytest.raises(validation.DataQualityError,
                       match=r"part-0\.csv: column unit_price holds 1 value\(s\) that are not double, first '12,50'"):
        validate.run(spark, settings, DAY, run_id="r1")
    assert_stopped(settings, "parsable:unit_price")


def test_thirty_percent_missing_customer_ids_stop_the_run(spark: SparkSession, settings: Settings) -> None:
    lines = [order_line(f"O{i}", 1, None if i % 10 < 3 else "C1", DAY, "P1") for i in range(100)]
    land(settings.landing, DAY, lines)
    with pytest.raises(validation.DataQualityError, match=r"30\.0% of valid rows have no customer_id.*guest_rate"):
        validate.run(spark, settings, DAY, run_id="r1")
    row = assert_stopped(settings, "guest_rate:customer_id")
    assert (row["rows_in"], row["rows_valid"], row["rows_guest"]) == (100, 100, 30)


def test_a_day_far_below_its_trailing_average_stops(spark: SparkSession, settings: Settings) -> None:
    volume = settings.validation.volume.model_copy(update={"min_average_rows": 10})
    settings = settings.model_copy(update={"validation": settings.validation.model_copy(update={"volume": volume})})
    days = [DAY - dt.timedelta(days=n) for n in range(6, 0, -1)]
    for day in days:
        land(settings.landing, day, [order_line(f"O{day.day}-{i}", 1, "C1", day, "P1") for i in range(40)],
             snapshot=day == days[0])
    validate.run(spark, settings, days[-1], run_id="history", since=days[0])
    land(settings.landing, DAY, GOOD[:4])  # a tenth of a normal day: a partial delivery
    with pytest.raises(validation.DataQualityError, match=r"4 raw rows, 0\.10x the trailing average.*volume:day_over_day"):
        validate.run(spark, settings, DAY, run_id="r1")
    row = order_run(settings)
    assert (row["status"], row["failed_rule"], row["volume_ratio"]) == ("failed", "volume:day_over_day", pytest.approx(0.1))
    assert lake.read(spark, settings.lake, "order_lines").filter(f"date = '{DAY}'").count() == 0


def test_volume_is_judged_only_with_enough_history_and_rows() -> None:
    def day(date: dt.date, rows: int) -> validation.DaySummary:
        return validation.DaySummary("order_lines", date, rows, rows, 0, 0, {}, {})

    history = {DAY - dt.timedelta(days=n): 200 for n in range(1, 6)}
    judged = validation.with_volume([day(DAY, 50)], history, trailing_days=28, min_history_days=5, min_average_rows=100)
    assert judged[0].volume_ratio == pytest.approx(0.25)
    too_short = dict(list(history.items())[:4])
    assert validation.with_volume([day(DAY, 50)], too_short, trailing_days=28, min_history_days=5)[0].volume_ratio is None
    small_shop = {date: 20 for date in history}
    assert validation.with_volume([day(DAY, 2)], small_shop, trailing_days=28, min_history_days=5,
                                  min_average_rows=100)[0].volume_ratio is None
    old = {date - dt.timedelta(days=60): rows for date, rows in history.items()}  # outside the trailing window
    assert validation.with_volume([day(DAY, 50)], old, trailing_days=28, min_history_days=5)[0].volume_ratio is None


def test_a_passed_run_leaves_data_docs_and_one_row_per_table(spark: SparkSession, settings: Settings) -> None:
    settings = settings.model_copy(update={"validation": settings.validation.model_copy(update={"data_docs": True})})
    land(settings.landing, DAY, GOOD)
    validate.run(spark, settings, DAY, run_id="r1")
    rows = runs(settings)
    assert sorted(row["table_name"] for row in rows) == ["customers", "order_lines", "products"]
    for row in rows:
        assert row["status"] == "passed" and row["failed_rule"] is None
        page = Path(row["data_docs"])
        assert page.is_file() and page.suffix == ".html" and settings.data_docs in page.parents
        assert row["table_name"] in page.read_text()
    assert (settings.data_docs / "index.html").is_file()
    validate.run(spark, settings, DAY, run_id="r1")  # the same run again: replaced, not doubled
    assert len(runs(settings)) == 3


def test_the_product_suite_stops_a_catalogue_without_rows(spark: SparkSession, settings: Settings) -> None:
    land(settings.landing, DAY, GOOD)
    write_csv(settings.landing / "products" / f"date={DAY}" / "part-0.csv", PRODUCT_COLUMNS, [])
    with pytest.raises(validation.DataQualityError, match=r"products 2025-03-03: 0 rows, fewer than 1 \(rule: min_rows\)"):
        validate.run(spark, settings, DAY, run_id="r1")
    row = next(row for row in runs(settings) if row["table_name"] == "products")
    assert (row["status"], row["rows_in"]) == ("failed", 0)
