"""Validation of raw landing data: strict reading, parsing, routing to quarantine, and the GX suite.

Every raw row ends in exactly one of three outcomes: ``valid`` (kept), ``quarantined`` (broke a row rule;
kept aside with the rule and reason) or ``excluded`` (left out by design, such as an exact duplicate). The
conservation sum ``rows in = valid + quarantined + excluded`` is checked per day from independent counts.
Critical problems raise :class:`DataQualityError` naming the file, the column and the rule, before
anything is written.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from expectations.rules import TableSuite
from xsell import schemas

VALID, QUARANTINED, EXCLUDED = "valid", "quarantined", "excluded"
DUPLICATE = "duplicate"
UNPARSABLE = "_unparsable"
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet",)


class DataQualityError(RuntimeError):
    """A critical data problem: the run stops and nothing downstream is published.

    Every message ends with ``(rule: <rule id>...)``; :attr:`rule` gives the id.
    """

    @property
    def rule(self) -> str:
        found = re.search(r"\(rule: ([^;)]+)", str(self))
        return found.group(1) if found else "unknown"


@dataclass(frozen=True)
class LandingDay:
    """One day folder of a raw table and its data files."""

    table: str
    date: dt.date
    files: tuple[Path, ...]


def day_folder(landing: Path, table: str, date: dt.date) -> Path:
    return landing / table / f"date={date.isoformat()}"


def landing_day(landing: Path, table: str, date: dt.date) -> LandingDay:
    folder = day_folder(landing, table, date)
    files = tuple(sorted(path for path in folder.glob("*") if path.suffix in CSV_SUFFIXES + PARQUET_SUFFIXES))
    return LandingDay(table=table, date=date, files=files)


def landing_dates(landing: Path, table: str) -> list[dt.date]:
    """The dates that have a folder for ``table`` in the landing zone, sorted."""
    dates = []
    for folder in (landing / table).glob("date=*"):
        try:
            dates.append(dt.date.fromisoformat(folder.name.removeprefix("date=")))
        except ValueError:
            continue
    return sorted(dates)


def latest_snapshot(landing: Path, table: str, run_date: dt.date) -> LandingDay:
    """The newest snapshot of ``table`` dated on or before ``run_date``."""
    candidates = [date for date in landing_dates(landing, table) if date <= run_date]
    if not candidates:
        raise DataQualityError(
            f"{table}: no snapshot on or before {run_date} in {landing / table} (rule: snapshot_present)"
        )
    return landing_day(landing, table, candidates[-1])


# --- strict reading ---------------------------------------------------------------------------------
def _file_columns(path: Path) -> list[str]:
    if path.suffix in PARQUET_SUFFIXES:
        return list(pq.read_schema(path).names)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


def check_columns(days: Sequence[LandingDay], expected: Sequence[str]) -> None:
    """Every file must carry exactly the contract's columns, in order (critical: rule ``schema``)."""
    for day in days:
        for path in day.files:
            found = _file_columns(path)
            if found == list(expected):
                continue
            missing = [column for column in expected if column not in found]
            extra = [column for column in found if column not in expected]
            detail = "; ".join(
                filter(
                    None,
                    (
                        f"missing column(s) {', '.join(missing)}" if missing else "",
                        f"unexpected column(s) {', '.join(extra)}" if extra else "",
                        "columns out of order" if not missing and not extra else "",
                    ),
                )
            )
            raise DataQualityError(f"{path}: {detail} (rule: schema; expected {', '.join(expected)})")


def read_raw(spark: SparkSession, days: Sequence[LandingDay], columns: Sequence[str], *,
             multiline: bool = False) -> DataFrame:
    """All files of ``days`` as strings, plus ``source_file`` and the folder's ``date``.

    Everything is read as text so that nothing is silently turned into null: parsing happens in
    :func:`parse`, where a value that does not parse is caught and reported. ``multiline`` allows
    quoted values with line breaks (free text such as product names); it makes a file one task, so
    tables without free text are read without it (a 1M-line day: 5.7 s with it, 1.9 s without, 2 cores).
    """
    string_schema = StructType([StructField(column, StringType()) for column in columns])
    csv_files = [str(path) for day in days for path in day.files if path.suffix in CSV_SUFFIXES]
    parquet_files = [str(path) for day in days for path in day.files if path.suffix in PARQUET_SUFFIXES]
    frames = []
    if csv_files:
        # The day folders are read as partitions of the table's folder: ``date`` then comes with each file
        # (extracting it from every row's file path cost 1 s of a 1M-line day).
        table_folder = str(Path(csv_files[0]).parent.parent)
        frames.append(
            spark.read.option("basePath", table_folder)
            .csv(csv_files, schema=string_schema, header=True, multiLine=multiline, escape='"', mode="FAILFAST",
                 encoding="UTF-8", nullValue="")
            .select(*columns, F.col("_metadata.file_path").alias("source_file"), F.col("date").cast("date"))
        )
    if parquet_files:
        # A Parquet file may carry a column of its own named date: the folder's date is taken from the path.
        parquet = spark.read.parquet(*parquet_files)
        file_path = F.col("_metadata.file_path")
        frames.append(
            parquet.select(*[F.col(column).cast("string").alias(column) for column in columns],
                           file_path.alias("source_file"),
                           F.to_date(F.regexp_extract(file_path, r"date=(\d{4}-\d{2}-\d{2})", 1)).alias("date"))
        )
    if not frames:
        return spark.createDataFrame([], string_schema.add("source_file", StringType())).withColumn(
            "date", F.lit(None).cast("date"))
    raw = frames[0]
    for frame in frames[1:]:
        raw = raw.unionByName(frame)
    return raw


def parse(raw: DataFrame, ddl: str) -> DataFrame:
    """Typed contract columns next to the raw text (``_raw_<column>``, for quarantine records and error
    messages) and ``_unparsable``, a bit per column whose text did not parse (see :func:`bad_flags`)."""
    typed = []
    for column in schemas.struct(ddl).fields:
        text = F.trim(F.col(column.name))
        value = F.when(text == "", None).otherwise(text)
        if column.dataType.simpleString() == "boolean":
            parsed = F.lower(value).try_cast("boolean")
        elif column.dataType.simpleString() == "int":
            # CSV exports often write integers as floats ("17850.0"): accept an integral float.
            as_double = value.try_cast("double")
            parsed = F.when(as_double == F.floor(as_double), as_double.try_cast("int"))
        else:
            parsed = value.try_cast(column.dataType)
        typed.append(parsed.alias(column.name))
    raw_columns = [F.col(name).alias(f"_raw_{name}") for name in schemas.column_names(ddl)]
    # One bit per contract column: a column each would widen the cached rows (each cached column costs
    # time to build, 0.8 s for ten flags on a 1M-line day).
    flags = F.lit(0)
    for bit, condition in enumerate(unparsable(ddl).values()):
        flags = flags.bitwiseOR(F.when(condition, F.lit(1 << bit)).otherwise(F.lit(0)))
    return raw.select(*typed, *raw_columns, "source_file", "date").withColumn(UNPARSABLE, flags)


def unparsable(ddl: str) -> dict[str, Column]:
    """Per contract column: the raw text is there but did not parse as the column's type."""
    return {column: F.col(f"_raw_{column}").isNotNull() & (F.trim(F.col(f"_raw_{column}")) != "")
            & F.col(column).isNull() for column in schemas.column_names(ddl)}


def bad_flags(ddl: str) -> dict[str, Column]:
    """Per contract column, whether :func:`parse` found its text unparsable (a bit of ``_unparsable``)."""
    return {column: (F.col(UNPARSABLE).bitwiseAND(1 << bit) != 0)
            for bit, column in enumerate(schemas.column_names(ddl))}


def check_parsable(parsed: DataFrame, summaries: Sequence[DaySummary], ddl: str) -> None:
    """Raise on the first column holding a value that does not parse as its contract type (critical).

    The counts come with the summaries (one pass); the first offending row is looked up only when
    there is one.
    """
    totals: dict[str, int] = {}
    for day in summaries:
        for column, count in day.unparsable.items():
            totals[column] = totals.get(column, 0) + count
    bad = [column for column in schemas.column_names(ddl) if totals.get(column)]
    if not bad:
        return
    column = bad[0]
    first = (parsed.filter(unparsable(ddl)[column]).orderBy("source_file")
             .select(f"_raw_{column}", "source_file").first())
    type_name = schemas.struct(ddl)[column].dataType.simpleString()
    raise DataQualityError(
        f"{first['source_file']}: column {column} holds {totals[column]} value(s) that are not {type_name}, "
        f"first {first[f'_raw_{column}']!r} (rule: parsable:{column})"
    )


# --- routing ----------------------------------------------------------------------------------------
def flag_known(parsed: DataFrame, known: DataFrame, *, column: str, flag: str) -> DataFrame:
    """``flag`` is true where ``column`` is one of the values of ``known`` (a one-column frame).

    A broadcast join: a large catalogue as an ``isin`` list would put every id into the query plan.
    """
    ids = known.select(F.col(column).alias("_known_id")).distinct().withColumn(flag, F.lit(True))
    return (
        parsed.join(F.broadcast(ids), parsed[column] == F.col("_known_id"), how="left")
        .withColumn(flag, F.coalesce(F.col(flag), F.lit(False)))
        .drop("_known_id")
    )


#: Keys held by two or more rows are broadcast to the routing; above this many (a file delivered twice),
#: every row goes through one window over the key instead.
MAX_SHARED_KEYS = 200_000


@dataclass(frozen=True)
class Outcome:
    """What a routing code stands for: the outcome, its rule (or exclusion) id and the reason."""

    kind: str
    rule_id: str | None
    reason: str | None


def outcomes(suite: TableSuite) -> list[Outcome]:
    """Every outcome a row of ``suite`` can take; a row's ``_code`` is its index here.

    Routing computes one small integer per row instead of three strings; the strings are looked up for
    the few rows that need them (the quarantine) and for the counts, after aggregating by code.
    """
    return [
        Outcome(VALID, None, None),
        Outcome(EXCLUDED, DUPLICATE, "exact duplicate of another row"),
        *[Outcome(EXCLUDED, exclusion.exclusion_id, exclusion.reason) for exclusion in suite.exclusions],
        *[Outcome(QUARANTINED, rule.rule_id, rule.reason) for rule in suite.row_rules],
        Outcome(QUARANTINED, "unique:" + "+".join(suite.key),
                f"another, different row has the same {', '.join(suite.key)}"),
    ]


VALID_CODE, DUPLICATE_CODE = 0, 1


def conflict_code(suite: TableSuite) -> int:
    """The code of a row sharing its key with a different row (the last of :func:`outcomes`)."""
    return len(outcomes(suite)) - 1


def key_present(suite: TableSuite) -> Column:
    """Every key column has a value: only then can two different rows conflict on the key."""
    present = F.lit(True)
    for column in suite.key:
        present = present & F.col(column).isNotNull()
    return present


def prepare(parsed: DataFrame, suite: TableSuite) -> DataFrame:
    """The row-local part of routing: ``_local``, the code (see :func:`outcomes`) of the first exclusion
    or row rule that applies (0 if none). The raw text travels on, as a JSON record, only for rows that
    break one (their quarantine record); the other rows keep their typed values only."""
    columns = list(suite.columns)
    conditions = [exclusion.applies() for exclusion in suite.exclusions] + [rule.violated() for rule in suite.row_rules]
    local: Column | None = None
    for code, condition in enumerate(conditions, start=DUPLICATE_CODE + 1):
        local = F.when(condition, F.lit(code)) if local is None else local.when(condition, F.lit(code))
    local = F.lit(VALID_CODE) if local is None else local.otherwise(F.lit(VALID_CODE))
    raw_record = F.to_json(F.struct(*[F.col(f"_raw_{column}").alias(column) for column in columns]))
    # Only the contract columns and the routing's own go on: the rows are cached, and every column costs.
    keep = [*columns, "source_file", "date", UNPARSABLE]
    return (parsed.select(*keep, local.cast("byte").alias("_local"),
                          F.when(local != VALID_CODE, raw_record).alias("_record")))


def key_hash(suite: TableSuite) -> Column:
    """A 64-bit hash of a row's (date, key): equal keys, nulls included, hash alike."""
    return F.xxhash64("date", *suite.key)


def shared_keys(prepared: DataFrame, suite: TableSuite) -> DataFrame:
    """The hashes of the (date, key) pairs that two or more rows hold (``_key_hash``): copies and
    conflicts can only be among their rows.

    An aggregation over one long per row: no row is moved, and on a day without copies it is empty. Two
    keys with the same hash only send more rows through the window of :func:`route`, which compares the
    keys themselves (shuffling one long instead of the date and the key's strings: the bench's checks on a
    1M-line day went from 28.5 to 23.0 s, measured back to back).
    """
    return (prepared.groupBy(key_hash(suite).alias("_key_hash")).agg(F.count("*").alias("_rows"))
            .filter(F.col("_rows") > 1).drop("_rows"))


def holding(rows: DataFrame, shared: DataFrame, suite: TableSuite, *, how: str = "left_semi") -> DataFrame:
    """The ``rows`` whose (date, key) hash is one of ``shared`` (``how="left_anti"``: the others)."""
    return rows.join(F.broadcast(shared), on=key_hash(suite) == F.col("_key_hash"), how=how)


def _mark_copies(rows: DataFrame, suite: TableSuite) -> DataFrame:
    """``_is_copy`` (an exact copy of a row sorted before it) and ``_key_copies`` (distinct rows holding
    the key), from one window over the key sorted by every column, so that copies sit next to each other."""
    columns = list(suite.columns)
    by_key = Window.partitionBy(*suite.key, "date")
    in_order = by_key.orderBy(*[F.col(column).asc_nulls_first() for column in columns], "source_file")
    same_as_previous = F.row_number().over(in_order) > 1
    for column in columns:
        same_as_previous = same_as_previous & F.col(column).eqNullSafe(F.lag(column).over(in_order))
    marked = rows.withColumn("_is_copy", same_as_previous)
    return marked.withColumn("_key_copies", F.sum((~F.col("_is_copy")).cast("int")).over(by_key))


def route(prepared: DataFrame, suite: TableSuite, *, shared: DataFrame | None = None,
          cache: Callable[[DataFrame], DataFrame] | None = None) -> tuple[DataFrame, DataFrame]:
    """Give every row its outcome as ``_code`` (an index of :func:`outcomes`); the first that applies wins.

    Exact duplicates (every contract column equal, wherever they came from) keep one copy, chosen
    deterministically by source file; different rows sharing a key are all quarantined, since which one
    is right cannot be known. ``prepared`` comes from :func:`prepare`. With ``shared`` (the hashes of
    :func:`shared_keys`, few enough to broadcast), only the rows of those keys go through the window that
    finds copies and conflicts, cached by ``cache`` when given (they are few); every other row is routed
    where it is. On the usual day no key is held twice: given as an empty frame that Spark knows to be
    empty (``limit(0)``), its joins and the window drop out of the plan. Without ``shared``, every row
    goes through the window (sorting 5M rows took 12.7 s of a 50 s validation; the census of keys takes
    about 2 s).

    Returns the routed rows and, routed the same way, the rows that may share their key with another
    (all of them without ``shared``): the only ones among which a key can be held twice.
    """
    if shared is None:
        marked = together = _mark_copies(prepared, suite)
    else:
        alone = (holding(prepared, shared, suite, how="left_anti")
                 .withColumn("_is_copy", F.lit(False)).withColumn("_key_copies", F.lit(1)))
        together = _mark_copies(holding(prepared, shared, suite), suite)
        together = cache(together) if cache is not None else together
        marked = alone.unionByName(together)
    code = (F.when(F.col("_is_copy"), F.lit(DUPLICATE_CODE))
            .when(F.col("_local") != VALID_CODE, F.col("_local"))
            .when(key_present(suite) & (F.col("_key_copies") > 1), F.lit(conflict_code(suite)))
            .otherwise(F.lit(VALID_CODE)).cast("byte"))

    def coded(frame: DataFrame) -> DataFrame:
        return frame.withColumn("_code", code).drop("_local", "_is_copy", "_key_copies")

    return coded(marked), coded(together)


def kept_rows(routed: DataFrame, suite: TableSuite) -> DataFrame:
    return routed.filter(F.col("_code") == VALID_CODE).select(*suite.columns, "date")


def quarantine_rows(routed: DataFrame, suite: TableSuite, *, run_id: str) -> DataFrame:
    """Quarantined rows as they arrived (raw text as a JSON record), with the rule, reason, file and run.

    A row quarantined only for sharing its key with a different row has no raw record (see
    :func:`route`); its parsed values stand in.
    """
    known = outcomes(suite)
    quarantined = [code for code, outcome in enumerate(known) if outcome.kind == QUARANTINED]
    parsed = F.to_json(F.struct(*[F.col(column).cast("string").alias(column) for column in suite.columns]))
    record = F.coalesce(F.col("_record"), parsed)
    position = F.col("_code").cast("int") + 1
    rule_ids = F.array(*[F.lit(outcome.rule_id).cast("string") for outcome in known])
    reasons = F.array(*[F.lit(outcome.reason).cast("string") for outcome in known])
    return routed.filter(F.col("_code").isin(quarantined)).select(
        F.lit(suite.table).alias("table_name"), record.alias("record"), F.element_at(rule_ids, position).alias("rule_id"),
        F.element_at(reasons, position).alias("reason"), "source_file", F.lit(run_id).alias("run_id"), "date",
    )


# --- summaries and gates ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DaySummary:
    table_name: str
    date: dt.date
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    rows_excluded: int
    by_rule: dict[str, int]
    excluded_by_reason: dict[str, int]
    #: Valid rows without a customer id (guest checkouts); 0 for tables without customers.
    rows_guest: int = 0
    #: Raw rows against the trailing average of earlier days (None: not enough history, or a snapshot).
    volume_ratio: float | None = None
    #: Per column, values present in the raw text that did not parse as the column's type.
    unparsable: dict[str, int] = field(default_factory=dict)

    @property
    def quarantine_rate(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    @property
    def guest_rate(self) -> float:
        return self.rows_guest / self.rows_valid if self.rows_valid else 0.0

    @property
    def conserved(self) -> bool:
        return self.rows_in == self.rows_valid + self.rows_quarantined + self.rows_excluded


def count_outcomes(routed: DataFrame, suite: TableSuite, *, ddl: str, guest_column: str | None = None) -> pd.DataFrame:
    """One aggregation of the routed rows by date and ``_code``: the rows (``_n``), the rows without
    ``guest_column`` (``_guests``), per contract column the values that did not parse
    (``_unparsable_<column>``), and every measure of the day profile (see :func:`day_profile`).

    The counts of :func:`summarize` and the profile GX judges (the code of the rows kept) come from this one
    pass over the rows: a pass for the counts and two for the profile took 8 s of a 1M-line day."""
    guest = F.lit(0) if guest_column is None else F.col(guest_column).isNull()
    return (routed.groupBy("date", "_code")
            .agg(F.count("*").alias("_n"), F.sum(guest.cast("long")).alias("_guests"),
                 *[F.sum(flag.cast("long")).alias(f"_unparsable_{column}") for column, flag in bad_flags(ddl).items()],
                 *[measure.aggregate().alias(measure.name) for measure in suite.measures()])
            .toPandas())


def summarize(prepared: DataFrame, counts: pd.DataFrame, suite: TableSuite, *, dates: Sequence[dt.date],
              ddl: str) -> list[DaySummary]:
    """Per-day summaries for each of ``dates`` (a day without rows counts zero) from :func:`count_outcomes`;
    ``rows_in`` is counted on ``prepared``, the rows as read, independently of the routing."""
    rows_in = dict.fromkeys(dates, 0)
    rows_in |= {row["date"]: row["n"] for row in prepared.groupBy("date").agg(F.count("*").alias("n")).collect()}
    known = outcomes(suite)
    summaries = []
    for date in sorted(rows_in):
        day = [(known[int(row["_code"])], row) for _, row in counts[counts["date"] == date].iterrows()]
        total = {kind: sum(int(row["_n"]) for outcome, row in day if outcome.kind == kind)
                 for kind in (VALID, QUARANTINED, EXCLUDED)}
        summaries.append(
            DaySummary(
                table_name=suite.table, date=date, rows_in=rows_in[date], rows_valid=total[VALID],
                rows_quarantined=total[QUARANTINED], rows_excluded=total[EXCLUDED],
                by_rule={outcome.rule_id: int(row["_n"]) for outcome, row in day if outcome.kind == QUARANTINED},
                excluded_by_reason={outcome.rule_id: int(row["_n"]) for outcome, row in day if outcome.kind == EXCLUDED},
                rows_guest=sum(int(row["_guests"]) for outcome, row in day if outcome.kind == VALID),
                unparsable={column: sum(int(row[f"_unparsable_{column}"]) for _, row in day)
                            for column in schemas.column_names(ddl)},
            )
        )
    return summaries


def check_gates(summaries: Sequence[DaySummary], *, min_rows: int, max_quarantine_rate: float,
                max_guest_rate: float | None = None) -> None:
    """The minimum row count, conservation, the quarantine-rate gate and the guest-rate gate (critical)."""
    for day in summaries:
        if day.rows_in < min_rows:
            raise DataQualityError(
                f"{day.table_name} {day.date}: {day.rows_in} rows, fewer than {min_rows} (rule: min_rows)")
        if not day.conserved:
            raise DataQualityError(
                f"{day.table_name} {day.date}: {day.rows_in} raw rows but {day.rows_valid} valid + "
                f"{day.rows_quarantined} quarantined + {day.rows_excluded} excluded (rule: conservation)"
            )
        if day.quarantine_rate > max_quarantine_rate:
            worst = max(day.by_rule.items(), key=lambda item: item[1])
            raise DataQualityError(
                f"{day.table_name} {day.date}: {day.quarantine_rate:.1%} of rows quarantined, above the "
                f"{max_quarantine_rate:.1%} gate; most often {worst[0]} ({worst[1]} rows) "
                f"(rule: quarantine_rate)"
            )
        if max_guest_rate is not None and day.guest_rate > max_guest_rate:
            raise DataQualityError(
                f"{day.table_name} {day.date}: {day.guest_rate:.1%} of valid rows have no customer_id, above "
                f"the {max_guest_rate:.1%} gate (rule: guest_rate:customer_id)"
            )


def with_volume(summaries: Sequence[DaySummary], history: dict[dt.date, int], *, trailing_days: int,
                min_history_days: int, min_average_rows: int = 0) -> list[DaySummary]:
    """Each day's raw rows against the average of the (at most ``trailing_days``) days before it.

    ``history`` holds raw row counts of days validated earlier; the days of ``summaries`` count too, so
    that a backfill checks each day against the days before it in the same run.
    """
    counts = dict(history) | {day.date: day.rows_in for day in summaries}
    checked = []
    for day in summaries:
        window = [counts[date] for date in counts if day.date - dt.timedelta(days=trailing_days) <= date < day.date]
        average = sum(window) / len(window) if window else 0.0
        judged = len(window) >= min_history_days and average >= max(min_average_rows, 1)
        ratio = day.rows_in / average if judged else None
        checked.append(replace(day, volume_ratio=ratio))
    return checked


def check_volume(summaries: Sequence[DaySummary], *, min_ratio: float, max_ratio: float) -> None:
    """A day far below or above its trailing average is a partial or doubled delivery (critical)."""
    for day in summaries:
        if day.volume_ratio is not None and not min_ratio <= day.volume_ratio <= max_ratio:
            raise DataQualityError(
                f"{day.table_name} {day.date}: {day.rows_in} raw rows, {day.volume_ratio:.2f}x the trailing "
                f"average, outside [{min_ratio}, {max_ratio}] (rule: volume:day_over_day)"
            )


def summary_frame(spark: SparkSession, summaries: Sequence[DaySummary], *, run_id: str, gate_passed: bool) -> DataFrame:
    rows = [
        (s.table_name, s.date, run_id, s.rows_in, s.rows_valid, s.rows_quarantined, s.rows_excluded,
         json.dumps(s.by_rule, sort_keys=True), json.dumps(s.excluded_by_reason, sort_keys=True), gate_passed)
        for s in summaries
    ]
    return spark.createDataFrame(rows, schemas.VALIDATION_RUNS_DDL)


# --- Great Expectations -----------------------------------------------------------------------------
#: GX judges the day profile, a few rows: samples of unexpected values cost nothing and name them.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}


def key_duplicates(rows: DataFrame, suite: TableSuite) -> dict[dt.date, int]:
    """Per day, the keys held by more than one of ``rows``."""
    pairs = rows.groupBy("date", *suite.key).count().filter(F.col("count") > 1)
    return {row["date"]: row["n"] for row in pairs.groupBy("date").agg(F.count("*").alias("n")).collect()}


def profile(counts: pd.DataFrame, suite: TableSuite, repeated: dict[dt.date, int]) -> pd.DataFrame:
    """The day profile of the rows kept (see :func:`day_profile`) from :func:`count_outcomes` and the
    :func:`key_duplicates` of the rows kept."""
    from expectations.rules import KEY_DUPLICATES, ROWS

    kept = counts[counts["_code"] == VALID_CODE]
    found = pd.DataFrame({"date": kept["date"], ROWS: kept["_n"].astype("int64")})
    found[KEY_DUPLICATES] = [repeated.get(date, 0) for date in found["date"]]
    for measure in suite.measures():
        found[measure.name] = kept[measure.name]
    return found.sort_values("date", ignore_index=True)


def day_profile(kept: DataFrame, suite: TableSuite, *, may_share: DataFrame | None = None) -> pd.DataFrame:
    """One row per day of the rows kept: ``rows``, ``key_duplicates`` and every measure of ``suite``, in
    one aggregation (GX on Spark made a pass over the rows per expectation).

    ``key_duplicates`` counts keys held by more than one row kept, among ``may_share`` (default: all
    rows kept): any other key has one row in all.
    """
    from expectations.rules import KEY_DUPLICATES, ROWS

    measures = suite.measures()
    found = (kept.groupBy("date").agg(F.count("*").alias(ROWS), *[m.aggregate().alias(m.name) for m in measures])
             .toPandas())
    repeated = key_duplicates(kept if may_share is None else may_share, suite)
    found.insert(2, KEY_DUPLICATES, [repeated.get(date, 0) for date in found["date"]])
    return found.sort_values("date", ignore_index=True)


def _shown(found: object) -> str:
    """A GX result's unexpected values or observed value, for a message ("" when there is none)."""
    if found is None:
        return ""
    if np.ndim(found) == 0:
        return f" (found {found})"
    values = list(found)
    return f" (found {values})" if values else ""


class SuiteRunner:
    """Runs the GX suites of one validation run in one ephemeral context, and renders its Data Docs once.

    One context for every table of a run: a context and a Data Docs build per table cost about a second
    each. GX judges each table's :func:`day_profile` with its pandas engine. GX never raises on a failed
    validation, so ``success`` is checked here.
    """

    def __init__(self, *, docs: Path | None = None, run_name: str = "xsell") -> None:
        import great_expectations as gx  # imported here: it is slow to import and only validation needs it

        self._gx = gx
        self.docs = docs
        self.run_name = run_name
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = {"globally": False}
        if docs is not None:
            self.context.add_data_docs_site("xsell", {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs)},
                "site_index_builder": {"class_name": "KeepEarlierRunsIndexBuilder", "module_name": "expectations.rules"},
            })
        self.source = self.context.data_sources.add_pandas(name="xsell")
        self.validated: list[str] = []

    def validate(self, kept: DataFrame, suite: TableSuite, *, what: str, may_share: DataFrame | None = None) -> None:
        """Run ``suite`` on the day profile of the rows kept; a failed expectation raises
        :class:`DataQualityError`. ``may_share``: see :func:`day_profile`."""
        self.judge(day_profile(kept, suite, may_share=may_share), suite, what=what)

    def judge(self, profile: pd.DataFrame, suite: TableSuite, *, what: str) -> None:
        """Run ``suite`` on a day profile (:func:`day_profile` or :func:`profile`); a failed expectation
        raises :class:`DataQualityError`."""
        from great_expectations.core.run_identifier import RunIdentifier

        gx = self._gx
        profile = profile.copy()
        profile["date"] = profile["date"].astype(str)
        for measure in suite.measures():  # dates compared as text, like the profile's own
            if measure.name.endswith("_date"):
                profile[measure.name] = profile[measure.name].astype(str)
        batch_definition = self.source.add_dataframe_asset(name=suite.table).add_batch_definition_whole_dataframe("profile")
        definition = self.context.validation_definitions.add(gx.ValidationDefinition(
            name=suite.table, data=batch_definition, suite=self.context.suites.add(suite.expectation_suite())))
        result = definition.run(batch_parameters={"dataframe": profile}, result_format=RESULT_FORMAT,
                                run_id=RunIdentifier(run_name=self.run_name))
        self.validated.append(suite.table)
        if result.success:
            return
        failed = [item for item in result.results if not item.success]
        # The table-level expectation (no day at all) first: it explains the others.
        failed.sort(key=lambda item: "column" in item.expectation_config.kwargs)
        described = []
        for item in failed:
            kwargs = item.expectation_config.kwargs
            column = kwargs.get("column") or kwargs.get("column_A")
            found = item.result.get("partial_unexpected_list") or item.result.get("observed_value")
            described.append(f"{item.expectation_config.type}" + (f" on {column}" if column else "") + _shown(found))
        raise DataQualityError(
            f"{what}: {len(failed)} expectation(s) failed on the profile of the rows kept: {'; '.join(described)} "
            f"(rule: gx:{failed[0].expectation_config.type})"
        )

    def build_docs(self) -> dict[str, Path]:
        """Render this run's results into the Data Docs site; returns each table's page."""
        if self.docs is None or not self.validated:
            return {}
        self.context.build_data_docs(site_names=["xsell"])
        pages = {}
        for table in self.validated:
            found = sorted((self.docs / "validations").glob(f"{table}_kept/{self.run_name}/**/*.html"))
            if found:
                pages[table] = found[-1]
        return pages


def run_suite(kept: DataFrame, suite: TableSuite, *, what: str, docs: Path | None = None,
              run_name: str = "xsell") -> Path | None:
    """Run one table's suite on its own (notebooks, tests); returns its Data Docs page if ``docs``."""
    runner = SuiteRunner(docs=docs, run_name=run_name)
    try:
        runner.validate(kept, suite, what=what)
    finally:
        pages = runner.build_docs()
    return pages.get(suite.table)
