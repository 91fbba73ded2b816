"""Validation time against one plain Spark aggregation pass over the same day of order lines.

The plain pass is what a hand-written check would cost at the least: read the day's CSV with its types,
then one aggregation (null counts per column, numeric ranges, distinct keys). The validation is the real
``jobs.validate.run`` for that date: strict text read, header check, parsing, routing to quarantine,
conservation and gates, Great Expectations on the rows kept (with Data Docs), and the writes to the lake
and the warehouse. Both run in one warm Spark session (``local[2]``); each is timed ``--repeat`` times and
the median is reported.

    python bench/validation_speed.py --rows 100000 1000000 [--repeat 3] [--out bench/results/validation.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs import validate  # noqa: E402
from xsell import lake, schemas  # noqa: E402
from xsell.config import load_settings  # noqa: E402
from xsell.spark import session  # noqa: E402

DAY = dt.date(2025, 3, 3)
PRODUCTS = 2000
CUSTOMERS = 50000


def land_day(landing: Path, rows: int, seed: int = 1, *, copy_share: float = 0.0, reused_share: float = 0.0) -> Path:
    """A day of ``rows`` order lines (about 1% of them dirty, ``copy_share`` exact copies of another line and
    ``reused_share`` different lines reusing another's key) and the snapshots it needs."""
    rng = np.random.default_rng(seed)
    order = rng.integers(0, rows // 3, rows)
    seconds = rng.integers(0, 86400, rows)
    frame = pd.DataFrame({
        "order_id": [f"O{value}" for value in order],
        "line_number": pd.Series(order).groupby(order).cumcount() + 1,
        "customer_id": [f"C{value}" for value in rng.integers(0, CUSTOMERS, rows)],
        "order_ts": (pd.Timestamp(DAY) + pd.to_timedelta(seconds, unit="s")).strftime("%Y-%m-%d %H:%M:%S"),
        "product_id": [f"P{value}" for value in rng.zipf(1.3, rows) % PRODUCTS],
        "quantity": rng.integers(1, 4, rows),
        "unit_price": np.round(rng.uniform(1, 200, rows), 2),
        "currency": "GBP",
        "channel": rng.choice(["web", "app", "store"], rows),
        "status": np.where(rng.random(rows) < 0.02, "cancelled", "completed"),
    })
    # Exact copies of lines (a line written twice) and reused keys (a different line with the same order
    # id and line number), which the routing must find: they replace random lines, so the day keeps its size.
    copies, reused = int(rows * copy_share), int(rows * reused_share)
    if copies + reused:
        picked = rng.choice(rows, size=2 * (copies + reused), replace=False)
        sources, targets = picked[: copies + reused], picked[copies + reused:]
        frame.iloc[targets] = frame.iloc[sources].to_numpy()
        frame.loc[frame.index[targets[copies:]], "quantity"] = 7
    dirty = rng.random(rows) < 0.01
    frame.loc[dirty, "unit_price"] = 0.0
    frame.loc[rng.random(rows) < 0.05, "customer_id"] = ""
    folder = landing / "order_lines" / f"date={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "part-0.csv"
    frame.to_csv(path, index=False)
    products = pd.DataFrame({"product_id": [f"P{i}" for i in range(PRODUCTS)], "name": "thing", "category": "c",
                             "family": "", "tier": "", "list_price": 10.0, "margin_rate": 0.3, "active": "true"})
    customers = pd.DataFrame({"customer_id": [f"C{i}" for i in range(CUSTOMERS)], "signup_date": "2024-01-01",
                              "region": "north", "marketing_consent": "true", "consent_updated_at": "2024-01-01 00:00:00"})
    for table, snapshot in (("products", products), ("customers", customers)):
        (landing / table / f"date={DAY}").mkdir(parents=True, exist_ok=True)
        snapshot.to_csv(landing / table / f"date={DAY}" / "part-0.csv", index=False)
    return path


def plain_pass(spark, path: Path) -> None:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    frame = spark.read.csv(str(path), header=True, schema=schemas.ORDER_LINES_DDL)
    frame.agg(
        *[F.sum(F.col(column).isNull().cast("long")).alias(f"null_{column}") for column in frame.columns],
        F.min("quantity"), F.max("quantity"), F.min("unit_price"), F.max("unit_price"),
        F.min("order_ts"), F.max("order_ts"),
        F.count_distinct("order_id", "line_number").alias("keys"), F.count("*").alias("rows"),
    ).collect()


WRITES: list[float] = []
_write_partitions = lake.write_partitions


def _timed_write(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    _write_partitions(*args, **kwargs)
    WRITES.append(time.perf_counter() - start)


lake.write_partitions = _timed_write  # the job's lake writes, timed apart from the checks


def timed(function, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median wall time of ``function`` and median time spent in lake writes."""
    times, writes = [], []
    for _ in range(repeat):
        WRITES.clear()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
        writes.append(sum(WRITES))
    return statistics.median(times), statistics.median(writes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=float, default=0.005, help="share of lines that copy another line")
    parser.add_argument("--reused-keys", type=float, default=0.001, help="share of lines reusing another's key")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(overrides={"home": home})
        settings = settings.model_copy(update={"home": Path(home)})
        spark = session(settings, "xsell-bench-validation")
        for rows in args.rows:
            path = land_day(settings.landing, rows, copy_share=args.copies, reused_share=args.reused_keys)
            plain_pass(spark, path)  # warm-up: JIT, file cache
            plain, _ = timed(lambda: plain_pass(spark, path), args.repeat)
            # Spark reuses a cached plan across identical runs: start every run with an empty cache.
            full, writes = timed(lambda: (spark.catalog.clearCache(), validate.run(spark, settings, DAY, run_id="bench")),
                                 args.repeat)
            results.append((rows, plain, full - writes, full))
            print(f"{rows:>10,d} rows: plain pass {plain:6.1f} s, validation checks {full - writes:6.1f} s "
                  f"({(full - writes) / plain:4.2f}x), whole job with lake writes {full:6.1f} s ({full / plain:4.2f}x)",
                  flush=True)
            spark.catalog.clearCache()
    table = ["| order lines in the day | plain Spark pass (s) | validation checks (s) | ratio | whole job incl. lake writes (s) | ratio |",
             "|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {rows:,d} | {plain:.1f} | {checks:.1f} | {checks / plain:.2f}x | {full:.1f} | {full / plain:.2f}x |"
              for rows, plain, checks, full in results]
    print("\n".join(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
