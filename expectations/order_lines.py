"""Order lines: the suite for ``landing/order_lines``.

Outcomes, in the order they are checked (a row takes the first that applies):
- exact duplicate lines (a file delivered twice, a line written twice): one copy kept, the others
  excluded by design as ``duplicate`` (done by the validator for every table);
- lines of products listed in ``excluded_products`` or matching ``excluded_product_pattern`` (postage,
  fees, manual adjustments such as a bad-debt adjustment line): excluded by design;
- missing required values, unknown currency / channel / status, a zero quantity, a negative quantity on a
  completed line, a non-positive price, a product missing from the catalogue, a timestamp outside the
  day's data interval, a second, different line with the same (order id, line number) (the
  validator's key rule): quarantined.
A missing customer id is not an error: it is a guest checkout, kept for baskets and left out of
customer-level models; but a day whose share of guest lines exceeds ``max_guest_rate`` stops the run (a
tracking outage looks exactly like that). Cancelled and returned lines are valid (with a negative or
positive quantity): they are netted against the sales they cancel when baskets are built
(:func:`xsell.baskets.net_sales`).
"""

from __future__ import annotations

from collections.abc import Sequence

import great_expectations as gx
from pyspark.sql import Column
from pyspark.sql import functions as F

from expectations.rules import Exclusion, Measure, RowRule, TableSuite, between, in_set, not_null
from xsell import schemas

REQUIRED = ("order_id", "line_number", "order_ts", "product_id", "quantity", "unit_price", "currency",
            "channel", "status")
KEY = ("order_id", "line_number")


#: Set by the validator from a join with the catalogue snapshot: a join rather than an ``isin`` list, which
#: would put a large catalogue's every id into the query plan.
IN_CATALOGUE = "_in_catalogue"


def suite(*, currencies: Sequence[str], excluded_products: Sequence[str] = (),
          excluded_product_pattern: str | None = None, min_rows: int = 1) -> TableSuite:
    """The order-line suite; the catalogue check reads the ``IN_CATALOGUE`` flag set by the validator."""
    rules = [not_null(column) for column in REQUIRED]
    rules += [
        in_set("currency", currencies),
        in_set("channel", schemas.CHANNELS),
        in_set("status", schemas.ORDER_STATUSES),
        RowRule(
            rule_id="range:quantity",
            column="quantity",
            reason="quantity is zero, or negative on a completed line",
            violated=lambda: (F.col("quantity") == 0)
            | ((F.col("quantity") < 0) & (F.col("status") == "completed")),
            measures=lambda: (Measure("quantity__zeros", lambda: F.sum((F.col("quantity") == 0).cast("long")),
                                      lambda: gx.expectations.ExpectColumnValuesToBeBetween(column="quantity__zeros",
                                                                                            max_value=0)),),
        ),
        between("unit_price", min_value=0, strict_min=True),
        RowRule(
            rule_id="known:product_id",
            column="product_id",
            reason="product_id is not in the catalogue",
            violated=lambda: F.col("product_id").isNotNull() & ~F.col(IN_CATALOGUE),
        ),
        RowRule(
            rule_id="interval:order_ts",
            column="order_ts",
            reason="order_ts is outside the day's data interval",
            violated=lambda: F.col("order_ts").isNotNull() & (F.to_date("order_ts") != F.col("date")),
            # The day's first and last timestamps fall on the day (the profile's ``date``).
            measures=lambda: tuple(
                Measure(f"order_ts__{end}_date", lambda end=end: F.to_date(getattr(F, end)("order_ts")),
                        lambda end=end: gx.expectations.ExpectColumnPairValuesToBeEqual(
                            column_A=f"order_ts__{end}_date", column_B="date"))
                for end in ("min", "max")),
        ),
    ]
    exclusions = []
    if excluded_products or excluded_product_pattern:
        excluded = sorted(excluded_products)

        def non_product() -> Column:
            listed = F.col("product_id").isin(excluded) if excluded else F.lit(False)
            if excluded_product_pattern:
                # Anchored: the pattern must match the whole code, as the configuration documents.
                listed = listed | F.col("product_id").rlike(f"^(?:{excluded_product_pattern})$")
            return F.coalesce(listed, F.lit(False))

        exclusions.append(Exclusion("non_product", "non-product code (fee, postage)", non_product))
    return TableSuite(
        table=schemas.ORDER_LINES,
        columns=tuple(schemas.column_names(schemas.ORDER_LINES_DDL)),
        key=KEY,
        row_rules=tuple(rules),
        exclusions=tuple(exclusions),
        min_rows=min_rows,
    )
