"""Fixtures of the degenerate-case suite (its machinery: ``degenerate_run.py``, its data: ``degenerate_data.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import degenerate_data, degenerate_run` from the test module

import degenerate_data as dd
from degenerate_run import session_root


@pytest.fixture(scope="session")
def degenerate_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the session's xdist workers: each (unit, case) model is trained by one of them."""
    return session_root(tmp_path_factory)


@pytest.fixture(scope="session")
def predict_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dd.Input]:
    return dd.write_inputs(tmp_path_factory.mktemp("inputs"))
