"""Order lines: the suite for ``landing/order_lines``.

Outcomes, in the order they are checked (a row takes the first that applies):
- exact duplicate lines (a file delivered twice, a line written twice): one copy kept, the others
  excluded by design as ``duplicate`` (done by the validator for every table);
- lines of products listed in ``excluded_products`` (postage, fees): excluded by design;
- missing required values, unknown currency / channel / status, a zero quantity, a negative quantity on a
  completed line, a non-positive price, a product missing from the catalogue, a timestamp outside the
  day's data interval, a second, different line with the same (order id, line number) (the
  validator's key rule): quarantined.
A missing customer id is not an error: it is a guest checkout, kept for baskets and left out of
customer-level models.
"""

from __future__ import annotations

from collections.abc import Sequence

import great_expectations as gx
from pyspark.sql import functions as F

from expectations.rules import Exclusion, RowRule, TableSuite, between, in_set, not_null
from xsell import schemas

REQUIRED = ("order_id", "line_number", "order_ts", "product_id", "quantity", "unit_price", "currency",
            "channel", "status")
KEY = ("order_id", "line_number")


def suite(*, currencies: Sequence[str], catalogue_ids: Sequence[str], excluded_products: Sequence[str] = (),
          min_rows: int = 1) -> TableSuite:
    """The order-line suite for a catalogue (the product ids known on the run date)."""
    known = sorted(catalogue_ids)
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
            expectation=lambda: gx.expectations.ExpectColumnValuesToNotBeInSet(column="quantity", value_set=[0]),
        ),
        between("unit_price", min_value=0, strict_min=True),
        RowRule(
            rule_id="known:product_id",
            column="product_id",
            reason="product_id is not in the catalogue",
            violated=lambda: F.col("product_id").isNotNull() & ~F.col("product_id").isin(known),
            expectation=lambda: gx.expectations.ExpectColumnValuesToBeInSet(column="product_id", value_set=known),
        ),
        RowRule(
            rule_id="interval:order_ts",
            column="order_ts",
            reason="order_ts is outside the day's data interval",
            violated=lambda: F.col("order_ts").isNotNull() & (F.to_date("order_ts") != F.col("date")),
        ),
    ]
    exclusions = []
    if excluded_products:
        excluded = sorted(excluded_products)
        exclusions.append(
            Exclusion("non_product", "non-product code (fee, postage)", lambda: F.col("product_id").isin(excluded))
        )
    return TableSuite(
        table=schemas.ORDER_LINES,
        columns=tuple(schemas.column_names(schemas.ORDER_LINES_DDL)),
        key=KEY,
        row_rules=tuple(rules),
        exclusions=tuple(exclusions),
        min_rows=min_rows,
    )
