"""What every job's ``main`` shares: the common arguments and the clean failure of a user's mistake."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import uuid
from collections.abc import Callable, Sequence

from xsell.config import ConfigError, Settings, load_settings

log = logging.getLogger("xsell")

#: Exit status of a run stopped by bad input or bad configuration (as opposed to a crash).
EXIT_USER_ERROR = 2


class PublishBlocked(RuntimeError):
    """A publish refused by a safety check (consent, volume, keys); the previous audience stays."""


class JobRefused(RuntimeError):
    """A job asked for something it cannot do (a campaign that has not matured yet, say)."""


class CheckFailed(RuntimeError):
    """A monitoring threshold was breached: the check task fails so that the scheduler alerts."""


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run-date", required=True, type=dt.date.fromisoformat,
                        help="the scheduler's data-interval date, YYYY-MM-DD")
    parser.add_argument("--run-id", default=None, help="the scheduler's run id (default: a new id)")
    parser.add_argument("--env", default=None, help="configuration overlays, e.g. postgres or test,postgres")
    return parser


def new_run_id(run_date: dt.date) -> str:
    return f"manual__{run_date.isoformat()}__{uuid.uuid4().hex[:8]}"


def configure_logging() -> None:
    """xsell's progress at INFO; the chatty libraries only when they have something to warn about."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("great_expectations", "py4j", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def execute(job: Callable[[argparse.Namespace, Settings], None], args: argparse.Namespace) -> None:
    """Run ``job``; bad data or configuration ends with one clear line and exit status 2, no stack trace."""
    from xsell.rules import RuleBudgetExceeded
    from xsell.tracking import TrackingUnavailable
    from xsell.validation import DataQualityError

    configure_logging()
    try:
        settings = load_settings(args.env)
        args.run_id = args.run_id or new_run_id(args.run_date)
        job(args, settings)
    except (DataQualityError, ConfigError, PublishBlocked, RuleBudgetExceeded, TrackingUnavailable,
            FileNotFoundError, JobRefused, CheckFailed) as error:
        log.error("%s", error)
        print(f"xsell: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def split_list(values: Sequence[str] | None) -> list[str]:
    return [item for value in values or () for item in value.split(",") if item]
