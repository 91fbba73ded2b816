"""Build the customer feature tables the train and score jobs read, as of every cutoff they need.

For a run date with horizon H, step S (H unless configured), N training cutoffs and E the day after the
run date: features as of E (scoring), E - H (out-of-time validation) and E - 2H, E - 2H - S, ...
(N training cutoffs), written to ``lake/features/cutoff=...``. Only customers whose current consent is
explicitly given are profiled at all.

    python -m jobs.features --run-date 2025-11-30
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xsell import audience, features, inputs, lake, runtime
from xsell.config import ModelSettings, Settings
from xsell.spark import session

log = logging.getLogger("xsell.features")


@dataclass(frozen=True)
class Cutoffs:
    """The feature dates of one run; the labels of a cutoff span the horizon that follows it."""

    train: tuple[dt.date, ...]  # newest first; every label window ends on or before ``valid``
    valid: dt.date
    score: dt.date

    @property
    def all(self) -> tuple[dt.date, ...]:
        return (*self.train, self.valid, self.score)


def cutoffs(run_date: dt.date, model: ModelSettings) -> Cutoffs:
    """Training cutoffs E - 2H - k*S (k < N), the out-of-time validation cutoff E - H and the scoring
    cutoff E, with E the day after ``run_date``."""
    end = run_date + dt.timedelta(days=1)
    horizon = dt.timedelta(days=model.horizon_days)
    step = dt.timedelta(days=model.cutoff_step_days or model.horizon_days)
    return Cutoffs(tuple(end - 2 * horizon - k * step for k in range(model.train_cutoffs)), end - horizon, end)


def read(spark: SparkSession, settings: Settings, cutoff: dt.date) -> DataFrame:
    frame = lake.read(spark, settings.lake, lake.FEATURES).filter(F.col("cutoff") == F.lit(cutoff))
    return frame


def compute(data: inputs.Inputs, cutoff: dt.date) -> DataFrame:
    """The features of the consenting customers as of ``cutoff``, from lines before it (what this job
    writes for each cutoff, and what a backtest computes for earlier ones)."""
    profiled = data.customers.join(audience.consenting(data.customers), on="customer_id", how="left_semi")
    return features.customer_features(data.order_lines, data.products, profiled, cutoff=cutoff,
                                      categories=data.categories, families=data.families, regions=data.regions)


def run(spark: SparkSession, settings: Settings, run_date: dt.date) -> None:
    data = inputs.load(spark, settings, run_date)
    frames = [compute(data, cutoff) for cutoff in cutoffs(run_date, settings.model).all]
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame)
    try:
        lake.write_partitions(combined, settings.lake, lake.FEATURES, partition_by=("cutoff",))
    finally:
        data.release()
    log.info("features for cutoffs %s written", ", ".join(str(c) for c in cutoffs(run_date, settings.model).all))


def main(argv: list[str] | None = None) -> None:
    args = runtime.parser(__doc__.splitlines()[0]).parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-features"), settings, args.run_date)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
