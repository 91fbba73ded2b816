"""Propensity models: one ``pyspark.ml`` Pipeline per offer, fitted on a time split.

No MLflow here (STYLE rule 7): the train job logs what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pyspark import keyword_only
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.classification import ClassificationModel
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.regression import IsotonicRegression
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

LABEL, WEIGHT, SCORE = "label", "weight", "score"
#: The training base rate, logged with every model: an uncalibrated model's scores are corrected with it.
BASE_RATE = "train_base_rate"
#: Output columns of the calibration stages (Platt and isotonic: a number). Models registered before
#: :class:`PlattScaling` carry a Spark logistic regression instead, whose output is a probability vector.
PLATT_SCORE, ISOTONIC_SCORE, PLATT_PROBABILITY = "platt_score", "calibrated_score", "calibrated_probability"
#: Name prefix of a feature's log(1 + x) inside a pipeline (see :func:`build_pipeline`).
LOG_PREFIX = "_log1p__"
#: Columns of :func:`fold_rows`: the classifier's margin and probability of adoption, and the fold's half.
MARGIN, PROBABILITY, HALF = "margin", "probability", "_half"
CALIBRATIONS = ("platt", "isotonic", "none")


def build_pipeline(feature_columns: Sequence[str], *, algorithm: str = "logistic_regression", max_iter: int = 50,
                   reg_param: float = 0.01, max_depth: int = 3, step_size: float = 0.1,
                   min_instances_per_node: int = 20, subsampling_rate: float = 0.8,
                   log_columns: Sequence[str] = ()) -> Pipeline:
    """Transform, assemble, scale and classify. ``log_columns`` (counts, amounts, day counts) enter the
    model as log(1 + x): a linear model then sees rates and recencies multiplicatively, and the
    ``NEVER_DAYS`` stand-in no longer dwarfs every real day count after scaling. Class imbalance is
    handled with a ``weight`` column (see :func:`with_balanced_weights`). ``max_iter`` is LBFGS
    iterations or boosting rounds; the tree parameters apply to ``gbt`` only."""
    stages, inputs = [], list(feature_columns)
    logged = set(log_columns)
    if logged & set(feature_columns):
        # New columns beside the raw ones: a scored frame keeps its features as they were.
        values = ", ".join(f"ln(1 + greatest(cast(`{name}` AS double), 0.0)) AS `{LOG_PREFIX}{name}`"
                           for name in feature_columns if name in logged)
        stages.append(SQLTransformer(statement=f"SELECT *, {values} FROM __THIS__"))
        inputs = [f"{LOG_PREFIX}{name}" if name in logged else name for name in feature_columns]
    assembler = VectorAssembler(inputCols=inputs, outputCol="raw_features", handleInvalid="keep")
    scaler = StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True)
    if algorithm == "gbt":
        classifier = GBTClassifier(featuresCol="features", labelCol=LABEL, weightCol=WEIGHT, maxIter=max_iter, seed=7,
                                   maxDepth=max_depth, stepSize=step_size, minInstancesPerNode=min_instances_per_node,
                                   subsamplingRate=subsampling_rate)
    else:
        classifier = LogisticRegression(featuresCol="features", labelCol=LABEL, weightCol=WEIGHT, maxIter=max_iter,
                                        regParam=reg_param, elasticNetParam=0.0)
    return Pipeline(stages=[*stages, assembler, scaler, classifier])


def _index(model: PipelineModel, kind: type) -> int:
    return next(i for i, stage in enumerate(model.stages) if isinstance(stage, kind))


def feature_names(model: PipelineModel) -> list[str]:
    """The feature columns a fitted pipeline reads, in the order of its coefficients."""
    return [name.removeprefix(LOG_PREFIX) for name in model.stages[_index(model, VectorAssembler)].getInputCols()]


def classifier(model: PipelineModel) -> ClassificationModel:
    """The fitted pipeline's classifier (the first classification model; calibration stages follow it)."""
    return model.stages[_index(model, ClassificationModel)]


def class_counts(frame: DataFrame) -> dict[float, int]:
    """Rows per label (one job)."""
    return {row[LABEL]: row["n"] for row in frame.groupBy(LABEL).agg(F.count("*").alias("n")).collect()}


def with_balanced_weights(frame: DataFrame, counts: dict[float, int] | None = None) -> DataFrame:
    """Weights so that positives and negatives count equally; without the :func:`class_counts` of
    ``frame``, an action counts them."""
    counts = class_counts(frame) if counts is None else counts
    total = sum(counts.values())
    weights = {label: total / (2.0 * n) for label, n in counts.items()}
    weight = F.when(F.col(LABEL) == 1.0, weights.get(1.0, 1.0)).otherwise(weights.get(0.0, 1.0))
    return frame.withColumn(WEIGHT, weight)


def prior_corrected(probability: Column | np.ndarray, *, base_rate: float) -> Column | np.ndarray:
    """Undo the balanced class weights: a model fitted as if the base rate were 1/2 gets the odds of the
    real ``base_rate`` back (prior correction, King & Zeng 2001), so that scores are probabilities that
    compare across offers and multiply with a margin into an expected value."""
    ratio = base_rate / (1.0 - base_rate)
    return probability * ratio / (probability * ratio + (1.0 - probability))


class PlattScaling(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Platt scaling as a pipeline stage: ``1 / (1 + exp(-(slope * margin + intercept)))`` of the
    classifier's margin (``rawPrediction[1]``). Column arithmetic only, so it scores wherever the
    pipeline does, and it is saved and loaded with the pipeline (Spark's own reader and writer for
    Python stages). Fitted by :func:`fit_platt`."""

    slope = Param(Params._dummy(), "slope", "coefficient of the margin (at least 0)", TypeConverters.toFloat)
    intercept = Param(Params._dummy(), "intercept", "intercept of the calibration", TypeConverters.toFloat)

    @keyword_only
    def __init__(self, *, inputCol: str = "rawPrediction", outputCol: str = PLATT_SCORE, slope: float = 0.0,
                 intercept: float = 0.0) -> None:
        super().__init__()
        self._setDefault(inputCol="rawPrediction", outputCol=PLATT_SCORE, slope=0.0, intercept=0.0)
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        z = F.lit(self.getOrDefault(self.slope)) * vector_to_array(self.getInputCol())[1] \
            + F.lit(self.getOrDefault(self.intercept))
        # The logistic function in the form that cannot overflow on either side.
        value = F.when(z >= 0, 1.0 / (1.0 + F.exp(-z))).otherwise(F.exp(z) / (1.0 + F.exp(z)))
        return dataset.withColumn(self.getOutputCol(), value)


def fit_platt(margin: np.ndarray, label: np.ndarray) -> PlattScaling:
    """The maximum-likelihood Platt scaling of margins ``margin`` with outcomes ``label`` (0 or 1), the
    slope bounded at zero: on a fold with a handful of adopters a free slope can come out negative and
    turn the classifier's ranking upside down (seen at 5 positives). scipy's L-BFGS-B on the mean log
    loss: two parameters on the driver, instead of a Spark job per iteration of a distributed fit."""
    from scipy.optimize import minimize
    from scipy.special import expit

    margin, label = np.asarray(margin, dtype=float), np.asarray(label, dtype=float)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        z = params[0] * margin + params[1]
        residual = expit(z) - label
        return float(np.mean(np.logaddexp(0.0, z) - label * z)), np.array([np.mean(residual * margin), np.mean(residual)])

    rate = float(np.clip(label.mean(), 1e-6, 1 - 1e-6))
    found = minimize(loss, x0=np.array([0.0, np.log(rate / (1 - rate))]), jac=True, method="L-BFGS-B",
                     bounds=[(0.0, None), (None, None)], options={"maxiter": 200, "gtol": 1e-9})
    return PlattScaling(slope=float(found.x[0]), intercept=float(found.x[1]))


def calibrator(fitted: PipelineModel, fold: DataFrame | None, *, method: str, rows: pd.DataFrame | None = None) -> list:
    """Calibration stages fitted on ``fold`` (labelled, not seen in training): Platt scaling, a logistic
    regression on the classifier's margin, or an isotonic regression on its probability. Appended to the
    fitted pipeline, they turn its output into probabilities that compare across offers (the balanced
    class weights of training leave the raw probabilities far too high). Platt scaling fits on the
    driver, on ``rows`` (the fold's :func:`fold_rows`) when given, else on the fold's margins and labels
    collected (16 bytes a customer: 16 MB for a million); isotonic regression is fitted by Spark on
    ``fold``."""
    if method not in ("platt", "isotonic"):
        raise ValueError(f"unknown calibration {method!r}: one of {', '.join(CALIBRATIONS)}")
    if method == "isotonic":
        # The labels are on the driver already when ``rows`` are given: no Spark job to check them.
        _require_both_classes(set(rows[LABEL].unique()) if rows is not None
                              else {row[0] for row in fold.select(LABEL).distinct().collect()})
        return [IsotonicRegression(featuresCol="probability", featureIndex=1, labelCol=LABEL,
                                   predictionCol=ISOTONIC_SCORE).fit(fitted.transform(fold))]
    if rows is None:
        rows = fitted.transform(fold).select(vector_to_array("rawPrediction")[1].alias(MARGIN), F.col(LABEL)).toPandas()
    _require_both_classes(set(rows[LABEL].unique()))
    return [fit_platt(rows[MARGIN].to_numpy(), rows[LABEL].to_numpy())]


def _require_both_classes(classes: set[float]) -> None:
    if classes != {0.0, 1.0}:
        raise ValueError(f"calibration needs adopters and non-adopters in its fold; it has labels {sorted(classes)}")


def fold_rows(fitted: PipelineModel, fold: DataFrame, *, columns: Sequence[str] = ()) -> pd.DataFrame:
    """``fold`` scored by the fitted classifier (its calibration stages, if any, left out) and collected:
    ``label``, the classifier's ``margin`` and ``probability`` of adoption, the stratified ``_half`` of
    :func:`stratified_halves` and ``columns``. One Spark job, and 8 bytes a value per customer (40 MB for
    a million customers and two extra columns): everything a model is judged by on its out-of-time fold
    (calibration, its cross-fitted check, the scorers' counts) then costs no further pass."""
    scored = with_calibration(fitted, []).transform(stratified_halves(fold))
    return scored.select(F.col(LABEL).cast("double").alias(LABEL),
                         vector_to_array("rawPrediction")[1].alias(MARGIN),
                         vector_to_array("probability")[1].alias(PROBABILITY), HALF, *columns).toPandas()


def calibrated_scores(stages: Sequence, rows: pd.DataFrame) -> np.ndarray:
    """What the calibration ``stages`` (of :func:`calibrator`) make of :func:`fold_rows`' margins or
    probabilities, on the driver, by the formulas the stages apply in Spark."""
    (stage,) = stages
    if isinstance(stage, PlattScaling):
        z = stage.getOrDefault(stage.slope) * rows[MARGIN].to_numpy() + stage.getOrDefault(stage.intercept)
        with np.errstate(over="ignore"):
            return np.where(z >= 0, 1.0 / (1.0 + np.exp(-z)), np.exp(z) / (1.0 + np.exp(z)))
    # Isotonic: linear between boundaries, constant beyond them (as IsotonicRegressionModel predicts).
    return np.interp(rows[PROBABILITY].to_numpy(), stage.boundaries.toArray(), stage.predictions.toArray())


def cross_calibrated(fitted: PipelineModel, fold: DataFrame, *, method: str,
                     rows: pd.DataFrame | None = None) -> np.ndarray:
    """The scores of ``rows`` (the fold's :func:`fold_rows`, collected when not given), each from
    calibration fitted on the other half of the fold. The final model's calibration is fitted on the
    whole fold, so its Brier score and calibration curve are measured this way, never on the rows a
    calibrator saw. The halves are stratified (adopters dealt alternately by customer hash, the others
    split by the hash), so each half has adopters whenever the fold has two."""
    rows = fold_rows(fitted, fold) if rows is None else rows
    halves = stratified_halves(fold) if method == "isotonic" else None
    honest = np.empty(len(rows))
    for k in (0, 1):
        mine = (rows[HALF] == k).to_numpy()
        other = halves.filter(F.col(HALF) != k).drop(HALF) if halves is not None else None
        honest[mine] = calibrated_scores(calibrator(fitted, other, method=method, rows=rows[~mine]), rows[mine])
    return honest


def stratified_halves(fold: DataFrame) -> DataFrame:
    """``fold`` with ``_half`` (0 or 1): adopters numbered in customer-hash order and dealt alternately,
    everyone else split by the hash (deterministic, and no sort of the large class)."""
    hashed = F.xxhash64("customer_id")
    adopters = fold.filter(F.col(LABEL) == 1.0)
    # Adopters are few: a single-partition window over them is cheap.
    dealt = adopters.withColumn(HALF, (F.row_number().over(Window.orderBy(hashed, "customer_id")) % 2).cast("int"))
    others = fold.filter(F.col(LABEL) != 1.0).withColumn(HALF, (F.abs(hashed) % 2).cast("int"))
    return dealt.unionByName(others)


def with_calibration(fitted: PipelineModel, stages: Sequence) -> PipelineModel:
    """The fitted pipeline followed by calibration stages: one model to register and to score with."""
    return PipelineModel(stages=list(fitted.stages[:_index(fitted, ClassificationModel) + 1]) + list(stages))


def score(model: PipelineModel, frame: DataFrame, *, drivers: int = 0, base_rate: float | None = None) -> DataFrame:
    """``frame`` with ``score``, the predicted probability of adoption: the calibrated probability when
    the model carries calibration stages, otherwise the classifier's probability prior-corrected to
    ``base_rate`` (the training base rate) when given.

    With ``drivers > 0`` and a linear model, also ``drivers``: the names of the features that pushed this
    customer's score up most (coefficient x standardized value), best first.
    """
    predictions = model.transform(frame)
    if PLATT_SCORE in predictions.columns:
        probability = F.col(PLATT_SCORE)
    elif PLATT_PROBABILITY in predictions.columns:
        probability = vector_to_array(PLATT_PROBABILITY)[1]
    elif ISOTONIC_SCORE in predictions.columns:
        probability = F.col(ISOTONIC_SCORE)
    else:
        probability = vector_to_array("probability")[1]
        if base_rate is not None and 0.0 < base_rate < 1.0:
            probability = prior_corrected(probability, base_rate=base_rate)
    predictions = predictions.withColumn(SCORE, probability)
    fitted = classifier(model)
    if drivers and hasattr(fitted, "coefficients"):
        names = feature_names(model)
        weights = fitted.coefficients.toArray().tolist()
        contributions = F.zip_with(vector_to_array("features"), F.array(*[F.lit(float(w)) for w in weights]),
                                   lambda value, weight: value * weight)
        pairs = F.arrays_zip(contributions.alias("c"), F.array(*[F.lit(n) for n in names]).alias("n"))
        positive = F.filter(pairs, lambda pair: pair["c"] > 0)
        ranked = F.array_sort(positive, lambda a, b: F.when(a["c"] > b["c"], -1).when(a["c"] < b["c"], 1).otherwise(0))
        predictions = predictions.withColumn("drivers", F.transform(F.slice(ranked, 1, drivers), lambda pair: pair["n"]))
    logged = [name for name in predictions.columns if name.startswith(LOG_PREFIX)]
    return predictions.drop(*logged, "raw_features", "features", "rawPrediction", "probability", "prediction",
                            "calibration_margin", "calibrated_raw", PLATT_PROBABILITY, "calibrated_prediction",
                            ISOTONIC_SCORE, PLATT_SCORE)


def by_score(scored: DataFrame) -> pd.DataFrame:
    """Rows (``n``) and adopters (``positives``) per distinct ``score``, highest first: one Spark job, and
    everything a scorer is judged by (the metrics of :func:`metrics_of`, the deciles of :func:`deciles_of`)
    follows from it exactly, ties included. Far cheaper than a Spark job per metric on the small folds
    of a model's evaluation, and exact where Spark's evaluator bins the curve (beyond 1,000 distinct scores)."""
    counts = scored.groupBy(SCORE).agg(F.count("*").alias("n"), F.sum(LABEL).alias("positives")).toPandas()
    return counts.sort_values(SCORE, ascending=False, kind="stable", ignore_index=True)


def counts_of(scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """:func:`by_score` of scores and labels held on the driver."""
    frame = pd.DataFrame({SCORE: np.asarray(scores, dtype=float), LABEL: np.asarray(labels, dtype=float)})
    counts = frame.groupby(SCORE, sort=False).agg(n=(LABEL, "size"), positives=(LABEL, "sum")).reset_index()
    return counts.sort_values(SCORE, ascending=False, kind="stable", ignore_index=True)


def deciles(scored: DataFrame) -> list[dict[str, float]]:
    """The :func:`deciles_of` a scored labelled frame (an action)."""
    return deciles_of(by_score(scored))


def deciles_of(counts: pd.DataFrame) -> list[dict[str, float]]:
    """Per score decile (1 = the top 10%): rows, positives, mean score, observed rate, lift over the
    base rate and the cumulative share of all positives captured (ten rows), from :func:`by_score`. The
    gain chart, the calibration curve and the lift and capture metrics come from it.

    Deciles hold the rows ``ntile(10)`` would give them. Customers with the same score are not ordered by
    anything the scorer knows, so a group of ties that straddles a decile boundary is shared between the
    deciles in proportion, with its adopters spread evenly (the expectation over random tie orders): a
    constant or coarse scorer (the rule score, popularity by segment) then gets lift 1 inside its ties,
    never a lift that depends on how customer ids happen to sort.
    """
    rows_of, positives = counts["n"].to_numpy(dtype=float), counts["positives"].to_numpy(dtype=float)
    scores = counts[SCORE].to_numpy(dtype=float)
    end = np.cumsum(rows_of)
    start = end - rows_of
    total = int(end[-1]) if len(end) else 0
    # ntile(10): the first (total mod 10) deciles hold one row more.
    sizes = [total // 10 + (1 if k < total % 10 else 0) for k in range(10)]
    total_positives = float(positives.sum())
    base_rate = total_positives / total if total else 0.0
    table, captured, low = [], 0.0, 0
    for k, size in enumerate(sizes):
        if not size:
            continue
        high = low + size
        share = np.clip(np.minimum(end, high) - np.maximum(start, low), 0.0, None)
        rows, adopters = float(share.sum()), float((positives * share / rows_of).sum())
        captured += adopters
        rate = adopters / rows
        table.append({"decile": k + 1, "rows": int(round(rows)), "positives": adopters,
                      "mean_score": float((scores * share).sum() / rows), "rate": rate,
                      "lift": rate / base_rate if base_rate else 0.0,
                      "capture": captured / total_positives if total_positives else 0.0})
        low = high
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
    names = feature_names(model)
    fitted = classifier(model)
    if hasattr(fitted, "coefficients"):
        values = [abs(value) for value in fitted.coefficients.toArray().tolist()]
    else:
        values = fitted.featureImportances.toArray().tolist()
    return dict(zip(names, values))


def brier(scored: DataFrame) -> float:
    """The mean squared difference between score and label (an action)."""
    return metrics_of(by_score(scored))["brier"]


def roc_auc(scored: DataFrame) -> float:
    """The ROC-AUC of ``score`` against ``label`` (an action)."""
    return metrics_of(by_score(scored))["roc_auc"]


def evaluate(scored: DataFrame) -> dict[str, float]:
    """The :func:`metrics_of` a scored labelled frame (one Spark job)."""
    return metrics_of(by_score(scored))


def metrics_of(counts: pd.DataFrame, table: list[dict[str, float]] | None = None) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), Brier score, and lift and capture of the top decile, from
    :func:`by_score` (``table``: its :func:`deciles_of`, when the caller has them already). The ranking
    metrics are NaN when the fold lacks adopters or non-adopters: they are undefined, and the champion
    gate refuses non-finite metrics."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rows_of, positives = counts["n"].to_numpy(dtype=float), counts["positives"].to_numpy(dtype=float)
    scores = counts[SCORE].to_numpy(dtype=float)
    # Each distinct score once as adopters and once as non-adopters, weighted by their counts.
    labels = np.r_[np.ones(len(scores)), np.zeros(len(scores))]
    weights = np.r_[positives, rows_of - positives]
    kept = weights > 0
    labels, weighted_scores, weights = labels[kept], np.r_[scores, scores][kept], weights[kept]
    rows, total_positives = float(rows_of.sum()), float(positives.sum())
    ranked = 0.0 < total_positives < rows
    table = deciles_of(counts) if table is None else table
    top = table[0] if table else {"lift": 0.0, "capture": 0.0}
    return {
        "roc_auc": float(roc_auc_score(labels, weighted_scores, sample_weight=weights)) if ranked else float("nan"),
        "pr_auc": float(average_precision_score(labels, weighted_scores, sample_weight=weights)) if ranked else float("nan"),
        "brier": float((rows_of * scores**2 - 2 * scores * positives + positives).sum() / rows) if rows else float("nan"),
        "base_rate": total_positives / rows if rows else 0.0,
        "lift_top_decile": top["lift"],
        "capture_top_decile": top["capture"],
        "positives": total_positives,
        "rows": rows,
    }
