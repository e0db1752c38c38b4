"""The eval suites' conftest: the robustness suite is imported only when it can be selected."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

SUITES = Path(__file__).resolve().parents[1] / "suites"


@pytest.fixture(scope="module")
def conftest() -> Any:
    spec = importlib.util.spec_from_file_location("suites_conftest", SUITES / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(markexpr: str) -> Any:
    return SimpleNamespace(option=SimpleNamespace(markexpr=markexpr))


@pytest.mark.parametrize(
    ("name", "markexpr", "ignored"),
    [
        ("test_robustness.py", "not robustness", True),  # the default addopts: every test would be deselected
        ("test_robustness.py", "robustness", None),
        ("test_robustness.py", "", None),
        ("test_robustness.py", "not robustness or slow", None),  # not provably all deselected: collect it
        ("test_diagnosis.py", "not robustness", None),
    ],
)
def test_robustness_suite_is_skipped_only_when_the_default_deselects_it(
    conftest: Any, name: str, markexpr: str, ignored: bool | None
) -> None:
    assert conftest.pytest_ignore_collect(SUITES / name, _config(markexpr)) is ignored


def test_every_robustness_test_carries_the_mark() -> None:
    """The skip is safe only while the whole module is marked: a test without the mark would vanish."""
    text = (SUITES / "test_robustness.py").read_text("utf-8")
    assert "pytestmark = pytest.mark.robustness" in text
