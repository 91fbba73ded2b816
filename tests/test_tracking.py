"""MLflow: the champion gate and its recorded history on a real store, and a dead tracking server that
fails a task in seconds without moving an alias or publishing anything."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import pytest
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import SparkSession

from jobs import score_publish, train
from xsell import tracking, warehouse
from xsell.config import CONF_DIR_ENV, Settings

DEAD_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens there
CONF = Path(__file__).resolve().parent.parent / "conf"


def _register(spark: SparkSession, settings: Settings, name: str) -> str:
    import mlflow
    import mlflow.spark

    frame = spark.createDataFrame([(float(i % 2), float(i)) for i in range(8)], "label DOUBLE, x DOUBLE")
    fitted = Pipeline(stages=[VectorAssembler(inputCols=["x"], outputCol="features"),
                              LogisticRegression(maxIter=5)]).fit(frame)
    with mlflow.start_run(experiment_id=tracking.configure(settings)):
        info = mlflow.spark.log_model(fitted, artifact_path="model", registered_model_name=name,
                                      pip_requirements=["pyspark"])
    return str(info.registered_model_version)


def test_every_alias_move_is_recorded_and_a_worse_model_is_rejected(spark: SparkSession, settings: Settings) -> None:
    import mlflow

    name = "xsell_test_history"
    first = _register(spark, settings, name)
    assert tracking.promote_if_better(name, first, {"roc_auc": 0.70}, margin=0.01, champion_metric_on_fold=None)[0]
    second = _register(spark, settings, name)
    assert tracking.promote_if_better(name, second, {"roc_auc": 0.75}, margin=0.01, champion_metric_on_fold=0.70)[0]
    third = _register(spark, settings, name)
    promoted, why = tracking.promote_if_better(name, third, {"roc_auc": 0.755}, margin=0.01, champion_metric_on_fold=0.75)
    assert not promoted and "<= champion" in why
    nan = _register(spark, settings, name)
    assert not tracking.promote_if_better(name, nan, {"roc_auc": float("nan")}, margin=0.0, champion_metric_on_fold=0.5)[0]

    assert tracking.champion(name).version == second
    history = tracking.champion_history(name)
    assert [(move["from_version"], move["to_version"]) for move in history] == [("none", first), (first, second)]
    assert history[1]["gate"]["new"] == 0.75 and history[1]["gate"]["previous_on_same_fold"] == 0.70
    assert dt.datetime.fromisoformat(history[0]["at"]) <= dt.datetime.fromisoformat(history[1]["at"])
    tags = mlflow.MlflowClient().get_model_version(name, third).tags
    assert tags["gate"] == "rejected" and "champion_since" not in tags


def test_a_dead_tracking_server_fails_training_in_seconds(settings: Settings, spark: SparkSession) -> None:
    dead = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(update={"tracking_uri": DEAD_SERVER})})
    started = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable, match=r"MLflow tracking at http://127\.0\.0\.1:9 is unavailable"):
        train.run(spark, dead, dt.date(2025, 6, 30), run_id="dead")
    # MLflow's defaults retry for minutes; the configured limits make it seconds.
    assert time.monotonic() - started < 60


def test_a_dead_tracking_server_publishes_nothing(settings: Settings, spark: SparkSession) -> None:
    dead = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(update={"tracking_uri": DEAD_SERVER})})
    with pytest.raises(tracking.TrackingUnavailable):
        score_publish.run(spark, dead, dt.date(2025, 6, 30), run_id="dead")
    target = warehouse.open_warehouse(settings)
    target.ensure_tables()
    assert target.query("SELECT count(*) FROM main.audiences")[0][0] == 0


def test_train_job_exits_with_one_line_when_tracking_is_down(settings: Settings, monkeypatch, capsys) -> None:
    conf = settings.home / "conf"
    conf.mkdir(parents=True)
    for file in CONF.glob("*.yaml"):
        shutil.copy(file, conf / file.name)
    (conf / "dead.yaml").write_text(f"mlflow:\n  tracking_uri: {DEAD_SERVER}\n")
    monkeypatch.setenv(CONF_DIR_ENV, str(conf))
    with pytest.raises(SystemExit) as stopped:
        train.main(["--run-date", "2025-06-30", "--env", "test,dead"])
    assert stopped.value.code == 2 and "MLflow tracking at http://127.0.0.1:9 is unavailable" in capsys.readouterr().err
