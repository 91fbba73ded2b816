"""Fail when a monitoring check of the run date breached its threshold (so that the scheduler alerts).

Reads the ``monitoring`` rows the run wrote (feature and score PSI, rule overlap, realized lift and
calibration of matured campaigns) and exits with status 2 and one line per breach; a run without a
breach prints a one-line summary. No Spark: it only reads the warehouse.

    python -m jobs.check --run-date 2025-12-31
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from xsell import runtime, warehouse
from xsell.config import Settings

log = logging.getLogger("xsell.check")


def breaches(settings: Settings, run_date: dt.date) -> tuple[int, list[str]]:
    """(checks made, one readable line per breach) for ``run_date``."""
    target = warehouse.open_warehouse(settings)
    rows = target.query(
        f"SELECT source, check_name, offer_id, subject, value, expected, threshold, breach, detail "
        f"FROM {target.table_name(warehouse.MONITORING)} WHERE run_date = ? "
        f"ORDER BY source, check_name, offer_id, subject", [run_date])
    lines = [
        f"{check} {offer_id} {subject}: {value:.4g} (expected {_number(expected)}, threshold {_number(threshold)}; "
        f"{detail}) [{source}]"
        for source, check, offer_id, subject, value, expected, threshold, breach, detail in rows if breach
    ]
    return len(rows), lines


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def run(settings: Settings, run_date: dt.date) -> int:
    checked, found = breaches(settings, run_date)
    if found:
        raise runtime.CheckFailed(f"{len(found)} of {checked} monitoring checks breached for {run_date}:\n  "
                                  + "\n  ".join(found))
    log.info("%s: %d monitoring checks, no breach", run_date, checked)
    return checked


def main(argv: list[str] | None = None) -> None:
    args = runtime.parser(__doc__.splitlines()[0]).parse_args(argv)

    def job(args: argparse.Namespace, settings: Settings) -> None:
        run(settings, args.run_date)

    runtime.execute(job, args)


if __name__ == "__main__":
    main(sys.argv[1:])
