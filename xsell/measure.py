"""Campaign measurement and model monitoring: what happened after an audience was published.

A campaign is the audience published for a run date D. Its offers reach customers from D + 1, so the
horizon that follows is [D + 1, D + 1 + H). Customers of the randomized control cell received nothing:
treatment against control is the offer's causal effect (a propensity score alone is not: the customers
most likely to buy may buy anyway). Conversion means what the model predicts, first-time adoption of the
offer's target in the window (:mod:`xsell.offers`).

Monitoring compares what the pipeline promised with what it sees: the population stability index (PSI)
of features and scores, the churn of the top basket rules between runs, and, once a campaign has
matured, the realized lift by decile and the calibration of the scores that were published.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.ml.feature import Bucketizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from xsell import offers
from xsell.audience import CONTROL, TREATMENT
from xsell.baskets import sold
from xsell.features import slug

#: Empty bins count as this share in the PSI (the log of zero is infinite).
PSI_FLOOR = 1e-4
MEASURED = "measured"
#: The out-of-time fold's score histogram, an artifact of every training run: scoring compares with it.
SCORE_REFERENCE = "score_reference.json"


@dataclass(frozen=True)
class Arm:
    """One cell of an offer's campaign: customers, adopters, and what the adopters spent on the target."""

    customers: int
    conversions: int
    revenue: float = 0.0
    margin: float = 0.0

    @property
    def rate(self) -> float:
        return self.conversions / self.customers if self.customers else float("nan")


def uplift(treated: Arm, control: Arm, *, confidence: float = 0.95, min_control: int = 100) -> dict[str, object]:
    """Absolute and relative uplift of treatment over control with their ``confidence`` intervals and the
    p-value of "no difference", plus incremental conversions, revenue and margin.

    The difference gets Newcombe's hybrid score interval, the ratio a score interval, the p-value the
    score test: they hold their level at the small rates and unequal cells of a campaign, where the Wald
    interval does not. (statsmodels' score interval for a difference fails to converge on most draws
    with unequal cells.) ``significant`` is ``p_value < 1 - confidence``.

    With fewer than ``min_control`` control customers (or no treated ones) the status says so and every
    estimate is None: too small a control cell is no conclusion, and must not read as one.
    """
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    result: dict[str, object] = {
        "treated": treated.customers, "control": control.customers, "treated_conversions": treated.conversions,
        "control_conversions": control.conversions, "confidence": confidence,
        **dict.fromkeys(("treated_rate", "control_rate", "uplift", "uplift_low", "uplift_high", "relative_uplift",
                         "relative_uplift_low", "relative_uplift_high", "p_value", "significant",
                         "incremental_conversions", "incremental_revenue", "incremental_margin")),
    }
    if control.customers < min_control or treated.customers == 0:
        result["status"] = (f"inconclusive: {control.customers} control and {treated.customers} treated customers; "
                            f"at least {min_control} control customers are needed")
        return result
    alpha = 1.0 - confidence
    counts = (treated.conversions, treated.customers, control.conversions, control.customers)
    with warnings.catch_warnings():
        # statsmodels computes every comparison (ratio, odds ratio) and warns on a zero control count.
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = confint_proportions_2indep(*counts, method="newcomb", compare="diff", alpha=alpha)
        if treated.conversions + control.conversions == 0:
            # No adoption in either cell: no evidence of a difference, and the test statistic is undefined.
            p_value = 1.0
        else:
            p_value = float(test_proportions_2indep(*counts, method="score", compare="diff").pvalue)
        ratio = (confint_proportions_2indep(*counts, method="score", compare="ratio", alpha=alpha)
                 if control.conversions > 0 else None)
    difference = treated.rate - control.rate
    result.update({
        "treated_rate": treated.rate, "control_rate": control.rate, "uplift": difference,
        "uplift_low": float(low), "uplift_high": float(high), "p_value": p_value, "significant": p_value < alpha,
        "incremental_conversions": difference * treated.customers,
        "incremental_revenue": (treated.revenue / treated.customers - control.revenue / control.customers) * treated.customers,
        "incremental_margin": (treated.margin / treated.customers - control.margin / control.customers) * treated.customers,
        "status": MEASURED,
    })
    if ratio is not None:
        result.update({"relative_uplift": difference / control.rate,
                       "relative_uplift_low": float(ratio[0]) - 1.0, "relative_uplift_high": float(ratio[1]) - 1.0})
    return {key: _finite_or_none(value) for key, value in result.items()}


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def outcomes(audience: DataFrame, order_lines: DataFrame, products: DataFrame, features: DataFrame,
             offer_list: Sequence[offers.Offer], *, start: dt.date, end: dt.date) -> DataFrame:
    """Every audience row (``offer_id, customer_id, cell, score, decile``) with ``converted`` (adopted the
    offer's target in [start, end)), and the ``revenue`` and ``margin`` of those target purchases.

    ``features`` are the ones the audience was scored on (as of ``start``): an up-sell converts by buying
    a tier above the one owned then.
    """
    known = list(offer_list)
    owned = features.select("customer_id", *sorted({f"tier__{slug(o.target)}" for o in known
                                                    if o.offer_type == offers.UP_SELL}))
    lines = (
        order_lines.filter(sold())
        .filter((F.col("order_ts") >= F.lit(start).cast("timestamp")) & (F.col("order_ts") < F.lit(end).cast("timestamp")))
        .join(audience.select("customer_id").distinct(), on="customer_id", how="left_semi")
        .join(products.select("product_id", "category", "family", "tier", "margin_rate"), on="product_id", how="inner")
        .join(owned, on="customer_id", how="left")
        .withColumn("amount", F.col("quantity") * F.col("unit_price"))
        .cache()
    )
    rows = []
    for offer in known:
        if offer.offer_type == offers.CROSS_SELL:
            adopts = F.col("category") == offer.target
        else:
            adopts = (F.col("family") == offer.target) & (F.col("tier") > F.coalesce(F.col(f"tier__{slug(offer.target)}"), F.lit(0)))
        rows.append(lines.filter(adopts).select(F.lit(offer.offer_id).alias("offer_id"), "customer_id", "amount",
                                                (F.col("amount") * F.col("margin_rate")).alias("line_margin")))
    bought = rows[0]
    for frame in rows[1:]:
        bought = bought.unionByName(frame)
    per_customer = bought.groupBy("offer_id", "customer_id").agg(F.sum("amount").alias("revenue"),
                                                                 F.sum("line_margin").alias("margin"))
    return (
        audience.select("offer_id", "customer_id", "cell", "score", "decile")
        .join(per_customer, on=["offer_id", "customer_id"], how="left")
        .select("offer_id", "customer_id", "cell", "score", "decile",
                F.col("revenue").isNotNull().cast("int").alias("converted"),
                F.coalesce("revenue", F.lit(0.0)).alias("revenue"), F.coalesce("margin", F.lit(0.0)).alias("margin"))
    )


def arms(outcome: DataFrame) -> dict[tuple[str, str], Arm]:
    """Per (offer, cell): the :class:`Arm` (an action; a few rows)."""
    rows = outcome.groupBy("offer_id", "cell").agg(
        F.count("*").alias("n"), F.sum("converted").alias("conversions"), F.sum("revenue").alias("revenue"),
        F.sum("margin").alias("margin")).collect()
    return {(row["offer_id"], row["cell"]): Arm(int(row["n"]), int(row["conversions"]), float(row["revenue"]),
                                                float(row["margin"])) for row in rows}


def campaign_results(outcome: DataFrame, offer_types: dict[str, str], *, confidence: float,
                     min_control: int) -> list[dict[str, object]]:
    """One :func:`uplift` per offer of the campaign, with its ``offer_id`` and ``offer_type``."""
    found = arms(outcome)
    results = []
    for offer_id in sorted({offer_id for offer_id, _ in found}):
        treated = found.get((offer_id, TREATMENT), Arm(0, 0))
        control = found.get((offer_id, CONTROL), Arm(0, 0))
        results.append({"offer_id": offer_id, "offer_type": offer_types.get(offer_id),
                        **uplift(treated, control, confidence=confidence, min_control=min_control)})
    return results


def realized_by_decile(outcome: DataFrame) -> dict[str, list[dict[str, float]]]:
    """Per offer and published decile (1 = the top): rows and adopters of both cells, and of the control
    cell its rows, adopters, summed score, ``rate`` and ``lift`` over its overall rate (an action).

    The lift is the control cell's: its customers received nothing, so they behave as the model
    predicts; the treated cells' uplift would flatten the lift of a model that ranks well."""
    rows = outcome.groupBy("offer_id", "decile").agg(
        F.count("*").alias("rows"), F.sum("converted").alias("positives"),
        F.sum(F.when(F.col("cell") == CONTROL, 1).otherwise(0)).alias("control_rows"),
        F.sum(F.when(F.col("cell") == CONTROL, F.col("converted")).otherwise(0)).alias("control_positives"),
        F.sum(F.when(F.col("cell") == CONTROL, F.col("score")).otherwise(0.0)).alias("control_score"),
    ).collect()
    tables: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        tables.setdefault(row["offer_id"], []).append({key: float(row[key]) for key in
                                                       ("decile", "rows", "positives", "control_rows",
                                                        "control_positives", "control_score")})
    for table in tables.values():
        table.sort(key=lambda item: item["decile"])
        overall = sum(item["control_positives"] for item in table) / max(1.0, sum(item["control_rows"] for item in table))
        for item in table:
            item["rate"] = item["control_positives"] / item["control_rows"] if item["control_rows"] else 0.0
            item["lift"] = item["rate"] / overall if overall else 0.0
    return tables


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins (counts or shares):
    sum((a - e) * ln(a / e)); under 0.1 is stable, above 0.25 is a shift by the usual reading."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = np.maximum(e / e.sum() if e.sum() else e, PSI_FLOOR)
    a = np.maximum(a / a.sum() if a.sum() else a, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_noise(bins: int, reference_rows: float, current_rows: float) -> float:
    """The PSI that sampling alone gives two samples of one distribution, on average: about
    (bins - 1) x (1/n_reference + 1/n_current), the mean of the chi-square it tends to (0.45 for 10
    bins and 40 rows a side, 0.09 at 200): a PSI of a few dozen rows says nothing about a shift."""
    if reference_rows <= 0 or current_rows <= 0:
        return math.inf
    return (bins - 1) * (1.0 / reference_rows + 1.0 / current_rows)


def psi_judged(reference_rows: float, current_rows: float, *, min_rows: int) -> bool:
    """Whether a PSI of populations this size is judged against its threshold at all."""
    return min(reference_rows, current_rows) >= min_rows


def edges(frame: DataFrame, column: str, *, bins: int) -> list[float]:
    """Bin edges of ``column``: its quantiles on ``frame`` (the reference population), distinct, with
    open ends, so that a shifted population still falls in a bin (an action)."""
    probabilities = [k / bins for k in range(1, bins)]
    cuts = frame.approxQuantile(column, probabilities, 0.001) if probabilities else []
    return _open_ended(cuts)


def edges_of(values: np.ndarray, *, bins: int) -> list[float]:
    """:func:`edges` of values held on the driver (exact quantiles, each one of the values)."""
    probabilities = [k / bins for k in range(1, bins)]
    cuts = np.quantile(values, probabilities, method="inverted_cdf") if probabilities and len(values) else []
    return _open_ended(cuts)


def _open_ended(cuts: Sequence[float]) -> list[float]:
    return [-math.inf, *sorted(set(float(c) for c in cuts)), math.inf]


def histogram(frame: DataFrame, column: str, splits: Sequence[float]) -> list[int]:
    """Rows of ``frame`` per bin of ``splits`` (Spark's Bucketizer; nulls in a bin of their own, last)."""
    bucketed = Bucketizer(splits=list(splits), inputCol=column, outputCol="_bin", handleInvalid="keep").transform(
        frame.select(F.col(column).cast("double").alias(column)))
    counts = {int(row["_bin"]): row["n"] for row in bucketed.groupBy("_bin").agg(F.count("*").alias("n")).collect()}
    return [counts.get(k, 0) for k in range(len(splits))]


def histogram_of(values: np.ndarray, splits: Sequence[float]) -> list[int]:
    """:func:`histogram` of values held on the driver, with the Bucketizer's bins: ``[s_k, s_k+1)``, the
    last one closed; NaN in the bin of its own, last."""
    values = np.asarray(values, dtype=float)
    bins = np.clip(np.searchsorted(np.asarray(splits, dtype=float), values, side="right") - 1, 0, len(splits) - 2)
    bins[np.isnan(values)] = len(splits) - 1
    return np.bincount(bins, minlength=len(splits)).tolist()


def feature_psi(reference: DataFrame, current: DataFrame, columns: Sequence[str], *, bins: int) -> dict[str, float]:
    """PSI per feature of ``current`` against ``reference`` on the reference's quantile bins."""
    values = {}
    for column in columns:
        splits = edges(reference, column, bins=bins)
        values[column] = psi(histogram(reference, column, splits), histogram(current, column, splits))
    return values


def top_rules(rules: DataFrame, *, top: int) -> set[tuple[str, str]]:
    """The ``top`` product rules by lift (ties by support) as (antecedent, consequent) pairs (an action)."""
    chosen = (rules.filter(F.col("level") == "product")
              .orderBy(F.desc("lift"), F.desc("support"), F.col("antecedent").cast("string"), "consequent")
              .limit(top).select(F.col("antecedent").cast("string").alias("a"), "consequent").collect())
    return {(row["a"], row["consequent"]) for row in chosen}


def overlap(previous: set, current: set) -> float:
    """The share of ``previous`` still in ``current`` (1.0 when there was nothing to keep)."""
    return len(previous & current) / len(previous) if previous else 1.0
