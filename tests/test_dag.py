"""The nightly DAG: cheap to parse, well-formed, and one real run through Airflow on tiny data."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from pyspark.sql import SparkSession

from jobs import validate
from xsell import generate
from xsell.config import load_settings

REPO = Path(__file__).resolve().parent.parent
DAG_FILE = REPO / "dags" / "xsell_nightly.py"
BIN = Path(sys.executable).parent


def load_dag():
    import importlib.util

    spec = importlib.util.spec_from_file_location("xsell_nightly", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_parsing_touches_no_database_or_network(tmp_path: Path) -> None:
    guard = textwrap.dedent(f"""
        import socket, sqlite3, runpy
        def refuse(*args, **kwargs):
            raise AssertionError("the DAG file opened a connection while parsing")
        socket.socket.connect = refuse
        sqlite3.connect = refuse
        namespace = runpy.run_path({str(DAG_FILE)!r}, run_name="parse_only")
        print(sorted(namespace["dag"].task_ids))
    """)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}
    result = subprocess.run([sys.executable, "-c", guard], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "['basket_rules', 'check', 'features', 'measure', 'score_publish', 'train', 'validate']" in result.stdout
    assert not (tmp_path / "airflow" / "airflow.db").exists()


def test_every_task_retries_and_stages_run_in_order() -> None:
    dag = load_dag()
    assert dag.dag_id == DAG_FILE.stem
    spark_tasks = [task for task in dag.tasks if task.task_id != "check"]
    assert all(task.retries >= 1 for task in spark_tasks)
    # A breach does not heal on a retry: the check fails once, and that is the alert.
    assert dag.task_dict["check"].retries == 0
    assert dag.task_dict["validate"].downstream_task_ids == {"basket_rules", "features"}
    assert dag.task_dict["features"].downstream_task_ids == {"train", "measure"}
    assert dag.task_dict["score_publish"].upstream_task_ids == {"train", "basket_rules"}
    assert dag.task_dict["measure"].upstream_task_ids == {"features", "basket_rules"}
    assert dag.task_dict["check"].upstream_task_ids == {"measure", "score_publish"}
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert not dag.catchup and dag.max_active_runs == 1 and "xsell" in dag.tags
    for task in spark_tasks:
        assert task.application == str(REPO / "jobs" / f"{task.task_id}.py")
        assert task.application_args[:2] == ["--run-date", "{{ ds }}"]


@pytest.mark.slow
def test_nightly_run_through_airflow_publishes_and_a_bad_day_stops_it(spark: SparkSession, tmp_path: Path) -> None:
    start, run_date = dt.date(2025, 1, 1), dt.date(2025, 6, 30)
    home, conf = tmp_path / "var", tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "dagtest.yaml").write_text(textwrap.dedent("""
        offers:
          - {offer_id: "cross-sell:bike_care", offer_type: cross-sell, target: bike_care}
          - {offer_id: "up-sell:laptop", offer_type: up-sell, target: laptop}
        # Orchestration is under test here, not the model: one training cutoff and 10 iterations keep it short.
        model: {train_cutoffs: 1, max_iter: 10}
        validation: {data_docs: true}  # as in production
    """))
    generate.generate(home / "landing", home / "truth", generate.WorldSpec(customers=800, start=start, end=run_date, seed=5),
                      log=lambda _: None)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "XSELL_HOME": str(home),
        "XSELL_CONF_DIR": str(conf),
        "XSELL_ENV": "test,dagtest",
        "XSELL_RETRY_DELAY_SECONDS": "0",
        "XSELL_RETRIES": "1",  # each attempt is a Spark job start
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_XSELL_SPARK": '{"conn_type": "spark", "host": "local[2]"}',
    }

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)

    result = run(str(BIN / "airflow"), "db", "migrate")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The history before the run date, as a one-off backfill would land it (in this process: a job's own
    # process start is what the DAG run below shows).
    validate.run(spark, load_settings("test", overrides={"home": str(home)}), run_date - dt.timedelta(days=1),
                 run_id="backfill", since=start)

    result = run(sys.executable, str(DAG_FILE), str(run_date))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as db:
        offers = db.execute("SELECT DISTINCT offer_id FROM main.audiences WHERE run_date = ?", [run_date]).fetchall()
        doubled = db.execute("SELECT count(*) FROM (SELECT run_date, offer_id, customer_id FROM main.audiences "
                             "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
        rules = db.execute("SELECT count(*) FROM main.basket_rules WHERE run_date = ?", [run_date]).fetchone()[0]
        published = {row[0] for row in db.execute("SELECT customer_id FROM main.audiences").fetchall()}
        checks = db.execute("SELECT source, check_name, offer_id, breach FROM main.monitoring WHERE run_date = ?",
                            [run_date]).fetchall()
        docs = db.execute("SELECT DISTINCT data_docs FROM main.validation_runs WHERE run_date = ? AND status = 'passed'",
                          [run_date]).fetchall()
    assert sorted(o[0] for o in offers) == ["cross-sell:bike_care", "up-sell:laptop"]
    # measure wrote the feature PSI, score_publish each offer's score PSI, and check passed them all.
    assert {(source, check) for source, check, _, _ in checks} == {("measure", "psi_feature"), ("score_publish", "psi_score")}
    assert {offer for _, check, offer, _ in checks if check == "psi_score"} == {"cross-sell:bike_care", "up-sell:laptop"}
    assert not any(breach for *_, breach in checks)
    assert doubled == 0 and rules > 0
    assert len(docs) == 3 and all(Path(page).is_file() for (page,) in docs), "Data Docs for each table"
    snapshot = next((home / "landing" / "customers" / f"date={run_date}").glob("*.csv")).read_text().splitlines()
    opted_out = {line.split(",")[0] for line in snapshot[1:] if line.split(",")[3] == "false"}
    assert opted_out and not opted_out & published

    bad_day = run_date + dt.timedelta(days=1)
    folder = home / "landing" / "order_lines" / f"date={bad_day}"
    folder.mkdir(parents=True)
    (folder / "part-00000.csv").write_text(
        "order_id,line_number,customer_id,order_ts,product_id,quantity,unit_price,currency,channel,status\n"
        "O1,1,C000001,2025-07-01 10:00:00,P0001,many,10.0,GBP,web,completed\n")
    env["XSELL_RETRIES"] = "0"  # a data error does not heal on a retry: one attempt is enough to show the stop
    result = run(sys.executable, str(DAG_FILE), str(bad_day))
    assert result.returncode == 1
    assert "column quantity" in result.stdout + result.stderr and "part-00000.csv" in result.stdout + result.stderr
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM main.audiences WHERE run_date = ?", [bad_day]).fetchone() == (0,)
        # The stopped validation says why in the warehouse.
        assert db.execute("SELECT DISTINCT status, failed_rule FROM main.validation_runs WHERE run_date = ? "
                          "AND table_name = 'order_lines'", [bad_day]).fetchall() == [("failed", "parsable:quantity")]
    assert not (home / "lake" / "features" / f"cutoff={bad_day + dt.timedelta(days=1)}").exists(), \
        "nothing downstream of validation ran"
