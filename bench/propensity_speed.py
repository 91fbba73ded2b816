"""Training time per offer as the customers grow, against scikit-learn on the same folds.

For each size: a demo world of that many customers over six months (``xsell generate``), validated into
the lake, then the real rule, feature and train jobs for the last day in one warm ``local[2]`` session.
The train job fits, calibrates, evaluates and logs every offer to MLflow; its wall time is divided by
the offers. The strongest single-machine alternative runs on exactly the same folds, collected to
pandas: scikit-learn's ``LogisticRegression`` (lbfgs, balanced class weights, standardised inputs) with
Platt scaling on the out-of-time fold, timed per offer (fit and calibration only: no MLflow, no
evaluation, so the ratio flatters the alternative).

    python bench/propensity_speed.py --customers 100000 1000000 [--out bench/results/propensity_speed.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import command  # noqa: E402
from jobs import basket_rules, features, train, validate  # noqa: E402
from xsell import generate, inputs  # noqa: E402
from xsell.model import LABEL  # noqa: E402
from xsell.features import heavy_tailed  # noqa: E402
from xsell.offers import model_features as offer_features  # noqa: E402
from xsell.config import load_settings  # noqa: E402
from xsell.runtime import configure_logging  # noqa: E402
from xsell.spark import session  # noqa: E402

START, RUN_DATE = dt.date(2025, 1, 1), dt.date(2025, 6, 30)
ARROW = "spark.sql.execution.arrow.pyspark.enabled"


def sklearn_seconds(work: list, feature_columns: list[str]) -> tuple[float, int]:
    """Median seconds per offer of scikit-learn on the same folds, and the largest training fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    seconds, largest = [], 0
    for offer, train_frame, valid_frame in work:
        # The columns and the log(1 + x) of the pipeline's model for this offer.
        columns = offer_features(offer, feature_columns)
        logged = set(heavy_tailed(columns))
        # Only the columns the model reads.
        fit_rows, check_rows = (frame.select(*columns, LABEL).toPandas() for frame in (train_frame, valid_frame))
        largest = max(largest, len(fit_rows))
        started = time.perf_counter()
        for rows in (fit_rows, check_rows):
            for name in logged:
                rows[name] = np.log1p(rows[name].clip(lower=0))
        classifier = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=50))
        classifier.fit(fit_rows[columns], fit_rows[LABEL])
        margin = classifier.decision_function(check_rows[columns]).reshape(-1, 1)
        LogisticRegression().fit(margin, check_rows[LABEL])
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds)), largest


def measure(customers: int, home: Path, *, spark_settings: dict) -> dict:
    settings = load_settings(None, overrides={"home": str(home), "spark": spark_settings})
    spec = generate.WorldSpec(customers=customers, start=START, end=RUN_DATE, seed=3)
    started = time.perf_counter()
    summary = generate.generate(settings.landing, settings.truth, spec, log=lambda _: None)
    generated = time.perf_counter() - started
    spark = session(settings, "bench-propensity")
    validate.run(spark, settings, RUN_DATE, run_id="bench", since=START)
    basket_rules.run(spark, settings, RUN_DATE, run_id="bench")
    started = time.perf_counter()
    features.run(spark, settings, RUN_DATE)
    feature_seconds = time.perf_counter() - started
    started = time.perf_counter()
    results = train.run(spark, settings, RUN_DATE, run_id="bench")
    train_seconds = time.perf_counter() - started
    data = inputs.load(spark, settings, RUN_DATE)
    work, feature_columns = train.training_frames(spark, settings, data, RUN_DATE, data.offers)
    # The folds go to pandas as Arrow columns rather than row by row (collecting is not timed, but at 1M
    # customers the training folds hold 2M rows); only here, so that the next size's jobs run as configured.
    spark.conf.set(ARROW, "true")
    try:
        alternative, largest = sklearn_seconds(work, feature_columns)
    finally:
        spark.conf.unset(ARROW)
    spark.catalog.clearCache()
    offers = len(results)
    return {"customers": customers, "order_lines": summary["order_lines"], "generate_s": generated,
            "features_s": feature_seconds, "train_s": train_seconds, "offers": offers,
            "per_offer_s": train_seconds / offers if offers else float("nan"), "largest_fold": largest,
            "sklearn_per_offer_s": alternative}


def table(rows: list[dict]) -> str:
    lines = ["| customers | order lines | features job (s) | train job, all offers (s) | offers | per offer (s) "
             "| largest training fold | scikit-learn per offer (s) | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['customers']:,} | {row['order_lines']:,} | {row['features_s']:.0f} | {row['train_s']:.0f} "
                     f"| {row['offers']} | {row['per_offer_s']:.1f} | {row['largest_fold']:,} "
                     f"| {row['sklearn_per_offer_s']:.2f} | {row['per_offer_s'] / row['sklearn_per_offer_s']:.0f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000])
    parser.add_argument("--out", type=Path)
    # The base configuration's 2 GB driver runs out of heap in the features job at 1M customers.
    parser.add_argument("--driver-memory", default=None, help="spark.driver_memory (default: the base configuration's)")
    parser.add_argument("--shuffle-partitions", type=int, default=None)
    args = parser.parse_args(argv)
    spark_settings = {key: value for key, value in (("driver_memory", args.driver_memory),
                                                    ("shuffle_partitions", args.shuffle_partitions)) if value}
    configure_logging()
    rows = []
    header = (f"Measured {dt.date.today()} on {platform.platform()}, Python {platform.python_version()}, "
              f"{os.cpu_count()} cores.\n\n    {command('bench/propensity_speed.py')}\n\n")
    for customers in args.customers:
        with tempfile.TemporaryDirectory(prefix="xsell-bench-") as folder:
            rows.append(measure(customers, Path(folder) / "var", spark_settings=spark_settings))
        print(table(rows), flush=True)
        if args.out:  # after every size: the largest can take hours
            args.out.write_text(header + table(rows))


if __name__ == "__main__":
    main()
