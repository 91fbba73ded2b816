"""The building blocks shared by the table suites."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import great_expectations as gx
from great_expectations.expectations import Expectation
from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder
from pyspark.sql import Column
from pyspark.sql import functions as F

#: The day profile's row count and the count of keys held by more than one row kept.
ROWS, KEY_DUPLICATES = "rows", "key_duplicates"


@dataclass(frozen=True)
class Measure:
    """One column of a table's day profile: a Spark aggregate over a day's rows kept, and the Great
    Expectations expectation that judges it.

    GX runs on the profile (one row per day), not on the rows: on Spark, each row expectation cost GX a
    pass over the rows (a dozen passes, 11 s of a 5M-line day); the profile is one aggregation, and GX
    judges its few rows in pandas.
    """

    name: str
    aggregate: Callable[[], Column]
    expectation: Callable[[], Expectation]


@dataclass(frozen=True)
class RowRule:
    """A row-level rule: rows where ``violated`` is true are quarantined with ``rule_id`` and ``reason``.

    ``measures`` is the Great Expectations form of the same rule, judged on the day profile of the rows
    kept; empty where the Spark condition is the only check.
    """

    rule_id: str
    column: str
    reason: str
    violated: Callable[[], Column]
    measures: Callable[[], tuple[Measure, ...]] = tuple


def not_null(column: str) -> RowRule:
    name = f"{column}__nulls"
    return RowRule(
        rule_id=f"not_null:{column}",
        column=column,
        reason=f"{column} is missing",
        violated=lambda: F.col(column).isNull(),
        measures=lambda: (Measure(name, lambda: F.count("*") - F.count(column),
                                  lambda: gx.expectations.ExpectColumnValuesToBeBetween(column=name, max_value=0)),),
    )


def in_set(column: str, allowed: Sequence[str]) -> RowRule:
    values = sorted(allowed)
    name = f"{column}__values"
    one = "(?:" + "|".join(re.escape(value) for value in values) + ")"
    return RowRule(
        rule_id=f"in_set:{column}",
        column=column,
        reason=f"{column} is not one of {', '.join(values)}",
        violated=lambda: F.col(column).isNotNull() & ~F.col(column).isin(values),
        # The day's distinct values, sorted and joined by "|": each must be one of the allowed.
        measures=lambda: (Measure(name, lambda: F.array_join(F.array_sort(F.collect_set(column)), "|"),
                                  lambda: gx.expectations.ExpectColumnValuesToMatchRegex(
                                      column=name, regex=rf"^(?:{one}(?:\|{one})*)?$")),),
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

    def measures() -> tuple[Measure, ...]:
        found = []
        if min_value is not None:
            found.append(Measure(f"{column}__min", lambda: F.min(column), lambda: gx.expectations.ExpectColumnValuesToBeBetween(
                column=f"{column}__min", min_value=min_value, strict_min=strict_min)))
        if max_value is not None:
            found.append(Measure(f"{column}__max", lambda: F.max(column), lambda: gx.expectations.ExpectColumnValuesToBeBetween(
                column=f"{column}__max", max_value=max_value)))
        return tuple(found)

    low = "" if min_value is None else (f"> {min_value}" if strict_min else f">= {min_value}")
    high = "" if max_value is None else f"<= {max_value}"
    return RowRule(
        rule_id=f"range:{column}",
        column=column,
        reason=f"{column} is not {' and '.join(filter(None, (low, high)))}",
        violated=violated,
        measures=measures,
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

    def measures(self) -> tuple[Measure, ...]:
        """The day profile's columns beyond ``rows`` and ``key_duplicates``: every rule's measures."""
        return tuple(measure for rule in self.row_rules for measure in rule.measures())

    def expectation_suite(self) -> gx.ExpectationSuite:
        """The GX suite run on the day profile of the rows kept (one row per day): at least one day, at
        least ``min_rows`` rows kept in all (an empty batch passes every row expectation, so the count
        must be expected explicitly), no key held twice, and every rule's measures."""
        suite = gx.ExpectationSuite(name=f"{self.table}_kept")
        suite.add_expectation(gx.expectations.ExpectTableRowCountToBeBetween(min_value=1))
        suite.add_expectation(gx.expectations.ExpectColumnSumToBeBetween(column=ROWS, min_value=self.min_rows))
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(column=KEY_DUPLICATES, max_value=0))
        for measure in self.measures():
            suite.add_expectation(measure.expectation())
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
