"""Propensity models: one ``pyspark.ml`` Pipeline per offer, fitted on a time split.

No MLflow here (STYLE rule 7): the train job logs what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

LABEL, WEIGHT, SCORE = "label", "weight", "score"
#: The training base rate, logged with every model: scoring corrects the balanced weights with it.
BASE_RATE = "train_base_rate"


def build_pipeline(feature_columns: Sequence[str], *, algorithm: str = "logistic_regression", max_iter: int = 50,
                   reg_param: float = 0.01) -> Pipeline:
    """Assemble, scale and classify. Class imbalance is handled with a ``weight`` column (see
    :func:`with_balanced_weights`)."""
    assembler = VectorAssembler(inputCols=list(feature_columns), outputCol="raw_features", handleInvalid="keep")
    scaler = StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True)
    if algorithm == "gbt":
        classifier = GBTClassifier(featuresCol="features", labelCol=LABEL, weightCol=WEIGHT, maxIter=max_iter, seed=7)
    else:
        classifier = LogisticRegression(featuresCol="features", labelCol=LABEL, weightCol=WEIGHT, maxIter=max_iter,
                                        regParam=reg_param, elasticNetParam=0.0)
    return Pipeline(stages=[assembler, scaler, classifier])


def with_balanced_weights(frame: DataFrame) -> DataFrame:
    """Weights so that positives and negatives count equally (an action: it counts the classes)."""
    counts = {row[LABEL]: row["n"] for row in frame.groupBy(LABEL).agg(F.count("*").alias("n")).collect()}
    total = sum(counts.values())
    weights = {label: total / (2.0 * n) for label, n in counts.items()}
    weight = F.when(F.col(LABEL) == 1.0, weights.get(1.0, 1.0)).otherwise(weights.get(0.0, 1.0))
    return frame.withColumn(WEIGHT, weight)


def prior_corrected(probability: Column, *, base_rate: float) -> Column:
    """Undo the balanced class weights: a model fitted as if the base rate were 1/2 gets the odds of the
    real ``base_rate`` back (prior correction, King & Zeng 2001), so that scores are probabilities that
    compare across offers and multiply with a margin into an expected value."""
    ratio = base_rate / (1.0 - base_rate)
    return probability * ratio / (probability * ratio + (1.0 - probability))


def score(model: PipelineModel, frame: DataFrame, *, drivers: int = 0, base_rate: float | None = None) -> DataFrame:
    """``frame`` with ``score``, the predicted probability of adoption (prior-corrected to ``base_rate``,
    the training base rate, when given).

    With ``drivers > 0`` and a linear model, also ``drivers``: the names of the features that pushed this
    customer's score up most (coefficient x standardized value), best first.
    """
    probability = vector_to_array("probability")[1]
    if base_rate is not None and 0.0 < base_rate < 1.0:
        probability = prior_corrected(probability, base_rate=base_rate)
    predictions = model.transform(frame).withColumn(SCORE, probability)
    classifier = model.stages[-1]
    if drivers and hasattr(classifier, "coefficients"):
        names = model.stages[0].getInputCols()
        weights = classifier.coefficients.toArray().tolist()
        contributions = F.zip_with(vector_to_array("features"), F.array(*[F.lit(float(w)) for w in weights]),
                                   lambda value, weight: value * weight)
        pairs = F.arrays_zip(contributions.alias("c"), F.array(*[F.lit(n) for n in names]).alias("n"))
        positive = F.filter(pairs, lambda pair: pair["c"] > 0)
        ranked = F.array_sort(positive, lambda a, b: F.when(a["c"] > b["c"], -1).when(a["c"] < b["c"], 1).otherwise(0))
        predictions = predictions.withColumn("drivers", F.transform(F.slice(ranked, 1, drivers), lambda pair: pair["n"]))
    return predictions.drop("raw_features", "features", "rawPrediction", "probability", "prediction")


def deciles(scored: DataFrame) -> list[dict[str, float]]:
    """Per score decile (1 = the top 10%): rows, positives, mean score, observed rate, lift over the
    base rate and the cumulative share of all positives captured (an action; ten rows). The gain chart,
    the calibration curve and the lift and capture metrics come from it."""
    ranked = scored.withColumn("decile", F.ntile(10).over(Window.orderBy(F.desc(SCORE), "customer_id")))
    rows = (
        ranked.groupBy("decile")
        .agg(F.count("*").alias("rows"), F.sum(LABEL).alias("positives"), F.avg(SCORE).alias("mean_score"))
        .orderBy("decile").collect()
    )
    total_rows = sum(row["rows"] for row in rows)
    total_positives = sum(row["positives"] for row in rows)
    base_rate = total_positives / total_rows if total_rows else 0.0
    table, captured = [], 0.0
    for row in rows:
        captured += row["positives"]
        rate = row["positives"] / row["rows"]
        table.append({"decile": int(row["decile"]), "rows": int(row["rows"]), "positives": float(row["positives"]),
                      "mean_score": float(row["mean_score"]), "rate": rate,
                      "lift": rate / base_rate if base_rate else 0.0,
                      "capture": captured / total_positives if total_positives else 0.0})
    return table


def decile_metrics(table: list[dict[str, float]]) -> dict[str, float]:
    """``lift_d<k>`` and ``capture_d<k>`` for every decile of :func:`deciles`."""
    metrics = {}
    for row in table:
        metrics[f"lift_d{row['decile']}"] = row["lift"]
        metrics[f"capture_d{row['decile']}"] = row["capture"]
    return metrics


def popularity_baseline(train: DataFrame, valid: DataFrame, *, share_columns: Sequence[str]) -> DataFrame:
    """``valid`` scored by popularity among similar customers: the training fold's adoption rate of the
    customers whose main category (largest spend share) is the same; customers with no purchase form
    their own segment."""
    def segment(frame: DataFrame) -> DataFrame:
        largest = F.greatest(*[F.col(name) for name in share_columns]) if share_columns else F.lit(0.0)
        main = F.lit("none")
        for name in reversed(list(share_columns)):
            main = F.when((F.col(name) == largest) & (largest > 0), F.lit(name)).otherwise(main)
        return frame.withColumn("_segment", main)

    rates = segment(train).groupBy("_segment").agg(F.avg(LABEL).alias("_rate"))
    overall = train.agg(F.avg(LABEL)).first()[0] or 0.0
    return (
        segment(valid).join(rates, on="_segment", how="left")
        .withColumn(SCORE, F.coalesce(F.col("_rate"), F.lit(overall)))
        .drop("_segment", "_rate")
    )


def feature_importance(model: PipelineModel) -> dict[str, float]:
    """Importance per input feature: the absolute standardized coefficient of a logistic regression, or
    the trees' impurity importance of a GBT."""
    names = model.stages[0].getInputCols()
    classifier = model.stages[-1]
    if hasattr(classifier, "coefficients"):
        values = [abs(value) for value in classifier.coefficients.toArray().tolist()]
    else:
        values = classifier.featureImportances.toArray().tolist()
    return dict(zip(names, values))


def evaluate(scored: DataFrame) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier score, and lift and capture of the top decile, on a scored labelled frame."""
    roc = BinaryClassificationEvaluator(rawPredictionCol=SCORE, labelCol=LABEL, metricName="areaUnderROC").evaluate(scored)
    pr = BinaryClassificationEvaluator(rawPredictionCol=SCORE, labelCol=LABEL, metricName="areaUnderPR").evaluate(scored)
    brier = scored.agg(F.avg(F.pow(F.col(SCORE) - F.col(LABEL), 2))).first()[0]
    table = deciles(scored)
    positives = sum(row["positives"] for row in table)
    rows = sum(row["rows"] for row in table)
    top = table[0] if table else {"lift": 0.0, "capture": 0.0}
    return {
        "roc_auc": roc,
        "pr_auc": pr,
        "brier": brier,
        "base_rate": positives / rows if rows else 0.0,
        "lift_top_decile": top["lift"],
        "capture_top_decile": top["capture"],
        "positives": float(positives),
        "rows": float(rows),
    }
