"""The pictures logged with every model: gain chart, calibration curve, feature importance.

Pure functions from small tables (ten deciles, one value per feature) to matplotlib figures; the train
job logs them to MLflow and the notebooks show them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no screen on a worker; harmless in a notebook that already chose its backend
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def gain_chart(tables: Mapping[str, Sequence[Mapping[str, float]]], *, title: str) -> Figure:
    """Cumulative share of adopters captured against the share of customers contacted, one line per
    scorer (``tables``: name -> :func:`xsell.model.deciles`), and the random line."""
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    for name, table in tables.items():
        axes.plot([0.0] + [row["decile"] / 10 for row in table], [0.0] + [row["capture"] for row in table],
                  marker="o", label=name)
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", label="random")
    return _finish(figure, axes, xlabel="share of customers contacted (by score)",
                   ylabel="share of adopters captured", title=title, legend="lower right")


def calibration_curve(table: Sequence[Mapping[str, float]], *, title: str) -> Figure:
    """Observed adoption rate against the mean score, per score decile, with the diagonal."""
    figure, axes = plt.subplots(figsize=(5, 4.5))
    predicted = [row["mean_score"] for row in table]
    observed = [row["rate"] for row in table]
    top = max(predicted + observed + [1e-6]) * 1.1
    axes.plot([0, top], [0, top], color="gray", linestyle="--", label="perfect calibration")
    axes.plot(predicted, observed, marker="o", label="model, by decile")
    return _finish(figure, axes, xlabel="mean score", ylabel="observed adoption rate", title=title,
                   legend="upper left")


def feature_importance(importance: Mapping[str, float], *, title: str, top: int = 15) -> Figure:
    """The ``top`` most important features as horizontal bars."""
    ranked = sorted(importance.items(), key=lambda item: item[1], reverse=True)[:top]
    figure, axes = plt.subplots(figsize=(6, 0.6 + 0.3 * len(ranked)))
    axes.barh([name for name, _ in reversed(ranked)], [value for _, value in reversed(ranked)])
    return _finish(figure, axes, xlabel="importance", ylabel=None, title=title, legend=None)


def _finish(figure: Figure, axes, *, xlabel: str, ylabel: str | None, title: str, legend: str | None) -> Figure:
    axes.set_xlabel(xlabel)
    if ylabel:
        axes.set_ylabel(ylabel)
    axes.set_title(title)
    if legend:
        axes.legend(loc=legend)
    figure.tight_layout()
    return figure
