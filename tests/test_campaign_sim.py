"""Tests of the demo world's campaigns and drift: untouched history, planted uplift recovered from the data,
drift after its start only, the world's identity, and ``xsell simulate-campaign``.

No Spark (the DuckDB warehouse of the CLI tests is written with duckdb directly). The landing zone is read
with the independent readers of ``test_generate``.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from test_generate import _clean_purchases, _files, _read_csv_table, _realized

from xsell import cli, schemas
from xsell.config import Settings
from xsell.generate import (
    CELLS,
    DEFAULT_UPLIFT,
    FX_PER_GBP,
    PLANTED_COLUMNS,
    Campaign,
    Drift,
    WorldSpec,
    catalogue,
    generate,
    offers,
    read_world,
    true_propensity,
)
from xsell.schemas import ORDER_LINES, ORDER_LINES_DDL

RUN_DATE = date(2025, 6, 30)
HORIZON = 30
# Enough customers for an uplift of 0.3 on an up-sell (a few hundred eligible owners) to stand out.
SPEC = WorldSpec(customers=3000, start=date(2025, 1, 1), end=RUN_DATE + timedelta(days=HORIZON), seed=21,
                 dirty_share=0.01)
UPLIFT = {"cross-sell:bikes": 0.3, "up-sell:care_plan": 0.3, "cross-sell:home": 0.0}


def _quiet(_: str) -> None:
    pass


def _audience(truth: Path, cutoff: date, offer_ids: list[str], *, seed: int = 0) -> pd.DataFrame:
    """Every eligible customer of ``offer_ids`` at ``cutoff``, half of them (at random) in the control cell."""
    spec, campaigns, drift = read_world(truth)
    scores = true_propensity(truth, spec, cutoff=cutoff, horizon_days=HORIZON, campaigns=campaigns, drift=drift)
    rows = scores.loc[scores["eligible"] & scores["offer_id"].isin(offer_ids), ["customer_id", "offer_id"]]
    cells = np.where(np.random.default_rng(seed).random(len(rows)) < 0.5, "treatment", "control")
    return rows.assign(cell=cells).reset_index(drop=True)


def _order_days(landing: Path) -> dict[str, bytes]:
    return {name: content for name, content in _files(landing).items() if name.startswith(ORDER_LINES)}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same spec without and with a campaign at RUN_DATE: the roots of both."""
    root = tmp_path_factory.mktemp("campaign")
    generate(root / "plain" / "landing", root / "plain" / "truth", SPEC, log=_quiet)
    audience = _audience(root / "plain" / "truth", RUN_DATE, list(UPLIFT))
    campaign = Campaign(RUN_DATE, audience, UPLIFT, HORIZON)
    generate(root / "treated" / "landing", root / "treated" / "truth", SPEC, campaigns=[campaign], log=_quiet)
    return {"plain": root / "plain", "treated": root / "treated"}


@pytest.fixture(scope="module")
def planted(worlds: dict[str, Path]) -> pd.DataFrame:
    return pd.read_csv(worlds["treated"] / "truth" / "campaigns" / f"run_date={RUN_DATE}" / "planted.csv")


# --- the campaign --------------------------------------------------------------------------------------
def test_days_up_to_the_run_date_are_untouched(worlds: dict[str, Path]) -> None:
    plain, treated = _order_days(worlds["plain"] / "landing"), _order_days(worlds["treated"] / "landing")
    assert plain.keys() == treated.keys()
    day = {name: date.fromisoformat(name.split("date=")[1][:10]) for name in plain}
    assert all(plain[name] == treated[name] for name in plain if day[name] <= RUN_DATE)
    assert all(plain[name] != treated[name] for name in plain if day[name] > RUN_DATE)


def test_campaign_truth_is_written(worlds: dict[str, Path], planted: pd.DataFrame) -> None:
    truth = worlds["treated"] / "truth"
    audience = pd.read_parquet(truth / "campaigns" / f"run_date={RUN_DATE}" / "audience.parquet")
    assert list(audience.columns) == ["customer_id", "offer_id", "cell"]
    assert list(planted.columns) == list(PLANTED_COLUMNS)
    assert planted["offer_id"].tolist() == [o for o in offers(catalogue())["offer_id"] if o in UPLIFT]
    cells = audience.groupby(["offer_id", "cell"]).size().unstack()
    by_offer = planted.set_index("offer_id")
    assert (by_offer["treated"] == cells["treatment"]).all() and (by_offer["control"] == cells["control"]).all()
    assert (by_offer["eligible"] == by_offer["treated"] + by_offer["control"]).all()  # the audience is eligible
    assert by_offer["planted_uplift"].to_dict() == UPLIFT
    saved = json.loads((truth / "world.json").read_text())
    assert [c["run_date"] for c in saved["campaigns"]] == [str(RUN_DATE)]
    assert saved["summary"]["campaign_orders"] > 0
    assert "campaigns" not in json.loads((worlds["plain"] / "truth" / "world.json").read_text())


def test_truth_needs_the_same_campaigns(worlds: dict[str, Path]) -> None:
    truth = worlds["treated"] / "truth"
    with pytest.raises(ValueError, match="different spec, campaigns or drift"):
        true_propensity(truth, SPEC, cutoff=RUN_DATE)
    spec, campaigns, drift = read_world(truth)
    assert spec == SPEC and len(campaigns) == 1 and drift is None
    assert campaigns[0].uplift == UPLIFT and campaigns[0].horizon_days == HORIZON
    scores = true_propensity(truth, spec, cutoff=RUN_DATE, campaigns=campaigns)
    # Nothing of the campaign happened by its run date: the natural propensity there is the plain world's.
    plain = true_propensity(worlds["plain"] / "truth", SPEC, cutoff=RUN_DATE)
    pd.testing.assert_frame_equal(scores, plain)


def test_planted_uplift_is_recovered_from_the_data(worlds: dict[str, Path], planted: pd.DataFrame) -> None:
    """Treated-minus-control adoption rates, realized in the written order lines, against the planted truth."""
    truth = worlds["treated"] / "truth"
    audience = pd.read_parquet(truth / "campaigns" / f"run_date={RUN_DATE}" / "audience.parquet")
    lines = _read_csv_table(worlds["treated"] / "landing", ORDER_LINES, ORDER_LINES_DDL)
    assert not lines.drop_duplicates().duplicated(["order_id", "line_number"]).any()  # only "duplicate" dirt repeats
    purchases = _clean_purchases(lines)
    realized = _realized(purchases, audience["customer_id"].drop_duplicates().reset_index(drop=True), RUN_DATE,
                         HORIZON)
    rows = audience.merge(realized, on=["offer_id", "customer_id"], how="left", validate="one_to_one")
    assert rows["eligible_data"].all()
    rates = rows.groupby(["offer_id", "cell"])["adopted"].agg(["mean", "size"]).unstack()
    for offer in planted.itertuples(index=False):
        (treated, control), (n_t, n_c) = (rates.loc[offer.offer_id, (column, list(CELLS))] for column in ("mean", "size"))
        se = np.sqrt(treated * (1 - treated) / n_t + control * (1 - control) / n_c)
        measured = treated - control
        assert abs(measured - offer.expected_absolute_uplift) < 4 * se, (offer.offer_id, measured, se)
        p0 = offer.expected_control_rate
        assert abs(control - p0) < 4 * np.sqrt(p0 * (1 - p0) / n_c), (offer.offer_id, control, p0)
        u = offer.planted_uplift
        assert abs(offer.responders - u * n_t) <= 4 * np.sqrt(u * (1 - u) * n_t), offer.offer_id
    by_offer = planted.set_index("offer_id")
    assert by_offer.loc["cross-sell:bikes", "expected_absolute_uplift"] > 0.25
    assert by_offer.loc["cross-sell:home", "expected_absolute_uplift"] == 0.0
    assert by_offer.loc["cross-sell:home", "responders"] == 0


def test_campaign_checks_its_audience(worlds: dict[str, Path], tmp_path: Path) -> None:
    audience = pd.read_parquet(worlds["treated"] / "truth" / "campaigns" / f"run_date={RUN_DATE}" / "audience.parquet")
    with pytest.raises(ValueError, match="cells must be"):
        Campaign(RUN_DATE, audience.assign(cell="holdout"), UPLIFT, HORIZON)
    with pytest.raises(ValueError, match="no uplift for cross-sell:home"):
        Campaign(RUN_DATE, audience, {"cross-sell:bikes": 0.1, "up-sell:care_plan": 0.1}, HORIZON)
    with pytest.raises(ValueError, match="twice"):
        Campaign(RUN_DATE, pd.concat([audience, audience.head(1)]), UPLIFT, HORIZON)
    one_offer = audience[audience["offer_id"] == "cross-sell:bikes"]
    strange = Campaign(RUN_DATE, one_offer.assign(offer_id="cross-sell:pets"), {"cross-sell:pets": 0.1}, HORIZON)
    late = Campaign(SPEC.start, audience, UPLIFT, HORIZON)  # most of them signed up after the start
    outside = Campaign(SPEC.end + timedelta(days=1), audience, UPLIFT, HORIZON)
    for campaign, message in ((strange, "not an offer"), (late, "signed up by the run date"),
                              (outside, "within the generated range")):
        with pytest.raises(ValueError, match=message):
            generate(tmp_path / "landing", tmp_path / "truth", SPEC, campaigns=[campaign], log=_quiet)
    assert not (tmp_path / "landing").exists()  # checked before anything was written


def test_a_continued_world_keeps_its_customers_and_history(tmp_path: Path) -> None:
    short = WorldSpec(customers=300, start=date(2025, 1, 1), end=date(2025, 2, 28), seed=9)
    longer = short.continued(date(2025, 4, 30))
    assert longer.population_end == short.end and longer.continued(date(2025, 5, 31)).population_end == short.end
    generate(tmp_path / "short", tmp_path / "short_truth", short, log=_quiet)
    generate(tmp_path / "long", tmp_path / "long_truth", longer, log=_quiet)
    before = _order_days(tmp_path / "short")
    assert {name: _order_days(tmp_path / "long")[name] for name in before} == before
    assert json.loads((tmp_path / "long_truth" / "world.json").read_text())["spec"]["population_end"] == "2025-02-28"
    assert "population_end" not in json.loads((tmp_path / "short_truth" / "world.json").read_text())["spec"]


def test_default_uplift_covers_every_offer() -> None:
    table = offers(catalogue()).set_index("offer_id")
    assert set(DEFAULT_UPLIFT) == set(table.index)
    kinds = table["offer_type"]
    for offer_type, low, high in (("cross-sell", 0.03, 0.10), ("up-sell", 0.02, 0.06)):
        values = [u for offer, u in DEFAULT_UPLIFT.items() if kinds[offer] == offer_type]
        assert 0.0 in values and all(u == 0.0 or low <= u <= high for u in values)


# --- drift ---------------------------------------------------------------------------------------------
DRIFT_SPEC = WorldSpec(customers=1200, start=date(2025, 1, 1), end=date(2025, 5, 31), seed=4, dirty_share=0.0)
DRIFT = Drift(date(2025, 4, 1), rate_factor=2.0, spend_factor=1.5)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drift")
    generate(root / "plain" / "landing", root / "plain" / "truth", DRIFT_SPEC, log=_quiet)
    generate(root / "drift" / "landing", root / "drift" / "truth", DRIFT_SPEC, drift=DRIFT, log=_quiet)
    return {"plain": root / "plain", "drift": root / "drift"}


def test_drift_changes_visits_and_prices_from_its_start_only(drifted: dict[str, Path]) -> None:
    plain, drift = _order_days(drifted["plain"] / "landing"), _order_days(drifted["drift"] / "landing")
    day = {name: date.fromisoformat(name.split("date=")[1][:10]) for name in plain}
    assert all(plain[name] == drift[name] for name in plain if day[name] < DRIFT.start)
    start = pd.Timestamp(DRIFT.start)
    lines = {}
    for name, root in drifted.items():
        frame = _read_csv_table(root / "landing", ORDER_LINES, ORDER_LINES_DDL)
        # Customers' orders, one line each; a return is priced at its purchase and is no visit.
        first_lines = frame["customer_id"].notna() & (frame["line_number"] == 1) & (frame["status"] != "returned")
        lines[name] = frame[first_lines]
    orders_after = {name: (frame["date"] >= start).mean() / (frame["date"] < start).mean()
                    for name, frame in lines.items()}
    # The plain world's own after/before ratio takes out the season.
    assert 1.8 < orders_after["drift"] / orders_after["plain"] < 2.2, orders_after
    prices = lines["drift"].merge(catalogue()[["product_id", "list_price"]], on="product_id", how="inner")
    level = prices["unit_price"] / (prices["list_price"] * prices["currency"].map(FX_PER_GBP))
    after = prices["date"] >= start
    assert set(level[after].round(2)) == {1.5, 1.35, 1.2}  # DISCOUNTS times the spend factor
    assert set(level[~after].round(2)) == {1.0, 0.9, 0.8}


def test_true_propensity_follows_the_drift(drifted: dict[str, Path]) -> None:
    plain, drift = drifted["plain"] / "truth", drifted["drift"] / "truth"
    with pytest.raises(ValueError, match="different spec, campaigns or drift"):
        true_propensity(drift, DRIFT_SPEC, cutoff=date(2025, 2, 28))
    # A horizon that ends before the drift: the plain world's truth, to the bit.
    before = date(2025, 2, 28)
    pd.testing.assert_frame_equal(
        true_propensity(drift, DRIFT_SPEC, cutoff=before, horizon_days=HORIZON, drift=DRIFT),
        true_propensity(plain, DRIFT_SPEC, cutoff=before, horizon_days=HORIZON))
    # A horizon inside it: the same state (the days before are the same), a higher chance, still calibrated.
    cutoff = DRIFT.start - timedelta(days=1)
    scores = true_propensity(drift, DRIFT_SPEC, cutoff=cutoff, horizon_days=HORIZON, drift=DRIFT)
    natural = true_propensity(plain, DRIFT_SPEC, cutoff=cutoff, horizon_days=HORIZON)
    assert (scores["eligible"] == natural["eligible"]).all()
    # (A customer with a vanishing affinity has 0 either way.)
    cross = scores["eligible"] & (scores["offer_type"] == "cross-sell") & (natural["true_probability"] > 0)
    assert (scores.loc[cross, "true_probability"] > natural.loc[cross, "true_probability"]).all()
    purchases = _clean_purchases(_read_csv_table(drifted["drift"] / "landing", ORDER_LINES, ORDER_LINES_DDL))
    realized = _realized(purchases, scores["customer_id"].drop_duplicates().reset_index(drop=True), cutoff, HORIZON)
    eligible = scores[scores["eligible"]].merge(realized, on=["offer_id", "customer_id"], how="left",
                                                validate="one_to_one")
    p = eligible["true_probability"]
    assert abs(eligible["adopted"].sum() - p.sum()) < 3.5 * np.sqrt((p * (1 - p)).sum())


# --- xsell simulate-campaign ---------------------------------------------------------------------------
CLI_SPEC = WorldSpec(customers=300, start=date(2025, 1, 1), end=date(2025, 3, 31), seed=2)
FIRST, SECOND = date(2025, 3, 31), date(2025, 4, 15)


def _publish(settings: Settings, run_date: date, audience: pd.DataFrame) -> None:
    """Rows of the live audiences table, as the pipeline publishes them (only the columns read here filled)."""
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type in schemas.AUDIENCE_COLUMNS)
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.duckdb_path)) as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS main.audiences ({columns})")
        rows = audience.assign(run_date=pd.Timestamp(run_date))[["run_date", "offer_id", "customer_id", "cell"]]
        connection.register("published", rows)
        connection.execute("INSERT INTO main.audiences (run_date, offer_id, customer_id, cell) "
                           "SELECT CAST(run_date AS DATE), offer_id, customer_id, cell FROM published")


def _simulate(*arguments: str) -> None:
    cli.main(["--env", "test", "simulate-campaign", *arguments])


def _error(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        _simulate(*arguments)
    assert stopped.value.code == 2
    return capsys.readouterr().err.strip()


def test_simulate_campaign_accumulates_campaigns(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    truth = settings.truth
    generate(settings.landing, truth, CLI_SPEC, log=_quiet)
    true_propensity(truth, CLI_SPEC, cutoff=date(2025, 3, 15), horizon_days=settings.model.horizon_days)
    offer_ids = ["cross-sell:bikes", "cross-sell:office"]
    _publish(settings, FIRST, _audience(truth, FIRST, offer_ids))
    history = _order_days(settings.landing)
    _simulate("--run-date", str(FIRST), "--until", "2025-04-30", "--uplift", "cross-sell:bikes=0.5",
              "--horizon-days", "20")
    first_planted = (truth / "campaigns" / f"run_date={FIRST}" / "planted.csv").read_bytes()
    spec, campaigns, _ = read_world(truth)
    assert spec.end == date(2025, 4, 30) and [c.horizon_days for c in campaigns] == [20]
    assert campaigns[0].uplift == {"cross-sell:bikes": 0.5, "cross-sell:office": DEFAULT_UPLIFT["cross-sell:office"]}
    assert (settings.landing / ORDER_LINES / "date=2025-04-30").is_dir()
    # The world is continued, not redrawn: every day the pipeline saw is as it was.
    assert {name: _order_days(settings.landing)[name] for name in history} == history

    _publish(settings, SECOND, _audience(truth, SECOND, offer_ids, seed=1))
    _simulate("--run-date", str(SECOND), "--until", "2025-05-20", "--drift-from", "2025-05-01", "--drift-rate", "1.5")
    spec, campaigns, drift = read_world(truth)
    assert spec.end == date(2025, 5, 20) and [c.run_date for c in campaigns] == [FIRST, SECOND]
    assert drift == Drift(date(2025, 5, 1), rate_factor=1.5)
    assert [c.horizon_days for c in campaigns] == [20, settings.model.horizon_days]
    # The first campaign's truth stands: the days up to its horizon are the same world.
    assert (truth / "campaigns" / f"run_date={FIRST}" / "planted.csv").read_bytes() == first_planted
    written = sorted(p.name for p in (truth / "propensity").iterdir())
    assert written == ["cutoff=2025-03-15", f"cutoff={FIRST}", f"cutoff={SECOND}"]
    assert "2 campaign(s)" in capsys.readouterr().out


def test_simulate_campaign_errors_are_one_line(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    missing = settings.truth / "world.json"
    assert _error(capsys, "--run-date", "2025-03-31", "--until", "2025-04-30") == \
        f"xsell simulate-campaign: {missing}: not found (write the demo world first: xsell generate)"
    assert _error(capsys, "--run-date", "2025-03-31", "--until", "2025-03-31") == \
        "xsell simulate-campaign: --until 2025-03-31 must be after --run-date 2025-03-31"
    generate(settings.landing, settings.truth, CLI_SPEC, log=_quiet)
    assert _error(capsys, "--run-date", "2025-03-31", "--until", "2025-04-30") == \
        f"xsell simulate-campaign: no audience published for 2025-03-31: no warehouse file {settings.duckdb_path}"
    _publish(settings, date(2025, 3, 30), pd.DataFrame({"customer_id": ["C000001"], "offer_id": ["cross-sell:bikes"],
                                                         "cell": ["treatment"]}))
    assert _error(capsys, "--run-date", "2025-03-31", "--until", "2025-04-30") == \
        f"xsell simulate-campaign: no audience published for 2025-03-31 in {settings.duckdb_path}"
    with pytest.raises(SystemExit):
        _simulate("--run-date", "2025-03-30", "--until", "2025-04-30", "--uplift", "cross-sell:pets=0.1")
    assert "not an offer of the demo world: cross-sell:pets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _simulate("--run-date", "2025-03-30", "--until", "2025-04-30", "--drift-from", "2025-03-01")
    assert "--drift-from 2025-03-01 must be after --run-date 2025-03-30" in capsys.readouterr().err
    assert read_world(settings.truth)[0] == CLI_SPEC  # nothing was regenerated


def test_generate_plants_a_drift(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--env", "test", "generate", "--customers", "200", "--start", "2025-01-01", "--end", "2025-02-28"]
    cli.main([*base, "--drift-from", "2025-02-01", "--drift-spend", "1.2", "--truth-cutoff", "2025-01-31"])
    assert read_world(settings.truth)[2] == Drift(date(2025, 2, 1), spend_factor=1.2)
    assert (settings.truth / "propensity" / "cutoff=2025-01-31" / "propensity.parquet").is_file()
    with pytest.raises(SystemExit):
        cli.main([*base, "--drift-rate", "2"])
    assert "--drift-rate and --drift-spend need --drift-from" in capsys.readouterr().err
