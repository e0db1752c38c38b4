"""Collection of the eval suites."""

from __future__ import annotations

from pathlib import Path

import pytest

# pyproject.toml's addopts: the robustness suite runs only when selected (`-m robustness`).
_DEFAULT_MARKEXPR = "not robustness"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not import the robustness suite when the default mark expression deselects all of it.

    Every test in it is marked ``robustness``; importing it loads hypothesis (about a second),
    which a default session would spend only to deselect them.
    """
    if collection_path.name == "test_robustness.py" and config.option.markexpr.strip() == _DEFAULT_MARKEXPR:
        return True
    return None
