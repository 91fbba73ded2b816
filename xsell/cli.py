"""The ``xsell`` command: demo data and one-shot local runs.

    xsell generate [--customers N] [--start D] [--end D] [--seed S] [--dirty-share F] [--format csv|parquet]
                   [--drift-from D [--drift-rate F] [--drift-spend F]]
    xsell simulate-campaign --run-date D --until D2 [--uplift OFFER=U ...] [--horizon-days H]
                   [--drift-from D ...]   # the demo world continued past D, the audience of D treated
    xsell import FORMAT SOURCE [--landing DIR] [--hierarchy FILE]   # a public dataset into the landing zone
    xsell run --run-date D [--since D] [--env ENV]   # every stage in one process, for notebooks and debugging
    xsell rules BASKETS_FILE --sep SEP --min-support S --min-confidence C [--min-len N] [--max-len N]
                [--level category --hierarchy FILE] --out rules.csv   # association rules of a basket file
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from xsell.config import Settings, load_settings
from xsell.runtime import EXIT_USER_ERROR, configure_logging

if TYPE_CHECKING:
    import pandas as pd

    from xsell.generate import Drift


def _generate(args: argparse.Namespace) -> None:
    from xsell import generate

    settings = load_settings(args.env)
    spec = generate.WorldSpec(customers=args.customers, start=args.start, end=args.end, seed=args.seed,
                              dirty_share=args.dirty_share, fmt=args.format)
    landing, truth = _demo_folders(args, settings)
    drift = _drift(args)
    summary = generate.generate(landing, truth, spec, drift=drift)
    for cutoff in args.truth_cutoff or ():
        generate.true_propensity(truth, spec, cutoff=cutoff, horizon_days=settings.model.horizon_days, drift=drift)
    print(f"xsell generate: {summary}")


def _simulate_campaign(args: argparse.Namespace) -> None:
    """The saved demo world regenerated up to ``--until``, every stored campaign and the audience of
    ``--run-date`` applied (that date's campaign replaced if it was stored before)."""
    from xsell import generate

    command = "simulate-campaign"
    settings = load_settings(args.env)
    if args.until <= args.run_date:
        _fail(command, f"--until {args.until} must be after --run-date {args.run_date}")
    landing, truth = _demo_folders(args, settings)
    try:
        spec, campaigns, drift = generate.read_world(truth)
    except FileNotFoundError as error:
        _fail(command, f"{error.filename}: not found (write the demo world first: xsell generate)")
    except ValueError as error:
        _fail(command, str(error))
    unknown = sorted(set(dict(args.uplift)) - set(generate.DEFAULT_UPLIFT))
    if unknown:
        args.parser.error(f"--uplift: not an offer of the demo world: {', '.join(unknown)}")
    audience = _published_audience(settings, args.run_date)
    if audience.empty:
        _fail(command, f"no audience published for {args.run_date} in {settings.duckdb_path}")
    horizon = settings.model.horizon_days if args.horizon_days is None else args.horizon_days
    new_drift = _drift(args)
    if new_drift is not None and new_drift.start <= args.run_date:
        # The days up to the run date are what the pipeline saw when it published the audience.
        args.parser.error(f"--drift-from {new_drift.start} must be after --run-date {args.run_date}")
    drift = new_drift or drift
    try:
        campaign = generate.Campaign(args.run_date, audience, {**generate.DEFAULT_UPLIFT, **dict(args.uplift)},
                                     horizon)
        campaigns = (*(c for c in campaigns if c.run_date != args.run_date), campaign)
        spec = spec.continued(args.until)
        # The regeneration deletes the truth's propensity files: the ones there were are written again.
        cutoffs = {dt.date.fromisoformat(p.name.removeprefix("cutoff=")) for p in truth.glob("propensity/cutoff=*")}
        cutoffs = sorted(c for c in cutoffs | {args.run_date} if spec.start <= c <= spec.end)
        summary = generate.generate(landing, truth, spec, campaigns=campaigns, drift=drift)
    except ValueError as error:  # nothing is deleted before generate() has checked the campaigns
        _fail(command, str(error))
    for cutoff in cutoffs:
        generate.true_propensity(truth, spec, cutoff=cutoff, horizon_days=settings.model.horizon_days,
                                 campaigns=campaigns, drift=drift)
    planted = truth / "campaigns" / f"run_date={args.run_date}" / "planted.csv"
    print(f"xsell {command}: {len(audience)} audience rows of {args.run_date}, {len(campaigns)} campaign(s), "
          f"world to {args.until}: {summary} -> {planted}")


# --- the one place that reads the warehouse outside xsell.warehouse ----------------------------------
def _published_audience(settings: Settings, run_date: dt.date) -> pd.DataFrame:
    """``customer_id, offer_id, cell`` of the audience published for ``run_date``, read-only from the DuckDB
    warehouse file (``settings.duckdb_path``, schema ``warehouse.schema``); empty if none was published."""
    import duckdb

    from xsell.warehouse import AUDIENCES, identifier

    command = "simulate-campaign"
    if settings.warehouse.target != "duckdb":
        _fail(command, f"reads the DuckDB warehouse only (warehouse.target is {settings.warehouse.target})")
    path = settings.duckdb_path
    if not path.is_file():
        _fail(command, f"no audience published for {run_date}: no warehouse file {path}")
    table = f"{identifier(settings.warehouse.schema_name)}.{identifier(AUDIENCES)}"
    try:
        with duckdb.connect(str(path), read_only=True) as connection:
            return connection.execute(f"SELECT customer_id, offer_id, cell FROM {table} WHERE run_date = ? "
                                      "ORDER BY offer_id, customer_id", [run_date]).df()
    except duckdb.Error as error:
        _fail(command, f"cannot read the audiences of {path}: {str(error).splitlines()[0]}")


def _demo_folders(args: argparse.Namespace, settings: Settings) -> tuple[Path, Path]:
    """The demo world's landing and truth folders: the command's --landing/--truth, else the settings'."""
    return (Path(args.landing) if args.landing else settings.landing,
            Path(args.truth) if args.truth else settings.truth)


def _drift(args: argparse.Namespace) -> Drift | None:
    """The Drift of --drift-from/--drift-rate/--drift-spend, or None when --drift-from is not given."""
    from xsell.generate import Drift

    if args.drift_from is None:
        if args.drift_rate is not None or args.drift_spend is not None:
            args.parser.error("--drift-rate and --drift-spend need --drift-from")
        return None
    try:
        return Drift(args.drift_from, *(1.0 if f is None else f for f in (args.drift_rate, args.drift_spend)))
    except ValueError as error:
        args.parser.error(str(error))


def _uplift(value: str) -> tuple[str, float]:
    """``OFFER=U`` of --uplift."""
    offer, sep, number = value.rpartition("=")
    try:
        uplift = float(number)
    except ValueError:
        uplift = -1.0
    if not sep or not offer or not 0.0 <= uplift < 1.0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected OFFER=U with U in [0, 1)")
    return offer, uplift


def _demo_arguments(command: argparse.ArgumentParser) -> None:
    """Folders and drift, shared by generate and simulate-campaign."""
    command.add_argument("--landing", default=None, help="default: <home>/landing")
    command.add_argument("--truth", default=None, help="default: <home>/truth")
    command.add_argument("--drift-from", type=dt.date.fromisoformat, default=None,
                         help="plant a drift from this day on (without it, simulate-campaign keeps the world's drift)")
    command.add_argument("--drift-rate", type=float, default=None, help="visit rate factor of the drift (default 1)")
    command.add_argument("--drift-spend", type=float, default=None, help="price factor of the drift (default 1)")


def _import(args: argparse.Namespace) -> None:
    from xsell import importers

    if args.hierarchy and args.format != importers.GROCERIES_MEMBER:
        args.parser.error(f"--hierarchy applies to {importers.GROCERIES_MEMBER} only")
    landing = Path(args.landing) if args.landing else load_settings(args.env).landing
    hierarchy = Path(args.hierarchy) if args.hierarchy else None
    try:
        report = importers.import_source(args.format, Path(args.source), landing, hierarchy=hierarchy)
    except importers.SourceError as error:
        _fail("import", str(error))
    print(f"xsell import: {report} -> {landing}")


def _run(args: argparse.Namespace) -> None:
    from jobs import basket_rules, check, features, measure, score_publish, train, validate
    from xsell.runtime import new_run_id
    from xsell.spark import session

    settings = load_settings(args.env)
    spark = session(settings, "xsell-run")
    run_id = args.run_id or new_run_id(args.run_date)
    validate.run(spark, settings, args.run_date, run_id=run_id, since=args.since)
    basket_rules.run(spark, settings, args.run_date, run_id=run_id)
    features.run(spark, settings, args.run_date)
    train.run(spark, settings, args.run_date, run_id=run_id)
    score_publish.run(spark, settings, args.run_date, run_id=run_id)
    measure.run(spark, settings, args.run_date, run_id=run_id)
    check.run(settings, args.run_date)


def _rules(args: argparse.Namespace) -> None:
    import json

    from xsell import rules
    from xsell.spark import session

    source = Path(args.baskets)
    if not source.is_file():
        _fail("rules", f"{source}: no such basket file")
    if args.level == "category" and not args.hierarchy:
        args.parser.error("--level category needs --hierarchy FILE (a CSV: item column, then its category column)")
    try:
        support = float(args.min_support)
        rules.support_threshold(support, 1)
    except ValueError as error:
        args.parser.error(f"--min-support {args.min_support}: {error}")
    spark = session(load_settings(args.env), "xsell-rules")
    baskets = rules.read_basket_file(spark, str(source.resolve()), sep=args.sep)
    if args.level == "category":
        hierarchy = _read_hierarchy(spark, Path(args.hierarchy), args.hierarchy_column)
        baskets = rules.to_level(baskets, hierarchy)
    try:
        found, mined = rules.mine_rules(
            baskets, min_support=support, min_confidence=args.min_confidence, min_len=args.min_len,
            max_len=args.max_len, consequents=_items(args.consequents), antecedents=_items(args.antecedents),
            excluded=_items(args.exclude) or (), max_items=args.max_items, budget=args.budget,
            adaptive=args.adaptive, fdr=args.fdr)
    except rules.RuleBudgetExceeded as error:
        _fail("rules", str(error))
    out = found.assign(antecedent=found["antecedent"].map(lambda items: json.dumps(list(items), ensure_ascii=False)),
                       consequent=found["consequent"].map(lambda item: json.dumps([item], ensure_ascii=False)))
    out.to_csv(args.out, index=False, lineterminator="\n")
    counts = mined.baskets
    raised = f" (raised from {mined.requested_min_count} to keep within the budget)" if mined.support_raised else ""
    print(f"xsell rules: {len(found)} rules from {len(mined.itemsets)} itemsets of {counts.kept} baskets "
          f"({counts.empty} empty, {counts.oversized} oversized left out), min count {mined.min_count}{raised} "
          f"-> {args.out}")


def _items(value: str | None) -> list[str] | None:
    return [item for item in value.split(",") if item] if value else None


def _read_hierarchy(spark, path: Path, column: str | None):
    """``item, level_item`` from a CSV with a header: the first column, and ``column`` (default: the second)."""
    import pandas as pd

    if not path.is_file():
        _fail("rules", f"{path}: no such hierarchy file")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    parent = column or (table.columns[1] if len(table.columns) > 1 else None)
    if parent not in table.columns:
        _fail("rules", f"{path}: no column {parent!r} (columns: {', '.join(table.columns)})")
    pairs = table[[table.columns[0], parent]].drop_duplicates()
    return spark.createDataFrame(pairs.rename(columns={table.columns[0]: "item", parent: "level_item"}),
                                 "item STRING, level_item STRING")


def _fail(command: str, message: str) -> None:
    print(f"xsell {command}: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _summary(args: argparse.Namespace) -> None:
    from xsell import warehouse

    settings = load_settings(args.env)
    target = warehouse.open_warehouse(settings)
    schema = warehouse.identifier(settings.warehouse.schema_name)
    rows = target.query(
        f"SELECT offer_id, cell, count(*), avg(score) FROM {schema}.{warehouse.identifier(warehouse.AUDIENCES)} "
        "WHERE run_date = ? GROUP BY offer_id, cell ORDER BY offer_id, cell",
        [args.run_date])
    rules = target.query(
        f"SELECT count(*) FROM {schema}.{warehouse.identifier(warehouse.BASKET_RULES)} WHERE run_date = ?",
        [args.run_date])[0][0]
    where = settings.duckdb_path if settings.warehouse.target == "duckdb" else settings.warehouse.postgres.jdbc_url
    print(f"audiences for {args.run_date} in {where}:")
    for offer_id, cell, count, mean_score in rows:
        print(f"  {offer_id:32s} {cell:9s} {count:6d} customers, mean score {mean_score:.4f}")
    print(f"basket_rules for {args.run_date}: {rules} rules")
    results = target.query(
        f"SELECT run_date, offer_id, treated, control, treated_rate, control_rate, uplift, uplift_low, uplift_high, "
        f"p_value, status FROM {target.table_name(warehouse.CAMPAIGN_RESULTS)} WHERE measured_on = ? "
        f"ORDER BY run_date, offer_id", [args.run_date])
    if results:
        print(f"campaigns measured on {args.run_date} (treatment against control, uplift with its 95% interval):")
    for campaign, offer_id, treated, control, t_rate, c_rate, uplift, low, high, p_value, status in results:
        if status != "measured":
            print(f"  {campaign} {offer_id:28s} {status}")
            continue
        print(f"  {campaign} {offer_id:28s} treated {t_rate:6.2%} of {treated:5d}, control {c_rate:6.2%} of {control:4d}: "
              f"uplift {uplift:+.2%} [{low:+.2%}, {high:+.2%}], p = {p_value:.3f}")
    checks = target.query(
        f"SELECT check_name, count(*), sum(CASE WHEN breach THEN 1 ELSE 0 END) "
        f"FROM {target.table_name(warehouse.MONITORING)} WHERE run_date = ? GROUP BY check_name ORDER BY check_name",
        [args.run_date])
    if checks:
        print(f"monitoring for {args.run_date}: " + ", ".join(f"{name} {count} checks, {breaches} breached"
                                                              for name, count, breaches in checks))
    print(f"MLflow store: {settings.mlflow_tracking_uri}   (mlflow ui --backend-store-uri {settings.mlflow_tracking_uri})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="xsell", description="cross-sell and up-sell audiences from order data")
    parser.add_argument("--env", default=None, help="configuration overlays (conf/<env>.yaml), comma separated")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write a deterministic demo landing zone and its planted truth")
    gen.add_argument("--customers", type=int, default=4000)
    gen.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2024, 10, 1))
    gen.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2025, 12, 31))
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--dirty-share", type=float, default=0.005)
    gen.add_argument("--format", choices=("csv", "parquet"), default="csv")
    _demo_arguments(gen)
    gen.add_argument("--truth-cutoff", type=dt.date.fromisoformat, action="append",
                     help="also write each customer's true propensity per offer for this cutoff (repeatable)")
    gen.set_defaults(handler=_generate, parser=gen)

    sim = commands.add_parser("simulate-campaign",
                              help="continue the demo world past a run date, its published audience treated")
    sim.add_argument("--run-date", type=dt.date.fromisoformat, required=True, help="the audience's run date D")
    sim.add_argument("--until", type=dt.date.fromisoformat, required=True, help="the world's new last day (> D)")
    sim.add_argument("--uplift", type=_uplift, action="append", default=[], metavar="OFFER=U",
                     help="planted uplift of one offer (repeatable; default: xsell.generate.DEFAULT_UPLIFT)")
    sim.add_argument("--horizon-days", type=int, default=None, help="response window (default: model.horizon_days)")
    _demo_arguments(sim)
    sim.set_defaults(handler=_simulate_campaign, parser=sim)

    imp = commands.add_parser("import", help="map a public dataset onto the raw landing contract")
    # importers.FORMATS, spelled out so that building the parser does not import pandas
    imp.add_argument("format", choices=("online-retail", "groceries-member", "instacart", "dunnhumby"))
    imp.add_argument("source", help="the dataset's file or folder (see the README)")
    imp.add_argument("--landing", default=None, help="default: <home>/landing")
    imp.add_argument("--hierarchy", default=None,
                     help="groceries-member: labels,level2,level1 file (default: ../groceries/ beside the dataset)")
    imp.set_defaults(handler=_import, parser=imp)

    run = commands.add_parser("run", help="run every stage for one date in this process")
    run.add_argument("--run-date", type=dt.date.fromisoformat, required=True)
    run.add_argument("--since", type=dt.date.fromisoformat, default=None, help="validate landed days from here")
    run.add_argument("--run-id", default=None)
    run.set_defaults(handler=_run)

    mine = commands.add_parser("rules", help="association rules of a basket file (one basket per line) to a CSV")
    mine.add_argument("baskets", help="one basket per line, items separated by --sep and kept exactly as written")
    mine.add_argument("--sep", default=",", help="item separator (default: ,)")
    mine.add_argument("--min-support", required=True,
                      help="below 1: a fraction of the baskets (rounded up); 1 or more: a number of baskets")
    mine.add_argument("--min-confidence", type=float, required=True)
    mine.add_argument("--min-len", type=int, default=2, help="fewest items in a rule (antecedent + consequent)")
    mine.add_argument("--max-len", type=int, default=None, help="most items in a rule (default: no limit)")
    mine.add_argument("--level", choices=("item", "category"), default="item")
    mine.add_argument("--hierarchy", default=None, help="CSV with a header: the item column first, then its levels")
    mine.add_argument("--hierarchy-column", default=None, help="the category column (default: the second)")
    mine.add_argument("--consequents", default=None, help="only rules with one of these consequents (comma separated)")
    mine.add_argument("--antecedents", default=None, help="only rules whose antecedent items are all among these")
    mine.add_argument("--exclude", default=None, help="items never mined (comma separated)")
    mine.add_argument("--max-items", type=int, default=None, help="baskets with more items are left out and counted")
    mine.add_argument("--budget", type=int, default=1_000_000, help="most itemsets (default 1,000,000)")
    mine.add_argument("--no-adaptive", dest="adaptive", action="store_false",
                      help="fail with 'rule budget exceeded' instead of raising the support")
    mine.add_argument("--fdr", type=float, default=0.05, help="Benjamini-Hochberg level of `significant`")
    mine.add_argument("--out", required=True, help="the CSV to write")
    mine.set_defaults(handler=_rules, parser=mine)

    summary = commands.add_parser("summary", help="print what a run published")
    summary.add_argument("--run-date", type=dt.date.fromisoformat, required=True)
    summary.set_defaults(handler=_summary)

    args = parser.parse_args(argv)
    configure_logging()
    args.handler(args)


if __name__ == "__main__":
    main(sys.argv[1:])
