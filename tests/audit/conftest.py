"""Fixtures of the audit tests: a correct hand-built run directory, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.audit.rundirs import write_run
from tests.conftest import small_scenario


@pytest.fixture(scope="module")
def clean_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A consistent run dir: 6 clients, 2 rounds of 4 (client 5 never sampled), DP-SGD z = 1."""
    return write_run(tmp_path_factory.mktemp("audit") / "clean", small_scenario())


@pytest.fixture
def clean_run(clean_template: Path, tmp_path: Path) -> Path:
    """A private copy of the clean run dir, free to tamper with."""
    return Path(shutil.copytree(clean_template, tmp_path / "run"))
