"""The ``xsell`` command: demo data and one-shot local runs.

    xsell generate [--customers N] [--start D] [--end D] [--seed S] [--dirty-share F] [--format csv|parquet]
    xsell import FORMAT SOURCE [--landing DIR] [--hierarchy FILE]   # a public dataset into the landing zone
    xsell run --run-date D [--since D] [--env ENV]   # every stage in one process, for notebooks and debugging
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from xsell.config import load_settings
from xsell.runtime import EXIT_USER_ERROR, configure_logging


def _generate(args: argparse.Namespace) -> None:
    from xsell import generate

    settings = load_settings(args.env)
    spec = generate.WorldSpec(customers=args.customers, start=args.start, end=args.end, seed=args.seed,
                              dirty_share=args.dirty_share, fmt=args.format)
    landing = Path(args.landing) if args.landing else settings.landing
    truth = Path(args.truth) if args.truth else settings.truth
    summary = generate.generate(landing, truth, spec)
    for cutoff in args.truth_cutoff or ():
        generate.true_propensity(truth, spec, cutoff=cutoff, horizon_days=settings.model.horizon_days)
    print(f"xsell generate: {summary}")


def _import(args: argparse.Namespace) -> None:
    from xsell import importers

    if args.hierarchy and args.format != importers.GROCERIES_MEMBER:
        args.parser.error(f"--hierarchy applies to {importers.GROCERIES_MEMBER} only")
    landing = Path(args.landing) if args.landing else load_settings(args.env).landing
    hierarchy = Path(args.hierarchy) if args.hierarchy else None
    try:
        report = importers.import_source(args.format, Path(args.source), landing, hierarchy=hierarchy)
    except importers.SourceError as error:
        print(f"xsell import: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    print(f"xsell import: {report} -> {landing}")


def _run(args: argparse.Namespace) -> None:
    from jobs import basket_rules, features, score_publish, train, validate
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
    gen.add_argument("--landing", default=None, help="default: <home>/landing")
    gen.add_argument("--truth", default=None, help="default: <home>/truth")
    gen.add_argument("--truth-cutoff", type=dt.date.fromisoformat, action="append",
                     help="also write each customer's true propensity per offer for this cutoff (repeatable)")
    gen.set_defaults(handler=_generate)

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

    summary = commands.add_parser("summary", help="print what a run published")
    summary.add_argument("--run-date", type=dt.date.fromisoformat, required=True)
    summary.set_defaults(handler=_summary)

    args = parser.parse_args(argv)
    configure_logging()
    args.handler(args)


if __name__ == "__main__":
    main(sys.argv[1:])
