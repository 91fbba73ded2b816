"""Products: the suite for the daily catalogue snapshot in ``landing/products``."""

from __future__ import annotations

from pyspark.sql import functions as F

from expectations.rules import RowRule, TableSuite, between, not_null
from xsell import schemas


def suite(*, min_rows: int = 1) -> TableSuite:
    rules = [not_null(column) for column in ("product_id", "name", "category", "list_price", "margin_rate", "active")]
    rules += [
        between("list_price", min_value=0, strict_min=True),
        between("margin_rate", min_value=0, max_value=1),
        between("tier", min_value=1, max_value=schemas.MAX_TIER),
        RowRule(
            rule_id="pair:family_tier",
            column="tier",
            reason="family and tier must be both set or both empty",
            violated=lambda: F.col("family").isNull() != F.col("tier").isNull(),
        ),
    ]
    return TableSuite(
        table=schemas.PRODUCTS,
        columns=tuple(schemas.column_names(schemas.PRODUCTS_DDL)),
        key=("product_id",),
        row_rules=tuple(rules),
        min_rows=min_rows,
        multiline=True,
    )
