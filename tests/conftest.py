"""Shared fixtures: one local Spark session for the whole run, settings rooted in a temporary home."""

from __future__ import annotations

import csv
import datetime as dt
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from xsell import schemas
from xsell.config import Settings, load_settings

#: CI sets this so that tests needing PostgreSQL or the shared datasets fail instead of skipping.
REQUIRE_ALL = os.environ.get("XSELL_REQUIRE_ALL") == "1"
# Python UDF workers must run this interpreter (with this environment's packages), as `make` arranges.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


#: The slowest scheduling units (minutes each, the Airflow run and the notebooks), started first so that
#: the two test workers finish together instead of one running the longest alone at the end; the rest
#: follow in collection order. Matched as prefixes of test ids.
SLOWEST_FIRST = (
    "tests/test_dag.py",
    "tests/test_notebooks.py::test_notebook_runs[02",
    "tests/test_pipeline.py",
    "tests/test_notebooks.py::test_notebook_runs[03",
    "tests/test_notebooks.py::test_notebook_runs[01",
    "tests/test_notebooks.py::test_notebook_runs[00",
    "tests/test_cluster.py",
)


def _rank(nodeid: str) -> int:
    return next((k for k, prefix in enumerate(SLOWEST_FIRST) if nodeid.startswith(prefix)), len(SLOWEST_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: the order inside a file is kept


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Test workers take whole files (a module's fixtures are built once), except that every notebook is
    a unit of its own, in the order of :data:`SLOWEST_FIRST` (xdist would reorder by test count)."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if nodeid.startswith("tests/test_notebooks.py::") else nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False
    return Scheduler(config, log)


def skip_or_fail(reason: str) -> None:
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (XSELL_REQUIRE_ALL=1 forbids skipping)")
    pytest.skip(reason)


def postgres_database(name: str) -> str:
    """The host of the PostgreSQL server for tests, with database ``name`` created if missing (skips, or
    fails under XSELL_REQUIRE_ALL, when there is no server). Safe when test workers race to create it."""
    host = os.environ.get("XSELL_PG_HOST", "127.0.0.1")
    if not Path("/usr/share/java/postgresql.jar").exists():
        skip_or_fail("the PostgreSQL JDBC driver (libpostgresql-jdbc-java) is not installed")
    try:
        import psycopg

        with psycopg.connect(host=host, dbname="postgres", user="postgres", autocommit=True, connect_timeout=5,
                             password=os.environ.get("XSELL_PG_PASSWORD")) as admin:
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                try:
                    admin.execute(f"CREATE DATABASE {name}")
                except psycopg.errors.DuplicateDatabase:
                    pass  # another test worker created it first
    except Exception as error:  # no server on this laptop
        skip_or_fail(f"no PostgreSQL server at {host}:5432 ({error})")
    return host


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public datasets folder (``XSELL_SHARED_DATA``)."""
    folder = os.environ.get("XSELL_SHARED_DATA")
    if not folder or not Path(folder).is_dir():
        skip_or_fail(f"the public datasets are needed: XSELL_SHARED_DATA is {'unset' if not folder else 'not a folder'}")
    return Path(folder)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("xsell-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.jars", "/usr/share/java/postgresql.jar")
    )
    # The test overlay's own Spark settings (no code generation for test-sized frames), as the jobs get them.
    for key, value in load_settings("test").spark.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("XSELL_HOME", str(tmp_path / "var"))
    return load_settings("test")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """A raw CSV file as an upstream system would deliver it (empty string for null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if value is None else value for value in row])
    return path


ORDER_COLUMNS = schemas.column_names(schemas.ORDER_LINES_DDL)
PRODUCT_COLUMNS = schemas.column_names(schemas.PRODUCTS_DDL)
CUSTOMER_COLUMNS = schemas.column_names(schemas.CUSTOMERS_DDL)

PRODUCTS = [
    ("P1", "City bike", "bikes", "bike", 1, 400.0, 0.2, "true"),
    ("P2", "Trail bike", "bikes", "bike", 2, 800.0, 0.25, "true"),
    ("P3", "Maintenance kit", "bike_care", None, None, 30.0, 0.4, "true"),
    ("P4", "Printer ink", "printing", None, None, 20.0, 0.5, "true"),
]
CUSTOMERS = [
    ("C1", "2024-01-01", "north", "true", "2024-01-01 00:00:00"),
    ("C2", "2024-01-01", "south", "false", "2024-06-01 00:00:00"),
    ("C3", "2024-02-01", "south", "true", "2024-02-01 00:00:00"),
]


def order_line(order: str, line: int, customer: str | None, day: dt.date, product: str, quantity: int = 1,
               price: float = 10.0, status: str = "completed", hour: int = 10) -> tuple:
    return (order, line, customer, f"{day.isoformat()} {hour:02d}:00:00", product, quantity, price, "GBP", "web",
            status)


def land(landing: Path, day: dt.date, lines: Sequence[tuple], *, products: Sequence[tuple] = PRODUCTS,
         customers: Sequence[tuple] = CUSTOMERS, snapshot: bool = True) -> None:
    """Write one day of a landing zone: order lines and (by default) the snapshots."""
    folder = f"date={day.isoformat()}"
    if lines:
        write_csv(landing / "order_lines" / folder / "part-0.csv", ORDER_COLUMNS, lines)
    if snapshot:
        write_csv(landing / "products" / folder / "part-0.csv", PRODUCT_COLUMNS, products)
        write_csv(landing / "customers" / folder / "part-0.csv", CUSTOMER_COLUMNS, customers)
