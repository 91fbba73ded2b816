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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from pyspark.sql import DataFrame

from xsell import schemas
from xsell.config import IDENTIFIER, Settings
from xsell.runtime import PublishBlocked

log = logging.getLogger("xsell.warehouse")

AUDIENCES = "audiences"
BASKET_RULES = "basket_rules"
FOLLOWUP_RULES = "followup_rules"
BUNDLES = "bundles"
BOUGHT_TOGETHER = "bought_together"
AUDIENCE_RUNS = "audience_runs"
VALIDATION_RUNS = "validation_runs"
CAMPAIGN_RESULTS = "campaign_results"
MONITORING = "monitoring"
CRM_VIEW = "crm_audience_current"

#: Live tables: name -> (columns, primary key).
TABLES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    AUDIENCES: (schemas.AUDIENCE_COLUMNS, schemas.AUDIENCE_KEY),
    BASKET_RULES: (schemas.BASKET_RULES_COLUMNS, schemas.BASKET_RULES_KEY),
    FOLLOWUP_RULES: (schemas.FOLLOWUP_RULES_COLUMNS, schemas.FOLLOWUP_RULES_KEY),
    BUNDLES: (schemas.BUNDLES_COLUMNS, schemas.BUNDLES_KEY),
    BOUGHT_TOGETHER: (schemas.BOUGHT_TOGETHER_COLUMNS, schemas.BOUGHT_TOGETHER_KEY),
    AUDIENCE_RUNS: (schemas.AUDIENCE_RUNS_COLUMNS, ("run_date", "run_id")),
    VALIDATION_RUNS: (schemas.VALIDATION_RUNS_COLUMNS, schemas.VALIDATION_RUNS_KEY),
    CAMPAIGN_RESULTS: (schemas.CAMPAIGN_RESULTS_COLUMNS, schemas.CAMPAIGN_RESULTS_KEY),
    MONITORING: (schemas.MONITORING_COLUMNS, schemas.MONITORING_KEY),
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
    """A row of ``audience_runs``."""

    run_date: dt.date
    run_id: str
    rows_total: int
    rows_by_offer: dict[str, Any]
    model_versions: dict[str, str]
    rows_removed: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    status: str = "published"


@dataclass(frozen=True)
class Guard:
    """Checks made on the staged rows inside the publish transaction, before the live rows change.

    ``opt_outs`` holds the ids of customers who may not be contacted (consent withdrawn or unknown):
    their rows are removed inside the transaction whatever happened upstream. A publish with fewer
    rows than ``min_volume_fraction`` of the last published run is blocked. Rows older than
    ``retention_days`` before the run date are purged.
    """

    opt_outs: DataFrame
    min_volume_fraction: float
    retention_days: int


class Warehouse(Protocol):
    def ensure_tables(self) -> None: ...

    def publish(self, table: str, frame: DataFrame, *, run_date: dt.date, run_id: str,
                record: RunRecord | None = None, guard: Guard | None = None) -> str: ...

    def record_blocked(self, record: RunRecord) -> None: ...

    def record_validation(self, rows: Sequence[dict[str, Any]]) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run ``sql`` (``?`` placeholders) and return all rows."""
        ...

    def table_name(self, table: str) -> str:
        """``table`` qualified with the warehouse schema, quoted for SQL."""
        ...

    def replace_rows(self, table: str, rows: Sequence[dict[str, Any]], *, where: dict[str, Any]) -> None:
        """Delete the rows of ``table`` matching ``where`` and insert ``rows``, in one transaction."""
        ...

    def read_run_date(self, spark: Any, table: str, run_date: dt.date) -> DataFrame:
        """The rows of ``table`` for ``run_date`` as a Spark frame (read at scale, not through Python)."""
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


class _Transaction(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


class _SqlWarehouse:
    """The publish algorithm shared by both targets; subclasses stage rows and open transactions."""

    schema: str

    # --- what a target provides ---
    def _connect(self) -> Any:
        raise NotImplementedError

    def _stage(self, frame: DataFrame, name: str) -> str:
        """Write ``frame`` where the database can read it; returns the SQL to select from it."""
        raise NotImplementedError

    def _drop_stage(self, name: str) -> None:
        raise NotImplementedError

    @contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _lock(self, tx: _Transaction, key: str) -> None:
        """Serialize publishes of one table and date (DuckDB has a single writer anyway)."""

    # --- shared ---
    def _qualified(self, table: str) -> str:
        return f"{identifier(self.schema)}.{identifier(table)}"

    def table_name(self, table: str) -> str:
        return self._qualified(table)

    def ensure_tables(self) -> None:
        """Create what is missing; refuse a live table whose columns are not the contract's (an older
        xsell's table: there are no automatic migrations, and guessing one could lose data)."""
        with self._transaction() as tx:
            tx.execute(f"CREATE SCHEMA IF NOT EXISTS {identifier(self.schema)}")
            for table in TABLES:
                tx.execute(_create_table_sql(self.schema, table))
                found = [column[0] for column in tx.execute(f"SELECT * FROM {self._qualified(table)} LIMIT 0").description]
                expected = [name for name, _ in TABLES[table][0]]
                if found != expected:
                    raise PublishBlocked(
                        f"warehouse table {self.schema}.{table} has columns {found}, this xsell expects {expected}: "
                        f"migrate it (or, for a local demo, `make clean`)")
            tx.execute(_crm_view_sql(self.schema))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._transaction() as tx:
            return tx.execute(sql, list(params)).fetchall()

    def publish(self, table: str, frame: DataFrame, *, run_date: dt.date, run_id: str,
                record: RunRecord | None = None, guard: Guard | None = None) -> str:
        """Replace ``run_date``'s rows of ``table`` by ``frame`` in one transaction; returns the content hash.

        Raises :class:`PublishBlocked` (and changes nothing) when a guard check fails.
        """
        columns = [name for name, _ in TABLES[table][0]]
        key = [identifier(name) for name in TABLES[table][1]]
        column_list = ", ".join(identifier(name) for name in columns)
        live = self._qualified(table)
        stage, opt_out_stage = _staging_name(table, run_id), _staging_name(f"{table}_opt_outs", run_id)
        try:
            source = self._stage(frame.select(*columns), stage)
            opt_outs = self._stage(guard.opt_outs.select("customer_id"), opt_out_stage) if guard else None
            with self._transaction() as tx:
                self._lock(tx, f"{self.schema}.{table}:{run_date}")
                keep = "TRUE"
                removed: dict[str, int] = {}
                if guard is not None:
                    keep = f"customer_id NOT IN (SELECT customer_id FROM {opt_outs} WHERE customer_id IS NOT NULL)"
                    self._check(tx, table, source, key, keep, run_date, guard, removed)
                tx.execute(f"DELETE FROM {live} WHERE run_date = ?", [run_date])
                tx.execute(f"INSERT INTO {live} ({column_list}) SELECT {column_list} FROM {source} "
                           f"WHERE run_date = ? AND {keep}", [run_date])
                if guard is not None:
                    oldest = run_date - dt.timedelta(days=guard.retention_days)
                    purged = tx.execute(f"SELECT count(*) FROM {live} WHERE run_date < ?", [oldest]).fetchone()[0]
                    tx.execute(f"DELETE FROM {live} WHERE run_date < ?", [oldest])
                    removed["retention_purged_rows"] = purged
                rows = tx.execute(f"SELECT {column_list} FROM {live} WHERE run_date = ? ORDER BY {', '.join(key)}",
                                  [run_date]).fetchall()
                content_hash = _content_hash(columns, rows)
                if record is not None:
                    final = replace(record, rows_total=len(rows),
                                    rows_removed={**record.rows_removed, **removed})
                    self._insert_record(tx, final, content_hash)
        finally:
            self._drop_stage(stage)
            self._drop_stage(opt_out_stage)
        log.info("published %d rows of %s for %s (%s)", len(rows), table, run_date, type(self).__name__)
        return content_hash

    def _check(self, tx: _Transaction, table: str, source: str, key: list[str], keep: str, run_date: dt.date,
               guard: Guard, removed: dict[str, int]) -> None:
        staged_columns = [column[0] for column in tx.execute(f"SELECT * FROM {source} LIMIT 0").description]
        allowed = [name for name, _ in TABLES[table][0]]
        if staged_columns != allowed:
            raise PublishBlocked(f"{table} {run_date}: staged columns {staged_columns} are not the export contract {allowed}")
        doubled = tx.execute(f"SELECT count(*) FROM (SELECT {', '.join(key)} FROM {source} "
                             f"GROUP BY {', '.join(key)} HAVING count(*) > 1) d").fetchone()[0]
        if doubled:
            raise PublishBlocked(f"{table} {run_date}: {doubled} keys appear more than once in the staged rows")
        staged = tx.execute(f"SELECT count(*) FROM {source} WHERE run_date = ?", [run_date]).fetchone()[0]
        kept = tx.execute(f"SELECT count(*) FROM {source} WHERE run_date = ? AND {keep}", [run_date]).fetchone()[0]
        removed["consent_in_transaction"] = staged - kept
        last = tx.execute(
            f"SELECT rows_total FROM {self._qualified(AUDIENCE_RUNS)} WHERE status = 'published' AND run_date < ? "
            f"ORDER BY run_date DESC, published_at DESC LIMIT 1", [run_date]).fetchone()
        if last is not None and kept < guard.min_volume_fraction * last[0]:
            raise PublishBlocked(
                f"{table} {run_date}: {kept} rows, fewer than {guard.min_volume_fraction:.0%} of the last "
                f"published run's {last[0]} (rule: min_volume_fraction)")

    def _insert_record(self, tx: _Transaction, record: RunRecord, content_hash: str | None) -> None:
        runs = self._qualified(AUDIENCE_RUNS)
        tx.execute(f"DELETE FROM {runs} WHERE run_date = ? AND run_id = ?", [record.run_date, record.run_id])
        tx.execute(
            f"INSERT INTO {runs} VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?, ?)",
            [record.run_date, record.run_id, record.attempt, record.rows_total,
             json.dumps(record.rows_by_offer, sort_keys=True), json.dumps(record.rows_removed, sort_keys=True),
             content_hash, json.dumps(record.model_versions, sort_keys=True), record.status])

    def record_blocked(self, record: RunRecord) -> None:
        """Record an attempt whose publish was blocked; the live audience is untouched."""
        with self._transaction() as tx:
            self._insert_record(tx, record, None)


    def replace_rows(self, table: str, rows: Sequence[dict[str, Any]], *, where: dict[str, Any]) -> None:
        columns = [name for name, _ in TABLES[table][0]]
        missing = [row for row in rows if any(row.get(k) != v for k, v in where.items())]
        if missing:
            raise ValueError(f"{table}: {len(missing)} rows do not match {where}: they would outlive a rerun")
        live = self._qualified(table)
        condition = " AND ".join(f"{identifier(key)} = ?" for key in where) or "TRUE"
        with self._transaction() as tx:
            tx.execute(f"DELETE FROM {live} WHERE {condition}", list(where.values()))
            for row in rows:
                tx.execute(f"INSERT INTO {live} ({', '.join(identifier(c) for c in columns)}) "
                           f"VALUES ({', '.join('?' for _ in columns)})", [row.get(c) for c in columns])

    def record_validation(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``validation_runs`` rows (dicts of its columns, ``validated_at`` set here) in one
        transaction, replacing a row of the same table, data day and run."""
        table = self._qualified(VALIDATION_RUNS)
        columns = [name for name, _ in schemas.VALIDATION_RUNS_COLUMNS]
        key = schemas.VALIDATION_RUNS_KEY
        with self._transaction() as tx:
            for row in rows:
                values = {**row, "validated_at": None}
                tx.execute(f"DELETE FROM {table} WHERE {' AND '.join(f'{identifier(k)} = ?' for k in key)}",
                           [values[k] for k in key])
                placeholders = ", ".join("now()" if name == "validated_at" else "?" for name in columns)
                tx.execute(f"INSERT INTO {table} VALUES ({placeholders})",
                           [values[name] for name in columns if name != "validated_at"])


class DuckDBWarehouse(_SqlWarehouse):
    """The embedded default: one DuckDB file, one writer at a time (DuckDB's own file lock)."""

    def __init__(self, path: Path, *, schema: str, staging_root: Path) -> None:
        self.path = path
        self.schema = schema
        self.staging_root = staging_root

    def _connect(self) -> Any:
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(self.path))

    @contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        # DuckDB 2 commits each statement of a multi-statement string on its own: one explicit
        # transaction around the whole swap.
        with self._connect() as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _stage(self, frame: DataFrame, name: str) -> str:
        location = self.staging_root / name
        frame.write.mode("overwrite").parquet(str(location))
        return "read_parquet('{}')".format(str(location / "*.parquet").replace("'", "''"))

    def _drop_stage(self, name: str) -> None:
        shutil.rmtree(self.staging_root / name, ignore_errors=True)

    def read_run_date(self, spark: Any, table: str, run_date: dt.date) -> DataFrame:
        # Exported to Parquet by DuckDB and read by Spark: no row passes through Python. Spark reads
        # lazily, so the export is cached first and its folder left for the next export to replace.
        location = self.staging_root / f"read_{table}_{run_date.isoformat()}"
        shutil.rmtree(location, ignore_errors=True)
        location.mkdir(parents=True)
        target = str(location / "part-0.parquet").replace("'", "''")
        with self._transaction() as tx:
            tx.execute(f"COPY (SELECT * FROM {self._qualified(table)} WHERE run_date = DATE '{run_date.isoformat()}') "
                       f"TO '{target}' (FORMAT parquet)")
        frame = spark.read.parquet(str(location)).cache()
        frame.count()
        return frame


class _PsycopgTransaction:
    """psycopg with the ``?`` placeholders the shared SQL is written with."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.connection.execute(sql.replace("?", "%s"), list(params))


class PostgresWarehouse(_SqlWarehouse):
    """PostgreSQL: staging through Spark's JDBC writer, the swap in one psycopg transaction."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.warehouse.postgres
        self.schema = settings.warehouse.schema_name

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(host=self.settings.host, port=self.settings.port, dbname=self.settings.dbname,
                               user=self.settings.user, password=self.settings.password, connect_timeout=10)

    @contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        with self._connect() as connection, connection.transaction():
            yield _PsycopgTransaction(connection)

    def _lock(self, tx: _Transaction, key: str) -> None:
        # Transaction-scoped advisory lock: concurrent publishes of a table and date queue here, also
        # across hosts, and the lock goes with the commit or rollback.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", [key])

    def _stage(self, frame: DataFrame, name: str) -> str:
        properties = {"driver": "org.postgresql.Driver", "user": self.settings.user}
        if self.settings.password:
            properties["password"] = self.settings.password
        # The staging table may be overwritten freely: nobody reads it. A Spark partition that fails here
        # leaves a partial staging table, which _drop_stage removes.
        frame.write.jdbc(self.settings.jdbc_url, f"{self.schema}.{name}", mode="overwrite", properties=properties)
        return self._qualified(name)

    def _drop_stage(self, name: str) -> None:
        with self._connect() as connection:
            connection.execute(f"DROP TABLE IF EXISTS {self._qualified(name)}")

    def read_run_date(self, spark: Any, table: str, run_date: dt.date) -> DataFrame:
        properties = {"driver": "org.postgresql.Driver", "user": self.settings.user}
        if self.settings.password:
            properties["password"] = self.settings.password
        query = (f"(SELECT * FROM {self._qualified(table)} WHERE run_date = DATE '{run_date.isoformat()}') "
                 f"AS {identifier(table)}")
        return spark.read.jdbc(self.settings.jdbc_url, query, properties=properties)


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured target, with its tables created if missing."""
    if settings.warehouse.target == "postgres":
        warehouse: Warehouse = PostgresWarehouse(settings)
    else:
        warehouse = DuckDBWarehouse(settings.duckdb_path, schema=settings.warehouse.schema_name,
                                    staging_root=settings.lake / "_staging")
    warehouse.ensure_tables()
    return warehouse

