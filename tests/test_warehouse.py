"""Publishing on both targets: atomic replacement of a run date, never a half-written table.

The PostgreSQL tests run against a real server (``XSELL_PG_HOST``, default 127.0.0.1:5432, trust auth
or ``XSELL_PG_PASSWORD``) in a database of their own that they create.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator

import pytest
from pyspark.sql import DataFrame, SparkSession

from conftest import postgres_database
from xsell import schemas, warehouse
from xsell.config import Settings, load_settings
from xsell.runtime import PublishBlocked

D1, D2 = dt.date(2025, 3, 1), dt.date(2025, 3, 2)
PG_DATABASE = "xsell_test"


def audience_rows(spark: SparkSession, run_date: dt.date, customers: list[str], *, score: float = 0.5) -> DataFrame:
    rows = [(run_date, "cross-sell:x", "cross-sell", c, score, score * 10, i + 1, 1, "treatment", "why", "m", "1", "r")
            for i, c in enumerate(customers)]
    ddl = ", ".join(f"{name} {kind}" for name, kind in schemas.AUDIENCE_COLUMNS)
    return spark.createDataFrame(rows, ddl.replace("VARCHAR", "STRING").replace("DOUBLE PRECISION", "DOUBLE"))


def failing(frame: DataFrame) -> DataFrame:
    """The same rows, but the Spark task of one partition raises half way through the write."""
    def explode(rows):
        for row in rows:
            if row.customer_id == "C3":
                raise RuntimeError("executor lost")
            yield row
    return frame.repartition(2, "customer_id").rdd.mapPartitions(explode).toDF(frame.schema)


def live(target: warehouse.Warehouse, schema: str, run_date: dt.date) -> list[tuple]:
    return target.query(
        f"SELECT customer_id, score FROM {warehouse.identifier(schema)}.audiences WHERE run_date = ? ORDER BY customer_id",
        [run_date])


# --- DuckDB ----------------------------------------------------------------------------------------
@pytest.fixture()
def duck(settings: Settings) -> warehouse.Warehouse:
    return warehouse.open_warehouse(settings)


def test_duckdb_publish_replaces_only_its_date(spark: SparkSession, duck: warehouse.Warehouse) -> None:
    duck.publish("audiences", audience_rows(spark, D1, ["C1", "C2"]), run_date=D1, run_id="a")
    duck.publish("audiences", audience_rows(spark, D2, ["C1"]), run_date=D2, run_id="b")
    first = duck.publish("audiences", audience_rows(spark, D1, ["C2", "C3"], score=0.7), run_date=D1, run_id="c")
    assert live(duck, "main", D1) == [("C2", 0.7), ("C3", 0.7)]
    assert live(duck, "main", D2) == [("C1", 0.5)]
    again = duck.publish("audiences", audience_rows(spark, D1, ["C2", "C3"], score=0.7), run_date=D1, run_id="d")
    assert again == first, "a rerun publishing the same rows has the same content hash"


def test_duckdb_failure_in_the_transaction_keeps_the_previous_rows(spark: SparkSession, duck: warehouse.Warehouse,
                                                                    settings: Settings) -> None:
    duck.publish("audiences", audience_rows(spark, D1, ["C1", "C2"]), run_date=D1, run_id="a")
    doubled = audience_rows(spark, D1, ["C1", "C1"], score=0.9)  # violates the primary key on insert
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        duck.publish("audiences", doubled, run_date=D1, run_id="b")
    assert live(duck, "main", D1) == [("C1", 0.5), ("C2", 0.5)]
    assert not list((settings.lake / "_staging").glob("*")), "staging of the failed attempt is cleaned up"


def test_duckdb_failure_while_staging_keeps_the_previous_rows(spark: SparkSession, duck: warehouse.Warehouse) -> None:
    duck.publish("audiences", audience_rows(spark, D1, ["C1", "C2"]), run_date=D1, run_id="a")
    with pytest.raises(Exception, match="executor lost"):
        duck.publish("audiences", failing(audience_rows(spark, D1, ["C1", "C2", "C3", "C4"], score=0.9)),
                     run_date=D1, run_id="b")
    assert live(duck, "main", D1) == [("C1", 0.5), ("C2", 0.5)]


def test_identifiers_are_checked_before_any_sql() -> None:
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        warehouse.identifier('audiences"; DROP TABLE audiences; --')


# --- PostgreSQL ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    host = postgres_database(PG_DATABASE)
    os.environ["XSELL_HOME"] = str(tmp_path_factory.mktemp("pg") / "var")
    return load_settings("test,postgres", overrides={"warehouse": {"postgres": {"host": host, "dbname": PG_DATABASE}}})


@pytest.fixture()
def pg(pg_settings: Settings) -> Iterator[warehouse.Warehouse]:
    target = warehouse.PostgresWarehouse(pg_settings)
    with target._connect() as connection:
        connection.execute("DROP SCHEMA IF EXISTS xsell CASCADE")
    target.ensure_tables()
    yield target


def test_postgres_rerun_replaces_without_duplicates(spark: SparkSession, pg: warehouse.Warehouse) -> None:
    pg.publish("audiences", audience_rows(spark, D1, ["C1", "C2"]), run_date=D1, run_id="a")
    first = pg.publish("audiences", audience_rows(spark, D1, ["C2", "C3"]), run_date=D1, run_id="b")
    again = pg.publish("audiences", audience_rows(spark, D1, ["C2", "C3"]), run_date=D1, run_id="c")
    assert live(pg, "xsell", D1) == [("C2", 0.5), ("C3", 0.5)]
    assert first == again
    assert pg.query("SELECT count(*) FROM xsell.audience_runs")[0][0] == 0  # no record was asked for


def test_postgres_partition_failure_leaves_the_previous_audience(spark: SparkSession, pg: warehouse.Warehouse) -> None:
    pg.publish("audiences", audience_rows(spark, D1, ["C1", "C2"]), run_date=D1, run_id="a")
    with pytest.raises(Exception, match="executor lost"):
        pg.publish("audiences", failing(audience_rows(spark, D1, ["C1", "C2", "C3", "C4"], score=0.9)),
                   run_date=D1, run_id="b")
    assert live(pg, "xsell", D1) == [("C1", 0.5), ("C2", 0.5)]
    staging = pg.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'xsell' AND tablename LIKE '%%__stage_%%'")
    assert staging == [(0,)], "the failed attempt's staging table is dropped"


def test_postgres_grants_and_views_survive_a_publish(spark: SparkSession, pg: warehouse.Warehouse) -> None:
    pg.publish("audiences", audience_rows(spark, D1, ["C1"]), run_date=D1, run_id="a")
    with pg._connect() as connection:
        connection.execute("DO $$ BEGIN CREATE ROLE xsell_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        connection.execute("GRANT USAGE ON SCHEMA xsell TO xsell_reader")
        connection.execute("GRANT SELECT ON xsell.audiences TO xsell_reader")
        connection.execute("CREATE VIEW xsell.crm_export AS SELECT customer_id FROM xsell.audiences")
    pg.publish("audiences", audience_rows(spark, D1, ["C2", "C3"]), run_date=D1, run_id="b")
    with pg._connect() as connection:
        connection.execute("SET ROLE xsell_reader")
        assert connection.execute("SELECT customer_id FROM xsell.audiences ORDER BY 1").fetchall() == [("C2",), ("C3",)]
        connection.execute("RESET ROLE")
        assert connection.execute("SELECT count(*) FROM xsell.crm_export").fetchone() == (2,)
        connection.execute("DROP VIEW xsell.crm_export")
        connection.execute("REVOKE ALL ON xsell.audiences FROM xsell_reader")
        connection.execute("REVOKE ALL ON SCHEMA xsell FROM xsell_reader")


def test_postgres_reader_never_sees_an_empty_audience(spark: SparkSession, pg: warehouse.Warehouse) -> None:
    pg.publish("audiences", audience_rows(spark, D1, ["C1", "C2"]), run_date=D1, run_id="a")
    with pg._connect() as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert reader.execute("SELECT count(*) FROM xsell.audiences").fetchone() == (2,)
        pg.publish("audiences", audience_rows(spark, D1, ["C3", "C4", "C5"]), run_date=D1, run_id="b")
        assert reader.execute("SELECT count(*) FROM xsell.audiences").fetchone() == (2,)
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM xsell.audiences").fetchone() == (3,)


def test_postgres_concurrent_publishes_of_a_date_are_serialized(spark: SparkSession, pg: warehouse.Warehouse) -> None:
    errors: list[BaseException] = []

    def publish(run_id: str, customers: list[str]) -> None:
        try:
            pg.publish("audiences", audience_rows(spark, D1, customers), run_date=D1, run_id=run_id)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(f"run{i}", ["C1", "C2", f"X{i}"])) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    rows = pg.query("SELECT customer_id, count(*) FROM xsell.audiences GROUP BY customer_id ORDER BY 1")
    assert [r[1] for r in rows] == [1, 1, 1], "one publish wins whole; keys are never doubled"
    assert [r[0] for r in rows][:2] == ["C1", "C2"]


# --- guards inside the publish transaction (both targets) --------------------------------------------
def opt_outs(spark: SparkSession, customers: list[str]) -> DataFrame:
    return spark.createDataFrame([(c,) for c in customers], "customer_id STRING")


def guard(spark: SparkSession, blocked: list[str], *, fraction: float = 0.5, retention: int = 400) -> warehouse.Guard:
    return warehouse.Guard(opt_outs=opt_outs(spark, blocked), min_volume_fraction=fraction, retention_days=retention)


def record(run_date: dt.date, run_id: str) -> warehouse.RunRecord:
    return warehouse.RunRecord(run_date=run_date, run_id=run_id, rows_total=0, rows_by_offer={}, model_versions={})


@pytest.fixture(params=["duckdb", "postgres"])
def target(request: pytest.FixtureRequest) -> warehouse.Warehouse:
    return request.getfixturevalue("duck" if request.param == "duckdb" else "pg")


def schema_of(target: warehouse.Warehouse) -> str:
    return target.schema


def test_opted_out_rows_are_removed_inside_the_transaction(spark: SparkSession, target: warehouse.Warehouse) -> None:
    target.publish("audiences", audience_rows(spark, D1, ["C1", "C2", "C3"]), run_date=D1, run_id="a",
                   record=record(D1, "a"), guard=guard(spark, ["C2"]))
    assert [c for c, _ in live(target, schema_of(target), D1)] == ["C1", "C3"]
    removed = target.query(f"SELECT rows_total, rows_removed FROM {schema_of(target)}.audience_runs WHERE run_id = 'a'")
    assert removed[0][0] == 2 and '"consent_in_transaction": 1' in removed[0][1]


def test_a_collapsed_audience_is_blocked_and_the_previous_one_stays(spark: SparkSession, target: warehouse.Warehouse) -> None:
    many = [f"C{i}" for i in range(10)]
    target.publish("audiences", audience_rows(spark, D1, many), run_date=D1, run_id="a", record=record(D1, "a"),
                   guard=guard(spark, []))
    target.publish("audiences", audience_rows(spark, D2, many), run_date=D2, run_id="b", record=record(D2, "b"),
                   guard=guard(spark, []))
    with pytest.raises(PublishBlocked, match="min_volume_fraction"):
        target.publish("audiences", audience_rows(spark, D2, ["C1", "C2"]), run_date=D2, run_id="c",
                       record=record(D2, "c"), guard=guard(spark, []))
    assert len(live(target, schema_of(target), D2)) == 10


def test_old_run_dates_are_purged(spark: SparkSession, target: warehouse.Warehouse) -> None:
    old = D1 - dt.timedelta(days=30)
    target.publish("audiences", audience_rows(spark, old, ["C1"]), run_date=old, run_id="a", guard=guard(spark, []))
    target.publish("audiences", audience_rows(spark, D1, ["C1"]), run_date=D1, run_id="b", guard=guard(spark, [], retention=10))
    assert live(target, schema_of(target), old) == [] and len(live(target, schema_of(target), D1)) == 1


def test_blocked_attempt_is_recorded(target: warehouse.Warehouse) -> None:
    target.record_blocked(warehouse.RunRecord(run_date=D1, run_id="x", rows_total=0, rows_by_offer={},
                                              model_versions={}, attempt=2, status="blocked: stale consent"))
    rows = target.query(f"SELECT attempt, status, content_hash FROM {schema_of(target)}.audience_runs WHERE run_id = 'x'")
    assert rows == [(2, "blocked: stale consent", None)]


def test_a_run_date_is_read_back_by_spark_and_small_tables_are_replaced(spark: SparkSession,
                                                                        target: warehouse.Warehouse) -> None:
    """What the measure job relies on: the published audience read at scale, results replaced per campaign."""
    target.publish("audiences", audience_rows(spark, D1, ["C1", "C2"]), run_date=D1, run_id="a")
    target.publish("audiences", audience_rows(spark, D2, ["C3"]), run_date=D2, run_id="b")
    frame = target.read_run_date(spark, warehouse.AUDIENCES, D1)
    assert sorted(row["customer_id"] for row in frame.collect()) == ["C1", "C2"]
    assert target.read_run_date(spark, warehouse.AUDIENCES, D1 - dt.timedelta(days=1)).count() == 0
    base = {"offer_id": "cross-sell:x", "offer_type": "cross-sell", "treated": 10, "control": 5, "status": "measured",
            "uplift": 0.1, "significant": True, "window_start": D1, "window_end": D2, "measured_on": D2, "run_id": "m"}
    for uplift in (0.1, 0.2):  # a remeasure replaces the campaign's rows
        target.replace_rows(warehouse.CAMPAIGN_RESULTS, [{**base, "run_date": D1, "uplift": uplift}], where={"run_date": D1})
    target.replace_rows(warehouse.CAMPAIGN_RESULTS, [{**base, "run_date": D2}], where={"run_date": D2})
    rows = target.query(f"SELECT run_date, uplift, significant FROM {schema_of(target)}.campaign_results ORDER BY run_date")
    assert rows == [(D1, 0.2, True), (D2, 0.1, True)]


def test_a_table_of_another_shape_is_refused_not_altered(settings: Settings) -> None:
    import duckdb

    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.duckdb_path)) as db:
        db.execute("CREATE TABLE main.audience_runs (run_date DATE, run_id VARCHAR, status VARCHAR)")
    with pytest.raises(PublishBlocked, match=r"main\.audience_runs has columns \['run_date', 'run_id', 'status'\]"):
        warehouse.open_warehouse(settings)
    with duckdb.connect(str(settings.duckdb_path)) as db:
        assert [c[0] for c in db.execute("DESCRIBE main.audience_runs").fetchall()] == ["run_date", "run_id", "status"]
