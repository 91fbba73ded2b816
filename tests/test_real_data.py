"""Real UCI Online Retail days, imported with ``xsell import online-retail`` and validated with the
``online_retail`` overlay: every count is checked against pandas on the source files.

Data: UCI Online Retail (Chen, Sain & Guo 2012, CC BY 4.0), as shipped by-day in
databricks/Spark-The-Definitive-Guide (Apache-2.0); found through ``XSELL_SHARED_DATA``.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pyspark.sql import SparkSession

from jobs import validate
from xsell import baskets, importers, lake
from xsell.config import Settings, conf_dir, load_settings

# Wednesday 2010-12-01 .. Tuesday 2010-12-07: five order days (no file on Saturday 12-04), enough
# history for the volume check to act on the last one.
DAYS = ("2010-12-01", "2010-12-02", "2010-12-03", "2010-12-05", "2010-12-06", "2010-12-07")
RUN_DATE = dt.date(2010, 12, 7)


@pytest.fixture(scope="module")
def retail(shared_data: Path, spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Settings, dict[str, pd.DataFrame], list]:
    source = tmp_path_factory.mktemp("online_retail")
    for day in DAYS:
        shutil.copy(shared_data / "online_retail" / "by-day" / f"{day}.csv", source)
    home = tmp_path_factory.mktemp("home")
    settings = load_settings("test,online_retail", overrides={"home": str(home)})
    importers.import_source("online-retail", source, settings.landing)
    summaries = validate.run(spark, settings, RUN_DATE, run_id="real", since=dt.date.fromisoformat(DAYS[0]))
    raw = {day: pd.read_csv(source / f"{day}.csv", dtype=str, keep_default_na=False) for day in DAYS}
    return settings, raw, summaries


def expected_outcomes(raw: pd.DataFrame, catalogue: set[str], pattern: str) -> dict[str, int]:
    """The routing of one source day, worked out with pandas in the suite's rule order."""
    first_copy = ~raw.duplicated()
    non_product = first_copy & raw["StockCode"].str.fullmatch(pattern)
    rest = raw[first_copy & ~non_product]
    quantity, price = rest["Quantity"].astype(int), rest["UnitPrice"].astype(float)
    cancelled = rest["InvoiceNo"].str.startswith("C")
    bad_quantity = (quantity == 0) | ((quantity < 0) & ~cancelled)
    bad_price = ~bad_quantity & (price <= 0)
    unknown = ~bad_quantity & ~bad_price & ~rest["StockCode"].isin(catalogue)
    valid = rest[~bad_quantity & ~bad_price & ~unknown]
    return {
        "rows_in": len(raw), "duplicate": int((~first_copy).sum()), "non_product": int(non_product.sum()),
        "range:quantity": int(bad_quantity.sum()), "range:unit_price": int(bad_price.sum()),
        "known:product_id": int(unknown.sum()), "valid": len(valid), "guests": int((valid["CustomerID"] == "").sum()),
    }


def test_real_days_are_routed_as_documented_and_conserved(retail: tuple[Settings, dict, list]) -> None:
    settings, raw, summaries = retail
    orders = {s.date.isoformat(): s for s in summaries if s.table_name == "order_lines"}
    assert sorted(orders) == list(DAYS)
    # The catalogue snapshot of the run date serves every day the run validates; products without a
    # name or a price are quarantined from it.
    products = pd.read_csv(settings.landing / "products" / f"date={RUN_DATE}" / "online-retail.csv", dtype=str,
                           keep_default_na=False)
    usable = set(products.loc[(products["name"] != "") & (products["list_price"] != ""), "product_id"])
    for day in DAYS:
        expected = expected_outcomes(raw[day], usable, settings.validation.excluded_product_pattern)
        got = orders[day]
        assert got.rows_in == got.rows_valid + got.rows_quarantined + got.rows_excluded
        assert {
            "rows_in": got.rows_in, "duplicate": got.excluded_by_reason.get("duplicate", 0),
            "non_product": got.excluded_by_reason.get("non_product", 0),
            "range:quantity": got.by_rule.get("range:quantity", 0),
            "range:unit_price": got.by_rule.get("range:unit_price", 0),
            "known:product_id": got.by_rule.get("known:product_id", 0), "valid": got.rows_valid,
            "guests": got.rows_guest,
        } == expected, day
        assert set(got.by_rule) <= {"range:quantity", "range:unit_price", "known:product_id"}


def test_real_counts_of_the_first_day(retail: tuple[Settings, dict, list]) -> None:
    """Pinned from the source file itself, so a change of routing shows up as a number."""
    _, raw, summaries = retail
    first = next(s for s in summaries if s.table_name == "order_lines" and s.date == dt.date(2010, 12, 1))
    source = raw["2010-12-01"]
    assert first.rows_in == len(source) == 3108
    assert (first.excluded_by_reason["duplicate"], first.excluded_by_reason["non_product"]) == (44, 9)
    assert (first.rows_quarantined, first.rows_valid, first.rows_guest) == (10, 3045, 1128)
    assert first.by_rule == {"range:unit_price": 9, "range:quantity": 1}


def test_real_cancellations_are_netted_against_the_customers_earlier_sales(
        retail: tuple[Settings, dict, list], spark: SparkSession) -> None:
    settings, _, _ = retail
    lines = lake.read(spark, settings.lake, "order_lines").drop("date")
    net = baskets.net_sales(lines).toPandas()
    valid = lines.toPandas()
    cancels = valid[valid["status"] == "cancelled"]
    assert len(cancels) > 50  # real C-invoices reach the lake as valid cancellation lines
    sales = valid[(valid["status"] == "completed") & valid["customer_id"].notna()]
    key = ["customer_id", "product_id"]
    sold = sales.groupby(key).agg(sold=("quantity", "sum"), last_sale=("order_ts", "max"))
    taken = cancels.groupby(key).agg(taken=("quantity", lambda q: -q.sum()), first_cancel=("order_ts", "min"))
    pairs = sold.join(taken, how="inner")
    after = pairs[pairs["first_cancel"] >= pairs["last_sale"]]  # every cancellation follows every sale
    assert len(after) >= 20
    netted = net.groupby(key)["quantity"].sum()
    for (customer, product), row in after.iterrows():
        assert netted.get((customer, product), 0) == max(0, row["sold"] - row["taken"]), (customer, product)
    fully = after[after["taken"] >= after["sold"]]
    assert len(fully) > 0 and not any(pair in netted.index for pair in fully.index)


def test_the_overlay_excludes_exactly_what_the_importer_keeps_out_of_the_catalogue() -> None:
    overlay = yaml.safe_load((conf_dir() / "online_retail.yaml").read_text())
    assert overlay["validation"]["excluded_product_pattern"] == importers.ONLINE_RETAIL_NON_PRODUCTS.pattern
    assert re.fullmatch(overlay["validation"]["excluded_product_pattern"], "gift_0001_20")
