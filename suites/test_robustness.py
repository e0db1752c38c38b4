"""Robustness suite: answers must stay valid and stable under meaning-preserving perturbations.

Select it with ``pytest suites -m robustness``. For every (program, diagnosis), hypothesis
perturbs the first sampled example's text (case, whitespace, punctuation, sentence order,
small typos, filler phrases). An answer outside the 22 labels fails the test; a changed
answer is recorded, counted into the stability rate (gated by ``robustness.min_stability``
in thresholds.yaml) and saved to ``suites/robustness_regressions.json``, whose cases are
replayed below in later sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from evals.stats.perturb import perturbed_texts
from evals.stats.robustness import load_cases

REGRESSIONS = Path(__file__).with_name("robustness_regressions.json")

pytestmark = pytest.mark.robustness

# An LM call costs seconds: few examples, no deadline, no shrinking (each shrink step is LM calls).
LM_SETTINGS = settings(
    max_examples=3,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=(HealthCheck.function_scoped_fixture, HealthCheck.too_slow),
)


@LM_SETTINGS
@given(data=st.data())
def test_stable_under_perturbation(
    evals_program: str, diagnosis: str, evals_session: Any, evals_stability: Callable[..., Any], data: st.DataObject
) -> None:
    example = next(e for e in evals_session.examples() if e.diagnosis == diagnosis)
    text, names = data.draw(perturbed_texts(example.symptoms), label="perturbed")

    record = evals_stability(evals_program, example, text, names)

    assert record.perturbed is not None, f"no valid label for a perturbed text ({', '.join(names)}): {record.error}"


def _saved_cases() -> list[dict[str, Any]]:
    return load_cases(REGRESSIONS)


@pytest.mark.parametrize("case", _saved_cases(), ids=lambda c: f"{c['program']}-{c['example_id']}")
def test_saved_counterexample(case: dict[str, Any], evals_session: Any, evals_stability: Callable[..., Any]) -> None:
    if case["program"] not in evals_session.program_names():
        pytest.skip(f"program {case['program']!r} is not selected")
    example = next((e for e in evals_session.dataset().split("test") if e.id == case["example_id"]), None)
    if example is None:
        pytest.skip(f"example {case['example_id']} is not in this dataset")

    record = evals_stability(case["program"], example, case["text"], tuple(case["perturbations"]))

    assert record.perturbed is not None, f"no valid label for the saved perturbed text: {record.error}"
