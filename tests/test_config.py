"""Settings: overlays, the home override and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from xsell.config import ConfigError, load_settings


def test_overlay_is_merged_over_base(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XSELL_HOME", str(tmp_path))
    settings = load_settings("postgres")
    assert settings.warehouse.target == "postgres"
    assert settings.warehouse.schema_name == "xsell"
    assert settings.rules.min_support == load_settings("").rules.min_support


def test_home_comes_from_the_environment_and_is_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XSELL_HOME", str(tmp_path / "state"))
    settings = load_settings("")
    assert settings.home == (tmp_path / "state").resolve()
    assert settings.duckdb_path == settings.home / "warehouse.duckdb"
    assert settings.mlflow_tracking_uri == f"sqlite:///{settings.home / 'mlflow' / 'mlflow.db'}"


def test_a_home_given_in_code_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # `make test` exports XSELL_HOME; a notebook or test that asks for its own home must get it.
    monkeypatch.setenv("XSELL_HOME", str(tmp_path / "from-env"))
    assert load_settings("", overrides={"home": str(tmp_path / "mine")}).home == (tmp_path / "mine").resolve()


def test_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"audience\.control_share"):
        load_settings("", overrides={"audience": {"control_share": 1.5}})


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"rules\.min_suport"):
        load_settings("", overrides={"rules": {"min_suport": 0.1}})


@pytest.mark.parametrize("name", ['audiences"; DROP TABLE audiences; --', "Public", "a-b", ""])
def test_hostile_schema_name_is_rejected_before_any_sql(name: str) -> None:
    with pytest.raises(ConfigError, match="warehouse.schema"):
        load_settings("", overrides={"warehouse": {"schema": name}})


def test_missing_overlay_names_the_file() -> None:
    with pytest.raises(ConfigError, match="nonexistent.yaml"):
        load_settings("nonexistent")
