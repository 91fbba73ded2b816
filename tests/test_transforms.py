"""Pure transforms on tiny inline frames: baskets, rules, features, offers, audience."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from xsell import audience, baskets, features, offers, schemas

D = dt.date(2025, 3, 1)
T = dt.datetime(2025, 3, 1, 10)


def lines(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """Order lines from (order, customer, days after D, product, quantity, status) tuples."""
    full = [(o, 1 + i, c, T + dt.timedelta(days=d), p, q, 10.0, "GBP", "web", s)
            for i, (o, c, d, p, q, s) in enumerate(rows)]
    return spark.createDataFrame(full, schemas.ORDER_LINES_DDL)


def products(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([
        ("P1", "City bike", "bikes", "bike", 1, 400.0, 0.2, True),
        ("P2", "Trail bike", "bikes", "bike", 2, 800.0, 0.25, True),
        ("P3", "Maintenance kit", "bike_care", None, None, 30.0, 0.4, True),
        ("P4", "Ink", "printing", None, None, 20.0, 0.5, True),
    ], schemas.PRODUCTS_DDL)


def customers(spark: SparkSession, consent: dict[str, bool] | None = None) -> DataFrame:
    consent = consent or {}
    return spark.createDataFrame(
        [(c, dt.date(2024, 1, 1), "north", consent.get(c, True), dt.datetime(2024, 1, 1)) for c in ("C1", "C2", "C3")],
        schemas.CUSTOMERS_DDL)


# --- baskets and rules ------------------------------------------------------------------------------
def test_baskets_deduplicate_items_and_drop_cancelled_orders(spark: SparkSession) -> None:
    frame = lines(spark, [("O1", "C1", 0, "P1", 1, "completed"), ("O1", "C1", 0, "P1", 2, "completed"),
                          ("O1", "C1", 0, "P3", 1, "completed"), ("O2", "C2", 0, "P4", 1, "cancelled"),
                          ("O3", "C2", 0, "P4", -1, "returned")])
    result = baskets.build_baskets(frame, max_items=10).select("order_id", "items")
    assertDataFrameEqual(result, spark.createDataFrame([("O1", ["P1", "P3"])], "order_id STRING, items ARRAY<STRING>"))


def test_a_fully_cancelled_order_yields_no_basket(spark: SparkSession) -> None:
    # Online Retail style: the cancellation is an order of its own (C-invoice) a day later.
    frame = lines(spark, [("O1", "C1", 0, "P1", 2, "completed"), ("O1", "C1", 0, "P3", 1, "completed"),
                          ("C9", "C1", 1, "P1", -2, "cancelled"), ("C9", "C1", 1, "P3", -1, "cancelled"),
                          ("O2", "C1", 2, "P4", 1, "completed")])
    result = baskets.build_baskets(frame, max_items=10).select("order_id", "items")
    assertDataFrameEqual(result, spark.createDataFrame([("O2", ["P4"])], "order_id STRING, items ARRAY<STRING>"))


def test_cancellations_take_back_the_latest_earlier_sales_first(spark: SparkSession) -> None:
    frame = lines(spark, [("O1", "C1", 0, "P1", 3, "completed"), ("O2", "C1", 1, "P1", 2, "completed"),
                          ("O2", "C1", 1, "P3", 1, "completed"),
                          ("R1", "C1", 2, "P1", -3, "returned"),  # all of O2's P1 and one of O1's
                          ("R2", "C1", 2, "P4", -1, "returned"),  # nothing earlier to take back
                          ("R3", "C2", 2, "P1", -5, "cancelled"),  # another customer's: does not touch C1
                          ("O3", "C1", 3, "P1", 1, "completed")])  # after the return: untouched
    result = baskets.net_sales(frame).select("order_id", "product_id", "quantity")
    expected = spark.createDataFrame([("O1", "P1", 2), ("O2", "P3", 1), ("O3", "P1", 1)],
                                     "order_id STRING, product_id STRING, quantity INT")
    assertDataFrameEqual(result, expected)


def test_pairs_netted_side_by_side_do_not_take_back_each_others_sales(spark: SparkSession) -> None:
    # Forty customers with the same history, in few partitions: each pair's cancellations take back its own
    # sales only, whichever pairs share a partition. C2 also returns more P1 than it bought before day 1.
    pattern = [("O1", 0, "P1", 3, "completed"), ("O2", 1, "P1", 2, "completed"), ("R1", 2, "P1", -3, "returned"),
               ("O3", 0, "P2", 1, "completed"), ("R2", 1, "P2", -1, "cancelled"), ("O4", 3, "P1", 1, "completed")]
    rows = [(f"{order}-{n}", f"C{n}", day, product, quantity, status)
            for n in range(40) for order, day, product, quantity, status in pattern]
    rows += [("O9", "C2", 0, "P1", 1, "completed"), ("R9", "C2", 1, "P1", -9, "returned")]
    result = baskets.net_sales(lines(spark, rows)).select("customer_id", "order_id", "product_id", "quantity")
    expected = [(f"C{n}", f"{order}-{n}", "P1", quantity) for n in range(40) if n != 2
                for order, quantity in (("O1", 2), ("O4", 1))]
    expected += [("C2", "O4-2", "P1", 1)]
    assertDataFrameEqual(result, spark.createDataFrame(expected, "customer_id STRING, order_id STRING, "
                                                                 "product_id STRING, quantity INT"))


def test_giant_baskets_are_left_out(spark: SparkSession) -> None:
    frame = lines(spark, [("O1", "C1", 0, p, 1, "completed") for p in ("P1", "P2", "P3")] + [("O2", "C1", 0, "P4", 1, "completed")])
    assert [r.order_id for r in baskets.build_baskets(frame, max_items=2).collect()] == ["O2"]


# --- features ---------------------------------------------------------------------------------------
HISTORY = [("O1", "C1", 0, "P1", 1, "completed"), ("O2", "C1", 10, "P3", 2, "completed"),
           ("O3", "C2", 5, "P4", 1, "completed"), ("O4", "C2", 6, "P4", -1, "returned")]


def build(spark: SparkSession, rows: list[tuple], cutoff: dt.date) -> DataFrame:
    return features.customer_features(lines(spark, rows), products(spark), customers(spark), cutoff=cutoff,
                                      categories=["bike_care", "bikes", "printing"], families=["bike"],
                                      regions=["north", "south"])


def test_features_count_recency_spend_and_ownership(spark: SparkSession) -> None:
    cutoff = D + dt.timedelta(days=20)
    row = {r.customer_id: r for r in build(spark, HISTORY, cutoff).collect()}
    assert row["C1"].recency_days == 10
    assert row["C1"].orders_30d == 2 and row["C1"].spend_30d == pytest.approx(30.0)
    assert row["C1"].tier__bike == 1 and row["C1"].days_since_family__bike == 20
    assert row["C1"].share__bike_care == pytest.approx(20.0 / 30.0)
    assert row["C2"].returns_rate == pytest.approx(0.5)
    assert row["C3"].orders_365d == 0 and row["C3"].recency_days == features.NEVER_DAYS


def test_features_know_lifetime_rate_first_family_purchase_channels_region_and_last_year(spark: SparkSession) -> None:
    history = [("O1", "C1", 0, "P1", 1, "completed"), ("O2", "C1", 10, "P3", 2, "completed"),
               ("O3", "C1", 40, "P2", 1, "completed"), ("O4", "C2", -380, "P4", 1, "completed"),
               ("O5", "C2", 50, "P4", 1, "completed")]
    row = {r.customer_id: r for r in build(spark, history, D + dt.timedelta(days=60)).collect()}
    assert row["C1"].orders_total == 3 and row["C1"].first_order_days == 60
    assert row["C1"].order_rate_30d == pytest.approx(3 * 30 / 60)
    # The bike family: first bought 60 days ago (tier 1), last 20 days ago (tier 2).
    assert row["C1"].days_since_first_family__bike == 60 and row["C1"].days_since_family__bike == 20
    assert row["C1"].tier__bike == 2
    # The top tier (2) was first bought 20 days ago; a later tier-1 purchase would not change it.
    assert row["C1"].days_since_top_tier__bike == 20
    assert row["C3"].days_since_top_tier__bike == features.NEVER_DAYS
    assert row["C1"].channel__web == 1.0 and row["C1"].channel__store == 0.0
    assert row["C1"].region__north == 1.0 and row["C1"].region__south == 0.0
    # O4 lies 440 days before the cutoff: in the 90-day window a year earlier, not in the 30-day one.
    assert row["C2"].spend_90d_year_before == pytest.approx(10.0) and row["C2"].spend_30d_year_before == 0.0
    assert row["C2"].spend_365d == pytest.approx(10.0)
    assert row["C3"].orders_total == 0 and row["C3"].days_since_first_family__bike == features.NEVER_DAYS


def test_days_since_top_tier_is_the_first_purchase_of_the_highest_tier(spark: SparkSession) -> None:
    history = [("O1", "C1", 0, "P2", 1, "completed"), ("O2", "C1", 10, "P2", 1, "completed"),
               ("O3", "C1", 30, "P1", 1, "completed")]
    row = {r.customer_id: r for r in build(spark, history, D + dt.timedelta(days=40)).collect()}
    assert row["C1"].tier__bike == 2 and row["C1"].days_since_top_tier__bike == 40
    assert row["C1"].days_since_family__bike == 10


def test_windows_longer_than_the_history_are_left_out() -> None:
    assert features.lookback_days("spend_30d") == 30
    assert features.lookback_days("spend_90d_year_before") == 455
    assert features.lookback_days("spend_next30d_last_year") == 365
    assert features.lookback_days("orders_total") is None and features.lookback_days("days_since__bikes") is None
    columns = ["orders_30d", "spend_365d", "spend_30d_year_before", "spend_next30d_last_year", "tenure_days"]
    assert features.covered(columns, history_days=300) == (
        ["orders_30d", "tenure_days"], ["spend_365d", "spend_30d_year_before", "spend_next30d_last_year"])
    assert features.covered(columns, history_days=390) == (
        ["orders_30d", "spend_365d", "spend_next30d_last_year", "tenure_days"], ["spend_30d_year_before"])


def test_features_do_not_see_the_cutoff_or_later(spark: SparkSession) -> None:
    """The leakage test: rewriting everything from the cutoff on leaves the features unchanged."""
    cutoff = D + dt.timedelta(days=8)
    later = [("O9", "C1", 8, "P2", 5, "completed"), ("O10", "C3", 30, "P4", 1, "completed"),
             ("O11", "C2", 9, "P4", -3, "returned")]
    assertDataFrameEqual(build(spark, HISTORY, cutoff), build(spark, HISTORY + later, cutoff))


# --- offers -----------------------------------------------------------------------------------------
def test_auto_offers_cover_categories_and_families() -> None:
    result = offers.resolve("auto", categories=["bikes", "printing"], families=["bike"])
    assert [o.offer_id for o in result] == ["cross-sell:bikes", "cross-sell:printing", "up-sell:bike"]
    assert result[2].model_name == "xsell_up_sell_bike"


def test_up_sell_models_see_the_customer_and_their_own_family() -> None:
    columns = ["orders_30d", "rule_lift", "share__bikes", "tier__bike", "days_since_top_tier__bike",
               "tier__bike_plus", "tier__laptop", "days_since__printing"]
    bike = offers.Offer("up-sell:bike", offers.UP_SELL, "bike")
    assert offers.model_features(bike, columns) == ["orders_30d", "rule_lift", "tier__bike", "days_since_top_tier__bike"]
    assert offers.model_features(bike, columns, up_sell_scope="all") == columns
    cross = offers.Offer("cross-sell:bikes", offers.CROSS_SELL, "bikes")
    assert offers.model_features(cross, columns) == columns


def test_eligibility_and_labels(spark: SparkSession) -> None:
    cutoff = D + dt.timedelta(days=20)
    history = HISTORY + [("O5", "C1", 25, "P2", 1, "completed"), ("O6", "C3", 22, "P3", 1, "completed"),
                         ("O7", "C2", 40, "P3", 1, "completed")]
    order_lines = lines(spark, history)
    frame = build(spark, history, cutoff)
    up = offers.Offer("up-sell:bike", "up-sell", "bike")
    cross = offers.Offer("cross-sell:bike_care", "cross-sell", "bike_care")
    assert sorted(r.customer_id for r in frame.filter(offers.eligible(up)).collect()) == ["C1"]
    assert sorted(r.customer_id for r in frame.filter(offers.eligible(cross)).collect()) == ["C2", "C3"]
    end = cutoff + dt.timedelta(days=10)
    up_labels = {r.customer_id: r.label for r in offers.labels(order_lines, products(spark), frame.filter(offers.eligible(up)), up, start=cutoff, end=end).collect()}
    cross_labels = {r.customer_id: r.label for r in offers.labels(order_lines, products(spark), frame.filter(offers.eligible(cross)), cross, start=cutoff, end=end).collect()}
    assert up_labels == {"C1": 1.0}
    # C2 buys the kit on day 40, after the label window.
    assert cross_labels == {"C2": 0.0, "C3": 1.0}
    every = offers.labels_of_all(order_lines, products(spark), frame, [up, cross], start=cutoff, end=end)
    both = {r.customer_id: (r[offers.column("label", up)], r[offers.column("label", cross)]) for r in every.collect()}
    assert {c: both[c][0] for c in up_labels} == up_labels and {c: both[c][1] for c in cross_labels} == cross_labels


def test_rule_lifts_of_all_offers_match_the_rule_feature_of_each(spark: SparkSession) -> None:
    cutoff = D + dt.timedelta(days=20)
    order_lines = lines(spark, HISTORY)
    rules = spark.createDataFrame(
        [("product", ["P1"], "P3", 2.5), ("product", ["P1"], "P4", 1.5), ("product", ["P4"], "P3", 4.0),
         ("product", ["P1", "P4"], "P3", 9.0), ("category", ["P1"], "P3", 7.0)],
        "level STRING, antecedent ARRAY<STRING>, consequent STRING, lift DOUBLE")
    chosen = [offers.Offer("cross-sell:bike_care", "cross-sell", "bike_care"),
              offers.Offer("cross-sell:printing", "cross-sell", "printing"),
              offers.Offer("up-sell:bike", "up-sell", "bike")]
    every = {r.customer_id: r for r in offers.rule_lifts_of_all(rules, order_lines, products(spark), chosen,
                                                                cutoff=cutoff).collect()}
    for offer in chosen:
        single = {r.customer_id: r.rule_lift for r in offers.rule_feature(rules, order_lines, products(spark), offer,
                                                                           cutoff=cutoff).collect()}
        assert {c: r[offers.column("rule_lift", offer)] for c, r in every.items()
                if r[offers.column("rule_lift", offer)] is not None} == single, offer.offer_id
    assert every["C2"][offers.column("rule_lift", chosen[0])] == 4.0  # P4 -> P3; multi-item and category rules ignored


# --- audience ---------------------------------------------------------------------------------------
def scored(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, "offer_id STRING, customer_id STRING, expected_value DOUBLE")


def test_arbitration_keeps_the_best_k_offers(spark: SparkSession) -> None:
    frame = scored(spark, [("a", "C1", 1.0), ("b", "C1", 3.0), ("c", "C1", 2.0), ("a", "C2", 1.0)])
    kept = audience.arbitrate(frame, max_offers=2)
    assertDataFrameEqual(kept, scored(spark, [("b", "C1", 3.0), ("c", "C1", 2.0), ("a", "C2", 1.0)]))


def test_control_cell_is_stable_and_close_to_the_share(spark: SparkSession) -> None:
    frame = spark.range(20000).select(F.format_string("C%d", "id").alias("customer_id"), F.lit("offer").alias("offer_id"))
    first = audience.assign_cell(frame, control_share=0.1, salt="s1")
    share = first.filter(F.col("cell") == audience.CONTROL).count() / 20000
    assert share == pytest.approx(0.1, abs=0.01)
    again = audience.assign_cell(frame.orderBy(F.desc("customer_id")), control_share=0.1, salt="s1")
    assertDataFrameEqual(first, again)
    other_salt = audience.assign_cell(frame, control_share=0.1, salt="s2")
    changed = first.join(other_salt.withColumnRenamed("cell", "cell2"), on=["customer_id", "offer_id"], how="inner")
    assert changed.filter(F.col("cell") != F.col("cell2")).count() > 1000


def test_consent_fails_closed(spark: SparkSession) -> None:
    frame = customers(spark, {"C2": False}).union(
        spark.createDataFrame([("C4", dt.date(2024, 1, 1), "north", None, None)], schemas.CUSTOMERS_DDL))
    assert sorted(r.customer_id for r in audience.consenting(frame).collect()) == ["C1", "C3"]


def test_export_is_the_allow_list(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [("o", "cross-sell", "C1", 0.5, 1.0, 1, 1, "treatment", "why", "secret")],
        "offer_id STRING, offer_type STRING, customer_id STRING, score DOUBLE, expected_value DOUBLE, rank INT, "
        "decile INT, cell STRING, reason STRING, email STRING")
    out = audience.export(frame, run_date=D, run_id="r", model_versions={"o": ("xsell_o", "3")})
    assert out.columns == [name for name, _ in schemas.AUDIENCE_COLUMNS]
    row = out.first()
    assert (row.model_name, row.model_version, row.run_date) == ("xsell_o", "3", D)


def test_up_sell_waits_for_the_cooldown(spark: SparkSession) -> None:
    frame = build(spark, HISTORY, D + dt.timedelta(days=20))  # C1 bought tier 1 twenty days before
    up = offers.Offer("up-sell:bike", "up-sell", "bike")
    assert frame.filter(offers.eligible(up, cooldown_days=30)).count() == 0
    assert frame.filter(offers.eligible(up, cooldown_days=10)).count() == 1


def test_category_diversity_keeps_one_offer_per_category(spark: SparkSession) -> None:
    frame = spark.createDataFrame([("a", "C1", 3.0, "bikes"), ("b", "C1", 2.0, "bikes"), ("c", "C1", 1.0, "home")],
                                  "offer_id STRING, customer_id STRING, expected_value DOUBLE, category STRING")
    kept = audience.arbitrate(frame, max_offers=3, diversity_column="category")
    assert sorted(r.offer_id for r in kept.collect()) == ["a", "c"]


def test_feature_names_read_as_reasons() -> None:
    assert audience.describe_feature("days_since__bike_care") == "time since the last bike care purchase"
    assert audience.describe_feature("rule_lift") == "strong basket rule"


def test_scores_are_calibrated_back_to_the_base_rate(spark: SparkSession) -> None:
    """Balanced weights train as if half the customers adopted; the prior correction brings the mean
    score back to the real base rate, so expected values compare across offers."""
    from xsell import model

    rows = [(float(i % 10 == 0), float((i * 7919) % 101) / 100 + (0.4 if i % 10 == 0 else 0.0), f"C{i}")
            for i in range(2000)]
    frame = spark.createDataFrame(rows, "label DOUBLE, x DOUBLE, customer_id STRING")
    fitted = model.build_pipeline(["x"], max_iter=30).fit(model.with_balanced_weights(frame))
    raw = model.score(fitted, frame).agg(F.avg("score")).first()[0]
    corrected = model.score(fitted, frame, base_rate=0.1).agg(F.avg("score")).first()[0]
    assert raw > 0.3
    assert corrected == pytest.approx(0.1, abs=0.02)
