"""Table contracts: the raw landing zone, the lake and the warehouse.

Every boundary of the pipeline selects the columns named here, in this order. The raw contract is what
upstream systems deliver into ``landing/<table>/date=YYYY-MM-DD/`` (CSV with a header, or Parquet); it is
documented for people in the README. No names, e-mail addresses or postal addresses: xsell only ever
needs opaque customer ids.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# --- raw contract ---------------------------------------------------------------------------------
ORDER_LINES = "order_lines"
PRODUCTS = "products"
CUSTOMERS = "customers"
RAW_TABLES = (ORDER_LINES, PRODUCTS, CUSTOMERS)

#: One row per order line. ``customer_id`` is empty for guest checkouts; ``quantity`` is negative on
#: returns; ``order_ts`` is UTC.
ORDER_LINES_DDL = (
    "order_id STRING, line_number INT, customer_id STRING, order_ts TIMESTAMP, product_id STRING, "
    "quantity INT, unit_price DOUBLE, currency STRING, channel STRING, status STRING"
)
#: Daily catalogue snapshot. ``family`` and ``tier`` form the up-sell ladder (tier 1 < 2 < 3 within a
#: family); products outside a ladder leave both empty.
PRODUCTS_DDL = (
    "product_id STRING, name STRING, category STRING, family STRING, tier INT, list_price DOUBLE, "
    "margin_rate DOUBLE, active BOOLEAN"
)
#: Daily customer snapshot with the marketing consent and when it last changed.
CUSTOMERS_DDL = (
    "customer_id STRING, signup_date DATE, region STRING, marketing_consent BOOLEAN, "
    "consent_updated_at TIMESTAMP"
)
RAW_DDL = {ORDER_LINES: ORDER_LINES_DDL, PRODUCTS: PRODUCTS_DDL, CUSTOMERS: CUSTOMERS_DDL}

ORDER_STATUSES = ("completed", "cancelled", "returned")
CHANNELS = ("web", "app", "store", "phone")
MAX_TIER = 3

# --- lake tables (Parquet, partitioned by date) ----------------------------------------------------
#: One quarantine for every raw table: the row as it arrived (a JSON object of its raw text).
QUARANTINE_DDL = (
    "table_name STRING, record STRING, rule_id STRING, reason STRING, source_file STRING, run_id STRING, date DATE"
)
VALIDATION_RUNS_DDL = (
    "table_name STRING, date DATE, run_id STRING, rows_in BIGINT, rows_valid BIGINT, "
    "rows_quarantined BIGINT, rows_excluded BIGINT, quarantined_by_rule STRING, excluded_by_reason STRING, "
    "gate_passed BOOLEAN"
)

# --- warehouse tables -----------------------------------------------------------------------------
#: The export contract: the only columns that may ever reach the published audience table.
AUDIENCE_COLUMNS = (
    ("run_date", "DATE"),
    ("offer_id", "VARCHAR"),
    ("offer_type", "VARCHAR"),
    ("customer_id", "VARCHAR"),
    ("score", "DOUBLE PRECISION"),
    ("expected_value", "DOUBLE PRECISION"),
    ("rank", "INTEGER"),
    ("decile", "INTEGER"),
    ("cell", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("model_name", "VARCHAR"),
    ("model_version", "VARCHAR"),
    ("run_id", "VARCHAR"),
)
AUDIENCE_KEY = ("run_date", "offer_id", "customer_id")

#: Association rules ``antecedent -> consequent`` (one consequent) per run date and level (product or
#: category). ``antecedent`` is a JSON array of item ids; supports are fractions of ``baskets``;
#: ``min_count`` is the support used, in baskets (higher than configured when the budget raised it).
BASKET_RULES_COLUMNS = (
    ("run_date", "DATE"),
    ("level", "VARCHAR"),
    ("antecedent", "VARCHAR"),
    ("consequent", "VARCHAR"),
    ("antecedent_count", "BIGINT"),
    ("consequent_count", "BIGINT"),
    ("rule_count", "BIGINT"),
    ("baskets", "BIGINT"),
    ("antecedent_support", "DOUBLE PRECISION"),
    ("consequent_support", "DOUBLE PRECISION"),
    ("support", "DOUBLE PRECISION"),
    ("confidence", "DOUBLE PRECISION"),
    ("lift", "DOUBLE PRECISION"),
    ("leverage", "DOUBLE PRECISION"),
    ("conviction", "DOUBLE PRECISION"),
    ("jaccard", "DOUBLE PRECISION"),
    ("kulczynski", "DOUBLE PRECISION"),
    ("fisher_p", "DOUBLE PRECISION"),
    ("fisher_q", "DOUBLE PRECISION"),
    ("significant", "BOOLEAN"),
    ("improvement", "DOUBLE PRECISION"),
    ("redundant", "BOOLEAN"),
    ("min_count", "BIGINT"),
)
BASKET_RULES_KEY = ("run_date", "level", "antecedent", "consequent")

#: "Bought later": customers who first bought ``consequent`` between the configured lags after first
#: buying ``antecedent``. Supports are fractions of ``customers``.
FOLLOWUP_RULES_COLUMNS = (
    ("run_date", "DATE"),
    ("antecedent", "VARCHAR"),
    ("consequent", "VARCHAR"),
    ("antecedent_customers", "BIGINT"),
    ("consequent_customers", "BIGINT"),
    ("followup_customers", "BIGINT"),
    ("customers", "BIGINT"),
    ("support", "DOUBLE PRECISION"),
    ("confidence", "DOUBLE PRECISION"),
    ("lift", "DOUBLE PRECISION"),
    ("median_lag_days", "DOUBLE PRECISION"),
    ("min_lag_days", "INTEGER"),
    ("max_lag_days", "INTEGER"),
)
FOLLOWUP_RULES_KEY = ("run_date", "antecedent", "consequent")

#: Bundles: frequent 2- and 3-product sets with a high lift, ranked by expected margin per basket
#: (``support`` x ``margin``). ``products`` is a JSON array of product ids.
BUNDLES_COLUMNS = (
    ("run_date", "DATE"),
    ("products", "VARCHAR"),
    ("size", "INTEGER"),
    ("basket_count", "BIGINT"),
    ("support", "DOUBLE PRECISION"),
    ("lift", "DOUBLE PRECISION"),
    ("list_price", "DOUBLE PRECISION"),
    ("margin", "DOUBLE PRECISION"),
    ("expected_margin", "DOUBLE PRECISION"),
    ("rank", "INTEGER"),
)
BUNDLES_KEY = ("run_date", "products")

#: The web shop's "bought together" list: per product, the best consequents of its single-product rules.
BOUGHT_TOGETHER_COLUMNS = (
    ("run_date", "DATE"),
    ("product_id", "VARCHAR"),
    ("rank", "INTEGER"),
    ("recommended_product_id", "VARCHAR"),
    ("confidence", "DOUBLE PRECISION"),
    ("lift", "DOUBLE PRECISION"),
    ("support", "DOUBLE PRECISION"),
)
BOUGHT_TOGETHER_KEY = ("run_date", "product_id", "rank")

#: One row per publish attempt, written in the same transaction as the audience (or, for a blocked
#: attempt, on its own after the rollback).
AUDIENCE_RUNS_COLUMNS = (
    ("run_date", "DATE"),
    ("run_id", "VARCHAR"),
    ("attempt", "INTEGER"),
    ("published_at", "TIMESTAMP WITH TIME ZONE"),
    ("rows_total", "BIGINT"),
    ("rows_by_offer", "VARCHAR"),
    ("rows_removed", "VARCHAR"),
    ("content_hash", "VARCHAR"),
    ("model_versions", "VARCHAR"),
    ("status", "VARCHAR"),
)

#: One row per table, data day and validation run, for people: passed or failed, and why. Written by
#: every validation, also by one that stops (then ``status`` is ``failed`` and ``failed_rule`` and
#: ``message`` say why; counts are empty when the run stopped before counting).
VALIDATION_RUNS_COLUMNS = (
    ("run_date", "DATE"),
    ("table_name", "VARCHAR"),
    ("data_date", "DATE"),
    ("run_id", "VARCHAR"),
    ("validated_at", "TIMESTAMP WITH TIME ZONE"),
    ("status", "VARCHAR"),
    ("rows_in", "BIGINT"),
    ("rows_valid", "BIGINT"),
    ("rows_quarantined", "BIGINT"),
    ("rows_excluded", "BIGINT"),
    ("rows_guest", "BIGINT"),
    ("quarantined_by_rule", "VARCHAR"),
    ("excluded_by_reason", "VARCHAR"),
    ("quarantine_rate", "DOUBLE PRECISION"),
    ("volume_ratio", "DOUBLE PRECISION"),
    ("gate_passed", "BOOLEAN"),
    ("failed_rule", "VARCHAR"),
    ("message", "VARCHAR"),
    ("data_docs", "VARCHAR"),
)
VALIDATION_RUNS_KEY = ("table_name", "data_date", "run_id")

#: One row per campaign (the run date an audience was published for) and offer: treatment against the
#: randomized control cell over the horizon that followed. Numbers are null when ``status`` is not
#: ``measured`` (too few control customers is no conclusion). Uplifts are differences of adoption rates
#: (treatment - control) with their ``confidence`` interval; revenue and margin are of the offer's
#: target bought in the window, in the orders' currency.
CAMPAIGN_RESULTS_COLUMNS = (
    ("run_date", "DATE"),
    ("offer_id", "VARCHAR"),
    ("offer_type", "VARCHAR"),
    ("window_start", "DATE"),
    ("window_end", "DATE"),
    ("treated", "BIGINT"),
    ("control", "BIGINT"),
    ("treated_conversions", "BIGINT"),
    ("control_conversions", "BIGINT"),
    ("treated_rate", "DOUBLE PRECISION"),
    ("control_rate", "DOUBLE PRECISION"),
    ("uplift", "DOUBLE PRECISION"),
    ("uplift_low", "DOUBLE PRECISION"),
    ("uplift_high", "DOUBLE PRECISION"),
    ("relative_uplift", "DOUBLE PRECISION"),
    ("relative_uplift_low", "DOUBLE PRECISION"),
    ("relative_uplift_high", "DOUBLE PRECISION"),
    ("p_value", "DOUBLE PRECISION"),
    ("significant", "BOOLEAN"),
    ("incremental_conversions", "DOUBLE PRECISION"),
    ("incremental_revenue", "DOUBLE PRECISION"),
    ("incremental_margin", "DOUBLE PRECISION"),
    ("confidence", "DOUBLE PRECISION"),
    ("status", "VARCHAR"),
    ("measured_on", "DATE"),
    ("run_id", "VARCHAR"),
)
CAMPAIGN_RESULTS_KEY = ("run_date", "offer_id")

#: One row per check of a run: ``check_name`` (psi_feature, psi_score, rule_overlap, realized_lift,
#: calibration), the offer it concerns (``*`` for all), its ``subject`` (a feature, a campaign date and
#: decile...), the measured ``value`` against the ``expected`` one and the ``threshold``; ``breach`` fails
#: the DAG's check task. ``source`` is the job that wrote the row (each job replaces its own rows).
MONITORING_COLUMNS = (
    ("run_date", "DATE"),
    ("source", "VARCHAR"),
    ("check_name", "VARCHAR"),
    ("offer_id", "VARCHAR"),
    ("subject", "VARCHAR"),
    ("value", "DOUBLE PRECISION"),
    ("expected", "DOUBLE PRECISION"),
    ("threshold", "DOUBLE PRECISION"),
    ("breach", "BOOLEAN"),
    ("detail", "VARCHAR"),
    ("run_id", "VARCHAR"),
)
MONITORING_KEY = ("run_date", "source", "check_name", "offer_id", "subject")


_TYPES: dict[str, DataType] = {
    "STRING": StringType(), "INT": IntegerType(), "BIGINT": LongType(), "DOUBLE": DoubleType(),
    "BOOLEAN": BooleanType(), "DATE": DateType(), "TIMESTAMP": TimestampType(),
}


def _data_type(name: str) -> DataType:
    if name.startswith("ARRAY<") and name.endswith(">"):
        return ArrayType(_data_type(name[len("ARRAY<"):-1]))
    return _TYPES[name]


def struct(ddl: str) -> StructType:
    """The Spark schema of a DDL string constant.

    Parsed here rather than with ``StructType.fromDDL``, which needs a running JVM: the generator, the
    CLI and the DAG use these constants without starting Spark.
    """
    fields = []
    for part in ddl.split(", "):
        name, type_name = part.strip().split(" ", 1)
        fields.append(StructField(name, _data_type(type_name.strip().upper())))
    return StructType(fields)


def column_names(ddl: str) -> list[str]:
    """Column names of a DDL string constant, in order."""
    return struct(ddl).fieldNames()
