"""Train one propensity model per offer on a time split, log it to MLflow and gate the champion.

With H the horizon and E the day after the run date: the model is fitted on the stacked training
cutoffs (features as of c, labels from [c, c + H), for c = E - 2H, E - 2H - S, ...), calibrated on the
out-of-time fold (features as of E - H, labels from [E - H, E)) and checked on it with calibration
cross-fitted over its two halves. Rules used as features are mined from baskets before each cutoff, so
nothing from a label window leaks into its features. A new version takes the alias ``champion`` only
when it beats the current champion on the same out-of-time fold. When the demo world's truth is there
(``<home>/truth/propensity``), the AUC of the true probabilities on the fold is logged beside the
model's as ``oracle_roc_auc``.

    python -m jobs.train --run-date 2025-11-30 [--offer cross-sell:printing]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import basket_rules as rules_job
from jobs import features as feature_job
from xsell import baskets, features, inputs, measure, model, offers, plots, rules, runtime, tracking, warehouse
from xsell.config import Settings
from xsell.spark import Cached, session

log = logging.getLogger("xsell.train")


def rules_before(lines: DataFrame, settings: Settings, cutoff: dt.date) -> DataFrame:
    start = cutoff - dt.timedelta(days=settings.rules.lookback_days)
    window = lines.filter((F.col("date") >= F.lit(start)) & (F.col("date") < F.lit(cutoff)))
    found, mined = rules.mine_rules(baskets.build_baskets(window).select("items"),
                                    **rules_job.mining_options(settings.rules))
    outcome = rules_job.Outcome({"product": found}, {"product": mined})
    return rules_job.rules_frame(lines.sparkSession, outcome, cutoff)


def panel(data: inputs.Inputs, feature_frame: DataFrame, rules: DataFrame, offer_list: list[offers.Offer], *,
          cutoff: dt.date, end: dt.date) -> DataFrame:
    """Features as of ``cutoff`` with every offer's label over [cutoff, end) and rule feature: one pass over
    the label window and one over the history, whatever the number of offers."""
    label = offers.labels_of_all(data.order_lines, data.products, feature_frame, offer_list, start=cutoff, end=end)
    rule = offers.rule_lifts_of_all(rules, data.order_lines, data.products, offer_list, cutoff=cutoff)
    return feature_frame.join(label, on="customer_id", how="inner").join(rule, on="customer_id", how="left")


def labelled(frame: DataFrame, offer: offers.Offer, *, feature_columns: list[str], cooldown_days: int) -> DataFrame:
    """The customers of a :func:`panel` eligible for ``offer``, with its ``label`` and ``rule_lift``."""
    return frame.filter(offers.eligible(offer, cooldown_days=cooldown_days)).select(
        "customer_id", *[c for c in feature_columns if c != "rule_lift"],
        F.coalesce(F.col(offers.column("rule_lift", offer)), F.lit(0.0)).alias("rule_lift"),
        F.col(offers.column("label", offer)).alias(model.LABEL),
    )


@dataclass
class Fitted:
    """What fitting one offer produced, before anything is logged."""

    offer: offers.Offer
    model: PipelineModel | None
    metrics: dict[str, float]
    rule_baseline: dict[str, float]
    champion_auc: float | None
    train_rows: int
    positives: int
    popularity_baseline: dict[str, float] = field(default_factory=dict)
    deciles: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    example: pd.DataFrame | None = None
    oracle: dict[str, float] = field(default_factory=dict)
    valid_positives: int | None = None
    score_reference: dict[str, list[float]] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)


def census(frame: DataFrame) -> tuple[dict[float, int], str]:
    """Rows per label, and a content digest of ``frame`` (rows and an order-free hash of every row: the
    same data gives the same digest, so a run says exactly what it was trained and checked on); one job,
    the one that fills a fold's cache."""
    # Summed as decimals: a sum of 64-bit hashes overflows a long (an error under ANSI mode).
    hashed = F.xxhash64(*frame.columns).cast("decimal(38,0)")
    found = frame.groupBy(model.LABEL).agg(F.count("*").alias("n"), F.sum(hashed).alias("hash")).collect()
    counts = {row[model.LABEL]: row["n"] for row in found}
    return counts, f"{sum(counts.values())}:{sum(int(row['hash'] or 0) for row in found) % 2**64:016x}"


def digest(frame: DataFrame) -> str:
    """The content digest of a labelled fold (see :func:`census`)."""
    return census(frame)[1]


def build(settings: Settings, feature_columns: list[str]):
    """The configured, unfitted pipeline."""
    chosen = settings.model
    return model.build_pipeline(feature_columns, algorithm=chosen.algorithm, max_iter=chosen.max_iter,
                                reg_param=chosen.reg_param, max_depth=chosen.max_depth, step_size=chosen.step_size,
                                min_instances_per_node=chosen.min_instances_per_node,
                                subsampling_rate=chosen.subsampling_rate,
                                log_columns=features.heavy_tailed(feature_columns) if chosen.log_features else ())


def oracle_metrics(valid: DataFrame, truth: DataFrame | None, offer: offers.Offer) -> dict[str, float]:
    """``oracle_roc_auc``: the ROC-AUC of the true adoption probabilities on the same fold (demo worlds
    only; a customer the truth does not list scores 0)."""
    if truth is None:
        return {}
    known = truth.filter(F.col("offer_id") == offer.offer_id).select("customer_id", "true_probability")
    scored = (valid.select("customer_id", model.LABEL).join(known, on="customer_id", how="left")
              .withColumn(model.SCORE, F.coalesce(F.col("true_probability"), F.lit(0.0))))
    return {"oracle_roc_auc": model.roc_auc(scored)}


def judged(fitted: PipelineModel, train: DataFrame, valid: DataFrame, *, method: str,
           base_rate: float) -> tuple[PipelineModel, np.ndarray, dict[str, pd.DataFrame]]:
    """The final model (``fitted`` with calibration fitted on the out-of-time fold ``valid``), its scores
    of the fold, and every scorer's :func:`~xsell.model.counts_of` on the fold: ``model``, its calibration
    cross-fitted over the fold's halves (``calibration``), the ``rule score``, ``popularity`` among similar
    customers of ``train`` and, when calibrated, the ``classifier`` alone.

    One Spark job scores the fold with the classifier and collects it; the calibration, its cross-fitted
    check and the counts come from those rows on the driver (with a Spark job for each, fitting the 14
    offers of a 100k-customer world took 214 s instead of 155 s).
    """
    with_popularity = model.popularity_baseline(
        train, valid, share_columns=[c for c in train.columns if c.startswith("share__")])
    fold = model.fold_rows(fitted, with_popularity.withColumnRenamed(model.SCORE, "popularity"),
                           columns=["rule_lift", "popularity"])
    labels = fold[model.LABEL].to_numpy()
    counts = {}
    if method == "none":
        final = fold[model.PROBABILITY].to_numpy()
        if 0.0 < base_rate < 1.0:
            final = model.prior_corrected(final, base_rate=base_rate)
        honest = final
    else:
        # Ranking metrics come from the final model: calibration is monotone, so they are the
        # classifier's own. Its probabilities are judged out of fold: two half-fold calibrators, each
        # scoring the half it did not see (on the demo, splicing two calibrators' ranks took 0.65 to 0.48).
        honest = model.cross_calibrated(fitted, valid, method=method, rows=fold)
        stages = model.calibrator(fitted, valid, method=method, rows=fold)
        final = model.calibrated_scores(stages, fold)
        fitted = model.with_calibration(fitted, stages)
        counts["classifier"] = model.counts_of(fold[model.PROBABILITY].to_numpy(), labels)
    counts |= {"model": model.counts_of(final, labels), "calibration": model.counts_of(honest, labels),
               "rule score": model.counts_of(fold["rule_lift"].to_numpy(), labels),
               "popularity": model.counts_of(fold["popularity"].to_numpy(), labels)}
    return fitted, final, counts


def fit_offer(settings: Settings, offer: offers.Offer, train: DataFrame, valid: DataFrame, *,
              feature_columns: list[str], truth: DataFrame | None = None, against_champion: bool = True) -> Fitted:
    """Fit, calibrate on the out-of-time fold and score it (calibration cross-fitted), score both
    baselines and, unless ``against_champion`` is false (a backtest: the champion may have seen the
    fold), the current champion on the same fold (Spark work only: safe to run for several offers at
    once)."""
    import mlflow.spark

    started = time.perf_counter()
    # One job per fold fills its cache, counts its classes and takes its digest (weighting, caching,
    # counting and digesting took four passes over the training fold).
    cached = train.cache()
    counts, train_digest = census(cached)
    positives, rows = counts.get(1.0, 0), sum(counts.values())
    train = model.with_balanced_weights(cached, counts)
    valid_counts, valid_digest = census(valid)
    valid_positives = valid_counts.get(1.0, 0)
    if positives < settings.model.min_positive_labels or valid_positives < settings.model.min_positive_labels:
        # Too few adopters to fit, or to calibrate and judge out of time: the champion, if any, stays.
        cached.unpersist()
        valid.unpersist()
        return Fitted(offer, None, {}, {}, None, rows, positives, valid_positives=valid_positives)
    feature_columns = offers.model_features(offer, feature_columns, up_sell_scope=settings.model.up_sell_features)
    fitted = build(settings, feature_columns).fit(train)
    log.info("%s: fitted on %d rows (%d positives) in %.1f s", offer.offer_id, rows, positives,
             time.perf_counter() - started)
    base_rate = positives / rows
    fitted, final, counts = judged(fitted, train, valid, method=settings.model.calibration, base_rate=base_rate)
    tables = {scorer: model.deciles_of(frame) for scorer, frame in counts.items() if scorer != "classifier"}
    metrics = {**model.metrics_of(counts["model"], tables["model"]),
               "brier": model.metrics_of(counts["calibration"], tables["calibration"])["brier"]}
    if "classifier" in counts:
        # The classifier's own ranking, logged apart: a Platt slope bounded at zero makes a classifier that
        # ranks the fold upside down constant (AUC 0.5), and this says by how much it was below chance.
        metrics["classifier_roc_auc"] = model.metrics_of(counts["classifier"])["roc_auc"]
    oracle = oracle_metrics(valid, truth, offer)
    if oracle:
        metrics["oracle_ratio"] = metrics["roc_auc"] / oracle["oracle_roc_auc"] if oracle["oracle_roc_auc"] else 0.0
    current = tracking.champion(offer.model_name) if against_champion else None
    champion_auc = None
    if current is not None:
        try:
            champion_auc = model.roc_auc(model.score(mlflow.spark.load_model(current.uri), valid,
                                                     base_rate=current.metrics.get(model.BASE_RATE)))
        except Exception as error:  # a champion built on other feature columns cannot score this fold
            log.warning("%s: champion v%s cannot score the fold (%s); treated as absent", offer.offer_id,
                        current.version, error)
    # The out-of-time fold's score distribution: scoring compares each run's scores with it (PSI).
    splits = measure.edges_of(final, bins=settings.monitoring.psi_bins)
    score_reference = {"splits": splits, "counts": measure.histogram_of(final, splits)}
    result = Fitted(
        offer, fitted, {**metrics, **model.decile_metrics(tables["model"]), model.BASE_RATE: base_rate},
        model.metrics_of(counts["rule score"], tables["rule score"]), champion_auc, rows, positives,
        popularity_baseline=model.metrics_of(counts["popularity"], tables["popularity"]), deciles=tables,
        digests={"train": train_digest, "valid": valid_digest},
        example=valid.select(*feature_columns).limit(5).toPandas(), oracle=oracle, score_reference=score_reference,
        features=feature_columns,
    )
    cached.unpersist()
    valid.unpersist()
    log.info("%s: fitted, calibrated and evaluated in %.1f s", offer.offer_id, time.perf_counter() - started)
    return result


def fit_offers(settings: Settings, work: list[tuple[offers.Offer, DataFrame, DataFrame]], *,
               feature_columns: list[str], truth: DataFrame | None, against_champion: bool = True) -> list[Fitted]:
    """:func:`fit_offer` for every offer of :func:`training_frames`' ``work``, in its order.

    Each offer's data is small: a Spark job per LBFGS iteration is bound by latency, not by the cores,
    so several offers are fitted at once from threads (Spark schedules jobs from threads concurrently).
    """
    with ThreadPoolExecutor(max_workers=settings.model.parallel_offers) as pool:
        return list(pool.map(lambda item: fit_offer(settings, *item, feature_columns=feature_columns, truth=truth,
                                                    against_champion=against_champion), work))


BASELINE_METRICS = ("roc_auc", "pr_auc", "brier", "lift_top_decile", "capture_top_decile")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _code_version() -> str:
    """The git commit of the code that trains (``unknown`` outside a git checkout)."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                               cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def log_offer(settings: Settings, fitted: Fitted, *, run_date: dt.date, run_id: str, experiment_id: str,
              feature_columns: list[str]) -> dict:
    """One MLflow run per offer and date: parameters, metrics, the model, and the champion gate."""
    import mlflow
    import mlflow.spark
    import pyspark

    import matplotlib.pyplot as plt
    from mlflow.models import infer_signature

    offer, metrics = fitted.offer, fitted.metrics
    dates = feature_job.cutoffs(run_date, settings.model)
    horizon = dt.timedelta(days=settings.model.horizon_days)
    if fitted.model is None:
        log.warning("%s: %d positive labels in training and %d in the out-of-time fold, fewer than %d: not trained; "
                    "the current champion, if any, stays", offer.offer_id, fitted.positives, fitted.valid_positives,
                    settings.model.min_positive_labels)
        return {"offer_id": offer.offer_id, "status": "skipped: too few positives",
                "train_positives": fitted.positives, "valid_positives": fitted.valid_positives}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{offer.offer_id} {run_date}"):
        tracking.log_params({
            "offer_id": offer.offer_id, "offer_type": offer.offer_type, "target": offer.target,
            "run_date": run_date, "scheduler_run_id": run_id,
            **settings.model.model_dump(exclude={"promotion_margin", "min_positive_labels", "parallel_offers"}),
            "train_rows": fitted.train_rows, "train_positives": fitted.positives, "features": ",".join(fitted.features or feature_columns),
        })
        tracking.log_params({
            "train_cutoff_dates": ",".join(str(c) for c in dates.train),
            "train_window": f"features before each training cutoff c, labels [c, c + {settings.model.horizon_days}d); "
                            f"labels from {min(dates.train)} to {max(dates.train) + horizon}",
            "valid_window": f"features before {dates.valid}, labels [{dates.valid}, {dates.score}); "
                            f"calibration cross-fitted on its halves",
            "train_digest": fitted.digests["train"], "valid_digest": fitted.digests["valid"],
            "xsell_version": _version("xsell"), "pyspark_version": pyspark.__version__,
            "mlflow_version": mlflow.__version__, "code_version": _code_version(),
        })
        mlflow.log_metrics(metrics)
        if fitted.oracle:
            mlflow.log_metrics(fitted.oracle)
        for prefix, baseline in (("rule_baseline", fitted.rule_baseline), ("popularity_baseline", fitted.popularity_baseline)):
            mlflow.log_metrics({f"{prefix}_{key}": value for key, value in baseline.items() if key in BASELINE_METRICS})
        if fitted.champion_auc is not None:
            mlflow.log_metric("champion_roc_auc_same_fold", fitted.champion_auc)
        title = f"{offer.offer_id}, out of time ({dates.valid})"
        for name, figure in (("gain_chart.png", plots.gain_chart(
                                 {scorer: table for scorer, table in fitted.deciles.items() if scorer != "calibration"},
                                 title=title)),
                             ("calibration_curve.png", plots.calibration_curve(fitted.deciles["calibration"], title=title)),
                             ("feature_importance.png", plots.feature_importance(model.feature_importance(fitted.model),
                                                                                 title=offer.offer_id))):
            mlflow.log_figure(figure, name)
            plt.close(figure)
        mlflow.log_dict({name: table for name, table in fitted.deciles.items()}, "deciles.json")
        mlflow.log_dict(fitted.score_reference, measure.SCORE_REFERENCE)
        signature = infer_signature(fitted.example, pd.DataFrame({model.SCORE: [0.5] * len(fitted.example)}))
        info = mlflow.spark.log_model(
            fitted.model, artifact_path="model", registered_model_name=offer.model_name, signature=signature,
            # Listing requirements skips MLflow's slow inference of them (about 15 s a model).
            pip_requirements=[f"pyspark=={pyspark.__version__}"],
        )
        promoted, why = tracking.promote_if_better(
            offer.model_name, str(info.registered_model_version), metrics,
            margin=settings.model.promotion_margin, champion_metric_on_fold=fitted.champion_auc)
        mlflow.set_tag("gate", "promoted" if promoted else "rejected")
    log.info("%s: roc_auc %.3f (rule baseline %.3f, popularity %.3f, oracle %s), version %s %s (%s)", offer.offer_id,
             metrics["roc_auc"], fitted.rule_baseline["roc_auc"], fitted.popularity_baseline["roc_auc"],
             f"{fitted.oracle['oracle_roc_auc']:.3f}" if fitted.oracle else "n/a", info.registered_model_version,
             "promoted" if promoted else "rejected", why)
    return {"offer_id": offer.offer_id, "version": info.registered_model_version, "promoted": promoted, **metrics,
            **fitted.oracle}


def truth_for(spark: SparkSession, settings: Settings, cutoff: dt.date) -> DataFrame | None:
    """The demo world's true adoption probabilities for the fold whose features are as of ``cutoff``, when
    the generator wrote them (its cutoff is the last day of history: the day before ours), else None."""
    folder = settings.truth / "propensity" / f"cutoff={cutoff - dt.timedelta(days=1)}"
    if not (folder / "propensity.parquet").is_file():
        return None
    truth = spark.read.parquet(str(folder))
    if truth.filter(F.col("horizon_days") != settings.model.horizon_days).limit(1).count():
        log.warning("the truth in %s has another horizon than %d days: no oracle", folder, settings.model.horizon_days)
        return None
    return truth.select("offer_id", "customer_id", "true_probability")


def training_frames(spark: SparkSession, settings: Settings, data: inputs.Inputs, run_date: dt.date,
                    offer_list: list[offers.Offer], *, cache: Cached | None = None,
                    features_at: Callable[[dt.date], DataFrame] | None = None,
                    panels: dict[dt.date, DataFrame] | None = None,
                    ) -> tuple[list[tuple[offers.Offer, DataFrame, DataFrame]], list[str]]:
    """Per offer, the stacked training cutoffs and the out-of-time fold, labelled, with the rule feature;
    and the model's feature columns. The cutoffs' panels are cached, until ``cache`` is released when
    given.

    ``features_at`` gives the features as of a cutoff (default: the features job's, from the lake).
    ``panels``, when given, holds panels by cutoff from an earlier call with the same offers, and is
    filled: a cutoff's panel (labels over the horizon after it) is the same whether it trains or checks.
    """
    cache = cache or (lambda frame: frame.cache())
    features_at = features_at or (lambda cutoff: feature_job.read(spark, settings, cutoff))
    panels = {} if panels is None else panels
    dates = feature_job.cutoffs(run_date, settings.model)
    horizon = dt.timedelta(days=settings.model.horizon_days)

    def build_panel(cutoff: dt.date) -> tuple[dt.date, DataFrame]:
        rules = rules_before(data.order_lines, settings, cutoff)
        built = cache(panel(data, features_at(cutoff), rules, offer_list, cutoff=cutoff, end=cutoff + horizon))
        # Materialised here, once: offers fitted from threads would each compute an unfilled cache again.
        log.info("training panel as of %s: %d customers", cutoff, built.count())
        return cutoff, built

    # The cutoffs' panels at once, from threads, as the offers are fitted (see fit_offers): rule mining is
    # many small Spark jobs.
    missing = [cutoff for cutoff in (*dates.train, dates.valid) if cutoff not in panels]
    with ThreadPoolExecutor(max_workers=settings.model.parallel_offers) as pool:
        panels.update(pool.map(build_panel, missing))
    # Windows reaching back before the first order are empty at early cutoffs: left out (see features.covered).
    first = data.order_lines.agg(F.min("date")).first()[0]
    history_days = (min(dates.train) - first).days if first is not None else 0
    feature_columns, left_out = features.covered(features.model_columns(features_at(dates.valid)),
                                                 history_days=history_days)
    if left_out:
        log.info("%d days of order history before the oldest training cutoff %s: left out %s", history_days,
                 min(dates.train), ", ".join(left_out))
    feature_columns.append("rule_lift")
    cooldown = settings.audience.cooldown_days
    # An iterative fit runs a Spark job per iteration over every partition: the stacked cutoffs would
    # bring (cutoffs x shuffle partitions) tiny tasks to each of them (75 s instead of 8 s for one
    # offer's logistic regression on 6,000 rows), so folds are packed into one partition per core.
    slots = spark.sparkContext.defaultParallelism
    work = []
    for offer in offer_list:
        parts = [labelled(panels[c], offer, feature_columns=feature_columns, cooldown_days=cooldown) for c in dates.train]
        train = parts[0]
        for part in parts[1:]:
            train = train.unionByName(part)
        valid = labelled(panels[dates.valid], offer, feature_columns=feature_columns, cooldown_days=cooldown)
        work.append((offer, train.coalesce(slots), valid.coalesce(slots).cache()))
    return work, feature_columns


def due(settings: Settings, offer_list: list[offers.Offer], run_date: dt.date) -> tuple[list[offers.Offer], list[dict]]:
    """The offers to retrain on ``run_date`` under ``model.retrain_every_days``, and a status for the others.

    An offer is due when it has no champion, when its champion was trained ``retrain_every_days`` or
    more days before, or when a monitoring check of the offer (or of every offer: ``*``) breached on a
    run since the champion's training date, before today (today's checks come after training).
    """
    import mlflow

    every = settings.model.retrain_every_days
    if every <= 1:
        return list(offer_list), []
    client = mlflow.MlflowClient()
    target = warehouse.open_warehouse(settings)
    chosen, skipped = [], []
    for offer in offer_list:
        current = tracking.champion(offer.model_name)
        trained = (dt.date.fromisoformat(client.get_run(current.run_id).data.params["run_date"])
                   if current is not None and current.run_id else None)
        if trained is None or (run_date - trained).days >= every:
            chosen.append(offer)
            continue
        breaches = target.query(
            f"SELECT check_name, subject, run_date FROM {target.table_name(warehouse.MONITORING)} WHERE breach "
            f"AND offer_id IN (?, '*') AND run_date >= ? AND run_date < ? ORDER BY run_date, check_name, subject",
            [offer.offer_id, trained, run_date])
        if breaches:
            log.info("%s: retrained early, monitoring breached since its champion of %s: %s", offer.offer_id, trained,
                     "; ".join(f"{check} {subject} ({day})" for check, subject, day in breaches))
            chosen.append(offer)
        else:
            skipped.append({"offer_id": offer.offer_id, "status": f"skipped: champion v{current.version} trained on "
                            f"{trained}, retrained every {every} days"})
    return chosen, skipped


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str,
        only: list[str] | None = None) -> list[dict]:
    experiment_id = tracking.configure(settings)
    data = inputs.load(spark, settings, run_date)
    chosen, skipped = due(settings, [offer for offer in data.offers if not only or offer.offer_id in only], run_date)
    for item in skipped:
        log.info("%s: %s", item["offer_id"], item["status"])
    if not chosen:
        return skipped
    with Cached() as cache:
        for frame in data.cached:
            cache(frame)
        work, feature_columns = training_frames(spark, settings, data, run_date, chosen, cache=cache)
        truth = truth_for(spark, settings, feature_job.cutoffs(run_date, settings.model).valid)
        fitted = fit_offers(settings, work, feature_columns=feature_columns, truth=truth)
    results = [log_offer(settings, item, run_date=run_date, run_id=run_id, experiment_id=experiment_id,
                         feature_columns=feature_columns) for item in fitted]
    return results + skipped


def main(argv: list[str] | None = None) -> None:
    parser = runtime.parser(__doc__.splitlines()[0])
    parser.add_argument("--offer", action="append", help="train only these offer ids (repeatable)")
    args = parser.parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-train"), settings, args.run_date, run_id=args.run_id,
            only=runtime.split_list(args.offer))

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
