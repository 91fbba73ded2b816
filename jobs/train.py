"""Train one propensity model per offer on a time split, log it to MLflow and gate the champion.

With H the horizon and E the day after the run date: the model is fitted on features as of E - 2H with
labels from [E - 2H, E - H), and checked out of time on features as of E - H with labels from
[E - H, E). Rules used as features are mined from baskets before each cutoff, so nothing from a label
window leaks into its features. A new version takes the alias ``champion`` only when it beats the
current champion on the same out-of-time fold.

    python -m jobs.train --run-date 2025-11-30 [--offer cross-sell:printing]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import basket_rules as rules_job
from jobs import features as feature_job
from xsell import baskets, features, inputs, model, offers, plots, rules, runtime, tracking
from xsell.config import Settings
from xsell.spark import session

log = logging.getLogger("xsell.train")


def rules_before(lines: DataFrame, settings: Settings, cutoff: dt.date) -> DataFrame:
    start = cutoff - dt.timedelta(days=settings.rules.lookback_days)
    window = lines.filter((F.col("date") >= F.lit(start)) & (F.col("date") < F.lit(cutoff)))
    found, mined = rules.mine_rules(baskets.build_baskets(window).select("items"),
                                    **rules_job.mining_options(settings.rules))
    outcome = rules_job.Outcome({"product": found}, {"product": mined})
    return rules_job.rules_frame(lines.sparkSession, outcome, cutoff)


def labelled(data: inputs.Inputs, feature_frame: DataFrame, rules: DataFrame, offer: offers.Offer, *,
             cutoff: dt.date, end: dt.date, cooldown_days: int) -> DataFrame:
    """Eligible customers as of ``cutoff`` with their features, rule feature and label."""
    candidates = feature_frame.filter(offers.eligible(offer, cooldown_days=cooldown_days))
    label = offers.labels(data.order_lines, data.products, candidates, offer, start=cutoff, end=end)
    rule = offers.rule_feature(rules, data.order_lines, data.products, offer, cutoff=cutoff)
    return (
        candidates.join(label, on="customer_id", how="inner")
        .join(rule.select("customer_id", "rule_lift"), on="customer_id", how="left")
        .fillna(0.0, subset=["rule_lift"])
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


def digest(frame: DataFrame) -> str:
    """A content digest of a fold (rows and an order-free hash of every row): the same data gives the
    same digest, so a run says exactly what it was trained and checked on."""
    # Summed as decimals: a sum of 64-bit hashes overflows a long (an error under ANSI mode).
    hashed = F.xxhash64(*frame.columns).cast("decimal(38,0)")
    row = frame.agg(F.count("*").alias("rows"), F.sum(hashed).alias("hash")).first()
    return f"{row['rows']}:{int(row['hash'] or 0) % 2**64:016x}"


def fit_offer(settings: Settings, offer: offers.Offer, train: DataFrame, valid: DataFrame, *,
              feature_columns: list[str]) -> Fitted:
    """Fit, score the out-of-time fold, score both baselines and the current champion on the same fold
    (Spark work only: safe to run for several offers at once)."""
    import mlflow.spark

    train = model.with_balanced_weights(train).cache()
    positives = train.filter(F.col(model.LABEL) == 1.0).count()
    rows = train.count()
    if positives < settings.model.min_positive_labels:
        return Fitted(offer, None, {}, {}, None, rows, positives)
    pipeline = model.build_pipeline(feature_columns, algorithm=settings.model.algorithm,
                                    max_iter=settings.model.max_iter, reg_param=settings.model.reg_param)
    fitted = pipeline.fit(train)
    base_rate = positives / rows
    scored = model.score(fitted, valid, base_rate=base_rate).cache()
    metrics = model.evaluate(scored)
    by_rule = scored.withColumn(model.SCORE, F.col("rule_lift"))
    by_popularity = model.popularity_baseline(
        train, valid, share_columns=[c for c in feature_columns if c.startswith("share__")])
    tables = {"model": model.deciles(scored), "rule score": model.deciles(by_rule),
              "popularity": model.deciles(by_popularity)}
    current = tracking.champion(offer.model_name)
    champion_auc = None
    if current is not None:
        try:
            champion_auc = model.evaluate(model.score(mlflow.spark.load_model(current.uri), valid,
                                                      base_rate=current.metrics.get(model.BASE_RATE)))["roc_auc"]
        except Exception as error:  # a champion built on other feature columns cannot score this fold
            log.warning("%s: champion v%s cannot score the fold (%s); treated as absent", offer.offer_id,
                        current.version, error)
    result = Fitted(
        offer, fitted, {**metrics, **model.decile_metrics(tables["model"]), model.BASE_RATE: base_rate},
        model.evaluate(by_rule), champion_auc, rows, positives,
        popularity_baseline=model.evaluate(by_popularity), deciles=tables,
        digests={"train": digest(train.drop(model.WEIGHT)), "valid": digest(valid)},
        example=valid.select(*feature_columns).limit(5).toPandas(),
    )
    train.unpersist()
    scored.unpersist()
    return result


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
    train_cutoff, valid_cutoff, valid_end = feature_job.cutoffs(run_date, settings.model.horizon_days)
    if fitted.model is None:
        log.warning("%s: %d positive labels, fewer than %d: not trained", offer.offer_id, fitted.positives,
                    settings.model.min_positive_labels)
        return {"offer_id": offer.offer_id, "status": "skipped: too few positives"}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{offer.offer_id} {run_date}"):
        tracking.log_params({
            "offer_id": offer.offer_id, "offer_type": offer.offer_type, "target": offer.target,
            "run_date": run_date, "scheduler_run_id": run_id, "algorithm": settings.model.algorithm,
            "max_iter": settings.model.max_iter, "reg_param": settings.model.reg_param,
            "horizon_days": settings.model.horizon_days, "train_rows": fitted.train_rows,
            "train_positives": fitted.positives, "features": ",".join(feature_columns),
        })
        tracking.log_params({
            "train_window": f"features before {train_cutoff}, labels [{train_cutoff}, {valid_cutoff})",
            "valid_window": f"features before {valid_cutoff}, labels [{valid_cutoff}, {valid_end})",
            "train_digest": fitted.digests["train"], "valid_digest": fitted.digests["valid"],
            "xsell_version": _version("xsell"), "pyspark_version": pyspark.__version__,
            "mlflow_version": mlflow.__version__, "code_version": _code_version(),
        })
        mlflow.log_metrics(metrics)
        for prefix, baseline in (("rule_baseline", fitted.rule_baseline), ("popularity_baseline", fitted.popularity_baseline)):
            mlflow.log_metrics({f"{prefix}_{key}": value for key, value in baseline.items() if key in BASELINE_METRICS})
        if fitted.champion_auc is not None:
            mlflow.log_metric("champion_roc_auc_same_fold", fitted.champion_auc)
        title = f"{offer.offer_id}, out of time ({valid_cutoff})"
        for name, figure in (("gain_chart.png", plots.gain_chart(fitted.deciles, title=title)),
                             ("calibration_curve.png", plots.calibration_curve(fitted.deciles["model"], title=title)),
                             ("feature_importance.png", plots.feature_importance(model.feature_importance(fitted.model),
                                                                                 title=offer.offer_id))):
            mlflow.log_figure(figure, name)
            plt.close(figure)
        mlflow.log_dict({name: table for name, table in fitted.deciles.items()}, "deciles.json")
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
    log.info("%s: roc_auc %.3f (rule baseline %.3f), version %s %s (%s)", offer.offer_id, metrics["roc_auc"],
             fitted.rule_baseline["roc_auc"], info.registered_model_version, "promoted" if promoted else "rejected", why)
    return {"offer_id": offer.offer_id, "version": info.registered_model_version, "promoted": promoted, **metrics}


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, run_id: str,
        only: list[str] | None = None) -> list[dict]:
    experiment_id = tracking.configure(settings)
    data = inputs.load(spark, settings, run_date)
    train_cutoff, valid_cutoff, end = feature_job.cutoffs(run_date, settings.model.horizon_days)
    frames = {
        cutoff: (feature_job.read(spark, settings, cutoff).cache(), rules_before(data.order_lines, settings, cutoff).cache())
        for cutoff in (train_cutoff, valid_cutoff)
    }
    work = []
    for offer in data.offers:
        if only and offer.offer_id not in only:
            continue
        cooldown = settings.audience.cooldown_days
        train = labelled(data, *frames[train_cutoff], offer, cutoff=train_cutoff, end=valid_cutoff, cooldown_days=cooldown)
        valid = labelled(data, *frames[valid_cutoff], offer, cutoff=valid_cutoff, end=end, cooldown_days=cooldown).cache()
        work.append((offer, train, valid))
    feature_columns = [c for c in features.model_columns(work[0][1]) if c != model.LABEL] if work else []
    # Each offer's data is small: a Spark job per LBFGS iteration is bound by latency, not by the cores,
    # so several offers are fitted at once from threads (Spark schedules jobs from threads concurrently).
    with ThreadPoolExecutor(max_workers=settings.model.parallel_offers) as pool:
        fitted = list(pool.map(lambda item: fit_offer(settings, item[0], item[1], item[2],
                                                      feature_columns=feature_columns), work))
    results = [log_offer(settings, item, run_date=run_date, run_id=run_id, experiment_id=experiment_id,
                         feature_columns=feature_columns) for item in fitted]
    return results


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
