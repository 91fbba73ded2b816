"""Customers: the suite for the daily customer snapshot in ``landing/customers``.

A customer whose consent is unknown (empty) is quarantined: consent fails closed, such a customer is
never scored.
"""

from __future__ import annotations

from expectations.rules import TableSuite, not_null
from xsell import schemas


def suite(*, min_rows: int = 1) -> TableSuite:
    rules = [not_null(column) for column in ("customer_id", "signup_date", "marketing_consent", "consent_updated_at")]
    return TableSuite(
        table=schemas.CUSTOMERS,
        columns=tuple(schemas.column_names(schemas.CUSTOMERS_DDL)),
        key=("customer_id",),
        row_rules=tuple(rules),
        min_rows=min_rows,
    )
