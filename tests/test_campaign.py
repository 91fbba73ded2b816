"""The measurement recovers the uplift planted in the demo world, across seeds.

Each seed: a small world up to the campaign date D, an audience of eligible customers (30% in control),
the world continued past the horizon with the generator's planted uplift, then xsell's own measurement
(:func:`xsell.measure.outcomes` and :func:`xsell.measure.campaign_results`, on Spark, from the order lines
and features as the pipeline builds them) against the planted truth (``planted.csv``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xsell import features, generate, measure, offers

CAMPAIGN, HORIZON = dt.date(2025, 5, 31), 30
SEEDS = (1, 2, 3, 4)
UPLIFT = {"cross-sell:office": 0.10, "cross-sell:printing": 0.06, "cross-sell:home": 0.0, "up-sell:bike": 0.08}
CONTROL_SHARE = 0.3
MIN_CONTROL = 30


def _latest(spark: SparkSession, folder: Path) -> DataFrame:
    frame = spark.read.parquet(str(folder))
    return frame.filter(F.col("date") == frame.agg(F.max("date")).first()[0]).drop("date")


def _campaign(spark: SparkSession, root: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(xsell's campaign results, the planted truth) of one seed's world."""
    spec = generate.WorldSpec(customers=1500, start=dt.date(2025, 1, 1), end=CAMPAIGN, seed=seed, dirty_share=0.0,
                              fmt="parquet")
    landing, truth = root / "landing", root / "truth"
    generate.generate(landing, truth, spec, log=lambda _: None)
    scores = generate.true_propensity(truth, spec, cutoff=CAMPAIGN, horizon_days=HORIZON)
    rows = scores.loc[scores.eligible & scores.offer_id.isin(list(UPLIFT)), ["customer_id", "offer_id"]]
    cells = np.where(np.random.default_rng(seed).random(len(rows)) < CONTROL_SHARE, "control", "treatment")
    audience = rows.assign(cell=cells).reset_index(drop=True)
    campaign = generate.Campaign(CAMPAIGN, audience, UPLIFT, HORIZON)
    generate.generate(landing, truth, spec.continued(CAMPAIGN + dt.timedelta(days=HORIZON)), campaigns=[campaign],
                      log=lambda _: None)

    lines = spark.read.parquet(str(landing / "order_lines")).drop("date")
    products, customers = _latest(spark, landing / "products"), _latest(spark, landing / "customers")
    chosen = [offers.Offer(offer_id, *offer_id.split(":")) for offer_id in UPLIFT]
    start = CAMPAIGN + dt.timedelta(days=1)
    categories, families = offers.catalogue_levels(products)
    scored_on = features.customer_features(lines, products, customers, cutoff=start, categories=categories,
                                           families=families)
    published = spark.createDataFrame(audience.assign(score=0.0, decile=1))
    outcome = measure.outcomes(published, lines, products, scored_on, chosen, start=start,
                               end=start + dt.timedelta(days=HORIZON))
    results = measure.campaign_results(outcome, {o.offer_id: o.offer_type for o in chosen}, confidence=0.95,
                                       min_control=MIN_CONTROL)
    planted = pd.read_csv(truth / "campaigns" / f"run_date={CAMPAIGN}" / "planted.csv")
    return pd.DataFrame(results), planted


@pytest.fixture(scope="module")
def measured(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    frames = []
    for seed in SEEDS:
        results, planted = _campaign(spark, tmp_path_factory.mktemp(f"seed{seed}"), seed)
        frames.append(results.merge(planted, on="offer_id", suffixes=("", "_planted")).assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def test_cells_are_counted_as_the_generator_planted_them(measured: pd.DataFrame) -> None:
    assert (measured.treated == measured.treated_planted).all()
    assert (measured.control == measured.control_planted).all()
    assert set(measured.offer_id) == set(UPLIFT) and len(measured) == len(UPLIFT) * len(SEEDS)


def test_the_intervals_cover_the_planted_uplift_about_95_percent_of_the_time(measured: pd.DataFrame) -> None:
    judged = measured[measured.status == measure.MEASURED]
    assert len(judged) >= 14, "most offers must have enough control customers, or this test proves little"
    covered = (judged.uplift_low <= judged.expected_absolute_uplift) & (judged.expected_absolute_uplift <= judged.uplift_high)
    # 16 intervals at 95%: 13 or fewer covered has a probability under 1%.
    assert covered.sum() >= len(judged) - 2, judged[~covered][["seed", "offer_id", "uplift", "uplift_low", "uplift_high",
                                                               "expected_absolute_uplift"]]


def test_an_offer_planted_at_zero_is_not_reported_as_significant(measured: pd.DataFrame) -> None:
    zero = measured[measured.offer_id == "cross-sell:home"]
    assert (zero.expected_absolute_uplift == 0).all()
    # A 5% test: a false positive in one seed of four can happen (about one time in five); two cannot, really.
    assert zero.significant.fillna(False).sum() <= 1


def test_a_large_planted_uplift_is_found_significant_every_time(measured: pd.DataFrame) -> None:
    office = measured[measured.offer_id == "cross-sell:office"]
    assert office.significant.all() and (office.uplift > 0.04).all()


@pytest.mark.parametrize("rate", [1.0, 2.5], ids=["no drift", "planted drift"])
def test_a_planted_drift_fails_the_check_task(spark: SparkSession, settings, tmp_path: Path, rate: float) -> None:
    """The generator multiplies every visit rate from a date on; the measure job's feature PSI (features of
    the out-of-time fold's cutoff against the scoring cutoff's) breaches, and the check task fails on it."""
    from jobs import check, measure as measure_job
    from jobs import features as feature_job
    from xsell import lake
    from xsell.runtime import CheckFailed

    run_date = dt.date(2025, 5, 31)
    dates = feature_job.cutoffs(run_date, settings.model)
    drift = generate.Drift(start=dates.valid + dt.timedelta(days=3), rate_factor=rate) if rate != 1.0 else None
    spec = generate.WorldSpec(customers=1500, start=dt.date(2025, 1, 1), end=run_date, seed=9, dirty_share=0.0,
                              fmt="parquet")
    generate.generate(tmp_path / "landing", tmp_path / "truth", spec, drift=drift, log=lambda _: None)
    lines = spark.read.parquet(str(tmp_path / "landing" / "order_lines")).drop("date")
    products, customers = _latest(spark, tmp_path / "landing" / "products"), _latest(spark, tmp_path / "landing" / "customers")
    categories, families = offers.catalogue_levels(products)
    frames = [features.customer_features(lines, products, customers, cutoff=cutoff, categories=categories,
                                         families=families) for cutoff in (dates.valid, dates.score)]
    lake.write_partitions(frames[0].unionByName(frames[1]), settings.lake, lake.FEATURES, partition_by=("cutoff",))

    rows = measure_job.drift_checks(spark, settings, run_date)
    psi = {row["subject"]: row["value"] for row in rows if row["check_name"] == "psi_feature"}
    assert set(psi) == set(settings.monitoring.features)
    target = measure_job.warehouse.open_warehouse(settings)
    target.replace_rows(measure_job.warehouse.MONITORING, [{**row, "run_date": run_date, "run_id": "t"} for row in rows],
                        where={"run_date": run_date, "source": measure_job.SOURCE})
    if drift is None:
        assert max(psi.values()) < settings.monitoring.max_psi, psi
        assert check.run(settings, run_date) == len(rows)
    else:
        assert psi["orders_30d"] > settings.monitoring.max_psi, psi
        with pytest.raises(CheckFailed, match="psi_feature \\* orders_30d"):
            check.run(settings, run_date)
