"""Baskets and association rules ("bought together").

A basket is one order's distinct products among its sales netted of what was cancelled or returned
later (:func:`net_sales`). Orders whose every line is cancelled yield no basket. The rules are mined in
:mod:`xsell.rules`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F




def sold() -> Column:
    """Lines that are a sale: completed with a positive quantity (a function: a Column needs a session)."""
    return (F.col("status") == "completed") & (F.col("quantity") > 0)


def cancellation() -> Column:
    """Lines that take back an earlier sale: cancelled or returned, with a negative quantity."""
    return F.col("status").isin("cancelled", "returned") & (F.col("quantity") < 0)


_KEY = ["customer_id", "product_id"]


_ORDER = ["order_ts", "_is_cancel", "order_id", "line_number"]


def _take_back_latest_first(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The sales of the (customer, product) pairs of one partition, net of their cancellations: in each
    pair's time order, a cancellation takes back the most recent earlier sales first (a cancellation
    follows the order it cancels); whatever it has left cancels a sale older than the lines given.

    One pass over the partition's rows, sorted by pair then time. A Python call per pair (Spark's
    ``applyInPandas``) made the netting of a 100k-customer world's 1.1M lines take 70 s; this takes 17 s,
    with the same lines out."""
    frames = [frame for frame in batches if not frame.empty]
    if not frames:
        return
    events = pd.concat(frames, ignore_index=True)
    events = events.sort_values([*_KEY, *_ORDER], kind="stable", ignore_index=True)
    customer, product = events["customer_id"].to_numpy(), events["product_id"].to_numpy()
    is_cancel, quantity = events["_is_cancel"].to_numpy(), events["quantity"].to_numpy()
    remaining = (quantity * (is_cancel == 0)).astype("int64")
    open_sales: list[int] = []
    for position in range(len(events)):
        if position and (customer[position] != customer[position - 1] or product[position] != product[position - 1]):
            open_sales = []
        if not is_cancel[position]:
            open_sales.append(position)
            continue
        to_take = -int(quantity[position])
        while to_take > 0 and open_sales:
            latest = open_sales[-1]
            taken = min(to_take, int(remaining[latest]))
            remaining[latest] -= taken
            to_take -= taken
            if remaining[latest] == 0:
                open_sales.pop()
    yield events.assign(quantity=remaining)[is_cancel == 0].drop(columns="_is_cancel")


def net_sales(order_lines: DataFrame) -> DataFrame:
    """Sales lines with their quantity net of later cancellations and returns; fully taken back lines
    are dropped, so a fully cancelled order yields no basket.

    A cancellation or return (its own order, a negative quantity, the same customer and product) takes
    back that customer's most recent earlier sales of the product. Lines of guests cannot be matched and
    are not netted. Only the lines given are used: netting as of a cutoff never sees later returns.
    Only the lines of the (few) customer-product pairs with a cancellation go through Python.
    """
    columns = order_lines.columns
    sales = order_lines.filter(sold())
    cancels = order_lines.filter(cancellation() & F.col("customer_id").isNotNull())
    touched = cancels.select(*_KEY).distinct()
    untouched = sales.join(touched, on=_KEY, how="left_anti")
    events = (
        sales.join(touched, on=_KEY, how="left_semi").withColumn("_is_cancel", F.lit(0))
        .unionByName(cancels.withColumn("_is_cancel", F.lit(1)))
    )
    netted = events.repartition(*_KEY).mapInPandas(_take_back_latest_first, schema=sales.schema)
    return untouched.unionByName(netted.filter(F.col("quantity") > 0)).select(*columns)


def build_baskets(order_lines: DataFrame, *, max_items: int | None = None) -> DataFrame:
    """One row per order with at least one product sold after netting: ``order_id``, ``customer_id``,
    sorted ``items``.

    ``items`` holds each product once (FP-Growth rejects duplicate items in a basket).
    """
    baskets = (
        net_sales(order_lines)
        .groupBy("order_id")
        .agg(
            F.first("customer_id", ignorenulls=True).alias("customer_id"),
            F.min("order_ts").alias("order_ts"),
            F.array_sort(F.collect_set("product_id")).alias("items"),
        )
    )
    return baskets if max_items is None else baskets.filter(F.size("items") <= max_items)
