"""
### xsell nightly

Turns the day's raw order data into cross-sell and up-sell audiences for the CRM.

`validate` -> (`basket_rules`, `features`) -> `train` -> `score_publish`, and `measure` (campaigns whose
horizon has passed, against their control cells; drift of features and rules) -> `check`, which fails
when a monitoring threshold is breached (score PSI included), so that Airflow alerts. Every task but
`check` is a `spark-submit` of a job in `jobs/`; `check` only reads the warehouse. The run date is the DAG run's data interval (`{{ ds }}`), never the wall clock; a
rerun of a date replaces that date's output. The Spark master comes from the Airflow connection
`xsell_spark` (`AIRFLOW_CONN_XSELL_SPARK`, for example `{"conn_type": "spark", "host": "local[2]"}` or
a `spark://host:7077` cluster); the xsell configuration overlay from `XSELL_ENV`.

Run one date locally: `python dags/xsell_nightly.py 2025-11-30`.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

JOBS = Path(__file__).resolve().parent.parent / "jobs"
SPARK_CONN_ID = "xsell_spark"
AUDIENCES = Asset("xsell://warehouse/audiences")
BASKET_RULES = Asset("xsell://warehouse/basket_rules")
CAMPAIGN_RESULTS = Asset("xsell://warehouse/campaign_results")
MONITORING = Asset("xsell://warehouse/monitoring")
# Cheap to read at parse time (an environment variable, no database): lets tests shorten the wait and
# the number of retries (XSELL_RETRY_DELAY_SECONDS, XSELL_RETRIES).
# spark-submit's own default is a 1 GB driver: the train job of the 4,000-customer demo ran out of heap.
DRIVER_MEMORY = os.environ.get("XSELL_DRIVER_MEMORY", "2g")
RETRY_DELAY = dt.timedelta(seconds=int(os.environ.get("XSELL_RETRY_DELAY_SECONDS", "300")))
RETRIES = int(os.environ.get("XSELL_RETRIES", "2"))

with DAG(
    dag_id="xsell_nightly",
    # An explicit data-interval timetable: the run for day D covers [D, D + 1) and starts after it ends.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # Early enough for any history a user brings (a run before start_date silently runs no task).
    start_date=dt.datetime(2010, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["xsell"],
    doc_md=__doc__,
    default_args={"retries": RETRIES, "retry_delay": RETRY_DELAY, "retry_exponential_backoff": True},
) as dag:

    def spark_job(task_id: str, *, outlets: list[Asset] | None = None, args: tuple[str, ...] = ()) -> SparkSubmitOperator:
        return SparkSubmitOperator(
            task_id=task_id,
            application=str(JOBS / f"{task_id}.py"),
            conn_id=SPARK_CONN_ID,
            name=f"xsell-{task_id}",
            driver_memory=DRIVER_MEMORY,
            application_args=["--run-date", "{{ ds }}", "--run-id", "{{ run_id }}", *args],
            outlets=outlets or [],
        )

    validate = spark_job("validate")
    basket_rules = spark_job("basket_rules", outlets=[BASKET_RULES])
    features = spark_job("features")
    train = spark_job("train")
    score_publish = spark_job("score_publish", outlets=[AUDIENCES], args=("--attempt", "{{ ti.try_number }}"))

    measure = spark_job("measure", outlets=[CAMPAIGN_RESULTS, MONITORING])

    # A breach does not heal on a retry: one try, and the failure is the alert.
    @task(task_id="check", retries=0)
    def check(ds: str | None = None) -> None:
        """Fail when a monitoring check of the run date breached its threshold."""
        from jobs import check as check_job
        from xsell.config import load_settings

        check_job.run(load_settings(), dt.date.fromisoformat(ds))

    validate >> [basket_rules, features]
    features >> train
    [train, basket_rules] >> score_publish
    [features, basket_rules] >> measure
    [measure, score_publish] >> check()


if __name__ == "__main__":
    run_date = dt.date.fromisoformat(sys.argv[1])
    dag_run = dag.test(logical_date=dt.datetime(run_date.year, run_date.month, run_date.day, tzinfo=dt.timezone.utc))
    # dag.test() returns normally when a task fails, and "succeeds" without running anything for a date
    # outside the DAG's range: the exit status must say so.
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    ran_all = set(states) == set(dag.task_ids) and all(state in ("success", "TaskInstanceState.SUCCESS") for state in states.values())
    if not ran_all:
        print(f"xsell_nightly {run_date}: not every task succeeded: {states or 'no task ran'}", file=sys.stderr)
    sys.exit(0 if ran_all and str(dag_run.state) in ("success", "DagRunState.SUCCESS") else 1)
