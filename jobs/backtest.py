"""Rolling backtests: each offer's model as the nightly training would have built it on earlier run dates,
each judged on its own out-of-time fold against the same baselines.

Fold k (k = 0 .. folds - 1) is the run date R - k*H (H: the horizon, so that the folds' label windows do
not overlap) trained exactly as :mod:`jobs.train` trains for that date: features and rules only from
before each cutoff, the stacked training cutoffs, calibration on the fold's halves, the popularity and
rule baselines. Fold 0 is the fold the nightly training judges its model on; the older ones say whether
that model's quality is a habit or one good month. The data are those serving R (valid lines up to R,
R's snapshots), as the nightly training uses them for its own earlier cutoffs. The features are
computed in memory: the lake's feature table and the model registry are left as they are (nothing is
registered, no alias moves, no champion is consulted: it may have been trained on a fold's labels).

One MLflow run in the models' experiment, tagged ``xsell.kind=backtest``, holds every fold's metrics as a
table (``backtest_folds.json``), a summary per offer (``backtest_summary.json``) and each offer's mean
ROC-AUC over the folds.

    python -m jobs.backtest --run-date 2025-11-30 [--folds 3] [--offer cross-sell:printing]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

import pandas as pd

from pyspark.sql import DataFrame, SparkSession

from jobs import features as feature_job
from jobs import train
from xsell import inputs, runtime, tracking
from xsell.config import ConfigError, Settings
from xsell.spark import Cached, session

log = logging.getLogger("xsell.backtest")

KIND_TAG = "xsell.kind"
FOLDS_TABLE = "backtest_folds.json"
SUMMARY_TABLE = "backtest_summary.json"
#: The model's metrics reported per fold; the baselines' ROC-AUC and PR-AUC beside them.
FOLD_METRICS = ("roc_auc", "pr_auc", "brier", "lift_top_decile", "capture_top_decile")


def fold_dates(run_date: dt.date, horizon_days: int, folds: int) -> list[dt.date]:
    """The run dates of the folds, newest first: R, R - H, R - 2H, ..."""
    return [run_date - dt.timedelta(days=k * horizon_days) for k in range(folds)]


def fold_row(as_of: dt.date, dates: feature_job.Cutoffs, fitted: train.Fitted, panel_customers: list[int]) -> dict:
    """One offer's outcome on the fold of run date ``as_of``; ``panel_customers`` counts the customers of
    each training cutoff's panel, in the order of ``train_cutoffs`` (a cutoff with none adds nothing to the
    training rows, and says so here)."""
    row = {"run_date": as_of, "fold_cutoff": dates.valid, "train_cutoffs": ",".join(map(str, dates.train)),
           "train_panel_customers": ",".join(map(str, panel_customers)),
           "offer_id": fitted.offer.offer_id, "train_rows": fitted.train_rows, "train_positives": fitted.positives}
    if fitted.model is None:
        return {**row, "status": "skipped: too few positives", "fold_positives": fitted.valid_positives}
    return {
        **row, "status": "fitted", "fold_rows": int(fitted.metrics["rows"]),
        "fold_positives": int(fitted.metrics["positives"]),
        **{key: fitted.metrics[key] for key in FOLD_METRICS},
        **{f"popularity_{key}": fitted.popularity_baseline[key] for key in ("roc_auc", "pr_auc")},
        **{f"rule_{key}": fitted.rule_baseline[key] for key in ("roc_auc", "pr_auc")},
        "oracle_roc_auc": fitted.oracle.get("oracle_roc_auc"),
    }


def summarize(folds: pd.DataFrame) -> pd.DataFrame:
    """Per offer over its fitted folds: how many, the model's ROC-AUC (mean, spread, worst), the
    baselines' mean ROC-AUC, and on how many folds the model beat both baselines."""
    fitted = folds[folds["status"] == "fitted"]
    if fitted.empty:
        return pd.DataFrame(columns=["offer_id", "folds", "roc_auc_mean", "roc_auc_sd", "roc_auc_min",
                                     "popularity_roc_auc_mean", "rule_roc_auc_mean", "folds_beating_both"])
    beats = fitted["roc_auc"] > fitted[["popularity_roc_auc", "rule_roc_auc"]].max(axis=1)
    return (fitted.assign(beats=beats).groupby("offer_id", sort=True)
            .agg(folds=("roc_auc", "size"), roc_auc_mean=("roc_auc", "mean"), roc_auc_sd=("roc_auc", "std"),
                 roc_auc_min=("roc_auc", "min"), popularity_roc_auc_mean=("popularity_roc_auc", "mean"),
                 rule_roc_auc_mean=("rule_roc_auc", "mean"), folds_beating_both=("beats", "sum"))
            .reset_index())


def run(spark: SparkSession, settings: Settings, run_date: dt.date, *, folds: int, run_id: str,
        only: list[str] | None = None) -> pd.DataFrame:
    """Train and judge every offer (or those in ``only``) on ``folds`` folds; returns one row per fold
    and offer, also logged to MLflow with its summary."""
    import mlflow

    if folds < 1:
        raise ValueError(f"folds must be 1 or more, not {folds}")
    experiment_id = tracking.configure(settings)
    data = inputs.load(spark, settings, run_date)
    unknown = sorted(set(only or ()) - {offer.offer_id for offer in data.offers})
    if unknown:
        raise ConfigError(f"backtest: no configured offer {', '.join(unknown)} (offers: "
                          f"{', '.join(offer.offer_id for offer in data.offers)})")
    offer_list = [offer for offer in data.offers if not only or offer.offer_id in only]
    rows = []
    with Cached() as cache:
        for frame in data.cached:
            cache(frame)
        panels: dict[dt.date, DataFrame] = {}  # the folds share cutoffs: each panel is built once
        for as_of in fold_dates(run_date, settings.model.horizon_days, folds):
            dates = feature_job.cutoffs(as_of, settings.model)
            work, feature_columns = train.training_frames(
                spark, settings, data, as_of, offer_list, cache=cache, panels=panels,
                features_at=lambda cutoff: feature_job.compute(data, cutoff))
            truth = train.truth_for(spark, settings, dates.valid)
            fitted = train.fit_offers(settings, work, feature_columns=feature_columns, truth=truth,
                                      against_champion=False)
            sizes = [panels[cutoff].count() for cutoff in dates.train]  # cached: counted again for free
            fold = [fold_row(as_of, dates, item, sizes) for item in fitted]
            rows += fold
            for row in fold:
                log.info("fold %s, %s: %s%s", row["fold_cutoff"], row["offer_id"], row["status"],
                         f", roc_auc {row['roc_auc']:.3f} (popularity {row['popularity_roc_auc']:.3f}, rule "
                         f"{row['rule_roc_auc']:.3f})" if row["status"] == "fitted" else "")
    table = pd.DataFrame(rows)
    summary = summarize(table)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"backtest {run_date}"):
        mlflow.set_tags({KIND_TAG: "backtest", "scheduler_run_id": run_id})
        tracking.log_params({
            "run_date": run_date, "folds": folds, "fold_cutoffs": ",".join(sorted({str(d) for d in table["fold_cutoff"]})),
            "offers": ",".join(offer.offer_id for offer in offer_list),
            **settings.model.model_dump(exclude={"promotion_margin", "parallel_offers", "retrain_every_days"}),
        })
        mlflow.log_table(table.astype({"run_date": str, "fold_cutoff": str}), FOLDS_TABLE)
        mlflow.log_table(summary, SUMMARY_TABLE)
        mlflow.log_metrics({f"{offer_id.replace(':', '/')}/roc_auc_mean": value
                            for offer_id, value in zip(summary["offer_id"], summary["roc_auc_mean"])})
    for item in summary.itertuples():
        log.info("%s: %d fold(s), roc_auc %.3f on average (worst %.3f), beat both baselines on %d", item.offer_id,
                 item.folds, item.roc_auc_mean, item.roc_auc_min, item.folds_beating_both)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = runtime.parser(__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3, help="run dates R, R - H, ... to train and judge (default 3)")
    parser.add_argument("--offer", action="append", help="only these offer ids (repeatable)")
    args = parser.parse_args(argv)
    if args.folds < 1:
        parser.error(f"--folds must be 1 or more, not {args.folds}")

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(session(settings, "xsell-backtest"), settings, args.run_date, folds=args.folds, run_id=args.run_id,
            only=runtime.split_list(args.offer))

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
