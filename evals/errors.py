"""Errors a user can act on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest


class ConfigError(pytest.UsageError):  # type: ignore[misc]  # final for typing, subclassed on purpose
    """Bad configuration or input: one readable line naming what, where, found and allowed.

    It subclasses ``pytest.UsageError`` so that pytest prints ``ERROR: <message>`` and exits
    with code 4 instead of a traceback; ``python -m evals`` prints it the same way.
    """


class EvalsWarning(pytest.PytestWarning):
    """Something was degraded (MLflow unreachable, cache entry ignored) but nothing is lost."""


class LMUnavailable(Exception):
    """The LM cannot be loaded or reached at all: the session stops with this one line.

    Attributes:
        records: What the test that found out gathered (``ExampleRecord`` objects); they are
            still reported, so that the session writes them.
    """

    def __init__(self, message: str, records: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.records = tuple(records)
