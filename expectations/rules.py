"""The building blocks shared by the table suites."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import great_expectations as gx
from great_expectations.expectations import Expectation
from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder
from pyspark.sql import Column
from pyspark.sql import functions as F


@dataclass(frozen=True)
class RowRule:
    """A row-level rule: rows where ``violated`` is true are quarantined with ``rule_id`` and ``reason``.

    ``expectation`` is the Great Expectations form of the same rule, run on the rows kept; it is None
    where GX has no row expectation for it (the Spark condition is then the only check).
    """

    rule_id: str
    column: str
    reason: str
    violated: Callable[[], Column]
    expectation: Callable[[], Expectation] | None = None


def not_null(column: str) -> RowRule:
    return RowRule(
        rule_id=f"not_null:{column}",
        column=column,
        reason=f"{column} is missing",
        violated=lambda: F.col(column).isNull(),
        expectation=lambda: gx.expectations.ExpectColumnValuesToNotBeNull(column=column),
    )


def in_set(column: str, allowed: Sequence[str]) -> RowRule:
    values = sorted(allowed)
    return RowRule(
        rule_id=f"in_set:{column}",
        column=column,
        reason=f"{column} is not one of {', '.join(values)}",
        violated=lambda: F.col(column).isNotNull() & ~F.col(column).isin(values),
        expectation=lambda: gx.expectations.ExpectColumnValuesToBeInSet(column=column, value_set=values),
    )


def between(column: str, *, min_value: float | None = None, max_value: float | None = None,
            strict_min: bool = False) -> RowRule:
    def violated() -> Column:
        condition = F.lit(False)
        if min_value is not None:
            condition = condition | (F.col(column) <= min_value if strict_min else F.col(column) < min_value)
        if max_value is not None:
            condition = condition | (F.col(column) > max_value)
        return F.col(column).isNotNull() & condition

    low = "" if min_value is None else (f"> {min_value}" if strict_min else f">= {min_value}")
    high = "" if max_value is None else f"<= {max_value}"
    return RowRule(
        rule_id=f"range:{column}",
        column=column,
        reason=f"{column} is not {' and '.join(filter(None, (low, high)))}",
        violated=violated,
        expectation=lambda: gx.expectations.ExpectColumnValuesToBeBetween(
            column=column, min_value=min_value, max_value=max_value, strict_min=strict_min
        ),
    )


@dataclass(frozen=True)
class Exclusion:
    """Rows left out by design (not errors): counted in the conservation sum, never quarantined."""

    exclusion_id: str
    reason: str
    applies: Callable[[], Column]


@dataclass(frozen=True)
class TableSuite:
    """Everything the validator needs to know about one raw table."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    row_rules: tuple[RowRule, ...]
    exclusions: tuple[Exclusion, ...] = ()
    min_rows: int = 1
    #: The table has free text (names) whose quoted values may hold line breaks.
    multiline: bool = False

    def expectation_suite(self) -> gx.ExpectationSuite:
        """The GX suite run on the rows kept: the exact column list, a minimum row count (an empty
        batch passes every row expectation, so the count must be expected explicitly), unique keys, and
        every row rule that GX can express."""
        suite = gx.ExpectationSuite(name=f"{self.table}_kept")
        suite.add_expectation(gx.expectations.ExpectTableColumnsToMatchOrderedList(column_list=list(self.columns)))
        suite.add_expectation(gx.expectations.ExpectTableRowCountToBeBetween(min_value=self.min_rows))
        if len(self.key) == 1:
            suite.add_expectation(gx.expectations.ExpectColumnValuesToBeUnique(column=self.key[0]))
        else:
            suite.add_expectation(gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=list(self.key)))
        for rule in self.row_rules:
            if rule.expectation is not None:
                suite.add_expectation(rule.expectation())
        return suite


class KeepEarlierRunsIndexBuilder(DefaultSiteIndexBuilder):
    """GX's index builder, but it keeps the pages of earlier runs.

    Each validation runs in its own ephemeral context, which knows only its own result; GX's builder
    deletes every page its context does not know (``skip_and_clean_missing``, not configurable), so
    without this the Data Docs would only ever show the last table validated.
    """

    def build(self, skip_and_clean_missing: bool = True, build_index: bool = True):  # type: ignore[no-untyped-def]
        # Pages of earlier runs are kept on disk but cannot be indexed (their results are not in this
        # context): GX warns once per such page, which would flood the task log.
        site_log = logging.getLogger("great_expectations.render.renderer.site_builder")
        level = site_log.level
        site_log.setLevel(logging.ERROR)
        try:
            return super().build(skip_and_clean_missing=False, build_index=build_index)
        finally:
            site_log.setLevel(level)
