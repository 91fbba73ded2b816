"""Publishing to the warehouse: an embedded DuckDB file by default, PostgreSQL in production.

Both targets publish a run date the same way: Spark writes a staging copy (Parquet files for DuckDB, a
staging table through Spark's JDBC writer for PostgreSQL); then one transaction deletes the run date's
rows from the live table, inserts the staged rows and records the run. Readers see yesterday's rows or
today's, never a half-written, empty or doubled table. The live table is never dropped or truncated, so
grants, keys and views on it survive (Spark's JDBC ``overwrite`` would drop it, and each Spark partition
commits on its own).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pyspark.sql import DataFrame

from xsell import schemas
from xsell.config import IDENTIFIER, Settings

log = logging.getLogger("xsell.warehouse")

AUDIENCES = "audiences"
BASKET_RULES = "basket_rules"
AUDIENCE_RUNS = "audience_runs"
CRM_VIEW = "crm_audience_current"

#: Live tables: name -> (columns, primary key).
TABLES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    AUDIENCES: (schemas.AUDIENCE_COLUMNS, schemas.AUDIENCE_KEY),
    BASKET_RULES: (schemas.BASKET_RULES_COLUMNS, schemas.BASKET_RULES_KEY),
    AUDIENCE_RUNS: (schemas.AUDIENCE_RUNS_COLUMNS, ("run_date", "run_id")),
}


def identifier(name: str) -> str:
    """``name`` quoted as a SQL identifier, after checking it against the strict pattern.

    Every table and schema name reaching SQL goes through here: nothing from configuration can inject
    SQL.
    """
    if not IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (pattern {IDENTIFIER.pattern})")
    return f'"{name}"'


def _create_table_sql(schema: str, table: str) -> str:
    columns, key = TABLES[table]
    body = ", ".join(f"{identifier(name)} {sql_type}" for name, sql_type in columns)
    primary = ", ".join(identifier(name) for name in key)
    return f"CREATE TABLE IF NOT EXISTS {identifier(schema)}.{identifier(table)} ({body}, PRIMARY KEY ({primary}))"


def _crm_view_sql(schema: str) -> str:
    audiences = f"{identifier(schema)}.{identifier(AUDIENCES)}"
    return (
        f"CREATE OR REPLACE VIEW {identifier(schema)}.{identifier(CRM_VIEW)} AS "
        f"SELECT a.* FROM {audiences} a "
        f"JOIN (SELECT offer_id, max(run_date) AS run_date FROM {audiences} GROUP BY offer_id) latest "
        f"ON a.offer_id = latest.offer_id AND a.run_date = latest.run_date WHERE a.cell = 'treatment'"
    )


@dataclass(frozen=True)
class RunRecord:
    """A row of ``audience_runs``, written in the same transaction as the audience."""

    run_date: dt.date
    run_id: str
    rows_total: int
    rows_by_offer: dict[str, Any]
    model_versions: dict[str, str]
    status: str = "published"


class Warehouse(Protocol):
    def ensure_tables(self) -> None: ...

    def publish(self, table: str, frame: DataFrame, *, run_date: dt.date, run_id: str,
                record: RunRecord | None = None) -> str: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run ``sql`` (``?`` placeholders) and return all rows."""
        ...


def _staging_name(table: str, run_id: str) -> str:
    return f"{table}__stage_{hashlib.sha1(run_id.encode()).hexdigest()[:12]}"


def _content_hash(columns: Sequence[str], rows: Sequence[tuple]) -> str:
    """A hash of the published rows in key order, without the run id: a rerun that publishes the same
    audience gives the same hash."""
    keep = [index for index, name in enumerate(columns) if name != "run_id"]
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([str(row[index]) for index in keep]).encode())
    return digest.hexdigest()


class DuckDBWarehouse:
    """The embedded default: one DuckDB file, one writer at a time (DuckDB's own file lock)."""

    def __init__(self, path: Path, *, schema: str, staging_root: Path) -> None:
        self.path = path
        self.schema = schema
        self.staging_root = staging_root

    def _connect(self):
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(self.path))

    def ensure_tables(self) -> None:
        with self._connect() as connection:
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {identifier(self.schema)}")
            for table in TABLES:
                connection.execute(_create_table_sql(self.schema, table))
            connection.execute(_crm_view_sql(self.schema))

    def publish(self, table: str, frame: DataFrame, *, run_date: dt.date, run_id: str,
                record: RunRecord | None = None) -> str:
        columns = [name for name, _ in TABLES[table][0]]
        staging = self.staging_root / _staging_name(table, run_id)
        live = f"{identifier(self.schema)}.{identifier(table)}"
        column_list = ", ".join(identifier(name) for name in columns)
        key_order = ", ".join(identifier(name) for name in TABLES[table][1])
        try:
            frame.select(*columns).write.mode("overwrite").parquet(str(staging))
            with self._connect() as connection:
                # DuckDB 2 commits each statement of a multi-statement string on its own: one explicit
                # transaction around the whole swap.
                connection.execute("BEGIN TRANSACTION")
                try:
                    connection.execute(f"DELETE FROM {live} WHERE run_date = ?", [run_date])
                    connection.execute(
                        f"INSERT INTO {live} ({column_list}) SELECT {column_list} "
                        f"FROM read_parquet(?) WHERE run_date = ?",
                        [str(staging / "*.parquet"), run_date],
                    )
                    rows = connection.execute(
                        f"SELECT {column_list} FROM {live} WHERE run_date = ? ORDER BY {key_order}", [run_date]
                    ).fetchall()
                    content_hash = _content_hash(columns, rows)
                    if record is not None:
                        self._insert_record(connection, record, content_hash)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("published %d rows of %s for %s to %s", len(rows), table, run_date, self.path)
        return content_hash

    def _insert_record(self, connection: Any, record: RunRecord, content_hash: str) -> None:
        runs = f"{identifier(self.schema)}.{identifier(AUDIENCE_RUNS)}"
        connection.execute(f"DELETE FROM {runs} WHERE run_date = ? AND run_id = ?", [record.run_date, record.run_id])
        connection.execute(
            f"INSERT INTO {runs} VALUES (?, ?, now(), ?, ?, ?, ?, ?)",
            [record.run_date, record.run_id, record.rows_total, json.dumps(record.rows_by_offer, sort_keys=True),
             content_hash, json.dumps(record.model_versions, sort_keys=True), record.status],
        )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._connect() as connection:
            return connection.execute(sql, list(params)).fetchall()


class PostgresWarehouse:
    """PostgreSQL: staging through Spark's JDBC writer, the swap in one psycopg transaction."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.warehouse.postgres
        self.schema = settings.warehouse.schema_name

    def _connect(self):
        import psycopg

        return psycopg.connect(host=self.settings.host, port=self.settings.port, dbname=self.settings.dbname,
                               user=self.settings.user, password=self.settings.password, connect_timeout=10)

    def ensure_tables(self) -> None:
        with self._connect() as connection:
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {identifier(self.schema)}")
            for table in TABLES:
                connection.execute(_create_table_sql(self.schema, table))
            connection.execute(_crm_view_sql(self.schema))

    def publish(self, table: str, frame: DataFrame, *, run_date: dt.date, run_id: str,
                record: RunRecord | None = None) -> str:
        columns = [name for name, _ in TABLES[table][0]]
        staging = _staging_name(table, run_id)
        qualified_staging = f"{identifier(self.schema)}.{identifier(staging)}"
        properties = {"driver": "org.postgresql.Driver", "user": self.settings.user}
        if self.settings.password:
            properties["password"] = self.settings.password
        live = f"{identifier(self.schema)}.{identifier(table)}"
        column_list = ", ".join(identifier(name) for name in columns)
        key_order = ", ".join(identifier(name) for name in TABLES[table][1])
        try:
            # The staging table may be overwritten freely: nobody reads it. A Spark partition that fails
            # here leaves a partial staging table, which the finally below drops.
            frame.select(*columns).write.jdbc(self.settings.jdbc_url, f"{self.schema}.{staging}", mode="overwrite",
                                              properties=properties)
            with self._connect() as connection, connection.transaction():
                # Serialize publishes of the same table and date (also across hosts).
                connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{self.schema}.{table}:{run_date}"])
                connection.execute(f"DELETE FROM {live} WHERE run_date = %s", [run_date])
                connection.execute(
                    f"INSERT INTO {live} ({column_list}) SELECT {column_list} FROM {qualified_staging} "
                    f"WHERE run_date = %s", [run_date])
                rows = connection.execute(
                    f"SELECT {column_list} FROM {live} WHERE run_date = %s ORDER BY {key_order}", [run_date]
                ).fetchall()
                content_hash = _content_hash(columns, rows)
                if record is not None:
                    runs = f"{identifier(self.schema)}.{identifier(AUDIENCE_RUNS)}"
                    connection.execute(f"DELETE FROM {runs} WHERE run_date = %s AND run_id = %s",
                                       [record.run_date, record.run_id])
                    connection.execute(
                        f"INSERT INTO {runs} VALUES (%s, %s, now(), %s, %s, %s, %s, %s)",
                        [record.run_date, record.run_id, record.rows_total,
                         json.dumps(record.rows_by_offer, sort_keys=True), content_hash,
                         json.dumps(record.model_versions, sort_keys=True), record.status])
        finally:
            with self._connect() as connection:
                connection.execute(f"DROP TABLE IF EXISTS {qualified_staging}")
        log.info("published %d rows of %s for %s to PostgreSQL %s", len(rows), table, run_date, self.schema)
        return content_hash

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run ``sql`` written with ``?`` placeholders, as for DuckDB."""
        with self._connect() as connection:
            return connection.execute(sql.replace("?", "%s"), list(params)).fetchall()


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured target, with its tables created if missing."""
    if settings.warehouse.target == "postgres":
        warehouse: Warehouse = PostgresWarehouse(settings)
    else:
        warehouse = DuckDBWarehouse(settings.duckdb_path, schema=settings.warehouse.schema_name,
                                    staging_root=settings.lake / "_staging")
    warehouse.ensure_tables()
    return warehouse

