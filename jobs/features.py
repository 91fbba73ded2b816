"""Build the customer feature tables the train and score jobs read, as of every cutoff they need.

For a run date with horizon H and E the day after it: features as of E (scoring), E - H (out-of-time
validation) and E - 2H (training), written to ``lake/features/cutoff=...``. Only customers whose current
consent is explicitly given are profiled at all.

    python -m jobs.features --run-date 2025-11-30
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xsell import audience, features, inputs, lake, runtime
from xsell.config import Settings
from xsell.spark import session

log = logging.getLogger("xsell.features")


def cutoffs(run_date: dt.date, horizon_days: int) -> tuple[dt.date, dt.date, dt.date]:
    """(training cutoff, validation cutoff, scoring cutoff); labels of a cutoff span the next horizon."""
    end = run_date + dt.timedelta(days=1)
    horizon = dt.timedelta(days=horizon_days)
    return end - 2 * horizon, end - horizon, end


def read(spark: SparkSession, settings: Settings, cutoff: dt.date) -> DataFrame:
    frame = lake.read(spark, settings.lake, lake.FEATURES).filter(F.col("cutoff") == F.lit(cutoff))
    return frame


def run(spark: SparkSession, settings: Settings, run_date: dt.date) -> None:
    data = inputs.load(spark, settings, run_date)
    profiled = data.customers.join(audience.consenting(data.customers), on="customer_id", how="left_semi")
    frames = [
        features.customer_features(data.order_lines, data.products, profiled, cutoff=cutoff,
                                   categories=data.categories, families=data.families)
        for cutoff in cutoffs(run_date, settings.model.horizon_days)
    ]
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame)
    lake.write_partitions(combined, settings.lake, lake.FEATURES, partition_by=("cutoff",))
    log.info("features for cutoffs %s written", ", ".join(str(c) for c in cutoffs(run_date, settings.model.horizon_days)))


def main(argv: list[str] | None = None) -> None:
    args = runtime.parser(__doc__.splitlines()[0]).parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-features"), settings, args.run_date)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
