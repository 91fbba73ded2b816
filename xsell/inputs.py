"""Reading what the model jobs need from the lake, as of a date (the only I/O the model jobs share)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from xsell import lake, offers, schemas
from xsell.config import Settings

#: The oldest history any feature looks at: ownership ("never bought") needs all of it.
HISTORY_START = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Inputs:
    order_lines: DataFrame
    products: DataFrame
    customers: DataFrame
    categories: list[str]
    families: list[str]
    regions: list[str]
    offers: list[offers.Offer]
    snapshot_date: dt.date

    @property
    def cached(self) -> tuple[DataFrame, ...]:
        """The frames :func:`load` cached: the lines and the snapshots."""
        return self.order_lines, self.products, self.customers

    def release(self) -> None:
        """Unpersist the cached lines and snapshots (a long-lived session runs many jobs)."""
        for frame in self.cached:
            frame.unpersist()


def load(spark: SparkSession, settings: Settings, run_date: dt.date) -> Inputs:
    """Valid order lines up to and including ``run_date``, and the snapshots that serve ``run_date``."""
    end = run_date + dt.timedelta(days=1)
    lines = lake.order_lines(spark, settings.lake, start=HISTORY_START, end=end).cache()
    products, _ = lake.snapshot(spark, settings.lake, schemas.PRODUCTS, as_of=run_date)
    customers, snapshot_date = lake.snapshot(spark, settings.lake, schemas.CUSTOMERS, as_of=run_date)
    categories, families = offers.catalogue_levels(products)
    regions = sorted(row.region for row in customers.select("region").distinct().collect() if row.region)
    return Inputs(lines, products.cache(), customers.cache(), categories, families, regions,
                  offers.resolve(settings.offers, categories=categories, families=families), snapshot_date)
