"""Baskets and association rules ("bought together").

A basket is one order's distinct products among its sales netted of what was cancelled or returned
later (:func:`net_sales`). Orders whose every line is cancelled yield no basket. The rules are mined in
:mod:`xsell.rules`.
"""

from __future__ import annotations

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


def _take_back_latest_first(events: pd.DataFrame) -> pd.DataFrame:
    """One customer's sales and cancellations of one product, in time order: each cancellation takes
    back the most recent earlier sales first (a cancellation follows the order it cancels)."""
    events = events.sort_values(["order_ts", "_is_cancel", "order_id", "line_number"], kind="stable")
    remaining = events["quantity"].where(events["_is_cancel"] == 0, 0).astype("int64").to_numpy().copy()
    open_sales: list[int] = []
    for position, (is_cancel, quantity) in enumerate(zip(events["_is_cancel"], events["quantity"])):
        if not is_cancel:
            open_sales.append(position)
            continue
        to_take = -int(quantity)
        while to_take > 0 and open_sales:
            latest = open_sales[-1]
            taken = min(to_take, remaining[latest])
            remaining[latest] -= taken
            to_take -= taken
            if remaining[latest] == 0:
                open_sales.pop()
        # Whatever is left cancels a sale older than the lines given (before the window): nothing to net.
    sales = events.assign(quantity=remaining)[events["_is_cancel"] == 0]
    return sales.drop(columns="_is_cancel")


def net_sales(order_lines: DataFrame) -> DataFrame:
    """Sales lines with their quantity net of later cancellations and returns; fully taken back lines
    are dropped, so a fully cancelled order yields no basket.

    A cancellation or return (its own order, a negative quantity, the same customer and product) takes
    back that customer's most recent earlier sales of the product. Lines of guests cannot be matched and
    are not netted. Only the lines given are used: netting as of a cutoff never sees later returns.
    Only the (few) customer-product pairs with a cancellation go through Python.
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
    netted = events.groupBy(*_KEY).applyInPandas(_take_back_latest_first, schema=sales.schema)
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
