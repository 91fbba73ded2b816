"""Every stage in order on a tiny generated world, in this process: the audience and its guarantees."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from conftest import postgres_database
from jobs import backtest, basket_rules, features, score_publish, train, validate
from xsell import generate, lake, rules, tracking, warehouse
from xsell.config import ConfigError, Settings, load_settings

START, RUN_DATE = dt.date(2025, 1, 1), dt.date(2025, 6, 30)
OFFERS = [
    {"offer_id": "cross-sell:bike_care", "offer_type": "cross-sell", "target": "bike_care"},
    {"offer_id": "cross-sell:bikes", "offer_type": "cross-sell", "target": "bikes"},
    {"offer_id": "up-sell:laptop", "offer_type": "up-sell", "target": "laptop"},
]


def run_all(spark: SparkSession, settings: Settings, run_id: str, *, since: dt.date | None = None) -> str:
    validate.run(spark, settings, RUN_DATE, run_id=run_id, since=since)
    basket_rules.run(spark, settings, RUN_DATE, run_id=run_id)
    features.run(spark, settings, RUN_DATE)
    train.run(spark, settings, RUN_DATE, run_id=run_id)
    return score_publish.run(spark, settings, RUN_DATE, run_id=run_id)


@pytest.fixture(scope="module")
def world(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    home = tmp_path_factory.mktemp("world") / "var"
    # An absolute support: the small world's complement antecedents sit in a few dozen baskets each.
    settings = load_settings("test", overrides={"home": str(home), "offers": OFFERS, "rules": {"min_support": 6}})
    spec = generate.WorldSpec(customers=1000, start=START, end=RUN_DATE, seed=11)
    generate.generate(settings.landing, settings.truth, spec, log=lambda _: None)
    # The truth of the out-of-time fold: training logs the oracle's ROC-AUC beside the model's.
    valid = features.cutoffs(RUN_DATE, settings.model).valid
    generate.true_propensity(settings.truth, spec, cutoff=valid - dt.timedelta(days=1),
                             horizon_days=settings.model.horizon_days)
    content_hash = run_all(spark, settings, "first", since=START)
    return settings, content_hash


def audience(settings: Settings) -> pd.DataFrame:
    target = warehouse.open_warehouse(settings)
    columns = [name for name, _ in warehouse.TABLES[warehouse.AUDIENCES][0]]
    return pd.DataFrame(target.query(f"SELECT {', '.join(columns)} FROM main.audiences ORDER BY offer_id, customer_id"),
                        columns=columns)


def test_audience_covers_every_offer_once_per_customer(world: tuple[Settings, str]) -> None:
    settings, _ = world
    rows = audience(settings)
    assert set(rows.offer_id) == {offer["offer_id"] for offer in OFFERS}
    assert not rows.duplicated(["run_date", "offer_id", "customer_id"]).any()
    assert (rows.groupby("customer_id").size() <= settings.audience.max_offers_per_customer).all()
    assert rows.score.between(0, 1).all()
    assert set(rows.cell) == {"treatment", "control"}
    assert rows.model_version.notna().all() and rows.reason.str.len().gt(0).all()


def test_opted_out_customers_are_never_published(world: tuple[Settings, str]) -> None:
    settings, _ = world
    snapshot = pd.read_csv(next((settings.landing / "customers" / f"date={RUN_DATE}").glob("*.csv")))
    opted_out = set(snapshot.loc[~snapshot.marketing_consent.astype(bool), "customer_id"])
    ordered = set(pd.concat(pd.read_csv(p) for p in (settings.landing / "order_lines").glob("*/*.csv")).customer_id)
    assert opted_out & ordered, "the world must have opted-out customers who buy, or this test proves nothing"
    assert not opted_out & set(audience(settings).customer_id)


def test_cross_sell_targets_never_bought_the_category(world: tuple[Settings, str], spark: SparkSession) -> None:
    settings, _ = world
    lines = lake.read(spark, settings.lake, "order_lines").toPandas()
    products = pd.read_csv(next((settings.landing / "products" / f"date={RUN_DATE}").glob("*.csv")))
    bought = lines.merge(products, on="product_id")
    bought = bought[(bought.status == "completed") & (bought.quantity > 0)]
    owners = set(bought.loc[bought.category == "bike_care", "customer_id"])
    targeted = set(audience(settings).query("offer_id == 'cross-sell:bike_care'").customer_id)
    assert targeted and not targeted & owners


def test_run_is_recorded_with_model_versions(world: tuple[Settings, str]) -> None:
    settings, content_hash = world
    runs = warehouse.open_warehouse(settings).query("SELECT run_id, rows_total, content_hash, model_versions FROM main.audience_runs")
    assert [(r[0], r[2]) for r in runs] == [("first", content_hash)]
    assert runs[0][1] == len(audience(settings))
    for offer in OFFERS:
        assert offer["offer_id"] in runs[0][3]


def _rule_tables(settings: Settings) -> dict[str, list[tuple]]:
    target = warehouse.open_warehouse(settings)
    return {table: target.query(f"SELECT * FROM main.{table} ORDER BY ALL")
            for table in (warehouse.BASKET_RULES, warehouse.FOLLOWUP_RULES, warehouse.BUNDLES, warehouse.BOUGHT_TOGETHER)}


def test_planted_complements_are_among_the_top_rules_of_their_antecedent(world: tuple[Settings, str],
                                                                         spark: SparkSession) -> None:
    settings, _ = world
    shop = pd.DataFrame(warehouse.open_warehouse(settings).query(
        "SELECT product_id, recommended_product_id FROM main.bought_together"), columns=["product_id", "recommended"])
    planted = pd.read_csv(settings.truth / "complements.csv").query("kind == 'same_basket'")
    lines = lake.read(spark, settings.lake, "order_lines").select("order_id", "product_id", "status", "quantity").toPandas()
    sold = lines[(lines.status == "completed") & (lines.quantity > 0)]
    baskets_with = sold.groupby("product_id")["order_id"].nunique()
    min_count = rules.support_threshold(settings.rules.min_support, sold["order_id"].nunique())
    # Judge the pairs whose planted strength makes them clearly frequent in this small world.
    expected = planted.antecedent_product.map(baskets_with).fillna(0) * planted.strength
    judged = planted[expected >= 2 * min_count]
    assert len(judged) >= 5, f"only {len(judged)} planted pairs are frequent enough to judge: this test proves nothing"
    top = shop.groupby("product_id")["recommended"].apply(set)
    missing = [(a, c) for a, c in zip(judged.antecedent_product, judged.consequent_product) if c not in top.get(a, set())]
    assert not missing


def test_followup_bundles_and_category_rules_are_published(world: tuple[Settings, str]) -> None:
    settings, _ = world
    target = warehouse.open_warehouse(settings)
    later = pd.DataFrame(target.query("SELECT antecedent, consequent, median_lag_days, lift FROM main.followup_rules"),
                         columns=["antecedent", "consequent", "median_lag", "lift"])
    planted = pd.read_csv(settings.truth / "complements.csv").query("kind == 'later'")
    found = later.merge(planted, left_on=["antecedent", "consequent"], right_on=["antecedent_product", "consequent_product"])
    # A planted follow-up raises the consequent's rate after the antecedent; an everyday consequent (coffee
    # beans) can still show a lift near 1 in a small world, so most, not all, must show it.
    assert len(found) >= 3 and (found.lift > 1).mean() >= 0.75
    assert found.median_lag.between(found.lag_days_min, found.lag_days_max).mean() >= 0.5
    bundles = target.query("SELECT rank, expected_margin, lift FROM main.bundles ORDER BY rank")
    assert bundles and [b[0] for b in bundles] == list(range(1, len(bundles) + 1))
    assert all(a[1] >= b[1] for a, b in zip(bundles, bundles[1:])) and all(b[2] >= settings.rules.bundles.min_lift for b in bundles)
    levels = dict(target.query("SELECT level, count(*) FROM main.basket_rules GROUP BY level"))
    assert levels.get("product", 0) > 0 and levels.get("category", 0) > 0


def test_every_model_run_logs_baselines_plots_signature_and_provenance(world: tuple[Settings, str]) -> None:
    import mlflow

    settings, _ = world
    tracking.configure(settings)
    client = mlflow.MlflowClient()
    for offer in OFFERS:
        name = f"xsell_{offer['offer_type'].replace('-', '_')}_{offer['target']}"
        version = tracking.champion(name)
        run = client.get_run(client.get_model_version(name, version.version).run_id)
        metrics, params = run.data.metrics, run.data.params
        for key in ("roc_auc", "pr_auc", "brier", "lift_d1", "capture_d10", "rule_baseline_roc_auc",
                    "popularity_baseline_roc_auc", "popularity_baseline_brier"):
            assert key in metrics, (name, key)
        assert metrics["capture_d10"] == pytest.approx(1.0)
        # Platt scaling is monotone: a champion ranks the fold as its classifier does, better than chance.
        assert metrics["roc_auc"] == pytest.approx(metrics["classifier_roc_auc"]) and metrics["roc_auc"] > 0.5
        # A few dozen adopters per offer in this tiny world: the oracle is logged, not judged, here.
        assert 0.0 < metrics["oracle_roc_auc"] <= 1.0
        assert metrics["oracle_ratio"] == pytest.approx(metrics["roc_auc"] / metrics["oracle_roc_auc"])
        assert params["calibration"] == "platt" and len(params["train_cutoff_dates"].split(",")) == 2
        assert params["train_digest"] != params["valid_digest"] and params["code_version"]
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"gain_chart.png", "calibration_curve.png", "feature_importance.png", "deciles.json"} <= artifacts
        info = mlflow.models.get_model_info(version.uri)
        assert info.signature is not None and "rule_lift" in info.signature.inputs.input_names()
        history = tracking.champion_history(name)
        assert history and history[-1]["to_version"] == version.version


def test_backtest_judges_earlier_folds_and_leaves_registry_and_lake_alone(world: tuple[Settings, str],
                                                                         spark: SparkSession) -> None:
    import mlflow

    settings, _ = world
    offer_id, name = "cross-sell:bike_care", "xsell_cross_sell_bike_care"
    tracking.configure(settings)
    client = mlflow.MlflowClient()
    champion = tracking.champion(name)
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))
    feature_files = {path: path.stat().st_mtime_ns for path in (settings.lake / "features").rglob("*.parquet")}

    table = backtest.run(spark, settings, RUN_DATE, folds=2, run_id="backtest", only=[offer_id])

    horizon = dt.timedelta(days=settings.model.horizon_days)
    end = RUN_DATE + dt.timedelta(days=1)
    assert list(table.offer_id) == [offer_id] * 2
    assert list(table.fold_cutoff) == [end - horizon, end - 2 * horizon]
    for fold, train_cutoffs, customers in zip(table.fold_cutoff, table.train_cutoffs, table.train_panel_customers):
        # Every training label window ends before its fold's starts.
        assert all(dt.date.fromisoformat(c) + horizon <= fold for c in train_cutoffs.split(","))
        # Every training cutoff contributes customers, also the older fold's oldest, whose features the
        # nightly never computed (the lake has no partition for it): the backtest computes its own.
        assert len(customers.split(",")) == len(train_cutoffs.split(",")) and all(int(n) > 0 for n in customers.split(","))
    oldest = min(dt.date.fromisoformat(c) for c in table.train_cutoffs[1].split(","))
    assert not (settings.lake / "features" / f"cutoff={oldest}").exists()
    assert (table.status == "fitted").all()
    assert table[["roc_auc", "pr_auc", "brier", "popularity_roc_auc", "rule_roc_auc"]].stack().between(0, 1).all()
    assert (table.fold_positives > 0).all() and (table.train_positives > 0).all()
    # Fold 0 is the nightly training's own fold: the same customers and adopters as the champion was judged on.
    logged = client.get_run(champion.run_id).data.metrics
    assert (table.fold_rows[0], table.fold_positives[0]) == (logged["rows"], logged["positives"])
    assert table.roc_auc[0] == pytest.approx(logged["roc_auc"], abs=0.02)
    # The older fold has its own customers and adopters.
    assert (table.fold_rows[1], table.fold_positives[1]) != (table.fold_rows[0], table.fold_positives[0])

    assert tracking.champion(name).version == champion.version
    assert sorted(v.version for v in client.search_model_versions(f"name = '{name}'")) == versions
    assert {path: path.stat().st_mtime_ns for path in (settings.lake / "features").rglob("*.parquet")} == feature_files
    runs = mlflow.search_runs(experiment_names=[settings.mlflow.experiment],
                              filter_string=f"tags.`{backtest.KIND_TAG}` = 'backtest'")
    assert len(runs) == 1
    with pytest.raises(ConfigError, match="no configured offer cross-sell:nothing"):
        backtest.run(spark, settings, RUN_DATE, folds=1, run_id="backtest", only=["cross-sell:nothing"])
    logged_folds = client.load_table(runs.experiment_id[0], backtest.FOLDS_TABLE, run_ids=[runs.run_id[0]])
    assert list(logged_folds.roc_auc) == pytest.approx(list(table.roc_auc))
    assert runs[f"metrics.{offer_id.replace(':', '/')}/roc_auc_mean"][0] == pytest.approx(table.roc_auc.mean())


def test_rerun_of_the_date_publishes_the_same_audience(world: tuple[Settings, str], spark: SparkSession) -> None:
    settings, content_hash = world
    before = audience(settings)
    rules_before = _rule_tables(settings)
    champions = {o["offer_id"]: tracking.champion(f"xsell_{o['offer_type'].replace('-', '_')}_{o['target']}").version
                 for o in OFFERS}
    features_before = {cutoff: lake.read(spark, settings.lake, "features").filter(f"cutoff = '{cutoff}'").collect()
                       for cutoff in features.cutoffs(RUN_DATE, settings.model).all}
    assert run_all(spark, settings, "second") == content_hash
    for cutoff, rows in features_before.items():
        again = lake.read(spark, settings.lake, "features").filter(f"cutoff = '{cutoff}'").collect()
        assert sorted(again) == sorted(rows), f"features as of {cutoff} changed on rerun"
    after = audience(settings)
    pd.testing.assert_frame_equal(before.drop(columns="run_id"), after.drop(columns="run_id"))
    assert rules_before == _rule_tables(settings)
    assert champions == {o["offer_id"]: tracking.champion(f"xsell_{o['offer_type'].replace('-', '_')}_{o['target']}").version
                         for o in OFFERS}, "retraining on the same data keeps the champion"


def test_bad_day_stops_before_anything_is_published(world: tuple[Settings, str], spark: SparkSession, tmp_path: Path) -> None:
    settings, _ = world
    next_day = RUN_DATE + dt.timedelta(days=1)
    folder = settings.landing / "order_lines" / f"date={next_day}"
    folder.mkdir(parents=True)
    (folder / "part-00000.csv").write_text("order_id,line_number,customer_id\nO1,1,C000001\n")
    with pytest.raises(validate.validation.DataQualityError, match=r"date=2025-07-01/part-00000\.csv: missing column"):
        validate.run(spark, settings, next_day, run_id="bad")
    assert not warehouse.open_warehouse(settings).query("SELECT * FROM main.audiences WHERE run_date = ?", [next_day])


def test_stale_consent_blocks_the_publish_and_keeps_the_audience(world: tuple[Settings, str], spark: SparkSession) -> None:
    settings, _ = world
    before = audience(settings)
    strict = settings.model_copy(update={"audience": settings.audience.model_copy(update={"max_consent_age_days": 0})})
    later = RUN_DATE + dt.timedelta(days=2)
    with pytest.raises(score_publish.runtime.PublishBlocked, match=r"customers \(consent\) snapshot is from 2025-06-30"):
        score_publish.run(spark, strict, later, run_id="stale")
    pd.testing.assert_frame_equal(before, audience(settings))
    status = warehouse.open_warehouse(settings).query("SELECT status FROM main.audience_runs WHERE run_id = 'stale'")
    assert status and status[0][0].startswith("blocked: the customers (consent) snapshot")


def test_every_row_explains_itself_and_removals_are_accounted(world: tuple[Settings, str]) -> None:
    settings, _ = world
    rows = audience(settings)
    assert rows.reason.str.split(" | ", regex=False).str.len().le(3).all()
    assert rows.reason.str.contains("people who buy it buy|spends on|time since|owns a", regex=True).mean() > 0.5
    removed = warehouse.open_warehouse(settings).query(
        "SELECT rows_removed FROM main.audience_runs WHERE status = 'published' ORDER BY published_at DESC LIMIT 1")[0][0]
    for key in ("consent_opted_out_customers", "ineligible:cross-sell:bikes", "arbitration", "consent_in_transaction",
                "retention_purged_rows"):
        assert key in removed


def test_postgres_target_publishes_the_same_audience(world: tuple[Settings, str], spark: SparkSession) -> None:
    settings, content_hash = world
    host = postgres_database("xsell_test")
    on_postgres = settings.model_copy(update={"warehouse": settings.warehouse.model_copy(update={
        "target": "postgres", "schema_name": "xsell_pipeline",
        "postgres": settings.warehouse.postgres.model_copy(update={"host": host, "dbname": "xsell_test"})})})
    target = warehouse.PostgresWarehouse(on_postgres)
    with target._connect() as connection:
        connection.execute("DROP SCHEMA IF EXISTS xsell_pipeline CASCADE")
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    assert score_publish.run(spark, on_postgres, RUN_DATE, run_id="pg") == content_hash
    rows = target.query("SELECT count(*), count(DISTINCT (offer_id, customer_id)) FROM xsell_pipeline.audiences")
    assert rows[0][0] == rows[0][1] == len(audience(settings))
    view = target.query("SELECT DISTINCT cell FROM xsell_pipeline.crm_audience_current")
    assert view == [("treatment",)]


def test_missing_consent_snapshot_blocks_the_publish(world: tuple[Settings, str], spark: SparkSession, tmp_path: Path) -> None:
    settings, _ = world
    before = audience(settings)
    snapshots = settings.lake / "customers"
    snapshots.rename(tmp_path / "customers")
    try:
        with pytest.raises(score_publish.runtime.PublishBlocked, match="no validated customers snapshot"):
            score_publish.run(spark, settings, RUN_DATE, run_id="no-consent")
    finally:
        (tmp_path / "customers").rename(snapshots)
    pd.testing.assert_frame_equal(before, audience(settings))
    status = warehouse.open_warehouse(settings).query("SELECT status FROM main.audience_runs WHERE run_id = 'no-consent'")
    assert status[0][0].startswith("blocked: input missing")
