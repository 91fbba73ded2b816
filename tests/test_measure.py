"""Campaign measurement and monitoring pieces: uplift statistics, PSI, rule overlap, outcomes, the check."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import SparkSession

from jobs import check as check_job
from xsell import measure, offers, warehouse
from xsell.config import Settings
from xsell.runtime import CheckFailed


def test_a_clear_effect_is_significant_and_its_interval_holds_the_difference() -> None:
    result = measure.uplift(measure.Arm(2000, 200, revenue=8000.0, margin=3200.0), measure.Arm(2000, 100, revenue=4000.0,
                                                                                          margin=1600.0))
    assert result["status"] == measure.MEASURED
    assert result["uplift"] == pytest.approx(0.05)
    assert result["uplift_low"] < 0.05 < result["uplift_high"]
    # The score interval is close to the textbook Wald interval at these counts.
    wald = 1.96 * np.sqrt(0.1 * 0.9 / 2000 + 0.05 * 0.95 / 2000)
    assert result["uplift_low"] == pytest.approx(0.05 - wald, abs=0.003)
    assert result["uplift_high"] == pytest.approx(0.05 + wald, abs=0.003)
    assert result["significant"] and result["p_value"] < 1e-6
    assert result["relative_uplift"] == pytest.approx(1.0)
    assert result["relative_uplift_low"] < 1.0 < result["relative_uplift_high"]
    assert result["incremental_conversions"] == pytest.approx(100.0)
    assert result["incremental_revenue"] == pytest.approx(4000.0)
    assert result["incremental_margin"] == pytest.approx(1600.0)


def test_no_effect_is_not_significant_and_the_interval_holds_zero() -> None:
    result = measure.uplift(measure.Arm(1500, 60), measure.Arm(1500, 58))
    assert not result["significant"] and result["p_value"] > 0.5
    assert result["uplift_low"] < 0 < result["uplift_high"]


def test_too_small_a_control_cell_is_reported_as_inconclusive_not_as_a_number() -> None:
    result = measure.uplift(measure.Arm(900, 90), measure.Arm(40, 1), min_control=100)
    assert result["status"].startswith("inconclusive") and "40 control" in result["status"]
    assert all(result[key] is None for key in ("uplift", "uplift_low", "uplift_high", "p_value", "significant",
                                               "incremental_revenue"))


def test_no_adopter_in_the_control_cell_leaves_the_relative_uplift_empty() -> None:
    result = measure.uplift(measure.Arm(500, 12), measure.Arm(500, 0))
    assert result["status"] == measure.MEASURED and result["uplift"] == pytest.approx(0.024)
    assert result["relative_uplift"] is None and result["uplift_low"] > 0


def test_nominal_coverage_of_the_uplift_interval_on_binomial_draws() -> None:
    """The interval's own coverage at campaign-like sizes and rates (2,000 draws, so ±1 point)."""
    rng = np.random.default_rng(3)
    covered, draws = 0, 2000
    for _ in range(draws):
        treated, control = rng.binomial(800, 0.07), rng.binomial(200, 0.04)
        result = measure.uplift(measure.Arm(800, int(treated)), measure.Arm(200, int(control)))
        covered += result["uplift_low"] <= 0.03 <= result["uplift_high"]
    assert 0.93 <= covered / draws <= 0.97


def test_psi_is_zero_for_the_same_population_and_large_for_a_shifted_one(spark: SparkSession) -> None:
    rng = np.random.default_rng(1)
    reference = spark.createDataFrame([(float(v),) for v in rng.poisson(2.0, 4000)], ["orders"])
    same = spark.createDataFrame([(float(v),) for v in rng.poisson(2.0, 4000)], ["orders"])
    shifted = spark.createDataFrame([(float(v),) for v in rng.poisson(4.0, 4000)], ["orders"])
    values = {name: measure.feature_psi(reference, frame, ["orders"], bins=10)["orders"]
              for name, frame in (("same", same), ("shifted", shifted))}
    assert values["same"] < 0.02
    assert values["shifted"] > 0.5
    splits = measure.edges(reference, "orders", bins=10)
    assert splits[0] == -np.inf and splits[-1] == np.inf and splits == sorted(set(splits))
    assert sum(measure.histogram(reference, "orders", splits)) == 4000


def test_edges_and_histogram_on_the_driver_bin_as_sparks_bucketizer(spark: SparkSession) -> None:
    """Scores judged on the driver at training and in Spark at scoring fall in the same bins: values on
    the edges, ties, infinities and NaN included."""
    rng = np.random.default_rng(2)
    values = np.r_[rng.integers(0, 7, 500) / 6.0, [np.inf, -np.inf, np.nan, 0.5, 1.0]]
    splits = measure.edges_of(values[np.isfinite(values)], bins=10)
    assert splits[0] == -np.inf and splits[-1] == np.inf and splits == sorted(set(splits))
    assert set(splits[1:-1]) <= set(values), "each cut is one of the values"
    frame = spark.createDataFrame([(float(v),) for v in values], ["score"])
    assert measure.histogram_of(values, splits) == measure.histogram(frame, "score", splits)
    assert measure.histogram_of(values, splits)[-1] == 1, "NaN in its own bin"
    below = sum(1 for v in values if v < splits[3])
    assert sum(measure.histogram_of(values, splits)[:3]) == below


def test_psi_matches_its_formula() -> None:
    assert measure.psi([50, 50], [50, 50]) == 0.0
    assert measure.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * np.log(0.5) * -1 + 0.25 * np.log(1.5))


def test_psi_of_small_samples_of_one_population_is_the_predicted_noise() -> None:
    """Samples of one distribution, 10 equal bins: the mean PSI over many draws is what psi_noise says
    (an asymptotic figure: empty bins push it higher at 40 rows a side), and at 40 rows it is above the
    0.25 breach; so small populations are not judged."""
    rng = np.random.default_rng(5)

    def mean_psi(rows: int) -> float:
        return float(np.mean([measure.psi(rng.multinomial(rows, [0.1] * 10), rng.multinomial(rows, [0.1] * 10))
                              for _ in range(3000)]))

    for rows in (200, 400):
        assert mean_psi(rows) == pytest.approx(measure.psi_noise(10, rows, rows), rel=0.1)
    assert mean_psi(40) > measure.psi_noise(10, 40, 40) > 0.25 > measure.psi_noise(10, 400, 400)
    assert not measure.psi_judged(36, 46, min_rows=200) and measure.psi_judged(200, 900, min_rows=200)


def test_rule_overlap_counts_the_previous_top_rules_still_on_top(spark: SparkSession) -> None:
    rows = [("product", ["P1"], "P2", 5.0, 0.1), ("product", ["P3"], "P4", 4.0, 0.1), ("product", ["P5"], "P6", 3.0, 0.1),
            ("category", ["bikes"], "bike_care", 9.0, 0.2)]
    frame = spark.createDataFrame(rows, "level string, antecedent array<string>, consequent string, lift double, support double")
    top = measure.top_rules(frame, top=2)
    assert top == {("[P1]", "P2"), ("[P3]", "P4")}
    assert measure.overlap(top, measure.top_rules(frame.filter("consequent != 'P2'"), top=2)) == 0.5
    assert measure.overlap(set(), top) == 1.0


def test_outcomes_count_first_adoptions_of_the_target_in_the_window_only(spark: SparkSession) -> None:
    start, end = dt.date(2025, 7, 1), dt.date(2025, 7, 31)
    audience = spark.createDataFrame([
        ("cross-sell:printing", "C1", "treatment", 0.2, 1), ("cross-sell:printing", "C2", "control", 0.1, 2),
        ("up-sell:laptop", "C3", "treatment", 0.3, 1), ("up-sell:laptop", "C4", "treatment", 0.3, 1),
    ], "offer_id string, customer_id string, cell string, score double, decile int")
    products = spark.createDataFrame([
        ("P1", "printing", None, None, 0.5), ("P2", "computers", "laptop", 1, 0.1), ("P3", "computers", "laptop", 2, 0.2),
    ], "product_id string, category string, family string, tier int, margin_rate double")
    features = spark.createDataFrame([("C1", 0), ("C2", 0), ("C3", 1), ("C4", 2)], "customer_id string, tier__laptop int")
    lines = spark.createDataFrame([
        ("C1", "P1", "2025-07-03 10:00:00", 2, 10.0, "completed"),   # adopts printing
        ("C2", "P1", "2025-08-03 10:00:00", 1, 10.0, "completed"),   # after the window
        ("C3", "P3", "2025-07-10 10:00:00", 1, 900.0, "completed"),  # tier 2 over tier 1: an up-sell
        ("C4", "P3", "2025-07-10 10:00:00", 1, 900.0, "completed"),  # owns tier 2 already: a repurchase
        ("C1", "P2", "2025-07-03 10:00:00", 1, 500.0, "cancelled"),
    ], "customer_id string, product_id string, order_ts string, quantity int, unit_price double, status string"
    ).selectExpr("*", "cast(order_ts as timestamp) as ts").drop("order_ts").withColumnRenamed("ts", "order_ts")
    chosen = [offers.Offer("cross-sell:printing", "cross-sell", "printing"), offers.Offer("up-sell:laptop", "up-sell", "laptop")]
    result = {row["customer_id"]: row for row in
              measure.outcomes(audience, lines, products, features, chosen, start=start, end=end).collect()}
    assert {c: result[c]["converted"] for c in result} == {"C1": 1, "C2": 0, "C3": 1, "C4": 0}
    assert result["C1"]["revenue"] == 20.0 and result["C1"]["margin"] == pytest.approx(10.0)
    assert result["C3"]["revenue"] == 900.0


def test_the_check_fails_on_a_breach_and_names_it(settings: Settings) -> None:
    target = warehouse.open_warehouse(settings)
    day = dt.date(2025, 7, 31)
    row = {"run_date": day, "source": "measure", "check_name": "psi_feature", "offer_id": "*", "subject": "orders_30d",
           "value": 0.1, "expected": 0.0, "threshold": 0.25, "breach": False, "detail": "stable", "run_id": "r1"}
    target.replace_rows(warehouse.MONITORING, [row], where={"run_date": day, "source": "measure"})
    assert check_job.run(settings, day) == 1
    target.replace_rows(warehouse.MONITORING, [{**row, "value": 0.9, "breach": True, "detail": "shifted"}],
                        where={"run_date": day, "source": "measure"})
    with pytest.raises(CheckFailed, match="psi_feature \\* orders_30d: 0.9 .*shifted"):
        check_job.run(settings, day)
    # Replacing a source's rows leaves the other sources' rows alone, and refuses rows outside its scope.
    target.replace_rows(warehouse.MONITORING, [{**row, "source": "score_publish"}],
                        where={"run_date": day, "source": "score_publish"})
    assert len(target.query("SELECT * FROM main.monitoring WHERE run_date = ?", [day])) == 2
    with pytest.raises(ValueError, match="do not match"):
        target.replace_rows(warehouse.MONITORING, [row], where={"run_date": day, "source": "score_publish"})
