"""Settings: ``conf/base.yaml`` with an optional environment overlay, validated once at start-up.

A job, the DAG and a notebook all call :func:`load_settings`; a bad value fails there with the key that
is wrong, before any Spark session starts. Identifiers that end up in SQL (schema names) are checked
against a strict pattern here so that no configuration value can inject SQL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONF_DIR_ENV = "XSELL_CONF_DIR"
ENV_ENV = "XSELL_ENV"
HOME_ENV = "XSELL_HOME"
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkSettings(_Section):
    master: str = "local[2]"
    shuffle_partitions: int = Field(8, ge=1)
    driver_memory: str = "2g"
    conf: dict[str, str] = {}


class VolumeSettings(_Section):
    """The day-over-day volume check: a day's raw order lines against the trailing average."""

    trailing_days: int = Field(28, ge=1)
    min_history_days: int = Field(5, ge=1)
    min_average_rows: int = Field(100, ge=0)
    min_ratio: float = Field(0.25, ge=0)
    max_ratio: float = Field(4.0, gt=0)


class ValidationSettings(_Section):
    currencies: tuple[str, ...] = ("GBP", "EUR", "USD")
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)
    min_rows: int = Field(1, ge=1)
    closed_weekdays: tuple[int, ...] = ()
    excluded_products: tuple[str, ...] = ()
    excluded_product_pattern: str | None = None
    max_guest_rate: float = Field(0.2, ge=0, le=1)
    volume: VolumeSettings = VolumeSettings()
    data_docs: bool = True

    @field_validator("excluded_product_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return value


class FollowupSettings(_Section):
    """"Bought later": B first bought between ``min_lag_days`` and ``max_lag_days`` after A was first bought."""

    min_lag_days: int = Field(1, ge=0)
    max_lag_days: int = Field(90, ge=1)
    min_customers: int = Field(10, ge=1)
    min_confidence: float = Field(0.02, ge=0, le=1)


class BundleSettings(_Section):
    max_size: int = Field(3, ge=2, le=3)
    min_lift: float = Field(1.5, gt=0)
    top: int = Field(50, ge=1)


class RuleSettings(_Section):
    lookback_days: int = Field(365, ge=1)
    # Below 1: a fraction of the baskets (rounded up); 1 or more: a number of baskets.
    min_support: float = Field(0.002, gt=0)
    min_confidence: float = Field(0.05, ge=0, le=1)
    max_len: int = Field(4, ge=2)
    max_basket_items: int = Field(50, ge=2)
    excluded_items: tuple[str, ...] = ()
    max_itemsets: int = Field(1_000_000, ge=1)
    adaptive_support: bool = True
    fdr: float = Field(0.05, gt=0, le=1)
    levels: tuple[Literal["product", "category"], ...] = ("product", "category")
    restrict_to_offers: bool = False
    bought_together_top: int = Field(10, ge=1)
    followup: FollowupSettings = FollowupSettings()
    bundles: BundleSettings = BundleSettings()

    @field_validator("min_support")
    @classmethod
    def _fraction_or_count(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError("a fraction below 1 or a whole number of baskets")
        return value


class ModelSettings(_Section):
    horizon_days: int = Field(30, ge=1)
    train_cutoffs: int = Field(4, ge=1)
    cutoff_step_days: int | None = Field(None, ge=1)
    algorithm: Literal["logistic_regression", "gbt"] = "logistic_regression"
    calibration: Literal["platt", "isotonic", "none"] = "platt"
    max_iter: int = Field(50, ge=1)
    reg_param: float = Field(0.01, ge=0)
    #: Counts, amounts and day counts enter the model as log(1 + x) (see xsell.model.build_pipeline).
    log_features: bool = True
    #: Up-sell models: the customer-wide and the target family's columns (family), or every column (all).
    up_sell_features: Literal["family", "all"] = "family"
    max_depth: int = Field(3, ge=1)
    step_size: float = Field(0.1, gt=0, le=1)
    min_instances_per_node: int = Field(20, ge=1)
    subsampling_rate: float = Field(0.8, gt=0, le=1)
    promotion_margin: float = 0.0
    min_positive_labels: int = Field(5, ge=1)
    parallel_offers: int = Field(4, ge=1)
    # 1: every offer is retrained on every run. N > 1: an offer is retrained once its champion is N days
    # old, or earlier when a monitoring check of it (or of every offer) breached since.
    retrain_every_days: int = Field(1, ge=1)


class OfferSettings(_Section):
    offer_id: str
    offer_type: Literal["cross-sell", "up-sell"]
    target: str


class AudienceSettings(_Section):
    max_offers_per_customer: int = Field(3, ge=1)
    control_share: float = Field(0.10, ge=0, lt=1)
    control_salt: str = "xsell"
    max_consent_age_days: int = Field(3, ge=0)
    cooldown_days: int = Field(30, ge=0)
    category_diversity: bool = False
    min_volume_fraction: float = Field(0.5, ge=0, le=1)
    retention_days: int = Field(400, ge=1)


class MeasurementSettings(_Section):
    # A campaign (a published run date D) is measured once its horizon has passed, and again on the
    # runs of the following `remeasure_days` days (late data for its window is picked up).
    remeasure_days: int = Field(7, ge=0)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    # Below this many control customers an offer's result is reported as inconclusive, not as a number.
    min_control_customers: int = Field(100, ge=1)
    experiment: str = "xsell-campaigns"


class MonitoringSettings(_Section):
    # Population stability index of these features (between the training fold's cutoff and the scoring
    # cutoff) and of each offer's score (against the out-of-time fold the champion was checked on).
    features: tuple[str, ...] = ("orders_30d", "orders_90d", "spend_30d", "spend_90d", "recency_days",
                                 "tenure_days")
    psi_bins: int = Field(10, ge=2)
    max_psi: float = Field(0.25, gt=0)
    # A score PSI is judged only when the fold and today's eligible customers both number at least this
    # (sampling alone gives a PSI of about (bins - 1) x (1/n + 1/m): 0.45 at 40 rows a side).
    min_psi_rows: int = Field(200, ge=1)
    # Rule-set churn: the share of the previous run's top rules (by lift) still among today's.
    rule_top_n: int = Field(50, ge=1)
    min_rule_overlap: float = Field(0.5, ge=0, le=1)
    # Matured campaigns: the realized top-decile lift must reach this share of the promised one, and the
    # control cell's observed rate must lie within this factor of the mean published score, once at
    # least `min_positives` adoptions make the comparison meaningful.
    min_lift_ratio: float = Field(0.5, ge=0)
    max_calibration_factor: float = Field(2.0, ge=1)
    min_positives: int = Field(20, ge=1)


class MlflowSettings(_Section):
    tracking_uri: str | None = None
    artifact_location: str | None = None
    experiment: str = "xsell"
    http_max_retries: int = Field(1, ge=0)
    http_timeout_seconds: int = Field(10, ge=1)


class PostgresSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 5432
    dbname: str = "xsell"
    user: str = "postgres"
    password_env: str = "XSELL_PG_PASSWORD"
    jdbc_jar: str = "/usr/share/java/postgresql.jar"

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env) or None

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.dbname}"


class WarehouseSettings(_Section):
    target: Literal["duckdb", "postgres"] = "duckdb"
    schema_name: str = Field("main", alias="schema")
    duckdb_path: str | None = None
    postgres: PostgresSettings = PostgresSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("schema_name")
    @classmethod
    def _safe_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a plain SQL identifier (pattern {IDENTIFIER.pattern})")
        return value


class Settings(_Section):
    home: Path = Path("var")
    spark: SparkSettings = SparkSettings()
    validation: ValidationSettings = ValidationSettings()
    rules: RuleSettings = RuleSettings()
    model: ModelSettings = ModelSettings()
    offers: Literal["auto"] | tuple[OfferSettings, ...] = "auto"
    audience: AudienceSettings = AudienceSettings()
    measurement: MeasurementSettings = MeasurementSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    mlflow: MlflowSettings = MlflowSettings()
    warehouse: WarehouseSettings = WarehouseSettings()

    # --- derived locations: everything of a local run lives below `home` ---
    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def truth(self) -> Path:
        return self.home / "truth"

    @property
    def data_docs(self) -> Path:
        return self.home / "data_docs"

    @property
    def duckdb_path(self) -> Path:
        return Path(self.warehouse.duckdb_path) if self.warehouse.duckdb_path else self.home / "warehouse.duckdb"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{(self.home / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_location(self) -> str:
        location = self.mlflow.artifact_location or str(self.home / "mlflow" / "artifacts")
        return location if "://" in location else Path(location).resolve().as_uri()


def conf_dir() -> Path:
    """``conf/`` of this checkout, or ``$XSELL_CONF_DIR``."""
    return Path(os.environ.get(CONF_DIR_ENV) or Path(__file__).resolve().parent.parent / "conf")


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as error:
        raise ConfigError(f"configuration file {path} does not exist") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration file {path} is not valid YAML: {error}") from error
    if not isinstance(content, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
    return content


def load_settings(env: str | None = None, *, overrides: dict[str, Any] | None = None) -> Settings:
    """Base settings, merged with ``conf/<env>.yaml`` (``env`` or ``$XSELL_ENV``) and ``overrides``.

    ``env`` may name several overlays separated by commas, applied in order. ``$XSELL_HOME`` wins over
    the ``home`` of every file, and ``overrides`` win over both; the home is made absolute so that child
    processes agree on it.
    """
    directory = conf_dir()
    raw = _read_yaml(directory / "base.yaml")
    names = env if env is not None else os.environ.get(ENV_ENV, "")
    sources = [str(directory / "base.yaml")]
    for name in filter(None, (part.strip() for part in names.split(","))):
        path = directory / f"{name}.yaml"
        raw = _merge(raw, _read_yaml(path))
        sources.append(str(path))
    if os.environ.get(HOME_ENV):
        raw["home"] = os.environ[HOME_ENV]
    # Overrides given in code (a notebook's temporary home, a test's) win over the environment.
    raw = _merge(raw, overrides or {})
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise ConfigError(f"invalid configuration ({' + '.join(sources)}): {problems}") from None
    return settings.model_copy(update={"home": settings.home.resolve()})
