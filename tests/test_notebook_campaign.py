"""Notebook 03 is executed, in a file of its own so that a second test worker can run it (see test_notebooks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_notebooks import CAMPAIGN, execute


@pytest.mark.slow
def test_campaign_notebook_runs(tmp_path: Path) -> None:
    execute(CAMPAIGN, tmp_path)
