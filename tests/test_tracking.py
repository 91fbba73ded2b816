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


def _register(spark: SparkSession, settings: Settings, name: str, *, params: dict | None = None) -> str:
    import mlflow
    import mlflow.spark

    frame = spark.createDataFrame([(float(i % 2), float(i)) for i in range(8)], "label DOUBLE, x DOUBLE")
    fitted = Pipeline(stages=[VectorAssembler(inputCols=["x"], outputCol="features"),
                              LogisticRegression(maxIter=5)]).fit(frame)
    with mlflow.start_run(experiment_id=tracking.configure(settings)):
        mlflow.log_params(params or {})
        info = mlflow.spark.log_model(fitted, artifact_path="model", registered_model_name=name,
                                      pip_requirements=["pyspark"])
    return str(info.registered_model_version)


def test_every_alias_move_is_recorded_and_a_worse_model_is_rejected(spark: SparkSession, settings: Settings) -> None:
    import mlflow

    name = "xsell_test_history"
    constant = _register(spark, settings, name)
    # A first model that ranks no better than chance (a constant calibrated score) does not become champion.
    promoted, why = tracking.promote_if_better(name, constant, {"roc_auc": 0.5}, margin=0.0, champion_metric_on_fold=None)
    assert not promoted and "chance" in why and tracking.champion(name) is None
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


def test_offers_are_retrained_on_their_cadence_or_after_a_breach(spark: SparkSession, settings: Settings) -> None:
    """retrain_every_days 7: a young champion is kept, an old one or a missing one is retrained, and a breach
    of the offer (or of every offer) on an earlier run since its training brings its retraining forward."""
    from xsell.config import load_settings
    from xsell.offers import Offer

    weekly = load_settings("test", overrides={"home": str(settings.home), "model": {"retrain_every_days": 7}})
    trained, today = dt.date(2025, 7, 1), dt.date(2025, 7, 4)
    chosen = {key: Offer(f"cross-sell:{key}", "cross-sell", key) for key in ("young", "none", "breached", "old")}
    for key, day in (("young", trained), ("breached", trained), ("old", trained - dt.timedelta(days=10))):
        name = chosen[key].model_name
        version = _register(spark, weekly, name, params={"run_date": day.isoformat()})
        tracking.promote_if_better(name, version, {"roc_auc": 0.7}, margin=0.0, champion_metric_on_fold=None)
    target = warehouse.open_warehouse(weekly)

    def breach(offer_id: str, day: dt.date) -> None:
        row = {"run_date": day, "source": "measure", "check_name": "calibration", "offer_id": offer_id,
               "subject": "campaign", "value": 0.1, "expected": 0.02, "threshold": 2.0, "breach": True,
               "detail": "", "run_id": "r"}
        target.replace_rows(warehouse.MONITORING, [row], where={"run_date": day, "source": "measure"})

    breach("cross-sell:breached", trained + dt.timedelta(days=2))
    breach("*", today)  # today's checks run after training: they count from tomorrow
    due, skipped = train.due(weekly, list(chosen.values()), today)
    assert [offer.offer_id for offer in due] == ["cross-sell:none", "cross-sell:breached", "cross-sell:old"]
    assert [item["offer_id"] for item in skipped] == ["cross-sell:young"]
    assert "trained on 2025-07-01" in skipped[0]["status"]
    due, _ = train.due(weekly, list(chosen.values()), today + dt.timedelta(days=1))
    assert len(due) == 4, "a breach of every offer (feature drift) retrains them all"
    nightly = load_settings("test", overrides={"home": str(settings.home)})
    assert train.due(nightly, list(chosen.values()), today) == (list(chosen.values()), [])
