"""Rule stage speed and memory: xsell against a single-process pyfim script and Spark MLlib's FPGrowth.

The goal (the rule stage issue): xsell's rule stage, from a basket file to the rules, within 3x of a
single-process pyfim script doing the same, with identical results. Each engine runs in its own
subprocess on the same basket file, one basket per line:

* ``pyfim``: read the file, ``fim.fpgrowth`` for the itemsets, then again for the rules with
  ``mode="o"`` (pyfim's default rule support is the antecedent's; ``"o"`` is the support of antecedent
  and consequent together, the definition of arules, MLlib and xsell). Reading the file is counted in
  the itemset time.
* ``xsell``: a ``local[2]`` session built as the jobs build it, then ``rules.read_basket_file`` and
  ``rules.mine_rules``, twice in the same session: the first run (cold: JVM and Python workers warm up)
  and the second (warm) are reported apart, and so is the session start.
* ``mllib``: ``pyspark.ml.fpm.FPGrowth`` on the same baskets: ``fit`` plus ``freqItemsets.count()``,
  then ``associationRules.count()``. MLlib does not keep its itemsets: the rules recompute them.

Peak memory is the larger of the engine's process-tree resident set (the sum over the Python driver,
the JVM and the Python workers, sampled every 0.2 s with psutil) and the largest single process's
``ru_maxrss`` (``wait4``). After each dataset xsell's itemsets and rules are compared with pyfim's,
and the counts with MLlib's; the script exits with 1 when any differ.

Synthetic baskets: ``--sizes`` baskets over 5,000 items with Zipf weights (p proportional to 1/rank),
basket sizes max(1, Poisson(7)), items de-duplicated within a basket, written once per size and seed
into ``--workdir`` and reused. The FIMI ``retail.dat`` (``--retail``, by default
``$XSELL_SHARED_DATA/fimi/retail.dat`` when present) is mined with its items as written.

    python bench/rules_speed.py --sizes 100000 1000000 5000000 --out bench/results/rules.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import pickle
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

# Only the standard library at the top: the pyfim subprocess runs this file too, and its peak memory
# must be that of a plain pyfim script, not of numpy, pandas and pyspark.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ITEMS = 5000
MEAN_BASKET = 7
CHUNK = 250_000  # baskets generated per numpy draw: bounds the generator's memory at 5M baskets
ENGINES = ("xsell", "pyfim", "mllib")
SAMPLE_SECONDS = 0.2
SYNTHETIC, RETAIL = "synthetic Zipf", "FIMI retail.dat"


# --- basket files ----------------------------------------------------------------------------------
def synthetic_file(workdir: Path, baskets: int, seed: int) -> Path:
    """The cached basket file of ``baskets`` baskets for ``seed``, written first when missing."""
    path = workdir / f"zipf-{ITEMS}items-{baskets}baskets-seed{seed}.txt"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        write_baskets(partial, baskets, seed=seed)
        partial.rename(path)  # a file cut short by an interrupted run is never reused
        print(f"wrote {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def write_baskets(path: Path, baskets: int, *, seed: int) -> None:
    """Items ``i1``..``i5000`` (``i<rank>``), drawn with Zipf weights, one basket per line."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, ITEMS + 1)
    weights /= weights.sum()
    names = [f"i{rank}" for rank in range(1, ITEMS + 1)]
    with path.open("w") as out:
        for start in range(0, baskets, CHUNK):
            n = min(CHUNK, baskets - start)
            sizes = np.maximum(1, rng.poisson(MEAN_BASKET, n))
            # One draw for the whole chunk: the same distribution as one rng.choice per basket, without
            # a Python call per basket.
            drawn = rng.choice(ITEMS, size=int(sizes.sum()), p=weights)
            owner = np.repeat(np.arange(n), sizes)
            order = np.lexsort((drawn, owner))
            owner, drawn = owner[order], drawn[order]
            first = np.ones(len(drawn), dtype=bool)
            first[1:] = (owner[1:] != owner[:-1]) | (drawn[1:] != drawn[:-1])
            owner, drawn = owner[first], drawn[first]
            bounds = np.searchsorted(owner, np.arange(n + 1)).tolist()
            words = [names[item] for item in drawn.tolist()]
            out.write("\n".join(" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])))
            out.write("\n")


def min_count(min_support: float, baskets: int) -> int:
    """``xsell.rules.support_threshold`` for a fraction, restated so that the pyfim script needs no xsell
    import (the comparison checks that both used the same count)."""
    return max(1, math.ceil(Fraction(str(min_support)) * baskets))


# --- the engines, each in its own subprocess --------------------------------------------------------
def run_pyfim(path: str, sep: str, min_support: float, min_confidence: float) -> dict:
    """A plain single-process pyfim script: the file's baskets, their itemsets, their rules."""
    import fim

    started = time.perf_counter()
    with open(path) as lines:  # universal newlines: \n, \r\n and \r end a line, as in Spark's text reader
        baskets = [tuple(dict.fromkeys(line.rstrip("\n").split(sep))) for line in lines if line != "\n"]
    threshold = min_count(min_support, len(baskets))
    itemsets = fim.fpgrowth(baskets, target="s", supp=-threshold, report="a")
    itemsets_s = time.perf_counter() - started
    started = time.perf_counter()
    # mode "o": a rule's support is that of antecedent and consequent together (pyfim's default is the
    # antecedent's alone, which keeps rules whose itemset is not frequent); zmin=2: no empty antecedents.
    found = fim.fpgrowth(baskets, target="r", supp=-threshold, conf=100 * min_confidence, zmin=2,
                         report="a", mode="o")
    rules_s = time.perf_counter() - started
    return {"itemsets_s": itemsets_s, "rules_s": rules_s, "baskets": len(baskets), "min_count": threshold,
            "itemsets": itemsets, "rules": [(body, head, count) for head, body, count in found]}


def _spark(app: str):  # type: ignore[no-untyped-def]
    """The session the jobs use (``xsell.spark.session``: local[2], driver memory 2 GB), with a
    throwaway home."""
    from xsell.config import load_settings
    from xsell.spark import session

    settings = load_settings(overrides={"home": str(Path.cwd() / "home")})
    return session(settings, app)


def _stop(spark) -> None:  # type: ignore[no-untyped-def]
    """Stop the session and wait for the JVM, so that its ``ru_maxrss`` reaches this process's parent."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    spark.stop()
    proc = getattr(gateway, "proc", None)
    if proc is not None:
        proc.stdin.close()  # pyspark's JVM exits when its stdin closes
        proc.wait(timeout=60)


def run_xsell(path: str, sep: str, min_support: float, min_confidence: float) -> dict:
    """xsell's rule stage from the file to the rules, cold then warm in one session."""
    started = time.perf_counter()
    spark = _spark("xsell-bench-rules")
    session_s = time.perf_counter() - started
    from xsell import rules

    times = []
    for _ in range(2):
        # An empty cache for every run, as in the validation benchmark.
        spark.catalog.clearCache()
        started = time.perf_counter()
        found, mined = rules.mine_rules(rules.read_basket_file(spark, path, sep=sep), min_support=min_support,
                                        min_confidence=min_confidence)
        times.append(time.perf_counter() - started)
    _stop(spark)
    return {"session_s": session_s, "cold_s": times[0], "warm_s": times[1], "baskets": mined.baskets.kept,
            "min_count": mined.min_count, "support_raised": mined.support_raised, "notes": mined.notes,
            "itemsets": list(zip(mined.itemsets["items"], mined.itemsets["count"].tolist())),
            "rules": list(zip(found["antecedent"], found["consequent"], found["count"].tolist()))}


def run_mllib(path: str, sep: str, min_support: float, min_confidence: float) -> dict:
    """Spark MLlib's FPGrowth on the same baskets, read the same way."""
    from pyspark.ml.fpm import FPGrowth
    from pyspark.sql import functions as F

    from xsell import rules

    started = time.perf_counter()
    spark = _spark("xsell-bench-rules-mllib")
    session_s = time.perf_counter() - started
    # MLlib rejects repeated items in a basket; empty baskets are dropped because MLlib's minimum count
    # is a share of all the baskets it is given, and xsell's of the non-empty ones.
    baskets = (
        rules.read_basket_file(spark, path, sep=sep)
        .select(F.array_distinct("items").alias("items"))
        .filter(F.size("items") > 0)
    )
    started = time.perf_counter()
    model = FPGrowth(itemsCol="items", minSupport=min_support, minConfidence=min_confidence).fit(baskets)
    itemsets = model.freqItemsets.count()
    itemsets_s = time.perf_counter() - started
    started = time.perf_counter()
    found = model.associationRules.count()
    rules_s = time.perf_counter() - started
    _stop(spark)
    return {"session_s": session_s, "itemsets_s": itemsets_s, "rules_s": rules_s, "n_itemsets": itemsets,
            "n_rules": found}


RUNNERS = {"pyfim": run_pyfim, "xsell": run_xsell, "mllib": run_mllib}


# --- running and measuring a subprocess ------------------------------------------------------------
class TreeSampler(threading.Thread):
    """The highest sum of resident sets over a process and its descendants, sampled."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for process in family:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass  # a worker that ended between the listing and the reading
            self.peak = max(self.peak, total)
            self.done.wait(SAMPLE_SECONDS)


def run_engine(engine: str, path: Path, args: argparse.Namespace, label: str) -> dict:
    """``engine`` on ``path`` in a subprocess: its result, wall time and peak memory (MB)."""
    result_path = args.workdir / "results" / f"{label}-{engine}.pkl"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--basket-file", str(path),
               "--sep", args.sep, "--min-support", str(args.min_support), "--min-confidence",
               str(args.min_confidence), "--result", str(result_path)]
    env = dict(os.environ, PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable))
    started = time.perf_counter()
    # The working directory is the workdir: Spark leaves files (spark-warehouse, derby.log) where it runs.
    child = subprocess.Popen(command, cwd=args.workdir, env=env)
    sampler = TreeSampler(child.pid)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)  # wait4, not wait(): this child's own rusage
    child.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{engine} on {path.name} failed with exit code {child.returncode}")
    with result_path.open("rb") as stream:
        result = pickle.load(stream)
    # ru_maxrss is in KiB on Linux.
    tree_mb, largest_mb = sampler.peak / 2**20, usage.ru_maxrss / 1024
    result.update(wall_s=wall, peak_mb=max(tree_mb, largest_mb), tree_mb=tree_mb, largest_process_mb=largest_mb)
    return result


def child_main(args: argparse.Namespace) -> None:
    result = RUNNERS[args.child](args.basket_file, args.sep, args.min_support, args.min_confidence)
    with open(args.result, "wb") as stream:
        pickle.dump(result, stream, protocol=pickle.HIGHEST_PROTOCOL)


# --- comparison and the table ----------------------------------------------------------------------
@dataclass
class Row:
    dataset: str
    baskets: int
    results: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> str:
        if self.differences:
            return "no: " + "; ".join(self.differences)
        if "xsell" in self.results and "pyfim" in self.results:
            return "yes" + (" (MLlib counts too)" if "mllib" in self.results else "")
        return "n/a"


def compare(row: Row) -> None:
    """xsell's itemsets and rules against pyfim's (as sets), and the counts against MLlib's."""
    xsell, pyfim, mllib = (row.results.get(engine) for engine in ENGINES)
    if xsell and xsell["support_raised"]:
        row.differences.append(f"xsell raised the support to {xsell['min_count']} ({'; '.join(xsell['notes'])})")
    if xsell and pyfim:
        if xsell["min_count"] != pyfim["min_count"] or xsell["baskets"] != pyfim["baskets"]:
            row.differences.append(f"minimum count {xsell['min_count']} of {xsell['baskets']} baskets (xsell) "
                                   f"against {pyfim['min_count']} of {pyfim['baskets']} (pyfim)")
        for what, key in (("itemsets", lambda r: (frozenset(r[0]), r[1])),
                          ("rules", lambda r: (frozenset(r[0]), r[1], r[2]))):
            mine, theirs = set(map(key, xsell[what])), set(map(key, pyfim[what]))
            if mine != theirs or len(mine) != len(xsell[what]):
                row.differences.append(f"{what}: {len(mine - theirs)} only in xsell, {len(theirs - mine)} only in "
                                       f"pyfim, {len(xsell[what]) - len(mine)} repeated in xsell")
    reference = xsell or pyfim
    if mllib and reference:
        counts = (len(reference["itemsets"]), len(reference["rules"]))
        if (mllib["n_itemsets"], mllib["n_rules"]) != counts:
            row.differences.append(f"MLlib found {mllib['n_itemsets']} itemsets and {mllib['n_rules']} rules, "
                                   f"against {counts[0]} and {counts[1]}")


COLUMNS = ("dataset", "baskets", "frequent itemsets", "rules", "pyfim itemsets s", "pyfim rules s", "pyfim total s",
           "pyfim peak MB", "xsell session start s", "xsell cold s", "xsell warm s", "xsell peak MB",
           "ratio xsell warm / pyfim total", "ratio cold / pyfim", "MLlib itemsets s", "MLlib rules s",
           "MLlib peak MB", "identical")


def _s(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"


def cells(row: Row) -> list[str]:
    xsell, pyfim, mllib = (row.results.get(engine) for engine in ENGINES)
    reference = xsell or pyfim
    if reference:
        itemsets, found = f"{len(reference['itemsets']):,}", f"{len(reference['rules']):,}"
    elif mllib:
        itemsets, found = f"{mllib['n_itemsets']:,}", f"{mllib['n_rules']:,}"
    else:
        itemsets = found = ""

    def missing(engine: str, width: int) -> list[str]:
        return [row.skipped.get(engine, "not run")] + [""] * (width - 1)

    out = [row.dataset, f"{row.baskets:,}", itemsets, found]
    pyfim_total = pyfim["itemsets_s"] + pyfim["rules_s"] if pyfim else None
    out += ([_s(pyfim["itemsets_s"]), _s(pyfim["rules_s"]), _s(pyfim_total), f"{pyfim['peak_mb']:.0f}"]
            if pyfim else missing("pyfim", 4))
    out += ([_s(xsell["session_s"]), _s(xsell["cold_s"]), _s(xsell["warm_s"]), f"{xsell['peak_mb']:.0f}"]
            if xsell else missing("xsell", 4))
    out += ([f"{xsell['warm_s'] / pyfim_total:.1f}x", f"{xsell['cold_s'] / pyfim_total:.1f}x"]
            if xsell and pyfim else ["", ""])
    out += ([_s(mllib["itemsets_s"]), _s(mllib["rules_s"]), f"{mllib['peak_mb']:.0f}"]
            if mllib else missing("mllib", 3))
    return out + [row.identical]


def table(rows: list[Row]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 2) + "---|"]
    return lines + ["| " + " | ".join(cells(row)) + " |" for row in rows]


def _portable(argument: str) -> str:
    """``argument`` without the paths of this machine: the results file is committed."""
    shared = os.environ.get("XSELL_SHARED_DATA")
    if shared and argument.startswith(shared.rstrip("/") + "/"):
        return "$XSELL_SHARED_DATA/" + argument[len(shared.rstrip("/")) + 1:]
    if argument.startswith(str(REPO) + "/"):
        return argument[len(str(REPO)) + 1:]
    if argument.startswith(tempfile.gettempdir() + "/"):
        return "$TMPDIR/" + argument[len(tempfile.gettempdir()) + 1:]
    return argument


def header(args: argparse.Namespace) -> str:
    from importlib.metadata import version

    command = shlex.join(["python", "bench/rules_speed.py", *map(_portable, sys.argv[1:])])
    return (f"{dt.date.today().isoformat()}, {os.cpu_count()} cores ({platform.machine()}, Python "
            f"{platform.python_version()}, pyfim {version('pyfim')}, PySpark {version('pyspark')}); min support "
            f"{args.min_support}, min confidence {args.min_confidence}; `{command}`")


# --- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    shared = os.environ.get("XSELL_SHARED_DATA")
    retail = Path(shared) / "fimi" / "retail.dat" if shared else None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000, 5_000_000],
                        help="synthetic basket counts (none: only retail.dat)")
    parser.add_argument("--retail", type=Path, default=retail if retail and retail.exists() else None,
                        help="the FIMI retail.dat (default: $XSELL_SHARED_DATA/fimi/retail.dat when present)")
    parser.add_argument("--no-retail", action="store_true", help="skip retail.dat even when it is found")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--mllib-max-baskets", type=int, default=1_000_000,
                        help="MLlib is skipped above this many baskets (too slow: 357 s for 1M)")
    parser.add_argument("--min-support", type=float, default=0.001)
    parser.add_argument("--min-confidence", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "xsell-bench-rules",
                        help="basket files, engine results and Spark's scratch files (not the repository)")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (bench/results/rules.md)")
    parser.add_argument("--sep", default=" ", help=argparse.SUPPRESS)
    # The engines' subprocesses run this file with these.
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--basket-file", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(args)
        return
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    datasets = [(SYNTHETIC, size, None) for size in args.sizes]
    if args.retail and not args.no_retail:
        datasets.append((RETAIL, None, args.retail.resolve()))
    rows = []
    for name, size, path in datasets:
        path = path or synthetic_file(args.workdir, size, args.seed)
        label = f"{size}" if size else path.stem
        row = Row(name, size or sum(1 for line in path.open() if line.strip("\r\n")))
        for engine in args.engines:
            if engine == "mllib" and row.baskets > args.mllib_max_baskets:
                row.skipped[engine] = "skipped (too slow)"
                continue
            print(f"{name}, {row.baskets:,} baskets: {engine} ...", flush=True)
            row.results[engine] = result = run_engine(engine, path, args, label)
            print(f"  {engine}: " + ", ".join(f"{key} {value:.2f}" for key, value in result.items()
                                              if key.endswith(("_s", "_mb"))), flush=True)
        compare(row)
        rows.append(row)
        print(f"  identical: {row.identical}", flush=True)
    lines = [header(args), "", *table(rows)]
    print("\n" + "\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    if any(row.differences for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
