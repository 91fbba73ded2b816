"""The rule stage: exact against an independent miner (mlxtend) on real data, every measure, the controls,
the budget, bundles, "bought together" and "bought later".

Real data: the Groceries basket set (Hahsler, Hornik & Reutterer 2006, 9,835 baskets) and FIMI's
mushroom.dat (UCI Mushroom as transactions, Goethals & Zaki 2003), from ``XSELL_SHARED_DATA``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
from mlxtend.frequent_patterns import association_rules, fpgrowth
from mlxtend.preprocessing import TransactionEncoder
from pyspark.sql import SparkSession
from scipy.stats import false_discovery_control, fisher_exact

from xsell import cli, followup, rules

MEASURES = ("antecedent_support", "consequent_support", "support", "confidence", "lift", "leverage", "conviction",
            "jaccard", "kulczynski")


def _baskets(spark: SparkSession, transactions: list[list[str]]):
    return spark.createDataFrame([(i, t) for i, t in enumerate(transactions)], "basket_id INT, items ARRAY<STRING>")


def _reference(transactions: list[list[str]], min_support: float, min_confidence: float, max_len: int | None = None):
    """mlxtend's itemsets {frozenset: count} and single-consequent rules {(antecedent, consequent): row}."""
    encoder = TransactionEncoder()
    table = pd.DataFrame(encoder.fit(transactions).transform(transactions), columns=encoder.columns_)
    n = len(transactions)
    itemsets = fpgrowth(table, min_support=min_support, use_colnames=True, max_len=max_len)
    counts = {frozenset(items): round(support * n) for items, support in zip(itemsets["itemsets"], itemsets["support"])}
    # A slightly lower threshold, then the exact ">=" on counts: float ties must not decide the comparison.
    found = association_rules(itemsets, metric="confidence", min_threshold=min_confidence * 0.999, num_itemsets=n)
    found = found[found["consequents"].map(len) == 1]
    reference = {}
    for row in found.to_dict("records"):
        antecedent, consequent = frozenset(row["antecedents"]), next(iter(row["consequents"]))
        if counts[antecedent | {consequent}] >= min_confidence * counts[antecedent]:
            reference[(antecedent, consequent)] = row
    return counts, reference


def _assert_same(mined: rules.Mined, found: pd.DataFrame, counts: dict, reference: dict) -> None:
    ours = {frozenset(items): int(count) for items, count in zip(mined.itemsets["items"], mined.itemsets["count"])}
    assert ours == counts
    got = {(frozenset(row["antecedent"]), row["consequent"]): row for row in found.to_dict("records")}
    assert got.keys() == reference.keys()
    for key, row in got.items():
        for measure in MEASURES:
            theirs = reference[key][measure.replace("_support", " support")]
            if math.isinf(theirs):
                assert math.isinf(row[measure]), (key, measure)
            else:
                assert row[measure] == pytest.approx(theirs, abs=1e-9), (key, measure)


def _read_lines(path: Path, sep: str) -> list[list[str]]:
    return [line.rstrip("\n").split(sep) for line in path.read_text().splitlines()]


# --- exactness on real data ---------------------------------------------------------------------------
@pytest.mark.shared_data
def test_groceries_itemsets_and_rules_equal_mlxtend(spark: SparkSession, shared_data: Path) -> None:
    path = shared_data / "groceries" / "groceries.csv"
    baskets = rules.read_basket_file(spark, str(path), sep=",")
    found, mined = rules.mine_rules(baskets, min_support=0.004, min_confidence=0.1)
    counts, reference = _reference(_read_lines(path, ","), 0.004, 0.1)
    assert mined.baskets == rules.BasketCounts(given=9835, kept=9835, empty=0, oversized=0)
    assert mined.min_count == 40  # ceil(0.004 x 9835)
    assert len(counts) > 1000 and len(reference) > 2000
    _assert_same(mined, found, counts, reference)


@pytest.mark.shared_data
def test_mining_for_given_consequents_gives_the_same_rules_as_mining_everything(spark: SparkSession,
                                                                                shared_data: Path) -> None:
    baskets = rules.read_basket_file(spark, str(shared_data / "groceries" / "groceries.csv"), sep=",")
    targets = ["whole milk", "yogurt", "bottled beer", "soda"]
    everything, full = rules.mine_rules(baskets, min_support=0.003, min_confidence=0.05)
    targeted, mined = rules.mine_rules(baskets, min_support=0.003, min_confidence=0.05, consequents=targets)
    # BH depends on the set of rules tested, so fisher_q and significant differ by design.
    same = [column for column in rules.RULE_COLUMNS if column not in ("fisher_q", "significant")]
    expected = everything[everything["consequent"].isin(targets)][same].reset_index(drop=True)
    pd.testing.assert_frame_equal(targeted[same].reset_index(drop=True), expected, check_exact=False, rtol=1e-12)
    assert len(expected) > 500 and len(mined.itemsets) < len(full.itemsets)  # mined only what is needed


@pytest.mark.shared_data
def test_groceries_category_level_equals_mlxtend_on_mapped_baskets(spark: SparkSession, shared_data: Path) -> None:
    hierarchy = pd.read_csv(shared_data / "groceries" / "groceries_item_hierarchy.csv")
    parent = dict(zip(hierarchy["labels"], hierarchy["level2"]))
    transactions = _read_lines(shared_data / "groceries" / "groceries.csv", ",")
    mapped = [sorted({parent[item] for item in basket}) for basket in transactions]
    frame = spark.createDataFrame(hierarchy.rename(columns={"labels": "item", "level2": "level_item"})[["item", "level_item"]])
    baskets = rules.to_level(_baskets(spark, transactions), frame)
    found, mined = rules.mine_rules(baskets, min_support=0.02, min_confidence=0.2, max_len=3)
    counts, reference = _reference(mapped, 0.02, 0.2, max_len=3)
    _assert_same(mined, found, counts, reference)


@pytest.mark.shared_data
def test_fimi_mushroom_dense_itemsets_equal_mlxtend(spark: SparkSession, shared_data: Path) -> None:
    path = shared_data / "fimi" / "mushroom.dat"
    transactions = [line.split() for line in path.read_text().splitlines()]
    baskets = rules.read_basket_file(spark, str(path), sep=" ")
    # FIMI lines end with a space: the empty last token is not an item.
    baskets = baskets.withColumn("items", rules.F.filter("items", lambda item: item != ""))
    found, mined = rules.mine_rules(baskets, min_support=0.35, min_confidence=0.8, groups=3)
    counts, reference = _reference(transactions, 0.35, 0.8)
    assert len(counts) > 1000
    _assert_same(mined, found, counts, reference)


# --- measures ---------------------------------------------------------------------------------------
def test_fisher_bh_and_redundancy_against_scipy_and_hand(spark: SparkSession) -> None:
    transactions = [["a", "b", "c"]] * 6 + [["a", "b"]] * 4 + [["a", "c"]] * 2 + [["b"]] * 3 + [["c", "d"]] * 5
    found, mined = rules.mine_rules(_baskets(spark, transactions), min_support=2, min_confidence=0.0)
    n = len(transactions)
    for row in found.to_dict("records"):
        holds = [set(row["antecedent"]) <= set(t) for t in transactions]
        has_c = [row["consequent"] in t for t in transactions]
        table = [[sum(h and c for h, c in zip(holds, has_c)), sum(h and not c for h, c in zip(holds, has_c))],
                 [sum(c and not h for h, c in zip(holds, has_c)), sum(not h and not c for h, c in zip(holds, has_c))]]
        assert row["fisher_p"] == pytest.approx(fisher_exact(table, alternative="greater").pvalue, rel=1e-9)
        assert row["baskets"] == n
    assert found["fisher_q"].to_list() == pytest.approx(list(false_discovery_control(found["fisher_p"], method="bh")))
    assert found["significant"].to_list() == (found["fisher_q"] <= 0.05).to_list()
    rule = found[(found["antecedent"] == ("a", "b")) & (found["consequent"] == "c")].iloc[0]
    # conf(ab -> c) = 6/10; the more general a -> c = 8/12 and b -> c = 6/13: it does not beat a -> c.
    assert rule["improvement"] == pytest.approx(6 / 10 - 8 / 12) and rule["redundant"]
    rule = found[(found["antecedent"] == ("a", "c")) & (found["consequent"] == "b")].iloc[0]
    assert rule["improvement"] == pytest.approx(6 / 8 - 10 / 12) and rule["redundant"]
    single = found[found["antecedent"].map(len) == 1]
    assert not single["redundant"].any() and single["improvement"].isna().all()


def test_support_threshold_is_exact_and_takes_counts() -> None:
    assert rules.support_threshold(0.001, 1_000_000) == 1000
    assert rules.support_threshold(0.003, 9835) == 30  # 29.505 rounded up
    assert rules.support_threshold(25, 9835) == 25
    with pytest.raises(ValueError, match="whole basket count"):
        rules.support_threshold(2.5, 100)


# --- controls ----------------------------------------------------------------------------------------
def test_baskets_are_cleaned_and_counted(spark: SparkSession) -> None:
    transactions = [["x", "x", "y"], [], ["POST"], ["x", "y", "z", "w"], [" x", "y"], ["x", "y"]]
    found, mined = rules.mine_rules(_baskets(spark, transactions), min_support=2, min_confidence=0.5,
                                    excluded=["POST"], max_items=3)
    # [] and ["POST"] (only an excluded item) are empty; the 4-item basket is oversized.
    assert mined.baskets == rules.BasketCounts(given=6, kept=3, empty=2, oversized=1)
    # " x" is kept as written: not the same item as "x".
    assert dict(zip(mined.itemsets["items"], mined.itemsets["count"])) == {("x",): 2, ("y",): 3, ("x", "y"): 2}
    assert set(zip(found["antecedent"], found["consequent"])) == {(("x",), "y"), (("y",), "x")}


def test_max_len_and_restricted_consequents_and_antecedents(spark: SparkSession) -> None:
    transactions = [["a", "b", "c", "d"]] * 5 + [["a", "b"]] * 3 + [["c", "d"]] * 2
    baskets = _baskets(spark, transactions)
    _, mined = rules.mine_rules(baskets, min_support=2, min_confidence=0.0, max_len=2)
    assert mined.itemsets["items"].map(len).max() == 2
    found, _ = rules.mine_rules(baskets, min_support=2, min_confidence=0.0, consequents=["d"])
    assert set(found["consequent"]) == {"d"} and len(found) == 7  # every non-empty subset of {a, b, c}
    found, mined = rules.mine_rules(baskets, min_support=2, min_confidence=0.0, consequents=["d"], antecedents=["a", "b"])
    assert set(zip(found["antecedent"], found["consequent"])) == {(("a",), "d"), (("b",), "d"), (("a", "b"), "d")}
    assert "c" not in {item for items in mined.itemsets["items"] for item in items}  # never mined


def test_explosive_baskets_raise_the_support_within_the_budget_or_fail_fast(spark: SparkSession) -> None:
    rng = random.Random(3)
    universe = [f"p{i}" for i in range(50)]
    baskets = _baskets(spark, [rng.sample(universe, 40) for _ in range(200)])
    with pytest.raises(rules.RuleBudgetExceeded, match=r"rule budget exceeded: more than 20,000 itemsets"):
        rules.mine_rules(baskets, min_support=0.01, min_confidence=0.5, budget=20_000, adaptive=False)
    found, mined = rules.mine_rules(baskets, min_support=0.01, min_confidence=0.9, budget=20_000)
    assert mined.support_raised and mined.min_count > mined.requested_min_count == 2
    assert 0 < len(mined.itemsets) <= 20_000 and len(mined.notes) == mined.attempts - 1
    assert (mined.itemsets["count"] >= mined.min_count).all()


# --- bundles and the shop's list ----------------------------------------------------------------------
def test_bundles_rank_by_expected_margin_and_keep_high_lift_sets() -> None:
    itemsets = pd.DataFrame({"items": [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")],
                             "count": [40, 30, 50, 20, 20, 15, 10]})
    prices = pd.DataFrame({"product_id": ["a", "b", "c"], "list_price": [10.0, 20.0, 5.0], "margin_rate": [0.5, 0.25, 0.2]})
    found = rules.bundles(itemsets, prices, baskets=100, min_lift=1.0)
    # lifts: ab 0.2/(0.4*0.3)=1.67, ac 0.2/0.2=1.0, bc 0.15/0.15=1.0, abc 0.1/0.06=1.67
    assert found["products"].to_list() == [["a", "b", "c"], ["a", "b"], ["a", "c"], ["b", "c"]] or \
        found["expected_margin"].is_monotonic_decreasing
    by = {tuple(p): row for p, row in zip(found["products"], found.to_dict("records"))}
    assert by[("a", "b")]["margin"] == pytest.approx(10.0) and by[("a", "b")]["expected_margin"] == pytest.approx(2.0)
    assert by[("a", "b", "c")]["list_price"] == pytest.approx(35.0) and by[("a", "b", "c")]["lift"] == pytest.approx(0.1 / 0.06)
    assert found["rank"].to_list() == [1, 2, 3, 4] and found["expected_margin"].is_monotonic_decreasing
    assert rules.bundles(itemsets, prices, baskets=100, min_lift=1.5)["products"].map(tuple).to_list() == \
        [("a", "b"), ("a", "b", "c")]


def test_bought_together_lists_the_best_significant_consequents(spark: SparkSession) -> None:
    transactions = [["a", "b"]] * 30 + [["a", "c"]] * 10 + [["c"]] * 20 + [["d"]] * 40 + [["a", "d"]] * 2
    found, _ = rules.mine_rules(_baskets(spark, transactions), min_support=2, min_confidence=0.0)
    shop = rules.bought_together(found, top=1)
    assert shop.to_dict("records")[0] | {"confidence": 0, "lift": 0, "support": 0} == {
        "product_id": "a", "rank": 1, "recommended_product_id": "b", "confidence": 0, "lift": 0, "support": 0}
    # a -> d has a lift below 1 (d is bought without a): never recommended.
    assert ("a", "d") not in set(zip(rules.bought_together(found, top=5)["product_id"],
                                     rules.bought_together(found, top=5)["recommended_product_id"]))


# --- bought later -------------------------------------------------------------------------------------
def _line(order: str, customer: str, day: int, product: str):
    return (order, 1, customer, dt.datetime(2025, 1, 1) + dt.timedelta(days=day), product, 1, "completed")


def test_followup_counts_customers_lift_and_median_lag(spark: SparkSession) -> None:
    rows = []
    lags = {"C1": 10, "C2": 20, "C3": 30, "C4": 200}  # C4 buys the kit outside the 1..90 day window
    for customer, lag in lags.items():
        rows += [_line(f"{customer}-1", customer, 0, "BIKE"), _line(f"{customer}-2", customer, lag, "KIT")]
    rows += [_line("C5-1", "C5", 0, "KIT"), _line("C5-2", "C5", 5, "BIKE")]  # kit before the bike: no follow-up
    rows += [_line(f"C{i}-1", f"C{i}", 0, "MUG") for i in range(6, 10)]
    lines = spark.createDataFrame(rows, "order_id STRING, line_number INT, customer_id STRING, order_ts TIMESTAMP, "
                                        "product_id STRING, quantity INT, status STRING")
    found = followup.followup_rules(followup.first_purchases(lines), min_lag_days=1, max_lag_days=90, min_customers=2, min_confidence=0.0)
    (row,) = found.collect()
    assert (row.antecedent, row.consequent, row.followup_customers, row.antecedent_customers) == ("BIKE", "KIT", 3, 5)
    assert row.customers == 9 and row.median_lag_days == 20.0
    assert row.confidence == pytest.approx(3 / 5) and row.lift == pytest.approx((3 / 5) / (5 / 9))


# --- the command line ---------------------------------------------------------------------------------
def test_rules_cli_writes_json_items_and_every_measure(spark: SparkSession, tmp_path: Path, capsys) -> None:
    source = tmp_path / "baskets.txt"
    source.write_text("bread;milk\nbread;milk;jam, strawberry\nmilk\nbread;jam, strawberry\n\nbread;milk\n")
    out = tmp_path / "rules.csv"
    cli.main(["rules", str(source), "--sep", ";", "--min-support", "2", "--min-confidence", "0.5", "--out", str(out)])
    table = pd.read_csv(out)
    assert list(table.columns) == list(rules.RULE_COLUMNS)
    pairs = {(tuple(json.loads(a)), tuple(json.loads(c))) for a, c in zip(table["antecedent"], table["consequent"])}
    assert (("jam, strawberry",), ("bread",)) in pairs and (("bread",), ("milk",)) in pairs
    assert "1 empty" in capsys.readouterr().out


def test_rules_cli_names_a_missing_file(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["rules", str(tmp_path / "nope.txt"), "--min-support", "0.1", "--min-confidence", "0.5",
                  "--out", str(tmp_path / "r.csv")])
    assert stopped.value.code == 2 and "nope.txt: no such basket file" in capsys.readouterr().err


def test_vectorised_prefix_emission_matches_the_definition() -> None:
    """Each basket sends every group it touches its ranked items up to its last item of that group."""
    import pyarrow as pa

    def by_definition(names, group_of, baskets):
        rank_of = {name: rank for rank, name in enumerate(names)}
        out = []
        for basket in baskets:
            ranked = sorted(rank_of[item] for item in basket if item in rank_of)
            for key in set(group_of.values()):
                owned = [position for position, r in enumerate(ranked) if group_of.get(r) == key]
                if owned:
                    out.append((key, tuple(ranked[: owned[-1] + 1])))
        return sorted(out)

    rng = random.Random(1)
    universe = [f"i{k}" for k in range(40)] + ["rare", "other"]
    for trial in range(100):
        names = universe[: rng.randint(1, 40)]
        owners = [r for r in range(len(names)) if rng.random() < 0.7] or [0]
        keys = rng.sample(range(100), rng.randint(1, 4))
        group_of = {r: keys[i % len(keys)] for i, r in enumerate(owners)}
        baskets = [rng.sample(universe, rng.randint(0, 8)) for _ in range(rng.randint(2, 30))]
        batch = pa.RecordBatch.from_arrays([pa.array(baskets, pa.list_(pa.string()))], names=["items"]).slice(trial % 2)
        got = [(key, tuple(items)) for out in rules._emit_prefixes(names, group_of)(iter([batch]))
               for key, items in zip(out.column(0).to_pylist(), out.column(1).to_pylist())]
        assert sorted(got) == by_definition(names, group_of, baskets[trial % 2:]), trial


def test_restricting_to_offers_mines_their_target_products_and_categories(spark: SparkSession) -> None:
    from jobs import basket_rules
    from xsell import offers

    products = spark.createDataFrame(
        [("P1", "bikes", "bike"), ("P2", "bikes", "bike"), ("P3", "bike_care", None), ("P4", "garden", None)],
        "product_id STRING, category STRING, family STRING")
    wanted = [offers.Offer("cross-sell:bike_care", offers.CROSS_SELL, "bike_care"),
              offers.Offer("up-sell:bike", offers.UP_SELL, "bike")]
    assert basket_rules._targets(products, wanted, "product") == ["P1", "P2", "P3"]
    assert basket_rules._targets(products, wanted, "category") == ["bike_care", "bikes"]
