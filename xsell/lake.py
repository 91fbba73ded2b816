"""The lake: Parquet tables below ``<home>/lake``, partitioned by date.

Writes use dynamic partition overwrite (set on the session), so rewriting one date replaces exactly that
date's partition and leaves the others alone: a rerun never appends a second copy.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xsell import schemas

VALID_ORDER_LINES = "order_lines"
QUARANTINE = "quarantine"
VALIDATION_RUNS = "validation_runs"
BASKET_RULES = "basket_rules"
FEATURES = "features"
AUDIENCE_STAGING = "audience_staging"


def path(lake: Path, table: str) -> Path:
    return lake / table


def write_partitions(frame: DataFrame, lake: Path, table: str, *, partition_by: tuple[str, ...] = ("date",)) -> None:
    """Replace the partitions present in ``frame``, keep all others."""
    frame.write.mode("overwrite").partitionBy(*partition_by).parquet(str(path(lake, table)))


def drop_partitions(lake: Path, table: str, partitions: list[dict[str, object]]) -> int:
    """Remove the given partitions (column -> value, in partition order) where they exist.

    For a rerun that writes nothing into a partition it replaces: dynamic overwrite only replaces
    partitions present in the new data, so a day that had quarantined rows before and has none now would
    otherwise keep its old ones. Returns how many were removed.
    """
    removed = 0
    for partition in partitions:
        folder = path(lake, table).joinpath(*(f"{column}={value}" for column, value in partition.items()))
        if folder.exists():
            shutil.rmtree(folder)
            removed += 1
    return removed


def exists(lake: Path, table: str) -> bool:
    return path(lake, table).exists() and any(path(lake, table).glob("*=*"))


def read(spark: SparkSession, lake: Path, table: str) -> DataFrame:
    location = path(lake, table)
    if not exists(lake, table):
        raise FileNotFoundError(f"lake table {table} has no data yet at {location}; run the validate job first")
    return spark.read.parquet(str(location))


def order_lines(spark: SparkSession, lake: Path, *, start: dt.date, end: dt.date) -> DataFrame:
    """Valid order lines with ``start <= date < end`` (partition pruning on ``date``)."""
    frame = read(spark, lake, VALID_ORDER_LINES)
    columns = schemas.column_names(schemas.ORDER_LINES_DDL)
    return frame.filter((F.col("date") >= F.lit(start)) & (F.col("date") < F.lit(end))).select(*columns, "date")


def snapshot(spark: SparkSession, lake: Path, table: str, *, as_of: dt.date) -> tuple[DataFrame, dt.date]:
    """The newest validated snapshot of ``products`` or ``customers`` dated on or before ``as_of``."""
    location = path(lake, table)
    dates = sorted(
        dt.date.fromisoformat(folder.name.removeprefix("date="))
        for folder in location.glob("date=*")
        if dt.date.fromisoformat(folder.name.removeprefix("date=")) <= as_of
    ) if location.exists() else []
    if not dates:
        raise FileNotFoundError(f"no validated {table} snapshot on or before {as_of} in {location}")
    latest = dates[-1]
    frame = spark.read.parquet(str(location / f"date={latest.isoformat()}"))
    return frame.select(*schemas.column_names(schemas.RAW_DDL[table])), latest
