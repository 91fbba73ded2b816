"""Recommendation quality of the basket rules against a most-popular baseline, on a time split of real data.

The question (the rule quality issue): does recommending from xsell's rules find the new items a customer
buys next better than recommending the most popular items? Rules are mined with ``rules.mine_rules`` on
the baskets before the split only; each customer's next order after the split is predicted.

**Splits.**

* ``instacart``: ``instacart_sample/user_history/df_sample.csv`` (complete prior histories of 593 users).
  Per user, the last prior order is the next order; the earlier orders are the history, and only their
  baskets are mined. The file's last user is left out entirely: the README warns that it may be cut
  short, and its last order (2 lines) would be a truncated target. The relational sample
  (``orders.csv``) is not used: it has 1.02 orders per user, so no history. Instacart has no dates, only
  order numbers, so other users' history orders may fall after a user's next order in real time; no
  user's own next order is ever mined.
* ``online-retail``: ``online_retail/by-day/*.csv``. Baskets are the invoices before ``--cutoff``
  (guest invoices included); a customer (with a CustomerID and at least one invoice before the cutoff)
  is evaluated on its first invoice on or after the cutoff (earliest time, then smallest invoice number).
  Dropped lines: cancellations (``C`` invoices), adjustments (``A`` invoices), non-product stock codes
  (``xsell.importers.ONLINE_RETAIL_NON_PRODUCTS``, matched whole) and quantities of zero or less.
  Stock codes are upper-cased: 95 of the 100 lower-case codes (``85123a``) are written elsewhere in
  upper case with the same description, and left apart they would count as new items.

**Protocol, per evaluated customer.** History ``H``: the distinct items bought before the split; next
items ``T``; targets ``T - H`` (cross-sell: new items only); customers with no target are skipped.

* ``popularity``: the ``K`` items in most mined-window baskets (all baskets, oversized ones too), not in
  ``H`` (ties by item id).
* ``rules``: every candidate ``c`` not in ``H`` with a rule ``X -> c``, ``X`` a subset of ``H`` (any
  antecedent length up to ``max_len - 1``), scored by its best rule's confidence; ties by that rule's
  lift, then popularity, then item id. The top ``K``; fewer than ``K`` candidates are topped up with the
  most popular items not in ``H`` and not already recommended.
* ``bought_together``: the same, from the rules xsell publishes to the shop
  (``rules.bought_together(rules, top=K)``: significant single-item rules with lift above 1, the top
  ``K`` per product).

Metrics at ``K = 10``, averaged over the customers: hit rate (at least one target recommended),
precision (targets recommended / K), recall (targets recommended / |targets|) and MAP (average precision
normalised by min(|targets|, K)). ``from rules`` is the mean number of the K slots filled by rules
rather than by the popularity top-up. The notes give, per rule recommender, a 95% paired bootstrap
interval of its difference from popularity (customers resampled, 2,000 times), and the share of rules
whose itemset was bought by one customer only (a guest invoice counts as its own customer): such a rule
describes one customer's habit, not an association across customers.

Mining uses the pipeline's rule settings (``conf/base.yaml``, with the ``online_retail`` overlay for
Online Retail): ``max_len``, ``max_basket_items`` (larger baskets are left out of mining), the itemset
budget and the FDR of ``significant``. Support and confidence are arguments; the table gives the
support asked for and the minimum basket count used (a note says so when the budget raised it).

    python bench/rules_quality.py --datasets instacart online-retail --out bench/results/rules_quality.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import command  # noqa: E402
from xsell import rules  # noqa: E402
from xsell.config import Settings, load_settings  # noqa: E402
from xsell.importers import ONLINE_RETAIL_NON_PRODUCTS  # noqa: E402
from xsell.spark import session  # noqa: E402

K = 10
INSTACART, ONLINE_RETAIL = "instacart", "online-retail"
DATASETS = (INSTACART, ONLINE_RETAIL)
LABELS = {INSTACART: "Instacart user histories", ONLINE_RETAIL: "Online Retail"}
#: The configuration overlay whose rule settings the pipeline uses for each dataset ("" = base only).
ENVS = {INSTACART: "", ONLINE_RETAIL: "online_retail"}
POPULARITY, RULES, BOUGHT_TOGETHER = "popularity", "rules", "bought_together"
METRICS = ("hit", "precision", "recall", "map")
BOOTSTRAP = 2000  # resamples of the customers for the paired intervals
#: Written above the table, so that the results file says what was measured.
PROTOCOL = (
    "Per customer: history H = distinct items bought before the split, targets = items of the next order "
    "not in H (customers with none are skipped). Rules are mined on the baskets before the split only. "
    "**popularity**: the 10 items in most mined baskets, not in H. **rules**: candidates c not in H "
    "scored by the best confidence of a rule X -> c with X in H (ties: lift, popularity), topped up with "
    "popular items. **bought_together**: the same from `rules.bought_together(rules, top=10)`, the "
    "shop's list. MAP@10 normalised by min(|targets|, 10); *from rules* = slots of 10 filled by rules. "
    "Instacart: the last prior order of each user is predicted. Online Retail: each customer's first "
    "invoice on or after the cutoff is predicted. See the docstring of bench/rules_quality.py."
)


@dataclass
class Split:
    """Mining baskets before the split, and per evaluated customer its history and its targets."""

    baskets: list[list[str]]
    owners: list[str]  # who bought each basket: the customer, or the invoice itself for a guest
    history: dict[str, set[str]]
    targets: dict[str, set[str]]
    notes: list[str] = field(default_factory=list)


# --- the splits -------------------------------------------------------------------------------------
def instacart_split(shared: Path) -> Split:
    """Each user's last prior order against the earlier ones (see the module docstring)."""
    path = shared / "instacart_sample" / "user_history" / "df_sample.csv"
    lines = pd.read_csv(path, usecols=["order_id", "user_id", "order_number", "product_id"])
    cut_user = lines["user_id"].iloc[-1]
    lines = lines[lines["user_id"] != cut_user].assign(
        item=lambda frame: frame["product_id"].astype(str), customer=lambda frame: frame["user_id"].astype(str))
    is_next = lines["order_number"] == lines.groupby("user_id")["order_number"].transform("max")
    before, after = lines[~is_next], lines[is_next]
    split = _split(before, after, basket="order_id")
    split.notes.insert(0, f"Instacart: user {cut_user} (the file's last, possibly cut short) left out; "
                          f"{lines['user_id'].nunique()} users, {before['order_id'].nunique():,} history orders")
    return split


def online_retail_split(shared: Path, cutoff: dt.date) -> Split:
    """Each customer's first invoice from ``cutoff`` on against the invoices before it."""
    files = sorted((shared / "online_retail" / "by-day").glob("*.csv"))
    if not files:
        raise SystemExit(f"no Online Retail CSVs under {shared / 'online_retail' / 'by-day'}")
    raw = pd.concat([pd.read_csv(path, dtype=str, keep_default_na=False) for path in files], ignore_index=True)
    is_purchase = (
        ~raw["InvoiceNo"].str.startswith(("C", "A"))
        & ~raw["StockCode"].str.fullmatch(ONLINE_RETAIL_NON_PRODUCTS.pattern)
        & (pd.to_numeric(raw["Quantity"], errors="coerce") > 0)
    )
    lines = raw[is_purchase].assign(
        item=lambda frame: frame["StockCode"].str.upper(),
        customer=lambda frame: frame["CustomerID"].str.replace(r"\.0$", "", regex=True),
        ts=lambda frame: pd.to_datetime(frame["InvoiceDate"], format="%Y-%m-%d %H:%M:%S"),
    )
    # An invoice's lines can straddle a minute: the invoice's time is its first line's.
    lines["invoice_ts"] = lines.groupby("InvoiceNo")["ts"].transform("min")
    is_before = lines["invoice_ts"] < pd.Timestamp(cutoff)
    before = lines[is_before]
    known = lines[~is_before & (lines["customer"] != "")]
    first = (known[["customer", "invoice_ts", "InvoiceNo"]].drop_duplicates()
             .sort_values(["customer", "invoice_ts", "InvoiceNo"]).drop_duplicates("customer"))
    after = known[known["InvoiceNo"].isin(first["InvoiceNo"])]
    split = _split(before, after, basket="InvoiceNo")
    split.notes.insert(0, f"Online Retail: {len(raw):,} lines read, {int((~is_purchase).sum()):,} dropped "
                          f"(cancellations, adjustments, non-products, quantity <= 0); cutoff {cutoff}, data to "
                          f"{lines['invoice_ts'].max():%Y-%m-%d}")
    return split


def _split(before: pd.DataFrame, after: pd.DataFrame, *, basket: str) -> Split:
    """Baskets of ``before``; histories from ``before``'s customers, targets from ``after``'s."""
    grouped = before.groupby(basket).agg(items=("item", lambda items: sorted(set(items))),
                                         customer=("customer", "first"))
    owners = [customer or f"guest {key}" for key, customer in zip(grouped.index.astype(str), grouped["customer"])]
    history = before[before["customer"] != ""].groupby("customer")["item"].agg(set).to_dict()
    nxt = after.groupby("customer")["item"].agg(set).to_dict()
    targets = {customer: nxt[customer] - history[customer] for customer in nxt if customer in history}
    empty = sum(1 for new in targets.values() if not new)
    kept = {customer: new for customer, new in targets.items() if new}
    note = f"{len(targets):,} customers with a history and a next order, {empty:,} skipped (no new item)"
    return Split(grouped["items"].tolist(), owners, history, kept, [note])


# --- the recommenders -------------------------------------------------------------------------------
class RuleScorer:
    """Best rule ``X -> c`` (by confidence, then lift) per candidate ``c``, over the ``X`` inside a history.

    Rules are grouped by antecedent and the antecedents indexed by their first item, so a history only
    visits the antecedents that start with one of its items.
    """

    def __init__(self, antecedents: Iterable[tuple[str, ...]], consequents: Iterable[str],
                 confidences: Iterable[float], lifts: Iterable[float]) -> None:
        by_antecedent: dict[tuple[str, ...], list[tuple[str, float, float]]] = defaultdict(list)
        for antecedent, consequent, confidence, lift in zip(antecedents, consequents, confidences, lifts):
            by_antecedent[tuple(antecedent)].append((consequent, float(confidence), float(lift)))
        self.by_first: dict[str, list[tuple[tuple[str, ...], list]]] = defaultdict(list)
        for antecedent, consequents_ in by_antecedent.items():
            self.by_first[antecedent[0]].append((antecedent, consequents_))

    def scores(self, history: set[str]) -> dict[str, tuple[float, float]]:
        best: dict[str, tuple[float, float]] = {}
        for item in history:
            for antecedent, consequents in self.by_first.get(item, ()):
                if not all(other in history for other in antecedent[1:]):
                    continue
                for consequent, confidence, lift in consequents:
                    if consequent not in history and (confidence, lift) > best.get(consequent, (-1.0, -1.0)):
                        best[consequent] = (confidence, lift)
        return best


def recommend(history: set[str], scores: dict[str, tuple[float, float]], popular: list[str],
              count_of: dict[str, int]) -> tuple[list[str], int]:
    """The top ``K`` scored items, topped up from ``popular``, and how many came from the scores."""
    ranked = sorted(scores, key=lambda item: (-scores[item][0], -scores[item][1], -count_of.get(item, 0), item))[:K]
    chosen = set(ranked)
    for item in popular:
        if len(ranked) == K:
            break
        if item not in history and item not in chosen:
            ranked.append(item)
            chosen.add(item)
    return ranked, min(len(scores), K)


def quality(recommended: list[str], targets: set[str]) -> dict[str, float]:
    """Hit, precision, recall and average precision of the first ``K`` recommendations."""
    hits = [item in targets for item in recommended[:K]]
    found, precision_sum = 0, 0.0
    for rank, hit in enumerate(hits, start=1):
        if hit:
            found += 1
            precision_sum += found / rank
    return {"hit": float(found > 0), "precision": found / K, "recall": found / len(targets),
            "map": precision_sum / min(len(targets), K)}


# --- one dataset at one support ---------------------------------------------------------------------
@dataclass
class Result:
    dataset: str
    customers: int
    baskets: int
    min_support: float
    min_count: int
    min_confidence: float
    rules: int
    mining_s: float
    methods: dict[str, dict[str, float]]
    notes: list[str]


def evaluate(spark: SparkSession, split: Split, settings: Settings, *, dataset: str, min_support: float,
             min_confidence: float) -> Result:
    """Mine the split's baskets at ``min_support``, then score the three recommenders on its customers."""
    count_of = Counter(item for basket in split.baskets for item in basket)
    popular = sorted(count_of, key=lambda item: (-count_of[item], item))
    frame = spark.createDataFrame([(basket,) for basket in split.baskets], "items ARRAY<STRING>")
    started = time.perf_counter()
    mined_rules, mined = rules.mine_rules(
        frame, min_support=min_support, min_confidence=min_confidence, max_len=settings.rules.max_len,
        max_items=settings.rules.max_basket_items, budget=settings.rules.max_itemsets,
        adaptive=settings.rules.adaptive_support, fdr=settings.rules.fdr)
    mining_s = time.perf_counter() - started
    published = rules.bought_together(mined_rules, top=K)
    scorers = {
        RULES: RuleScorer(mined_rules["antecedent"], mined_rules["consequent"], mined_rules["confidence"],
                          mined_rules["lift"]),
        BOUGHT_TOGETHER: RuleScorer(published["product_id"].map(lambda item: (item,)),
                                    published["recommended_product_id"], published["confidence"], published["lift"]),
    }
    per_customer: dict[str, list[dict[str, float]]] = {method: [] for method in (POPULARITY, *scorers)}
    for customer, targets in split.targets.items():
        history = split.history[customer]
        recommended, _ = recommend(history, {}, popular, count_of)
        per_customer[POPULARITY].append(quality(recommended, targets))
        for method, scorer in scorers.items():
            recommended, from_rules = recommend(history, scorer.scores(history), popular, count_of)
            per_customer[method].append({**quality(recommended, targets), "from_rules": from_rules})
    frames = {method: pd.DataFrame(rows) for method, rows in per_customer.items()}
    methods = {method: frame.mean().to_dict() for method, frame in frames.items()}
    intervals = {method: paired_interval(frames[method], frames[POPULARITY]) for method in scorers}
    notes = ["; ".join(f"{method} minus popularity, 95% paired bootstrap interval: hit@10 "
                       f"[{low['hit']:+.3f}, {high['hit']:+.3f}], MAP@10 [{low['map']:+.4f}, {high['map']:+.4f}]"
                       for method, (low, high) in intervals.items()),
             f"{single_customer_share(mined_rules, split):.0%} of the rules have an itemset bought by one customer "
             "only",
             f"{mined.baskets.oversized:,} baskets over {settings.rules.max_basket_items} items and "
             f"{mined.baskets.empty:,} empty ones left out of mining; {len(published):,} bought_together pairs",
             *mined.notes]
    if mined.support_raised:
        notes.append(f"the itemset budget raised the minimum count from {mined.requested_min_count} "
                     f"to {mined.min_count}")
    return Result(LABELS[dataset], len(split.targets), mined.baskets.kept, min_support, mined.min_count,
                  min_confidence, len(mined_rules), mining_s, methods, notes)


def single_customer_share(mined_rules: pd.DataFrame, split: Split) -> float:
    """Share of the rules whose itemset (antecedent and consequent) is in the baskets of one customer only."""
    holding: dict[str, set[int]] = defaultdict(set)
    for index, basket in enumerate(split.baskets):
        for item in basket:
            holding[item].add(index)
    owners: dict[frozenset, int] = {}
    single = 0
    for antecedent, consequent in zip(mined_rules["antecedent"], mined_rules["consequent"]):
        itemset = frozenset((*antecedent, consequent))
        if itemset not in owners:
            baskets = set.intersection(*(holding[item] for item in itemset))
            owners[itemset] = len({split.owners[index] for index in baskets})
        single += owners[itemset] == 1
    return single / max(len(mined_rules), 1)


def paired_interval(method: pd.DataFrame, baseline: pd.DataFrame, *, resamples: int = BOOTSTRAP,
                    seed: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """2.5% and 97.5% quantiles of the mean per-customer difference, customers resampled with replacement."""
    rng = np.random.default_rng(seed)
    difference = (method[list(METRICS)] - baseline[list(METRICS)]).to_numpy()
    draws = rng.integers(0, len(difference), size=(resamples, len(difference)))
    means = difference[draws].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975], axis=0)
    return dict(zip(METRICS, low)), dict(zip(METRICS, high))


# --- the report ---------------------------------------------------------------------------------------
def table(results: list[Result]) -> list[str]:
    lines = ["| dataset | customers | baskets mined | min support (count) | min confidence | rules | method | "
             "hit@10 | precision@10 | recall@10 | MAP@10 | hit vs popularity | MAP vs popularity | from rules |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        base = result.methods[POPULARITY]
        for method, values in result.methods.items():
            ratio_hit = f"{values['hit'] / base['hit']:.2f}x" if base["hit"] else "n/a"
            ratio_map = f"{values['map'] / base['map']:.2f}x" if base["map"] else "n/a"
            from_rules = f"{values['from_rules']:.1f}" if "from_rules" in values else ""
            lines.append(
                f"| {result.dataset} | {result.customers:,} | {result.baskets:,} | {result.min_support:g} "
                f"({result.min_count}) | {result.min_confidence:g} | {result.rules:,} | {method} | "
                f"{values['hit']:.3f} | {values['precision']:.4f} | {values['recall']:.4f} | {values['map']:.4f} | "
                f"{ratio_hit} | {ratio_map} | {from_rules} |")
    return lines


def header() -> str:
    from importlib.metadata import version

    run = command("bench/rules_quality.py")
    return (f"{dt.date.today().isoformat()}, {os.cpu_count()} cores ({platform.machine()}, Python "
            f"{platform.python_version()}, pyfim {version('pyfim')}, PySpark {version('pyspark')}); `{run}`")


# --- main -----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, default=os.environ.get("XSELL_SHARED_DATA"),
                        help="the shared data folder (default: $XSELL_SHARED_DATA)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--instacart-support", type=float, nargs="+", default=[0.005, 0.002, 0.001])
    parser.add_argument("--instacart-confidence", type=float, default=0.01)
    parser.add_argument("--online-retail-support", type=float, nargs="+", default=[0.01, 0.005])
    parser.add_argument("--online-retail-confidence", type=float, default=0.01)
    parser.add_argument("--cutoff", type=dt.date.fromisoformat, default=dt.date(2011, 9, 1),
                        help="Online Retail: invoices before this day are mined, the first one after is predicted")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (bench/results/rules_quality.md)")
    args = parser.parse_args(argv)
    if args.shared_data is None:
        parser.error("--shared-data or XSELL_SHARED_DATA is required")
    return args


def main() -> None:
    args = parse_args()
    results, notes = [], []
    with tempfile.TemporaryDirectory() as home:
        # A temporary home: nothing of this run lands in the repository's var/.
        settings = {name: load_settings(env, overrides={"home": home}) for name, env in ENVS.items()}
        spark = session(settings[INSTACART], "xsell-bench-rules-quality")
        for dataset in args.datasets:
            if dataset == INSTACART:
                split = instacart_split(args.shared_data)
                supports, confidence = args.instacart_support, args.instacart_confidence
            else:
                split = online_retail_split(args.shared_data, args.cutoff)
                supports, confidence = args.online_retail_support, args.online_retail_confidence
            notes.extend(split.notes)
            for min_support in supports:
                result = evaluate(spark, split, settings[dataset], dataset=dataset, min_support=min_support,
                                  min_confidence=confidence)
                results.append(result)
                print(f"{result.dataset}, min support {min_support}: {result.rules:,} rules mined in "
                      f"{result.mining_s:.1f} s; " + "; ".join(
                          f"{method} hit {values['hit']:.3f} MAP {values['map']:.4f}"
                          for method, values in result.methods.items()), flush=True)
                notes.append(f"{result.dataset}, min support {min_support}: mined in {result.mining_s:.1f} s; "
                             + "; ".join(result.notes))
        spark.stop()
    lines = [header(), "", PROTOCOL, "", *table(results), "", *(f"- {note}" for note in notes)]
    print("\n" + "\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
