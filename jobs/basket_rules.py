"""Mine "bought together" rules over the lookback window ending on the run date and publish them.

Writes ``lake/basket_rules/run_date=...`` (the model features read it) and replaces the run date's rows
of the warehouse table ``basket_rules``.

    python -m jobs.basket_rules --run-date 2025-11-30 [--env postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from pyspark.sql import DataFrame, SparkSession

from xsell import baskets, lake, runtime, warehouse
from xsell.config import Settings
from xsell.spark import session

log = logging.getLogger("xsell.basket_rules")


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str) -> DataFrame:
    end = run_date + dt.timedelta(days=1)
    lines = lake.order_lines(spark, settings.lake, start=end - dt.timedelta(days=settings.rules.lookback_days), end=end)
    basket_frame = baskets.build_baskets(lines, max_items=settings.rules.max_basket_items).cache()
    rules = baskets.mine_rules(basket_frame, min_support=settings.rules.min_support,
                               min_confidence=settings.rules.min_confidence, run_date=run_date).cache()
    lake.write_partitions(rules, settings.lake, lake.BASKET_RULES, partition_by=("run_date",))
    stored = lake.read(spark, settings.lake, lake.BASKET_RULES).filter(f"run_date = '{run_date.isoformat()}'")
    warehouse.open_warehouse(settings).publish(
        warehouse.BASKET_RULES, baskets.rules_for_warehouse(stored), run_date=run_date, run_id=run_id)
    log.info("%d rules from %d baskets", rules.count(), basket_frame.count())
    return stored


def main(argv: list[str] | None = None) -> None:
    args = runtime.parser(__doc__.splitlines()[0]).parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-basket-rules"), settings, args.run_date, run_id=args.run_id)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
