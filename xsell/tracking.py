"""The one small module that talks to MLflow: runs, the registry and the ``champion`` alias."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from xsell.config import Settings

CHAMPION = "champion"
#: The out-of-time metric that decides promotion.
GATE_METRIC = "roc_auc"
#: Metrics copied into the record of an alias move.
GATE_REPORTED = ("roc_auc", "pr_auc", "brier", "lift_top_decile")
#: Differences below this are floating-point noise (refitting on the same data moves the AUC by ~1e-12).
NOISE = 1e-6
#: The ROC-AUC of a scorer that ranks at random (or a constant one): a first champion must beat it.
CHANCE = 0.5


class TrackingUnavailable(RuntimeError):
    """The tracking server or registry cannot be reached; nothing was promoted."""


def configure(settings: Settings, *, experiment: str | None = None, artifact_location: str | None = None) -> str:
    """Point MLflow at the configured store with bounded retries; returns the id of ``experiment``
    (default: the models' experiment, ``mlflow.experiment``), created if missing.

    MLflow's client retries for minutes against a dead server by default: the limits are set before
    the first call so that a task fails in seconds.
    """
    name = experiment or settings.mlflow.experiment
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow.http_max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow.http_timeout_seconds))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    import mlflow

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        (settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    try:
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return mlflow.create_experiment(name, artifact_location=artifact_location or settings.mlflow_artifact_location)
    except Exception as error:  # MLflow raises many types for an unreachable store
        raise TrackingUnavailable(f"MLflow tracking at {settings.mlflow_tracking_uri} is unavailable: {error}") from error


@dataclass(frozen=True)
class Champion:
    model_name: str
    version: str
    uri: str
    metrics: dict[str, float]
    run_id: str | None = None


def champion(model_name: str) -> Champion | None:
    """The version holding the ``champion`` alias, or None when the model has none yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" in str(error.error_code) or "not found" in str(error).lower():
            return None
        raise
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return Champion(model_name, str(version.version), f"models:/{model_name}/{version.version}", metrics,
                    version.run_id or None)


def promote_if_better(model_name: str, version: str, metrics: dict[str, float], *, margin: float,
                      champion_metric_on_fold: float | None) -> tuple[bool, str]:
    """Give ``version`` the champion alias when its metrics are finite and it beats the current champion
    (evaluated on the same out-of-time fold) by ``margin``, or, with no champion yet, ranks better than
    chance; otherwise tag it rejected. A model that ranks no better than a coin (a calibrated model made
    constant because its classifier ranked the fold upside down) never becomes a first champion: the
    offer then stays unscored rather than published at random."""
    import mlflow

    client = mlflow.MlflowClient()
    new = metrics.get(GATE_METRIC, float("nan"))
    finite = all(math.isfinite(value) for value in metrics.values())
    if not finite:
        decision, why = False, "non-finite metrics"
    else:
        # With no champion yet, the model to beat is a coin.
        reference, against = ((CHANCE, "chance (no champion yet)") if champion_metric_on_fold is None
                              else (champion_metric_on_fold, "champion"))
        # Strictly better only: retraining on the same data does not churn the champion (and the audience).
        decision = new > reference + margin + NOISE
        why = f"{GATE_METRIC} {new:.4f} {'>' if decision else '<='} {against} {reference:.4f} + {margin}"
    if decision:
        previous = champion(model_name)
        client.set_registered_model_alias(model_name, CHAMPION, version)
        client.set_model_version_tag(model_name, version, "gate", "promoted")
        # MLflow keeps no history of an alias: every move is recorded on the version that received it.
        client.set_model_version_tag(model_name, version, "champion_since", dt.datetime.now(dt.UTC).isoformat())
        client.set_model_version_tag(model_name, version, "champion_previous", previous.version if previous else "none")
        client.set_model_version_tag(model_name, version, "champion_gate", json.dumps({
            "metric": GATE_METRIC, "new": new, "previous_on_same_fold": champion_metric_on_fold, "margin": margin,
            **{key: value for key, value in metrics.items() if key in GATE_REPORTED}}, sort_keys=True))
    else:
        client.set_model_version_tag(model_name, version, "gate", "rejected")
    client.set_model_version_tag(model_name, version, "gate_reason", why)
    return decision, why


def champion_history(model_name: str) -> list[dict[str, Any]]:
    """Every move of the ``champion`` alias of ``model_name``, oldest first: when, from which version to
    which, and the gate's figures."""
    import mlflow

    client = mlflow.MlflowClient()
    moves = []
    for version in client.search_model_versions(f"name = '{model_name}'"):
        tags = version.tags or {}
        if "champion_since" in tags:
            moves.append({"at": tags["champion_since"], "from_version": tags.get("champion_previous"),
                          "to_version": str(version.version), "gate": json.loads(tags.get("champion_gate", "{}"))})
    return sorted(moves, key=lambda move: move["at"])


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
