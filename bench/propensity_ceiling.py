"""How much of the oracle ROC-AUC can any model reach from what a shop observes? (cross-sell offers)

The oracle of issue 5 scores each customer with the generator's true adoption probability, which depends
on the customer's latent affinity for the target category. For a cross-sell the customer has never bought
that category, so its affinity was never observed directly. This script bounds what observing can give:
a Bayes predictor that knows more than any model will (the customer's true interest profile and true
visit rate, both latent) and, like a model, counts the completed orders the customer placed before the
cutoff without buying the category. Its score is the posterior expected adoption probability:

- prior: affinity ~ Beta(a, b), the marginal of the profile's Dirichlet (``generate.PROFILES``,
  ``AFFINITY_CONCENTRATION``);
- likelihood of n orders without the category: the product over the category's basket slots of
  ``1 - BASKET_SCALE * affinity * slot_weight`` (seasonality and add-ons from other categories ignored),
  to the power n;
- adoption in the horizon: ``1 - exp(-rate * horizon * (1 - P(miss | affinity)))``.

It leaves out one observable signal: how many items a customer puts in other categories per order, which
carries information about ``1 - affinity`` (affinities sum to 1). The bound is therefore not a proof,
but a model would need that signal to beat it, and it is weak over a few dozen orders.

Input: a home where ``xsell generate`` wrote the world and its truth for the fold's cutoff and
``jobs.validate`` filled the lake (``make demo`` leaves one in ``var/``). Labels are realized first
purchases of the category in (cutoff, cutoff + horizon], from the truth's latent record.

    python bench/propensity_ceiling.py --home var --cutoff 2025-10-01 [--out bench/results/propensity_ceiling.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from scipy import stats
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xsell import generate  # noqa: E402

GRID = np.linspace(1e-4, 0.9999, 2000)


def orders_before(home: Path, cutoff: dt.date) -> pd.Series:
    """Completed orders per customer on days up to and including ``cutoff`` (the truth's convention)."""
    lines = ds.dataset(home / "lake" / "order_lines", format="parquet", partitioning="hive").to_table(
        columns=["order_id", "customer_id", "status", "quantity", "date"]).to_pandas()
    lines["date"] = pd.to_datetime(lines["date"]).dt.date
    sold = lines[(lines["date"] <= cutoff) & (lines["status"] == "completed") & (lines["quantity"] > 0)]
    return sold.groupby("customer_id")["order_id"].nunique()


def ceiling(home: Path, cutoff: dt.date, horizon_days: int) -> pd.DataFrame:
    world = generate._compile_world()
    latent = pd.read_parquet(home / "truth" / "latent" / "customers.parquet").set_index("customer_id")
    truth = pd.read_parquet(home / "truth" / "propensity" / f"cutoff={cutoff}" / "propensity.parquet")
    orders = orders_before(home, cutoff)
    t = (cutoff - dt.date(1970, 1, 1)).days
    concentration = np.array([mean for *_, mean in generate.PROFILES]) * generate.AFFINITY_CONCENTRATION
    rows = []
    for c, category in enumerate(generate.CATEGORIES):
        offer = truth[(truth["offer_id"] == f"cross-sell:{category}") & truth["eligible"]].set_index("customer_id")
        people = latent.loc[offer.index]
        first = people[f"first_{category}"].to_numpy()
        label = (first > t) & (first <= t + horizon_days)
        if label.sum() < 5:
            continue
        miss = np.ones_like(GRID)
        for slot in np.flatnonzero(world.slot_cat == c):
            miss *= 1.0 - np.minimum(generate.INCLUSION_CAP, generate.BASKET_SCALE * GRID * world.slot_weight[slot])
        n = orders.reindex(offer.index).fillna(0).to_numpy()
        profile = people["profile"].to_numpy().astype(int)
        a = concentration[profile, c]
        b = concentration[profile].sum(axis=1) - a
        prior = stats.beta.logpdf(GRID[None, :], a[:, None], b[:, None])
        adopt = 1.0 - np.exp(-people["rate"].to_numpy()[:, None] * horizon_days * (1 - generate.P_CANCEL)
                             * (1.0 - miss)[None, :])

        def expected(log_weight: np.ndarray) -> np.ndarray:
            weight = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
            return (weight * adopt).sum(axis=1) / weight.sum(axis=1)

        oracle = roc_auc_score(label, offer["true_probability"])
        bayes = roc_auc_score(label, expected(prior + n[:, None] * np.log(miss)[None, :]))
        rows.append({"offer": f"cross-sell:{category}", "eligible": len(label), "adopters": int(label.sum()),
                     "oracle": oracle, "bayes": bayes, "prior_only": roc_auc_score(label, expected(prior)),
                     "bayes_ratio": bayes / oracle})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--cutoff", type=dt.date.fromisoformat, required=True,
                        help="the truth's cutoff (the last day of history of the out-of-time fold)")
    parser.add_argument("--horizon-days", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    table = ceiling(args.home, args.cutoff, args.horizon_days)
    lines = ["| offer | eligible | adopters | oracle ROC-AUC | Bayes bound | bound / oracle | profile prior only |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.offer} | {r.eligible:,d} | {r.adopters} | {r.oracle:.3f} | {r.bayes:.3f} | {r.bayes_ratio:.3f} | "
              f"{r.prior_only:.3f} |" for r in table.itertuples()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        header = (f"Measured {dt.date.today()} on {platform.platform()}, Python {platform.python_version()}.\n\n"
                  f"    python bench/propensity_ceiling.py --home HOME --cutoff {args.cutoff} "
                  f"--horizon-days {args.horizon_days}\n\n")
        args.out.write_text(header + text + "\n")


if __name__ == "__main__":
    main()
