"""Accuracy suite: every registered program on every diagnosis, with the real LM.

One test per (program, diagnosis), e.g. ``test_diagnosis[knn_few_shot-migraine]``. Each
runs the program on that diagnosis's sampled examples and checks its recall floor from
thresholds.yaml; the session plugin aggregates all records into one gated MLflow run.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from evals.harness.resources import DiagnosisOutcome


def test_diagnosis(evals_program: str, diagnosis: str, evals_evaluate: Callable[[str, str], DiagnosisOutcome]) -> None:
    outcome = evals_evaluate(evals_program, diagnosis)
    if outcome.failure:
        pytest.fail(outcome.failure, pytrace=False)
