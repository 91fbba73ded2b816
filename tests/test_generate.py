"""Tests of the demo world generator: determinism, the raw contract, dirt, planted truth, exact propensity.

No Spark: the generator is numpy/pandas/pyarrow only, and these tests read its files with pandas as an
independent check. Worlds are tiny (a few hundred to a couple of thousand customers over a few months).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from xsell.generate import DIRT_KINDS, Campaign, Drift, WorldSpec, catalogue, generate, offers, true_propensity
from xsell.schemas import CUSTOMERS, CUSTOMERS_DDL, MAX_TIER, ORDER_LINES, ORDER_LINES_DDL, PRODUCTS, PRODUCTS_DDL
from xsell.schemas import column_names, struct

TINY = WorldSpec(customers=300, start=date(2025, 1, 1), end=date(2025, 4, 30), seed=3, dirty_share=0.03)
# Large enough for a calibration check with a tolerance that a wrong truth fails.
TRUTH = WorldSpec(customers=2500, start=date(2025, 1, 1), end=date(2025, 8, 31), seed=11, dirty_share=0.01)
TRUTH_CUTOFFS = (date(2025, 5, 31), date(2025, 7, 31))
HORIZON = 30


def _make(tmp_path_factory: pytest.TempPathFactory, name: str, spec: WorldSpec) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp(name)
    summary = generate(root / "landing", root / "truth", spec, log=lambda _: None)
    return root / "landing", root / "truth", summary


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return _make(tmp_path_factory, "tiny", TINY)


@pytest.fixture(scope="module")
def tiny_lines(tiny: tuple[Path, Path, dict]) -> pd.DataFrame:
    return _read_csv_table(tiny[0], ORDER_LINES, ORDER_LINES_DDL)


@pytest.fixture(scope="module")
def truth_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return _make(tmp_path_factory, "truth", TRUTH)


@pytest.fixture(scope="module")
def truth_purchases(truth_world: tuple[Path, Path, dict]) -> pd.DataFrame:
    return _clean_purchases(_read_csv_table(truth_world[0], ORDER_LINES, ORDER_LINES_DDL))


# --- reading the landing zone as an independent consumer would ---------------------------------------
def _parse(frame: pd.DataFrame, ddl: str) -> pd.DataFrame:
    """Strictly converts all-string columns to the contract types; raises on any unparsable value."""
    out = {}
    for field in struct(ddl).fields:
        raw = frame[field.name]
        empty = raw == ""
        kind = field.dataType.simpleString()
        if kind == "string":
            out[field.name] = raw.where(~empty, None)
        elif kind in ("int", "double"):
            values = pd.to_numeric(raw.where(~empty, None), errors="raise")
            if kind == "int":
                assert (values.dropna() == values.dropna().round()).all()
                assert values.dropna().abs().max() < 2**31 if values.notna().any() else True
                values = values.astype("Int32")
            out[field.name] = values
        elif kind == "boolean":
            assert raw.isin(["true", "false", ""]).all()
            out[field.name] = raw.map({"true": True, "false": False, "": None})
        elif kind == "date":
            out[field.name] = pd.to_datetime(raw.where(~empty, None), format="%Y-%m-%d", errors="raise")
        else:
            assert kind == "timestamp", kind
            out[field.name] = pd.to_datetime(raw.where(~empty, None), format="%Y-%m-%d %H:%M:%S", errors="raise")
    return pd.DataFrame(out)


def _read_csv_table(landing: Path, table: str, ddl: str) -> pd.DataFrame:
    raws = []
    for path in sorted((landing / table).glob("date=*/part-00000.csv")):
        header = path.read_text().split("\n", 1)[0]
        assert header.split(",") == column_names(ddl), path
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        raws.append(raw.assign(date=path.parent.name.removeprefix("date=")))
    raw = pd.concat(raws, ignore_index=True)
    return _parse(raw, ddl).assign(date=pd.to_datetime(raw["date"], format="%Y-%m-%d"))


def _clean_purchases(lines: pd.DataFrame) -> pd.DataFrame:
    """Customer purchases a validating pipeline keeps: known product, completed, quantity > 0, on time."""
    known = lines["product_id"].isin(catalogue()["product_id"])
    ok = (known & lines["customer_id"].notna() & (lines["status"] == "completed") & (lines["quantity"] > 0)
          & (lines["order_ts"].dt.normalize() == lines["date"]))
    products = catalogue()[["product_id", "category", "family", "tier"]]
    return lines.loc[ok].merge(products, on="product_id", how="left", validate="many_to_one")


def _realized(purchases: pd.DataFrame, customers: pd.Series, cutoff: date, horizon: int) -> pd.DataFrame:
    """Eligibility and adoption of every offer at ``cutoff``, computed from the data alone."""
    t, end = pd.Timestamp(cutoff), pd.Timestamp(cutoff + timedelta(days=horizon))
    past, future = purchases[purchases["date"] <= t], purchases[(purchases["date"] > t) & (purchases["date"] <= end)]
    rows = []
    for offer in offers(catalogue()).itertuples(index=False):
        if offer.offer_type == "cross-sell":
            bought = set(past.loc[past["category"] == offer.target, "customer_id"])
            adopters = set(future.loc[future["category"] == offer.target, "customer_id"])
            eligible = ~customers.isin(bought)
            adopted = customers.isin(adopters)
        else:
            top_past = past[past["family"] == offer.target].groupby("customer_id")["tier"].max()
            top_future = future[future["family"] == offer.target].groupby("customer_id")["tier"].max()
            owned = customers.map(top_past).fillna(0).astype(int)
            eligible = (owned >= 1) & (owned < MAX_TIER)
            adopted = customers.map(top_future).fillna(0).astype(int) > owned
        rows.append(pd.DataFrame({"offer_id": offer.offer_id, "customer_id": customers,
                                  "eligible_data": eligible.to_numpy(), "adopted": (eligible & adopted).to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    ranks = pd.Series(score).rank().to_numpy()
    positives = label.sum()
    negatives = len(label) - positives
    return float((ranks[label].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- determinism -----------------------------------------------------------------------------------
def test_same_seed_writes_identical_files(tmp_path: Path, tiny: tuple[Path, Path, dict]) -> None:
    landing, truth, _ = tiny
    generate(tmp_path / "landing", tmp_path / "truth", TINY, log=lambda _: None)
    assert _files(tmp_path / "landing") == _files(landing)
    assert _files(tmp_path / "truth") == _files(truth)


def test_same_campaigns_and_drift_write_identical_files(tmp_path: Path, tiny: tuple[Path, Path, dict]) -> None:
    cutoff = date(2025, 3, 31)
    scores = true_propensity(tiny[1], TINY, cutoff=cutoff, horizon_days=HORIZON)
    audience = scores.loc[scores["eligible"], ["customer_id", "offer_id"]]
    audience = audience.assign(cell=np.where(np.arange(len(audience)) % 3 == 0, "control", "treatment"))
    campaign = Campaign(cutoff, audience, dict.fromkeys(audience["offer_id"], 0.2), HORIZON)
    drift = Drift(date(2025, 4, 10), rate_factor=1.3, spend_factor=1.1)
    for run in ("first", "second"):
        generate(tmp_path / run / "landing", tmp_path / run / "truth", TINY, campaigns=[campaign], drift=drift,
                 log=lambda _: None)
    assert _files(tmp_path / "first") == _files(tmp_path / "second")
    assert (tmp_path / "first" / "truth" / "campaigns" / f"run_date={cutoff}" / "planted.csv").is_file()
    # Campaigns and drift are part of the world: its data differs from the plain world's after them.
    assert _files(tmp_path / "first" / "landing") != _files(tiny[0])


def test_other_seed_writes_other_orders(tmp_path: Path, tiny: tuple[Path, Path, dict]) -> None:
    landing, _, _ = tiny
    other = WorldSpec(**{**TINY.__dict__, "seed": TINY.seed + 1})
    generate(tmp_path / "landing", tmp_path / "truth", other, log=lambda _: None)
    ours, theirs = _files(landing), _files(tmp_path / "landing")
    assert ours.keys() == theirs.keys()
    assert ours != theirs


# --- the raw contract ------------------------------------------------------------------------------
def test_order_lines_follow_the_contract(tiny: tuple[Path, Path, dict], tiny_lines: pd.DataFrame) -> None:
    summary, lines = tiny[2], tiny_lines
    assert len(lines) == summary["order_lines"]
    assert summary["days"] == (TINY.end - TINY.start).days + 1
    assert set(lines["status"]) == {"completed", "cancelled", "returned"}
    assert lines["currency"].notna().all() and lines["channel"].notna().all()
    assert (lines["unit_price"] > 0).all()
    returned = lines["status"] == "returned"
    assert (lines.loc[returned, "quantity"] < 0).all()
    assert (lines.loc[lines["status"] == "cancelled", "quantity"] > 0).all()
    guests = lines["customer_id"].isna().mean()
    assert 0.01 < guests < 0.06


def test_snapshots_follow_the_contract(tiny: tuple[Path, Path, dict]) -> None:
    landing, _, _ = tiny
    products = _read_csv_table(landing, PRODUCTS, PRODUCTS_DDL)
    customers = _read_csv_table(landing, CUSTOMERS, CUSTOMERS_DDL)
    days = sorted(products["date"].unique())
    assert len(days) == TINY.snapshot_days and days[-1] == pd.Timestamp(TINY.end)
    assert not products.duplicated(["date", "product_id"]).any()
    assert not customers.duplicated(["date", "customer_id"]).any()
    assert (customers["signup_date"] <= customers["date"]).all()
    assert (customers["consent_updated_at"].dt.normalize() <= customers["date"]).all()
    assert customers["marketing_consent"].notna().all()
    last = customers[customers["date"] == days[-1]]
    assert 0.02 < 1 - last["marketing_consent"].mean() < 0.2


def test_catalogue_has_tiered_families_and_offers() -> None:
    products = catalogue()
    assert list(products.columns) == column_names(PRODUCTS_DDL)
    assert products["product_id"].is_unique and 60 <= len(products) <= 120
    assert products["margin_rate"].between(0.1, 0.5).all() and (~products["active"]).sum() >= 2
    ladders = products.dropna(subset=["family"]).sort_values(["family", "tier"])
    assert 4 <= ladders["family"].nunique() <= 6
    for _, ladder in ladders.groupby("family"):
        assert ladder["tier"].tolist() == list(range(1, MAX_TIER + 1))
        assert ladder["list_price"].is_monotonic_increasing
    assert products.loc[products["family"].isna(), "tier"].isna().all()
    table = offers(products)
    assert table["offer_id"].is_unique
    assert (table["offer_type"] == "cross-sell").sum() == products["category"].nunique()
    assert (table["offer_type"] == "up-sell").sum() == ladders["family"].nunique()


def test_parquet_holds_the_same_rows_with_contract_types(tmp_path: Path, tiny: tuple[Path, Path, dict]) -> None:
    landing, _, _ = tiny
    spec = WorldSpec(**{**TINY.__dict__, "fmt": "parquet"})
    generate(tmp_path / "landing", tmp_path / "truth", spec, log=lambda _: None)
    day = f"date={TINY.end}"
    table = pq.read_table(tmp_path / "landing" / ORDER_LINES / day / "part-00000.parquet")
    assert table.column_names == column_names(ORDER_LINES_DDL)
    assert str(table.schema.field("line_number").type) == "int32"
    assert str(table.schema.field("order_ts").type) == "timestamp[us, tz=UTC]"
    from_csv = pd.read_csv(landing / ORDER_LINES / day / "part-00000.csv", dtype=str, keep_default_na=False)
    from_parquet = table.to_pandas()
    assert from_parquet["order_id"].tolist() == from_csv["order_id"].tolist()
    assert from_parquet["quantity"].tolist() == from_csv["quantity"].astype(int).tolist()
    stamps = from_parquet["order_ts"].dt.strftime("%Y-%m-%d %H:%M:%S").tolist()
    assert stamps == from_csv["order_ts"].tolist()
    customers = pq.read_table(tmp_path / "landing" / CUSTOMERS / day / "part-00000.parquet")
    assert customers.column_names == column_names(CUSTOMERS_DDL)


# --- dirt ------------------------------------------------------------------------------------------
def _dirt_in(lines: pd.DataFrame) -> dict[str, int]:
    known = set(catalogue()["product_id"])
    return {
        "duplicate": int(lines.drop(columns="date").duplicated().sum()),
        "missing_product": int(lines["product_id"].isna().sum()),
        "negative_quantity": int(((lines["quantity"] < 0) & (lines["status"] == "completed")).sum()),
        "unknown_product": int((lines["product_id"].notna() & ~lines["product_id"].isin(known)).sum()),
        "future_ts": int((lines["order_ts"].dt.normalize() > lines["date"]).sum()),
    }


def test_dirt_counts_match_the_summary(tiny: tuple[Path, Path, dict], tiny_lines: pd.DataFrame) -> None:
    found = _dirt_in(tiny_lines)
    assert found == tiny[2]["dirty_lines"]
    assert all(found[kind] > 0 for kind in DIRT_KINDS)


def test_no_dirt_when_share_is_zero(tmp_path: Path, tiny: tuple[Path, Path, dict], tiny_lines: pd.DataFrame) -> None:
    spec = WorldSpec(**{**TINY.__dict__, "dirty_share": 0.0})
    summary = generate(tmp_path / "landing", tmp_path / "truth", spec, log=lambda _: None)
    lines = _read_csv_table(tmp_path / "landing", ORDER_LINES, ORDER_LINES_DDL)
    assert _dirt_in(lines) == dict.fromkeys(DIRT_KINDS, 0) == summary["dirty_lines"]
    assert not lines.duplicated(["order_id", "line_number"]).any()
    # Dirt is added on top: the clean lines are the same whatever the dirty share.
    assert len(tiny_lines) - len(lines) == tiny[2]["dirty_total"]


# --- planted truth shows in the data ----------------------------------------------------------------
def test_same_basket_pairs_have_high_lift(truth_world: tuple[Path, Path, dict],
                                          truth_purchases: pd.DataFrame) -> None:
    pairs = pd.read_csv(truth_world[1] / "complements.csv").query("kind == 'same_basket'")
    for consequent, group in pairs.groupby("consequent_product"):
        flags = truth_purchases.assign(a=truth_purchases["product_id"].isin(group["antecedent_product"]),
                                       b=truth_purchases["product_id"] == consequent)
        baskets = flags.groupby("order_id")[["a", "b"]].any()
        lift = (baskets["a"] & baskets["b"]).mean() / (baskets["a"].mean() * baskets["b"].mean())
        assert lift > 3, (consequent, lift)


def test_later_pairs_follow_in_their_lag_window(truth_world: tuple[Path, Path, dict],
                                                truth_purchases: pd.DataFrame) -> None:
    landing, truth, _ = truth_world
    purchases = truth_purchases
    customers = _read_csv_table(landing, CUSTOMERS, CUSTOMERS_DDL).query("date == date.max()")
    signup = customers.set_index("customer_id")["signup_date"].clip(lower=pd.Timestamp(TRUTH.start))
    days_alive = (pd.Timestamp(TRUTH.end) - signup).dt.days + 1
    pairs = pd.read_csv(truth / "complements.csv").query("kind == 'later'")
    for (consequent, lo, hi), group in pairs.groupby(["consequent_product", "lag_days_min", "lag_days_max"]):
        first = (purchases[purchases["product_id"].isin(group["antecedent_product"])]
                 .groupby("customer_id")["date"].min())
        hits = purchases.loc[purchases["product_id"] == consequent, ["customer_id", "date"]].drop_duplicates()
        since = (hits["date"] - hits["customer_id"].map(first)).dt.days
        inside = since.between(lo, hi)
        # Customer-days inside windows (cut at the end of the range) against all other customer-days.
        window_days = ((pd.Timestamp(TRUTH.end) - first).dt.days - lo + 1).clip(0, hi - lo + 1).sum()
        rate_in = inside.sum() / window_days
        rate_out = (~inside).sum() / (days_alive.sum() - window_days)
        assert rate_in > 3 * rate_out, (consequent, rate_in, rate_out)


# --- the exact truth ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored(truth_world: tuple[Path, Path, dict], truth_purchases: pd.DataFrame) -> pd.DataFrame:
    """Truth and realized outcomes at two cutoffs, side by side."""
    truth, purchases = truth_world[1], truth_purchases
    parts = []
    for cutoff in TRUTH_CUTOFFS:
        scores = true_propensity(truth, TRUTH, cutoff=cutoff, horizon_days=HORIZON)
        realized = _realized(purchases, scores["customer_id"].drop_duplicates().reset_index(drop=True), cutoff,
                             HORIZON)
        parts.append(scores.merge(realized, on=["offer_id", "customer_id"], how="left", validate="one_to_one"))
    return pd.concat(parts, ignore_index=True)


def test_truth_is_a_probability_only_where_eligible(scored: pd.DataFrame, truth_world: tuple) -> None:
    assert scored["true_probability"].between(0, 1).all()
    assert (scored.loc[~scored["eligible"], "true_probability"] == 0).all()
    # Eligible customers can have 0: an up-sell is impossible within UPGRADE_MIN_DAYS of buying the tier.
    assert (scored.loc[scored["eligible"] & (scored["offer_type"] == "cross-sell"), "true_probability"] > 0).all()
    written = pd.read_parquet(truth_world[1] / "propensity" / f"cutoff={TRUTH_CUTOFFS[-1]}" / "propensity.parquet")
    assert len(written) == (scored["cutoff"] == TRUTH_CUTOFFS[-1]).sum()


def test_truth_eligibility_matches_the_data(scored: pd.DataFrame) -> None:
    assert (scored["eligible"] == scored["eligible_data"]).all()
    assert set(scored.loc[scored["eligible"], "offer_id"]) == set(offers(catalogue())["offer_id"])


@pytest.mark.parametrize("offer_type", ["cross-sell", "up-sell"])
def test_truth_is_calibrated(scored: pd.DataFrame, offer_type: str) -> None:
    eligible = scored[scored["eligible"] & (scored["offer_type"] == offer_type)]
    p = eligible["true_probability"].to_numpy()
    expected, sd = p.sum(), np.sqrt((p * (1 - p)).sum())
    realized = eligible["adopted"].sum()
    assert abs(realized - expected) < 3.5 * sd, (realized, expected, sd)
    assert 0.02 < p.mean() < 0.15


def test_truth_follows_open_trigger_windows(scored: pd.DataFrame, truth_world: tuple[Path, Path, dict],
                                            truth_purchases: pd.DataFrame) -> None:
    """Customers whose cross-category "later" window is open at the cutoff adopt far more, as the truth says."""
    pairs = pd.read_csv(truth_world[1] / "complements.csv").query(
        "kind == 'later' and antecedent_category != consequent_category")
    open_window = pd.Series(False, index=scored.index)
    for (category, lag_max), group in pairs.groupby(["consequent_category", "lag_days_max"]):
        antecedent = truth_purchases[truth_purchases["product_id"].isin(group["antecedent_product"])]
        for cutoff in TRUTH_CUTOFFS:
            first = antecedent[antecedent["date"] <= pd.Timestamp(cutoff)].groupby("customer_id")["date"].min()
            rows = (scored["cutoff"] == cutoff) & (scored["offer_id"] == f"cross-sell:{category}")
            since = (pd.Timestamp(cutoff) - scored.loc[rows, "customer_id"].map(first)).dt.days
            open_window[rows] = (since < lag_max).to_numpy()
    targets = scored["offer_id"].isin("cross-sell:" + pairs["consequent_category"]) & scored["eligible"]
    inside, outside = scored[targets & open_window], scored[targets & ~open_window]
    assert len(inside) >= 30
    assert inside["adopted"].mean() > 3 * outside["adopted"].mean()
    p = inside["true_probability"]
    assert abs(inside["adopted"].sum() - p.sum()) < 3.5 * np.sqrt((p * (1 - p)).sum())


def test_truth_ranks_adopters_first(scored: pd.DataFrame) -> None:
    eligible = scored[scored["eligible"]]
    assert _auc(eligible["true_probability"].to_numpy(), eligible["adopted"].to_numpy()) > 0.7


def test_truth_needs_the_same_spec(truth_world: tuple[Path, Path, dict]) -> None:
    with pytest.raises(ValueError, match="different spec"):
        true_propensity(truth_world[1], WorldSpec(**{**TRUTH.__dict__, "seed": 0}), cutoff=TRUTH_CUTOFFS[0])
    saved = json.loads((truth_world[1] / "world.json").read_text())
    assert saved["summary"] == truth_world[2]
