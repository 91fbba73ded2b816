"""Frequent itemsets and association rules: exact, bounded and distributed.

**Mining** is parallel FP-growth (Li et al., "PFP", RecSys 2008). Frequent items are ranked by count
and dealt round-robin into groups; every basket sends each group it touches one prefix of its ranked
items, up to its last item of that group; one Spark task per group mines its prefixes with Borgelt's
C FP-growth (PyPI ``pyfim``) and keeps the itemsets whose rarest item belongs to the group. Every
itemset is counted once, on exactly the baskets that hold it, so the counts are exact. Spark MLlib's
FPGrowth needed 357 s for the itemsets of 1M baskets where pyfim needed 2.5 s on the same machine
(see bench/README.md), hence a local C miner inside Spark tasks instead of MLlib (STYLE rule 12).

**Rules** ``X -> c`` (one consequent, as in arules) and all their measures come from the itemset
counts on the driver: the itemset budget bounds them, so this never pulls an unbounded table
(MLlib's ``transform`` does).

**Budget.** Low support on dense baskets makes the number of itemsets explode (a basket of 40 items
has 2^40 subsets). Each group task bounds its output before mining (an occurrence bound, then a
large frequent intersection, then a level-wise count that does not materialise the itemsets) and reports back instead
of mining when the budget would be exceeded; the driver then raises the support and retries, or
stops with :class:`RuleBudgetExceeded`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

log = logging.getLogger("xsell.rules")

KEPT, EMPTY, OVERSIZED = "kept", "empty", "oversized"
#: The measures every rule carries (all are columns of ``basket_rules`` and of the CLI's CSV).
RULE_COLUMNS = (
    "antecedent", "consequent", "antecedent_count", "consequent_count", "count", "baskets",
    "antecedent_support", "consequent_support", "support", "confidence", "lift", "leverage", "conviction",
    "jaccard", "kulczynski", "fisher_p", "fisher_q", "significant", "improvement", "redundant",
)


class RuleBudgetExceeded(RuntimeError):
    """Mining would produce more itemsets than the budget allows at every support it may try."""


@dataclass(frozen=True)
class BasketCounts:
    """What happened to the baskets given: ``kept + empty + oversized == given``."""

    given: int
    kept: int
    empty: int
    oversized: int


@dataclass(frozen=True)
class Mined:
    """Frequent itemsets (``items`` as sorted tuples of item strings, ``count``) and how they were mined."""

    itemsets: pd.DataFrame
    baskets: BasketCounts
    min_count: int
    attempts: int
    requested_min_count: int
    notes: list[str] = field(default_factory=list)

    @property
    def support_raised(self) -> bool:
        return self.min_count != self.requested_min_count


# --- baskets ---------------------------------------------------------------------------------------
def prepare_baskets(baskets: DataFrame, *, items_col: str = "items", excluded: Sequence[str] = (),
                    max_items: int | None = None) -> DataFrame:
    """``baskets`` with ``items`` made distinct, excluded items removed, and a ``basket_status``:
    ``kept``, ``empty`` (nothing left) or ``oversized`` (more than ``max_items`` items left)."""
    items = F.array_distinct(F.filter(F.col(items_col), lambda item: item.isNotNull()))
    if excluded:
        items = F.array_except(items, F.array(*[F.lit(item) for item in excluded]))
    size = F.size("items")
    status = F.when(size == 0, EMPTY)
    if max_items is not None:
        status = status.when(size > max_items, OVERSIZED)
    return (
        baskets.withColumn("items", items)
        .withColumn("basket_status", status.otherwise(KEPT))
    )


def count_baskets(prepared: DataFrame) -> BasketCounts:
    """The counts per ``basket_status`` (an action)."""
    counts = {row["basket_status"]: row["count"] for row in prepared.groupBy("basket_status").count().collect()}
    kept, empty, oversized = (int(counts.get(status, 0)) for status in (KEPT, EMPTY, OVERSIZED))
    return BasketCounts(given=kept + empty + oversized, kept=kept, empty=empty, oversized=oversized)


def to_level(baskets: DataFrame, hierarchy: DataFrame, *, items_col: str = "items") -> DataFrame:
    """Baskets of ``hierarchy``'s level instead of items: ``hierarchy`` has columns ``item, level_item``
    (for example product id -> category). Items without a parent are dropped."""
    others = [name for name in baskets.columns if name != items_col]
    exploded = baskets.withColumn("_basket", F.monotonically_increasing_id()).select(
        "_basket", *others, F.explode(items_col).alias("item"))
    return (
        exploded.join(F.broadcast(hierarchy), on="item", how="inner")
        .groupBy("_basket", *others)
        .agg(F.array_sort(F.collect_set("level_item")).alias(items_col))
        .drop("_basket")
    )


def support_threshold(min_support: float, baskets: int) -> int:
    """The minimum basket count: ``min_support`` below 1 is a fraction of ``baskets`` (rounded up,
    computed exactly in decimal as written: 0.001 x 1,000,000 is 1000, not 1000.0000000000001); 1 or
    more is a count of baskets."""
    if min_support <= 0:
        raise ValueError(f"min_support must be positive, got {min_support}")
    if min_support >= 1:
        if min_support != int(min_support):
            raise ValueError(f"min_support {min_support} is neither a fraction below 1 nor a whole basket count")
        return int(min_support)
    return max(1, math.ceil(Fraction(str(min_support)) * baskets))


# --- distributed FP-growth -------------------------------------------------------------------------
def _subset_counts(length: int, max_len: int) -> int:
    """Number of non-empty subsets of at most ``max_len`` items of a ``length``-item set."""
    return sum(math.comb(length, k) for k in range(1, min(length, max_len) + 1))


def _emit_prefixes(names: list[str], group_of: dict[int, int]):
    """mapInArrow function: each basket -> one ``(grp, items)`` row per group it touches, ``items``
    being its ranked frequent items up to its last item of that group.

    Vectorised over the whole Arrow batch (flattened items, one segment per basket): a Python loop
    per basket took 4 of the 11 s of 1M baskets.
    """
    group_key = np.full(len(names), -1, dtype=np.int64)
    for rank, key in group_of.items():
        group_key[rank] = key
    keys = sorted(set(group_of.values()))

    def emit(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        value_set = pa.array(names, pa.string())
        for batch in batches:
            column = batch.column(0)
            rank = pc.index_in(pc.list_flatten(column), value_set=value_set)
            parent = pc.list_parent_indices(column).to_numpy()
            known = rank.is_valid().to_numpy(zero_copy_only=False)
            rank = rank.to_numpy(zero_copy_only=False)[known].astype(np.int64)
            parent = parent[known]
            order = np.lexsort((rank, parent))
            rank, parent = rank[order], parent[order]
            starts = np.flatnonzero(np.r_[True, parent[1:] != parent[:-1]]) if len(parent) else np.array([], np.int64)
            lengths = np.diff(np.r_[starts, len(parent)])
            groups_out, items_out = [], []
            for key in keys:
                owned = np.where(group_key[rank] == key, rank, -1)
                last = np.repeat(np.maximum.reduceat(owned, starts), lengths) if len(starts) else owned
                selected = (last >= 0) & (rank <= last)
                kept_parent = parent[selected]
                if not len(kept_parent):
                    continue
                boundaries = np.flatnonzero(np.r_[True, kept_parent[1:] != kept_parent[:-1]])
                offsets = np.r_[boundaries, len(kept_parent)].astype(np.int32)
                items_out.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(rank[selected].astype(np.int32))))
                groups_out.append(np.full(len(boundaries), key, dtype=np.int32))
            if groups_out:
                yield pa.RecordBatch.from_arrays([pa.array(np.concatenate(groups_out)), pa.concat_arrays(items_out)],
                                                 names=["grp", "items"])

    return emit


def _mine_groups(min_count: int, max_len: int, budget: int, group_of: dict[int, int]):
    """applyInArrow function: one group's prefixes -> its itemsets ``(items, count)``, or one row with
    empty ``items`` and ``count`` = a lower bound of the itemsets when they would exceed ``budget``."""

    def mine(key: tuple, table: pa.Table) -> pa.Table:
        import fim  # imported on the executor

        group = key[0].as_py()
        transactions = Counter(map(tuple, table.column("items").to_pylist()))
        # pyfim leaves out the itemsets made only of items present in every transaction (they extend
        # the empty set perfectly, and the empty set is not reported): one empty transaction more
        # changes no count and makes no item universal.
        transactions[()] += 1
        supp = -min_count  # pyfim: a negative support is an absolute count
        over = _over_budget(transactions, min_count, max_len, budget, supp)
        if over is not None:
            return pa.table({"items": pa.array([[]], pa.list_(pa.int32())), "count": pa.array([over], pa.int64())})
        found = fim.fpgrowth(transactions, target="s", supp=supp, zmin=1, zmax=max_len, report="a")
        # The rarest item of an itemset has the highest rank: keep the itemsets this group owns.
        mine_ = [(sorted(items), count) for items, count in found if group_of.get(max(items)) == group]
        return pa.table({"items": pa.array([items for items, _ in mine_], pa.list_(pa.int32())),
                         "count": pa.array([count for _, count in mine_], pa.int64())})

    return mine


def _over_budget(transactions: Counter, min_count: int, max_len: int, budget: int, supp: int) -> int | None:
    """``None`` when this group's itemsets fit ``budget``, else a number of itemsets above it.

    1. Every frequent itemset occurs in at least ``min_count`` transactions, so there are at most
       (subsets of all transactions) / ``min_count`` of them: the usual answer, in one pass.
    2. The intersection of ``min_count`` transactions is frequent, and so is each of its subsets: a
       large intersection proves the explosion without mining anything.
    3. Otherwise pyfim counts the itemsets level by level without materialising them (its pattern
       spectrum), stopping as soon as the count passes the budget, so the work stays near the budget.
    """
    import fim

    occurrences = sum(count * _subset_counts(len(t), max_len) for t, count in transactions.items())
    if occurrences // min_count <= budget:
        return None
    lower = _intersection_bound(transactions, min_count, max_len)
    if lower > budget:
        return lower
    previous = 0
    for level in range(1, max_len + 1):
        spectrum = fim.fpgrowth(transactions, target="s", supp=supp, zmin=1, zmax=level, report="#")
        found = int(sum(spectrum.values()))
        if found > budget:
            return found
        if found == previous:
            return None
        previous = found
    return None


def _intersection_bound(transactions: Counter, min_count: int, max_len: int, *, seeds: int = 32,
                        partners: int = 2000) -> int:
    """A lower bound of the number of frequent itemsets: the subsets of the largest intersection found
    of transactions covering ``min_count`` baskets (greedy, from the longest transactions)."""
    ordered = sorted(transactions.items(), key=lambda tc: -len(tc[0]))
    sample = ordered[:partners]
    best = 0
    for seed, multiplicity in ordered[:seeds]:
        common, covered = set(seed), multiplicity
        ranked = sorted((pair for pair in sample if pair[0] is not seed), key=lambda tc: -len(common.intersection(tc[0])))
        for other, count in ranked:
            if covered >= min_count:
                break
            common &= set(other)
            covered += count
        if covered >= min_count:
            best = max(best, _subset_counts(len(common), max_len))
    return best


def _partition_keys(spark, groups: int) -> list[int]:
    """One group key per shuffle partition of ``repartition(groups, "grp")``, so that every group gets
    its own task (hash partitioning of 0..groups-1 would put some groups together and leave cores idle;
    adaptive execution would also merge small groups into one task)."""
    hashed = spark.range(0, 64 * groups).select(
        F.col("id").cast("int").alias("key"), F.pmod(F.hash(F.col("id").cast("int")), F.lit(groups)).alias("partition"))
    first = hashed.groupBy("partition").agg(F.min("key").alias("key")).collect()
    if len(first) < groups:
        raise AssertionError(f"no key for every one of {groups} partitions")
    return sorted(row["key"] for row in first)


def _frequent_items(prepared: DataFrame, min_count: int) -> list[tuple[str, int]]:
    """(item, count) of the frequent items, most frequent first, ties by item (an action)."""
    counts = (
        prepared.select(F.explode("items").alias("item"))
        .groupBy("item").count()
        .filter(F.col("count") >= min_count)
        .collect()
    )
    return sorted(((row["item"], int(row["count"])) for row in counts), key=lambda ic: (-ic[1], ic[0]))


def mine_itemsets(baskets: DataFrame, *, min_support: float, max_len: int | None = None,
                  excluded: Sequence[str] = (), max_items: int | None = None, budget: int = 1_000_000,
                  adaptive: bool = True, max_attempts: int = 8, groups: int | None = None,
                  targets: Iterable[str] | None = None, items_col: str = "items") -> Mined:
    """All itemsets in at least ``support_threshold(min_support, kept baskets)`` baskets, with exact counts.

    With ``targets``, only what rules with a target consequent need is mined: the itemsets holding a
    target (the targets are ranked last, so only their groups are mined) and, counted in one more pass
    over the baskets, the target-free antecedents of those itemsets.

    ``max_len`` caps the items per itemset. Over ``budget`` itemsets, the support is doubled (at most
    ``max_attempts`` times) when ``adaptive``, else :class:`RuleBudgetExceeded` is raised; the
    support used is in the result. ``groups`` is the number of parallel mining tasks (default: the
    session's default parallelism).
    """
    prepared = prepare_baskets(baskets, items_col=items_col, excluded=excluded, max_items=max_items)
    # Read once: the counts, the frequent items and the prefixes all scan the baskets.
    prepared = prepared.select("items", "basket_status").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _mine_adaptively(prepared, min_support=min_support, max_len=max_len or 1_000_000, budget=budget,
                                adaptive=adaptive, max_attempts=max_attempts,
                                groups=groups or baskets.sparkSession.sparkContext.defaultParallelism,
                                targets=frozenset(targets) if targets is not None else None)
    finally:
        prepared.unpersist()


def _mine_adaptively(prepared: DataFrame, *, min_support: float, max_len: int, budget: int, adaptive: bool,
                     max_attempts: int, groups: int, targets: frozenset[str] | None) -> Mined:
    counts = count_baskets(prepared)
    kept = prepared.filter(F.col("basket_status") == KEPT).select("items")
    requested = support_threshold(min_support, counts.kept)
    min_count, notes = requested, []
    for attempt in range(1, max_attempts + 1):
        items = _frequent_items(kept, min_count)
        if targets is not None:
            # Targets last: an itemset holds a target exactly when its highest-ranked item is one.
            items = [pair for pair in items if pair[0] not in targets] + [pair for pair in items if pair[0] in targets]
        itemsets, over = _mine_once(kept, items, min_count=min_count, max_len=max_len, budget=budget, groups=groups,
                                    targets=targets)
        if over is None:
            log.info("%d itemsets from %d baskets at min count %d (attempt %d)", len(itemsets), counts.kept, min_count, attempt)
            return Mined(itemsets, counts, min_count, attempt, requested, notes)
        message = (f"rule budget exceeded: more than {budget:,} itemsets (at least {over:,}) at a minimum support "
                   f"of {min_count} baskets ({min_count / max(counts.kept, 1):.4%} of {counts.kept:,})")
        if not adaptive or attempt == max_attempts:
            raise RuleBudgetExceeded(
                f"{message}; raise min_support, lower max_len or max_basket_items, or raise the budget")
        notes.append(message)
        log.warning("%s: doubling the support", message)
        min_count *= 2
    raise AssertionError("unreachable")


def _mine_once(kept: DataFrame, items: list[tuple[str, int]], *, min_count: int, max_len: int, budget: int,
               groups: int, targets: frozenset[str] | None = None) -> tuple[pd.DataFrame, int | None]:
    names = [item for item, _ in items]
    owners = [rank for rank, item in enumerate(names) if targets is None or item in targets]
    if not owners:
        return pd.DataFrame({"items": pd.Series([], dtype=object), "count": pd.Series([], dtype="int64")}), None
    if len(names) > budget:
        return pd.DataFrame(), len(names)
    groups = min(groups, len(owners))
    keys = _partition_keys(kept.sparkSession, groups)
    group_of = {rank: keys[position % groups] for position, rank in enumerate(owners)}
    prefixes = kept.mapInArrow(_emit_prefixes(names, group_of), "grp INT, items ARRAY<INT>")
    result = (
        prefixes.repartition(groups, "grp")
        .groupBy("grp")
        .applyInArrow(_mine_groups(min_count, max_len, budget, group_of), "items ARRAY<INT>, count BIGINT")
        .toArrow()
    )
    item_lists = result.column("items").to_pylist()
    counts = result.column("count").to_pylist()
    over = [count for found, count in zip(item_lists, counts) if not found]
    if over or len(counts) > budget:
        return pd.DataFrame(), max(over or [len(counts)])
    decoded = [tuple(sorted(names[r] for r in found)) for found in item_lists]
    itemsets = pd.DataFrame({"items": decoded, "count": np.asarray(counts, dtype="int64")})
    if targets is None:
        return itemsets, None
    return pd.concat([itemsets, _count_antecedents(kept, decoded, items, targets)], ignore_index=True), None


def _count_antecedents(kept: DataFrame, itemsets: list[tuple[str, ...]], items: list[tuple[str, int]],
                       targets: frozenset[str]) -> pd.DataFrame:
    """Exact counts of the target-free antecedents of rules ``X -> target`` (one pass over the baskets)."""
    item_count = dict(items)
    wanted = sorted({
        tuple(item for item in itemset if item != consequent)
        for itemset in itemsets for consequent in itemset
        if consequent in targets and len(itemset) > 1 and not targets.intersection(set(itemset) - {consequent})
    })
    singles = [(candidate, item_count[candidate[0]]) for candidate in wanted if len(candidate) == 1]
    larger = [candidate for candidate in wanted if len(candidate) > 1]
    found = singles + (_count_sets(kept, larger) if larger else [])
    return pd.DataFrame({"items": [items_ for items_, _ in found], "count": np.asarray([c for _, c in found], dtype="int64")})


def _count_sets(kept: DataFrame, candidates: list[tuple[str, ...]]) -> list[tuple[tuple[str, ...], int]]:
    """How many baskets hold each candidate itemset: a mapInArrow of partial counts, summed by Spark."""
    by_first: dict[str, list[int]] = {}
    for index, candidate in enumerate(candidates):
        by_first.setdefault(candidate[0], []).append(index)

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        totals: Counter = Counter()
        for batch in batches:
            for basket in batch.column(0).to_pylist():
                held = set(basket)
                for item in held.intersection(by_first):
                    for index in by_first[item]:
                        if held.issuperset(candidates[index]):
                            totals[index] += 1
        yield pa.RecordBatch.from_arrays([pa.array(list(totals), pa.int32()), pa.array(list(totals.values()), pa.int64())],
                                         names=["candidate", "count"])

    summed = kept.mapInArrow(count, "candidate INT, count BIGINT").groupBy("candidate").agg(F.sum("count").alias("count"))
    return [(candidates[row["candidate"]], int(row["count"])) for row in summed.collect()]


# --- rules and their measures ----------------------------------------------------------------------
def generate_rules(itemsets: pd.DataFrame, *, baskets: int, min_confidence: float, min_len: int = 2,
                   consequents: Iterable[str] | None = None, antecedents: Iterable[str] | None = None,
                   fdr: float = 0.05) -> pd.DataFrame:
    """Every rule ``X -> c`` with ``X u {c}`` a frequent itemset of at least ``min_len`` items and
    confidence ``>= min_confidence``, with all :data:`RULE_COLUMNS`.

    ``consequents`` / ``antecedents`` restrict the consequent item / every antecedent item. Fisher's
    exact test is one-sided (positive association); ``fisher_q`` is the Benjamini-Hochberg adjusted
    p-value over the rules returned and ``significant`` is ``fisher_q <= fdr``. ``improvement`` is the
    confidence minus the best confidence of a rule with the same consequent and a proper non-empty
    subset of the antecedent; ``redundant`` when it is not positive (single-item antecedents have no
    more general rule and are never redundant).
    """
    count_of = {frozenset(items): int(count) for items, count in zip(itemsets["items"], itemsets["count"])}
    wanted_c = set(consequents) if consequents is not None else None
    allowed_a = set(antecedents) if antecedents is not None else None
    rows: list[tuple] = []
    for items, count in zip(itemsets["items"], itemsets["count"]):
        if len(items) < max(min_len, 2):
            continue
        for consequent in items:
            if wanted_c is not None and consequent not in wanted_c:
                continue
            antecedent = tuple(item for item in items if item != consequent)
            if allowed_a is not None and not allowed_a.issuperset(antecedent):
                continue
            antecedent_count = count_of[frozenset(antecedent)]
            if count / antecedent_count >= min_confidence:
                rows.append((antecedent, consequent, antecedent_count, count_of[frozenset((consequent,))], int(count)))
    rules = pd.DataFrame(rows, columns=["antecedent", "consequent", "antecedent_count", "consequent_count", "count"])
    return _measures(rules, count_of, baskets=baskets, fdr=fdr)


def _measures(rules: pd.DataFrame, count_of: dict[frozenset, int], *, baskets: int, fdr: float) -> pd.DataFrame:
    from scipy.stats import false_discovery_control, hypergeom

    n = float(baskets)
    n_xy = rules["count"].to_numpy(dtype="float64")
    n_x = rules["antecedent_count"].to_numpy(dtype="float64")
    n_y = rules["consequent_count"].to_numpy(dtype="float64")
    s_x, s_y, s_xy = n_x / n, n_y / n, n_xy / n
    confidence = n_xy / n_x
    with np.errstate(divide="ignore", invalid="ignore"):
        conviction = np.where(confidence < 1, (1 - s_y) / (1 - confidence), np.inf)
    fisher_p = hypergeom.sf(n_xy - 1, baskets, n_y, n_x) if len(rules) else np.array([])
    improvement = _improvement(rules, count_of)
    rules = rules.assign(
        baskets=int(baskets), antecedent_support=s_x, consequent_support=s_y, support=s_xy,
        confidence=confidence, lift=confidence / s_y, leverage=s_xy - s_x * s_y, conviction=conviction,
        jaccard=n_xy / (n_x + n_y - n_xy), kulczynski=0.5 * (n_xy / n_x + n_xy / n_y),
        fisher_p=np.clip(fisher_p, 0.0, 1.0),
        fisher_q=false_discovery_control(np.clip(fisher_p, 0.0, 1.0), method="bh") if len(rules) else np.array([]),
        improvement=improvement,
    )
    rules["significant"] = rules["fisher_q"] <= fdr
    rules["redundant"] = rules["improvement"].fillna(1.0) <= 0
    ordered = rules.sort_values(["consequent", "lift", "antecedent"], ascending=[True, False, True], kind="stable")
    return ordered.reset_index(drop=True)[list(RULE_COLUMNS)]


def _improvement(rules: pd.DataFrame, count_of: dict[frozenset, int]) -> np.ndarray:
    """Confidence minus the best confidence over the rules with a proper non-empty sub-antecedent.

    Worked out level by level: the best over all sub-antecedents of X is the best over the immediate
    ones of their own confidence and their own best, so each rule looks at |X| others, not 2^|X|.
    """
    best: dict[tuple[frozenset, str], float] = {}

    def confidence(antecedent: frozenset, consequent: str) -> float:
        return count_of[antecedent | {consequent}] / count_of[antecedent]

    def best_general(antecedent: frozenset, consequent: str) -> float:
        key = (antecedent, consequent)
        if key not in best:
            value = -math.inf
            if len(antecedent) > 1:
                for item in antecedent:
                    smaller = antecedent - {item}
                    value = max(value, confidence(smaller, consequent), best_general(smaller, consequent))
            best[key] = value
        return best[key]

    out = np.full(len(rules), np.nan)
    for i, (antecedent, consequent) in enumerate(zip(rules["antecedent"], rules["consequent"])):
        if len(antecedent) > 1:
            key = frozenset(antecedent)
            out[i] = count_of[key | {consequent}] / count_of[key] - best_general(key, consequent)
    return out


def mine_rules(baskets: DataFrame, *, min_support: float, min_confidence: float, min_len: int = 2,
               max_len: int | None = None, consequents: Iterable[str] | None = None,
               antecedents: Iterable[str] | None = None, excluded: Sequence[str] = (),
               max_items: int | None = None, budget: int = 1_000_000, adaptive: bool = True,
               fdr: float = 0.05, groups: int | None = None, items_col: str = "items") -> tuple[pd.DataFrame, Mined]:
    """Itemsets then rules, in one call: see :func:`mine_itemsets` and :func:`generate_rules`.

    With ``consequents``, only the itemsets those rules need are mined (see :func:`mine_itemsets`);
    when ``antecedents`` are given too, items in neither list are dropped from the baskets first.
    """
    consequents = sorted(set(consequents)) if consequents is not None else None
    antecedents = sorted(set(antecedents)) if antecedents is not None else None
    frame = baskets
    if consequents is not None and antecedents is not None:
        useful = sorted(set(consequents) | set(antecedents))
        frame = baskets.withColumn(items_col, F.filter(F.col(items_col), lambda item: item.isin(useful)))
    mined = mine_itemsets(frame, min_support=min_support, max_len=max_len, excluded=excluded, max_items=max_items,
                          budget=budget, adaptive=adaptive, groups=groups, items_col=items_col,
                          targets=consequents)
    rules = generate_rules(mined.itemsets, baskets=mined.baskets.kept, min_confidence=min_confidence,
                           min_len=min_len, consequents=consequents, antecedents=antecedents, fdr=fdr)
    return rules, mined


def read_basket_file(spark, path: str, *, sep: str = ",") -> DataFrame:
    """One basket per line, items separated by ``sep`` and kept exactly as written (no trimming), an
    empty line being an empty basket: ``basket_id`` (the line number) and ``items``."""
    lines = spark.read.text(path).withColumn("basket_id", F.monotonically_increasing_id())
    items = F.split(F.col("value"), _java_literal(sep))
    return lines.select("basket_id", F.when(F.col("value") == "", F.array()).otherwise(items).alias("items"))


def _java_literal(sep: str) -> str:
    r"""``sep`` as a Java regular expression matching itself literally (``\Q...\E``)."""
    return r"\Q" + sep + r"\E"


# --- what the shop and the CRM use -----------------------------------------------------------------
def bundles(itemsets: pd.DataFrame, prices: pd.DataFrame, *, baskets: int, max_size: int = 3, min_lift: float = 1.5,
            top: int = 50) -> pd.DataFrame:
    """Frequent 2- to ``max_size``-item sets with ``lift`` (support over the product of the items'
    supports) of at least ``min_lift``, priced from ``prices`` (``product_id, list_price, margin_rate``)
    and ranked by ``expected_margin`` = support x the bundle's margin (margin per basket)."""
    single = {items[0]: int(count) for items, count in zip(itemsets["items"], itemsets["count"]) if len(items) == 1}
    price = dict(zip(prices["product_id"], prices["list_price"]))
    margin = dict(zip(prices["product_id"], prices["list_price"] * prices["margin_rate"]))
    rows = []
    for items, count in zip(itemsets["items"], itemsets["count"]):
        if not 2 <= len(items) <= max_size or not all(item in price for item in items):
            continue
        support = count / baskets
        lift = support / math.prod(single[item] / baskets for item in items)
        if lift >= min_lift:
            bundle_margin = sum(margin[item] for item in items)
            rows.append((list(items), len(items), int(count), support, lift, sum(price[item] for item in items),
                         bundle_margin, support * bundle_margin))
    found = pd.DataFrame(rows, columns=["products", "size", "basket_count", "support", "lift", "list_price", "margin",
                                        "expected_margin"])
    found["_key"] = found["products"].map(tuple)
    found = found.sort_values(["expected_margin", "lift", "_key"], ascending=[False, False, True], kind="stable")
    found = found.drop(columns="_key").head(top).reset_index(drop=True)
    found["rank"] = np.arange(1, len(found) + 1, dtype="int32")
    return found


def bought_together(rules: pd.DataFrame, *, top: int = 10) -> pd.DataFrame:
    """Per product, the ``top`` consequents of its significant single-item rules with a lift above 1,
    by confidence then lift: ``product_id, rank, recommended_product_id, confidence, lift, support``."""
    single = rules[(rules["antecedent"].map(len) == 1) & rules["significant"] & (rules["lift"] > 1)]
    frame = single.assign(product_id=single["antecedent"].map(lambda items: items[0]))
    frame = frame.sort_values(["product_id", "confidence", "lift", "consequent"],
                              ascending=[True, False, False, True], kind="stable")
    frame["rank"] = frame.groupby("product_id").cumcount() + 1
    frame = frame[frame["rank"] <= top]
    return frame.rename(columns={"consequent": "recommended_product_id"})[
        ["product_id", "rank", "recommended_product_id", "confidence", "lift", "support"]].reset_index(drop=True)
