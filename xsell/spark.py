"""The one place that builds a SparkSession (STYLE rule 2): jobs call :func:`session`, tests have a fixture."""

from __future__ import annotations

import os
import sys

from pyspark.sql import DataFrame, SparkSession

from xsell.config import Settings

#: Set by spark-submit for the Python driver it launches: the master then comes from spark-submit.
_SUBMITTED = "PYSPARK_GATEWAY_PORT"


def session(settings: Settings, app_name: str) -> SparkSession:
    """A session configured from ``settings``: UTC, dynamic partition overwrite, UI off locally.

    Under spark-submit the master and driver memory given to spark-submit win; a plain ``python -m``
    run uses ``settings.spark.master``.
    """
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        # Rewriting one date must never delete the other dates of a partitioned table.
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        # The driver keeps every query's plan for the UI; training runs thousands of small jobs on wide plans.
        .config("spark.sql.ui.retainedExecutions", "50")
        .config("spark.ui.retainedJobs", "200")
        .config("spark.ui.retainedStages", "200")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    if settings.warehouse.target == "postgres":
        builder = builder.config("spark.jars", settings.warehouse.postgres.jdbc_jar)
    for key, value in settings.spark.conf.items():
        builder = builder.config(key, value)
    if _SUBMITTED not in os.environ:
        # Python workers (pandas UDFs) run this interpreter unless told otherwise: it has the packages.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.master(settings.spark.master)
            .config("spark.driver.memory", settings.spark.driver_memory)
            .config("spark.ui.enabled", "false")
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


class Cached:
    """The DataFrames one job run caches, unpersisted together when the run ends (a ``with`` block).

    A job's process usually ends with it; a notebook or a test session lives on, and caches that outlive
    their run take the storage memory the next run's aggregations need (in a 1 GB session that ran the
    pipeline twice, a rerun's scoring failed with ``AGGREGATE_OUT_OF_MEMORY``).
    """

    def __init__(self) -> None:
        self._frames: list[DataFrame] = []

    def __call__(self, frame: DataFrame) -> DataFrame:
        """``frame``, cached until the block ends."""
        cached = frame.cache()
        self._frames.append(cached)  # one call at a time is atomic: safe from several threads
        return cached

    def __enter__(self) -> Cached:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        """Unpersist every frame cached so far (what leaving the block does)."""
        while self._frames:
            self._frames.pop().unpersist()
