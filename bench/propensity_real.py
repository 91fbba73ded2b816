"""Propensity models against the popularity and rule baselines, out of time, on real data (issue 5).

For each dataset, in a fresh home under ``--workdir`` (default: a new folder under the system temp
folder, never the repository), the pipeline runs as in production, in one ``local[2]`` session:

1. ``xsell import`` (``xsell.importers.import_source``) maps the public dataset onto the landing contract;
2. ``jobs.validate.run`` validates the whole history as one backfill (``since`` = the first landed day);
3. ``jobs.features.run`` writes the point-in-time features of every cutoff of the run date;
4. ``jobs.train.run`` fits one model per offer on the stacked training cutoffs, checks it on the
   out-of-time fold and logs it, with both baselines on the same fold, to MLflow.

The table reads every offer's run back from MLflow: the fold's eligible customers (``rows``) and
adopters (``positives``), the model's ``roc_auc``, ``pr_auc`` and ``lift_top_decile``, and the same for
``popularity_baseline_*`` (the training fold's adoption rate among customers with the same main category)
and ``rule_baseline_*`` (the rule feature ``rule_lift`` alone). Offers the train job skipped (too few
adopters in training or out of time) are listed with its reason and counts.

**Intervals.** The out-of-time fold is rebuilt with ``jobs.train.training_frames`` (its content digest
must equal the run's ``valid_digest``), scored by the registered model version and by both baselines,
and collected. The ROC-AUC differences (model minus baseline) get a 95% paired, stratified bootstrap
interval: adopters and non-adopters are resampled with replacement within their class (the fold's class
sizes stay fixed, so no resample lacks adopters), every scorer is judged on the same resample, with
exact (midrank) AUCs. Spark's evaluator, which gives the logged AUCs, down-samples the curve to 1,000
bins: the notes give the largest gap between the two.

**Datasets and run dates.** With H = 30 days and E the day after the run date, training uses features
as of E - 60, E - 90 and E - 120 (labels over the 30 days after each) and the out-of-time fold features
as of E - 30 with labels over [E - 30, E).

- ``online-retail``: ``$XSELL_SHARED_DATA/online_retail/by-day`` with ``conf/online_retail.yaml``, run
  date 2011-09-30. The shared copy ends on 2011-09-30 (the full UCI set runs to 2011-12-09), so this is
  the latest run date whose out-of-time labels are all observed: fold as of 2011-09-01 (September's
  adoptions), training cutoffs 2011-08-02, 2011-07-03 and 2011-06-03.
- ``instacart``: ``$XSELL_SHARED_DATA/instacart_sample`` (the user histories) with
  ``conf/instacart.yaml``, run date 2017-06-30, fixed before any result was seen. The sample is one
  cohort (every first order in the first week of 2017) whose histories stop one by one (Instacart held
  each user's next order out), so users who still order thin out: 475 of 593 order in June, 346 in
  August, 91 in December. The run date keeps 80% of the users active in the out-of-time window while
  the first training cutoff (2017-03-03) still has two months of history.

    python bench/propensity_real.py --datasets online-retail instacart --out bench/results/propensity_real.md

Options: ``--shared-data`` (default ``$XSELL_SHARED_DATA``), ``--online-retail-run-date``,
``--instacart-run-date``, ``--rule-support`` (``rules.min_support`` for every dataset instead of its
configuration's), ``--resamples 2000``, ``--seed 1``, ``--workdir``, ``--keep`` (keep the homes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import command  # noqa: E402
from jobs import features as feature_job  # noqa: E402
from jobs import train, validate  # noqa: E402
from xsell import importers, inputs, model, schemas, validation  # noqa: E402
from xsell.config import Settings, load_settings  # noqa: E402
from xsell.runtime import configure_logging  # noqa: E402
from xsell.spark import session  # noqa: E402

RUN_ID = "bench"
CONFIDENCE = 0.95
#: Ranking metrics in the table, as logged: the model's name, and the baselines' with their prefix.
SCORERS = {"model": "", "popularity": "popularity_baseline_", "rule": "rule_baseline_"}
METRICS = ("roc_auc", "pr_auc", "lift_top_decile")


@dataclass(frozen=True)
class Dataset:
    label: str
    fmt: str
    source: str  # below the shared data folder
    env: str  # the conf/ overlay
    run_date: dt.date


DATASETS = {
    "online-retail": Dataset("Online Retail", importers.ONLINE_RETAIL, "online_retail/by-day", "online_retail",
                             dt.date(2011, 9, 30)),
    "instacart": Dataset("Instacart user histories", importers.INSTACART, "instacart_sample", "instacart",
                         dt.date(2017, 6, 30)),
}


@dataclass
class Outcome:
    """One dataset's offers: the logged metrics of the trained ones, the skipped ones, and the timings."""

    dataset: Dataset
    run_date: dt.date
    trained: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- the bootstrap -----------------------------------------------------------------------------------
def auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Exact ROC-AUC (Mann-Whitney with midranks for ties) of each row of ``scores`` (2-D) against the
    matching row of ``labels`` (0/1)."""
    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    return ((ranks * labels).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def paired_intervals(labels: np.ndarray, scores: dict[str, np.ndarray], *, resamples: int, seed: int,
                     chunk: int = 200) -> tuple[dict[str, float], dict[str, tuple[float, float, float]]]:
    """Every scorer's exact AUC; and per baseline, the model's AUC minus the baseline's with its 95%
    stratified paired bootstrap interval (adopters and non-adopters resampled within their class, every
    scorer judged on the same draw)."""
    rng = np.random.default_rng(seed)
    adopters, others = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    full = {name: float(auc(labels[None, :], values[None, :])[0]) for name, values in scores.items()}
    draws = {name: [] for name in scores}
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        rows = np.concatenate([rng.choice(adopters, size=(size, len(adopters))),
                               rng.choice(others, size=(size, len(others)))], axis=1)
        for name, values in scores.items():
            draws[name].append(auc(labels[rows], values[rows]))
    draws = {name: np.concatenate(parts) for name, parts in draws.items()}
    tail = (1 - CONFIDENCE) / 2
    return full, {name: (full["model"] - full[name], *np.quantile(draws["model"] - draws[name], [tail, 1 - tail]))
                  for name in scores if name != "model"}


def fold_scores(spark, settings: Settings, run_date: dt.date, trained: list[dict]) -> dict[str, dict]:
    """Per trained offer: the out-of-time fold's labels and the three scorers' scores (numpy), rebuilt as
    the train job built them and scored by the version it registered."""
    import mlflow.spark

    data = inputs.load(spark, settings, run_date)
    wanted = {row["offer_id"] for row in trained}
    work, feature_columns = train.training_frames(spark, settings, data, run_date,
                                                  [offer for offer in data.offers if offer.offer_id in wanted])
    logged = {row["offer_id"]: row for row in trained}
    shares = [name for name in feature_columns if name.startswith("share__")]
    folds = {}
    for offer, train_frame, valid in work:
        row = logged[offer.offer_id]
        rebuilt = train.digest(valid)
        if rebuilt != row["valid_digest"]:
            raise RuntimeError(f"{offer.offer_id}: the rebuilt fold {rebuilt} is not the logged one "
                               f"{row['valid_digest']}")
        fitted = mlflow.spark.load_model(f"models:/{offer.model_name}/{row['version']}")
        scored = model.score(fitted, valid).select("customer_id", model.LABEL, model.SCORE,
                                                   F.col("rule_lift").alias("rule"))
        # The classifier's own probability beside the calibrated score: a Platt slope bounded at zero
        # turns a ranking that the fold reverses into a constant (AUC 0.5); this shows what it hid.
        classifier = fitted.transform(valid).select("customer_id",
                                                    vector_to_array("probability")[1].alias("classifier"))
        popularity = model.popularity_baseline(train_frame, valid, share_columns=shares).select(
            "customer_id", F.col(model.SCORE).alias("popularity"))
        frame = (scored.join(popularity, on="customer_id", how="inner").join(classifier, on="customer_id", how="inner")
                 .toPandas().sort_values("customer_id"))
        folds[offer.offer_id] = {"labels": frame[model.LABEL].to_numpy(dtype=float),
                                 "classifier": frame["classifier"].to_numpy(dtype=float),
                                 "scores": {"model": frame[model.SCORE].to_numpy(dtype=float),
                                            "popularity": frame["popularity"].to_numpy(dtype=float),
                                            "rule": frame["rule"].to_numpy(dtype=float)}}
        train_frame.unpersist()
        valid.unpersist()
    spark.catalog.clearCache()
    return folds


# --- one dataset -------------------------------------------------------------------------------------
def logged_runs(settings: Settings, run_date: dt.date) -> dict[str, dict]:
    """Per offer: the metrics and parameters of the train job's MLflow run for ``run_date``."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    found = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        params = run.data.params
        if params.get("run_date") == run_date.isoformat() and params.get("scheduler_run_id") == RUN_ID:
            found[params["offer_id"]] = {**run.data.metrics, "valid_digest": params["valid_digest"],
                                         "mlflow_run_id": run.info.run_id}
    return found


def measure(spark, dataset: Dataset, *, source: Path, home: Path, run_date: dt.date, resamples: int,
            seed: int, rule_support: float | None = None) -> Outcome:
    overrides = {"home": str(home)} | ({"rules": {"min_support": rule_support}} if rule_support else {})
    settings = load_settings(dataset.env, overrides=overrides)
    outcome = Outcome(dataset, run_date)
    started = time.perf_counter()
    report = importers.import_source(dataset.fmt, source, settings.landing)
    outcome.seconds["import"] = time.perf_counter() - started
    first = validation.landing_dates(settings.landing, schemas.ORDER_LINES)[0]
    outcome.notes.append(f"{dataset.label}: {report.rows_read:,} source rows imported; history validated from "
                         f"{first} to {run_date}")

    started = time.perf_counter()
    summaries = validate.run(spark, settings, run_date, run_id=RUN_ID, since=first)
    outcome.seconds["validate"] = time.perf_counter() - started
    orders = [day for day in summaries if day.table_name == schemas.ORDER_LINES]
    outcome.notes.append(
        f"{dataset.label}: {len(orders)} order days, {sum(d.rows_in for d in orders):,} lines in, "
        f"{sum(d.rows_valid for d in orders):,} valid ({sum(d.rows_guest for d in orders):,} guest), "
        f"{sum(d.rows_quarantined for d in orders):,} quarantined, {sum(d.rows_excluded for d in orders):,} excluded")

    started = time.perf_counter()
    feature_job.run(spark, settings, run_date)
    outcome.seconds["features"] = time.perf_counter() - started
    cutoffs = feature_job.cutoffs(run_date, settings.model)
    outcome.notes.append(f"{dataset.label}: rules (the rule feature and baseline) mined at min support "
                         f"{settings.rules.min_support:g}, min confidence {settings.rules.min_confidence:g}")
    outcome.notes.append(f"{dataset.label}: run date {run_date}; training cutoffs "
                         f"{', '.join(str(c) for c in sorted(cutoffs.train))}, out-of-time fold as of {cutoffs.valid} "
                         f"(labels {cutoffs.valid}..{cutoffs.score - dt.timedelta(days=1)})")

    started = time.perf_counter()
    results = train.run(spark, settings, run_date, run_id=RUN_ID)
    outcome.seconds["train"] = time.perf_counter() - started
    runs = logged_runs(settings, run_date)
    for result in results:
        if "version" in result:
            outcome.trained.append({**runs[result["offer_id"]], "offer_id": result["offer_id"],
                                    "version": result["version"]})
        else:
            outcome.skipped.append(result)
    outcome.trained.sort(key=lambda row: row["offer_id"])
    outcome.skipped.sort(key=lambda row: row["offer_id"])

    started = time.perf_counter()
    folds = fold_scores(spark, settings, run_date, outcome.trained)
    gaps = []
    for row in outcome.trained:
        fold = folds[row["offer_id"]]
        row["with_rule"] = int((fold["scores"]["rule"] > 0).sum())
        exact, row["intervals"] = paired_intervals(fold["labels"], fold["scores"], resamples=resamples, seed=seed)
        gaps += [abs(exact[name] - row[f"{prefix}roc_auc"]) for name, prefix in SCORERS.items()]
        classifier = float(auc(fold["labels"][None, :], fold["classifier"][None, :])[0])
        if abs(classifier - exact["model"]) > 0.001:
            outcome.notes.append(f"{dataset.label}, {row['offer_id']}: the classifier alone (before calibration) has "
                                 f"ROC-AUC {classifier:.3f} on the fold, the calibrated model {exact['model']:.3f}")
    outcome.seconds["intervals"] = time.perf_counter() - started
    if gaps:
        outcome.notes.append(f"{dataset.label}: every rebuilt fold has the logged digest; exact AUCs within "
                             f"{max(gaps):.4f} of the logged (binned) ones")
    return outcome


# --- the report --------------------------------------------------------------------------------------
def _difference(interval: tuple[float, float, float]) -> str:
    point, low, high = interval
    return f"{point:+.3f} [{low:+.3f}, {high:+.3f}]"


def verdict(row: dict) -> str:
    """Whether the model's logged ROC-AUC beats both baselines', and whether both intervals exclude 0."""
    beats = all(row["roc_auc"] > row[f"{prefix}roc_auc"] for prefix in list(SCORERS.values())[1:])
    if not beats:
        return "no"
    clear = all(row["intervals"][name][1] > 0 for name in ("popularity", "rule"))
    return "**yes**" if clear else "yes (interval spans 0)"


def table(outcomes: list[Outcome]) -> list[str]:
    lines = ["| dataset | offer | eligible | adopters | with a rule | model ROC-AUC | model PR-AUC | model lift@10% "
             "| popularity ROC-AUC | popularity PR-AUC | popularity lift@10% | rule ROC-AUC | rule PR-AUC "
             "| rule lift@10% | model - popularity AUC [95%] | model - rule AUC [95%] | beats both |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for outcome in outcomes:
        for row in outcome.trained:
            cells = [f"{row[prefix + metric]:.3f}" if metric != "lift_top_decile" else f"{row[prefix + metric]:.2f}"
                     for prefix in SCORERS.values() for metric in METRICS]
            lines.append(f"| {outcome.dataset.label} | {row['offer_id']} | {int(row['rows']):,} | "
                         f"{int(row['positives']):,} | {row['with_rule']:,} | " + " | ".join(cells) + f" | "
                         f"{_difference(row['intervals']['popularity'])} | {_difference(row['intervals']['rule'])} | "
                         f"{verdict(row)} |")
    return lines


def skipped_table(outcomes: list[Outcome]) -> list[str]:
    rows = [(outcome.dataset.label, item) for outcome in outcomes for item in outcome.skipped]
    if not rows:
        return []
    lines = ["| dataset | offer | adopters in training | adopters out of time | reason |", "|---|---|---:|---:|---|"]
    for label, item in rows:
        lines.append(f"| {label} | {item['offer_id']} | {item.get('train_positives', '')} | "
                     f"{item.get('valid_positives', '')} | {item['status']} |")
    return lines


def summary(outcome: Outcome) -> str:
    wins = sum(verdict(row) != "no" for row in outcome.trained)
    clear = sum(verdict(row) == "**yes**" for row in outcome.trained)
    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in outcome.seconds.items())
    return (f"{outcome.dataset.label}: the model's ROC-AUC beats both baselines on {wins} of {len(outcome.trained)} "
            f"trained offers, with both intervals above 0 on {clear}; {len(outcome.skipped)} offers skipped; {steps} "
            f"({sum(outcome.seconds.values()) / 60:.1f} min)")


def header() -> str:
    from importlib.metadata import version

    run = command("bench/propensity_real.py")
    return (f"{dt.date.today().isoformat()}, {os.cpu_count()} cores ({platform.machine()}, Python "
            f"{platform.python_version()}, PySpark {version('pyspark')}, MLflow {version('mlflow')}), code "
            f"{code_version()}; `{run}`")


def code_version() -> str:
    """The commit the pipeline ran from, flagged when tracked files differ from it."""
    def git(*arguments: str) -> str:
        found = subprocess.run(["git", *arguments], capture_output=True, text=True, cwd=REPO, check=False)
        return found.stdout.strip() if found.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} with local changes" if git("status", "--porcelain", "--untracked-files=no") else commit


PROTOCOL = (
    "Per dataset, in a fresh home: `xsell import`, `jobs.validate` over the whole history, `jobs.features` and "
    "`jobs.train` for the run date (`local[2]`, 2 GB driver). Out-of-time fold: features as of E - 30 (E = run "
    "date + 1), labels = first purchase of the offer's category in [E - 30, E), eligible = never bought it; "
    "training on the cutoffs E - 60, E - 90, E - 120. Metrics as the train job logged them to MLflow: "
    "**popularity** = the training fold's adoption rate among customers with the same main category, **rule** = "
    "`rule_lift` alone (the strongest rule from the customer's history to the target, mined before the cutoff). "
    "*with a rule*: eligible customers with `rule_lift` > 0 (the others all score 0 on the rule baseline). "
    "lift@10% = adoption rate of the top decile over the fold's (ties ordered by customer id: for a constant "
    "score it is an accident of the ids). AUC differences: exact AUCs on the same fold, "
    "95% paired bootstrap interval (adopters and non-adopters resampled within class). *beats both*: the logged "
    "model ROC-AUC is above both baselines'; bold when both intervals exclude 0. See the docstring of "
    "bench/propensity_real.py."
)


# --- main --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, default=os.environ.get("XSELL_SHARED_DATA"),
                        help="the shared data folder (default: $XSELL_SHARED_DATA)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--online-retail-run-date", type=dt.date.fromisoformat,
                        default=DATASETS["online-retail"].run_date)
    parser.add_argument("--instacart-run-date", type=dt.date.fromisoformat, default=DATASETS["instacart"].run_date)
    parser.add_argument("--rule-support", type=float, default=None,
                        help="rules.min_support for every dataset (default: each dataset's configuration)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="the homes go in a new folder below this one (default: the system temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the homes (landing, lake, MLflow) afterwards")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the report here (bench/results/propensity_real.md)")
    args = parser.parse_args(argv)
    if args.shared_data is None:
        parser.error("--shared-data or XSELL_SHARED_DATA is required")
    return args


def main() -> None:
    args = parse_args()
    configure_logging()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="xsell-bench-propensity-", dir=args.workdir))
    run_dates = {"online-retail": args.online_retail_run_date, "instacart": args.instacart_run_date}
    outcomes = []
    spark = None
    try:
        for name in args.datasets:
            dataset = DATASETS[name]
            home = folder / name
            if spark is None:
                # One session for every dataset: the homes differ, the Spark settings do not.
                settings = load_settings(dataset.env, overrides={"home": str(home)})
                spark = session(settings, "xsell-bench-propensity-real")
            outcome = measure(spark, dataset, source=args.shared_data / dataset.source, home=home,
                              run_date=run_dates[name], resamples=args.resamples, seed=args.seed,
                              rule_support=args.rule_support)
            spark.catalog.clearCache()
            outcomes.append(outcome)
            print(summary(outcome), flush=True)
    finally:
        if spark is not None:
            spark.stop()
        if args.keep:
            print(f"homes kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    notes = [note for outcome in outcomes for note in outcome.notes] + [summary(outcome) for outcome in outcomes]
    skipped = skipped_table(outcomes)
    lines = [header(), "", PROTOCOL, "", *table(outcomes), ""]
    if skipped:
        lines += ["Offers not trained (the train job's reason; `model.min_positive_labels` = 5):", "", *skipped, ""]
    lines += [f"- {note}" for note in notes]
    print("\n" + "\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
