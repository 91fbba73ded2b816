"""Propensity model pieces on small synthetic frames: time cutoffs, calibration, persistence."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import features as feature_job
from xsell import model
from xsell.config import ModelSettings

FEATURES = ["x1", "x2"]


def _labelled(spark: SparkSession, *, rows: int, seed: int, rate: float = 0.06) -> DataFrame:
    """Customers whose true log-odds are linear in x1: a logistic regression can be well calibrated."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    logit = np.log(rate / (1 - rate)) + 1.2 * x1
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(float)
    frame = pd.DataFrame({"customer_id": [f"C{seed}-{i}" for i in range(rows)], "x1": x1, "x2": x2, "label": label})
    return spark.createDataFrame(frame)


@pytest.fixture(scope="module")
def folds(spark: SparkSession) -> tuple[DataFrame, DataFrame, PipelineModel]:
    train = model.with_balanced_weights(_labelled(spark, rows=3000, seed=1)).cache()
    valid = _labelled(spark, rows=3000, seed=2).cache()
    fitted = model.build_pipeline(FEATURES, max_iter=20).fit(train)
    return train, valid, fitted


def test_training_cutoffs_are_stacked_and_their_labels_end_before_the_fold() -> None:
    settings = ModelSettings(horizon_days=30, train_cutoffs=3, cutoff_step_days=15)
    dates = feature_job.cutoffs(dt.date(2025, 11, 30), settings)
    assert dates.score == dt.date(2025, 12, 1) and dates.valid == dt.date(2025, 11, 1)
    assert dates.train == (dt.date(2025, 10, 2), dt.date(2025, 9, 17), dt.date(2025, 9, 2))
    assert all(c + dt.timedelta(days=30) <= dates.valid for c in dates.train)
    assert len(set(dates.all)) == 5


def test_balanced_weights_inflate_scores_and_calibration_brings_them_back(folds) -> None:
    _, valid, fitted = folds
    base_rate = valid.agg(F.avg("label")).first()[0]
    raw = model.score(fitted, valid).agg(F.avg(model.SCORE)).first()[0]
    assert raw > 3 * base_rate, "balanced class weights push the raw probabilities towards 1/2"
    for method in ("platt", "isotonic"):
        honest = model.cross_calibrated(fitted, valid, method=method)
        assert honest.mean() == pytest.approx(base_rate, abs=0.01), method
        assert len(honest) == valid.count()


def test_platt_scaling_keeps_the_ranking_and_improves_the_brier_score(folds) -> None:
    _, valid, fitted = folds
    calibrated = model.with_calibration(fitted, model.calibrator(fitted, valid, method="platt"))
    before = model.evaluate(model.score(fitted, valid))
    after = model.evaluate(model.score(calibrated, valid))
    # Equal up to the evaluator's binning of the ROC curve (numBins): Platt scaling is monotone.
    assert after["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-3)
    assert after["brier"] < before["brier"]


def test_calibrated_scores_follow_the_observed_rates_on_new_data(spark: SparkSession, folds) -> None:
    """Calibrated on one fold, checked on another: the mean score per decile tracks the observed rate."""
    _, valid, fitted = folds
    calibrated = model.with_calibration(fitted, model.calibrator(fitted, valid, method="platt"))
    table = model.deciles(model.score(calibrated, _labelled(spark, rows=4000, seed=3)))
    gaps = [abs(row["mean_score"] - row["rate"]) for row in table]
    assert max(gaps) < 0.04
    assert table[0]["rate"] > 4 * table[-1]["rate"]


def test_deciles_share_tied_scores_and_their_adopters_in_proportion(spark: SparkSession) -> None:
    """23 customers: 3 distinct top scores, then 20 ties holding 4 adopters, listed with the adopters' ids
    first. ntile's sizes (3 deciles of 3 rows, 7 of 2); inside the ties every decile gets its share of the
    4 adopters (0.2 per row), whatever the ids."""
    rows = [(f"A{i}", 0.9 - 0.1 * i, 1.0) for i in range(3)]
    rows += [(f"B{i:02d}", 0.1, 1.0 if i < 4 else 0.0) for i in range(20)]
    table = model.deciles(spark.createDataFrame(rows, "customer_id STRING, score DOUBLE, label DOUBLE"))
    assert [row["rows"] for row in table] == [3, 3, 3] + [2] * 7
    assert table[0]["positives"] == pytest.approx(3.0)
    assert [row["positives"] for row in table[1:]] == pytest.approx([0.6, 0.6] + [0.4] * 7)
    assert table[-1]["capture"] == pytest.approx(1.0)
    # A constant scorer: lift 1 everywhere.
    constant = spark.createDataFrame([(f"C{i}", 0.5, float(i % 3 == 0)) for i in range(50)],
                                     "customer_id STRING, score DOUBLE, label DOUBLE")
    assert [row["lift"] for row in model.deciles(constant)] == pytest.approx([1.0] * 10)


def test_metrics_from_counts_per_score_equal_the_row_level_ones(spark: SparkSession) -> None:
    """ROC-AUC, average precision and Brier score computed from the counts per distinct score equal
    scikit-learn's on the rows themselves, ties included; with one class only, ranking is undefined."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(4)
    scores = rng.integers(0, 12, size=600) / 12.0  # few distinct values: many ties
    labels = (rng.random(600) < 0.15 + 0.5 * scores).astype(float)
    frame = spark.createDataFrame(pd.DataFrame({"score": scores, "label": labels}))
    metrics = model.evaluate(frame)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert metrics["brier"] == pytest.approx(float(np.mean((scores - labels) ** 2)), abs=1e-12)
    assert (metrics["rows"], metrics["positives"]) == (600.0, labels.sum())
    one_class = model.evaluate(spark.createDataFrame(pd.DataFrame({"score": scores[:50], "label": np.zeros(50)})))
    assert np.isnan(one_class["roc_auc"]) and np.isnan(one_class["pr_auc"]) and one_class["positives"] == 0.0


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_a_calibrated_model_is_saved_and_loaded_as_one_pipeline(folds, tmp_path: Path, method: str) -> None:
    _, valid, fitted = folds
    calibrated = model.with_calibration(fitted, model.calibrator(fitted, valid, method=method))
    calibrated.save(str(tmp_path / "model"))
    loaded = PipelineModel.load(str(tmp_path / "model"))
    expected = model.score(calibrated, valid).select("customer_id", model.SCORE).orderBy("customer_id").collect()
    actual = model.score(loaded, valid).select("customer_id", model.SCORE).orderBy("customer_id").collect()
    assert actual == expected
    assert set(model.score(loaded, valid).columns) == set(valid.columns) | {model.SCORE}


def test_gradient_boosted_trees_fit_and_report_importance(folds) -> None:
    train, valid, _ = folds
    fitted = model.build_pipeline(FEATURES, algorithm="gbt", max_iter=5, max_depth=2).fit(train)
    importance = model.feature_importance(fitted)
    assert importance["x1"] > importance["x2"]
    assert model.evaluate(model.score(fitted, valid))["roc_auc"] > 0.7


def test_an_unknown_calibration_is_refused(folds) -> None:
    _, valid, fitted = folds
    with pytest.raises(ValueError, match="unknown calibration"):
        model.calibrator(fitted, valid, method="beta")


def test_platt_scaling_on_the_driver_equals_sparks_bounded_logistic_regression(folds) -> None:
    """The driver's fit is the maximum-likelihood fit Spark's own logistic regression finds on the same
    margins (slope bounded at zero, no regularisation), and the stage scores with exactly its formula."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorSlicer
    from pyspark.ml.linalg import Matrices

    _, valid, fitted = folds
    margins = VectorSlicer(inputCol="rawPrediction", outputCol="margin", indices=[1]).transform(
        fitted.transform(valid)).select("customer_id", "margin", "label")
    reference = LogisticRegression(featuresCol="margin", labelCol="label", regParam=0.0, maxIter=100, tol=1e-10,
                                   lowerBoundsOnCoefficients=Matrices.dense(1, 1, [0.0])).fit(margins)
    (platt,) = model.calibrator(fitted, valid, method="platt")
    slope, intercept = platt.getOrDefault(platt.slope), platt.getOrDefault(platt.intercept)
    assert slope == pytest.approx(reference.coefficients[0], rel=1e-3)
    assert intercept == pytest.approx(reference.intercept, rel=1e-3)
    # Spark's bounded solver stops a little earlier: the driver's fit is at least as likely.
    pairs = margins.select(vector_to_array("margin")[0].alias("x"), "label").toPandas()

    def log_loss(a: float, b: float) -> float:
        z = a * pairs.x.to_numpy() + b
        return float(np.mean(np.logaddexp(0.0, z) - pairs.label.to_numpy() * z))

    assert log_loss(slope, intercept) <= log_loss(reference.coefficients[0], reference.intercept) + 1e-12
    ours = model.score(model.with_calibration(fitted, [platt]), valid).select("customer_id", model.SCORE)
    theirs = reference.transform(margins).select("customer_id", vector_to_array("probability")[1].alias("p"))
    gap = ours.join(theirs, "customer_id").agg(F.max(F.abs(F.col(model.SCORE) - F.col("p")))).first()[0]
    assert gap < 1e-3


def test_a_champion_calibrated_by_sparks_logistic_regression_still_scores(folds) -> None:
    """Champions registered before the driver's Platt fit carry a Spark logistic regression on the margin:
    they score as they did, with its probability."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorSlicer

    _, valid, fitted = folds
    old_stages = Pipeline(stages=[
        VectorSlicer(inputCol="rawPrediction", outputCol="calibration_margin", indices=[1]),
        LogisticRegression(featuresCol="calibration_margin", labelCol="label", rawPredictionCol="calibrated_raw",
                           probabilityCol=model.PLATT_PROBABILITY, predictionCol="calibrated_prediction"),
    ]).fit(fitted.transform(valid)).stages
    old = model.with_calibration(fitted, old_stages)
    new = model.with_calibration(fitted, model.calibrator(fitted, valid, method="platt"))
    both = (model.score(old, valid).select("customer_id", F.col(model.SCORE).alias("old"))
            .join(model.score(new, valid).select("customer_id", model.SCORE), "customer_id"))
    assert set(model.score(old, valid).columns) == set(valid.columns) | {model.SCORE}
    assert both.agg(F.max(F.abs(F.col("old") - F.col(model.SCORE)))).first()[0] < 1e-3


def test_platt_scaling_never_turns_a_ranking_upside_down(spark: SparkSession, folds) -> None:
    """On a fold where the classifier ranks backwards, the calibrated model ranks no one (slope >= 0)."""
    _, _, fitted = folds
    backwards = _labelled(spark, rows=1500, seed=4).withColumn("x1", -F.col("x1"))
    assert model.evaluate(model.score(fitted, backwards))["roc_auc"] < 0.35
    calibrated = model.with_calibration(fitted, model.calibrator(fitted, backwards, method="platt"))
    scores = model.score(calibrated, backwards).agg(F.min(model.SCORE), F.max(model.SCORE), F.avg("label")).first()
    assert scores[1] - scores[0] < 1e-6
    assert scores[0] == pytest.approx(scores[2], abs=1e-3)


def test_cross_fitting_deals_few_adopters_to_both_halves(spark: SparkSession, folds) -> None:
    """Two adopters in a fold: each half gets one, so each half's calibrator sees both classes."""
    _, valid, fitted = folds
    negatives = valid.filter(F.col("label") == 0.0).limit(400)
    fold = negatives.unionByName(valid.filter(F.col("label") == 1.0).limit(2)).cache()
    halves = model.stratified_halves(fold).groupBy("_half").agg(F.sum("label").alias("adopters"), F.count("*").alias("n"))
    assert sorted((row["adopters"], row["_half"]) for row in halves.collect()) == [(1.0, 0), (1.0, 1)]
    honest = model.cross_calibrated(fitted, fold, method="platt")
    assert len(honest) == 402 and np.isfinite(honest).all()


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_the_fold_judged_on_the_driver_scores_as_the_saved_model_does_in_spark(folds, method: str) -> None:
    """Calibration, its scores and the counts per score computed from the collected fold equal what Spark
    gives scoring the same fold with the calibrated pipeline: the logged metrics are the model's."""
    _, valid, fitted = folds
    rows = model.fold_rows(fitted, valid, columns=["customer_id"])
    assert len(rows) == valid.count() and set(rows[model.HALF]) == {0, 1}
    stages = model.calibrator(fitted, valid, method=method, rows=rows)
    calibrated = model.with_calibration(fitted, stages)
    spark_scores = model.score(calibrated, valid).select("customer_id", model.SCORE).toPandas()
    both = rows.assign(driver=model.calibrated_scores(stages, rows)).merge(spark_scores, on="customer_id")
    assert len(both) == len(rows)
    assert np.abs(both["driver"] - both[model.SCORE]).max() < 1e-12
    on_driver = model.counts_of(both["driver"].to_numpy(), both[model.LABEL].to_numpy())
    in_spark = model.by_score(model.score(calibrated, valid))
    assert model.metrics_of(on_driver)["roc_auc"] == pytest.approx(model.metrics_of(in_spark)["roc_auc"], abs=1e-9)
    assert on_driver["n"].sum() == in_spark["n"].sum() and len(on_driver) == pytest.approx(len(in_spark), abs=2)


def test_calibration_of_a_fold_without_adopters_is_refused_with_a_reason(folds) -> None:
    _, valid, fitted = folds
    with pytest.raises(ValueError, match="adopters and non-adopters"):
        model.calibrator(fitted, valid.filter(F.col("label") == 0.0), method="platt")


def test_an_offer_with_too_few_adopters_out_of_time_is_not_trained(settings, folds) -> None:
    """Training has adopters, the out-of-time fold has one: no model (the champion stays), and why."""
    from jobs import train as train_job
    from xsell import offers

    train, valid, _ = folds
    offer = offers.Offer("cross-sell:x", "cross-sell", "x")
    one = valid.filter(F.col("label") == 0.0).limit(300).unionByName(valid.filter(F.col("label") == 1.0).limit(1))
    fitted = train_job.fit_offer(settings, offer, train.drop(model.WEIGHT), one.cache(), feature_columns=FEATURES)
    assert fitted.model is None and fitted.positives > 100 and fitted.valid_positives == 1


def test_census_counts_the_classes_and_digests_the_content_whatever_its_order(folds) -> None:
    from jobs import train as train_job

    _, valid, _ = folds
    counts, digest = train_job.census(valid)
    assert counts == model.class_counts(valid) and digest.startswith(f"{valid.count()}:")
    assert train_job.census(valid.orderBy(F.rand(3)).repartition(3))[1] == digest
    changed = valid.withColumn("x2", F.when(F.col("customer_id") == "C2-7", F.lit(0.5)).otherwise(F.col("x2")))
    assert train_job.census(changed)[1] != digest


def test_log_features_are_part_of_the_saved_model(spark: SparkSession, tmp_path: Path) -> None:
    """Log-odds linear in log(1 + n): a model on the log scale ranks and calibrates; the transform is a
    stage of the pipeline, so the saved model applies it when scoring, and the drivers name the raw
    columns."""
    rng = np.random.default_rng(4)
    n = rng.lognormal(1.0, 1.5, 4000)
    label = (rng.random(4000) < 1 / (1 + np.exp(-(-4.0 + 1.5 * np.log1p(n))))).astype(float)
    frame = spark.createDataFrame(pd.DataFrame({"customer_id": [f"C{i}" for i in range(4000)], "n": n,
                                                "x2": rng.normal(size=4000), "label": label}))
    train = model.with_balanced_weights(frame)
    fitted = model.build_pipeline(["n", "x2"], max_iter=30, log_columns=["n"]).fit(train)
    assert model.feature_names(fitted) == ["n", "x2"]
    assert hasattr(model.classifier(fitted), "coefficients")
    calibrated = model.with_calibration(fitted, model.calibrator(fitted, frame, method="platt"))
    calibrated.save(str(tmp_path / "model"))
    scored = model.score(PipelineModel.load(str(tmp_path / "model")), frame, drivers=1)
    assert scored.agg(F.avg(model.SCORE)).first()[0] == pytest.approx(label.mean(), abs=0.01)
    assert model.roc_auc(scored) > 0.7
    # The raw column comes back unchanged: the transform works on the model's copy only.
    top = scored.orderBy(F.desc("n")).first()
    assert top["n"] == pytest.approx(n.max()) and top["drivers"] == ["n"]
    assert set(scored.columns) == set(frame.columns) | {model.SCORE, "drivers"}
    importance = model.feature_importance(calibrated)
    assert importance["n"] > importance["x2"]
