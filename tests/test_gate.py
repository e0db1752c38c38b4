"""Unit tests of evals.gates.thresholds: checks, messages and the JSON verdict."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.config.thresholds import ProgramThresholds, RecallThresholds
from evals.gates.thresholds import Check, check_program, describe, diagnosis_failure, failed_checks, verdict
from evals.labels import DIAGNOSES, slug
from evals.stats.metrics import DiagnosisMetrics, ProgramMetrics


def make_metrics(
    program: str = "knn_few_shot",
    *,
    accuracy: float = 0.6,
    macro_f1: float = 0.55,
    invalid_rate: float = 0.02,
    latency_p95_ms: float = 1200.0,
    support: dict[str, int] | None = None,
    recall: dict[str, float] | None = None,
) -> ProgramMetrics:
    """Hand-build metrics for all 22 diagnoses: support 10 and recall 0.5 unless given."""
    support = support or {}
    recall = recall or {}
    per_diagnosis = {
        diagnosis: DiagnosisMetrics(
            diagnosis=diagnosis,
            support=support.get(diagnosis, 10),
            predicted=10,
            precision=0.5,
            recall=recall.get(diagnosis, 0.5),
            f1=0.5,
        )
        for diagnosis in DIAGNOSES
    }
    return ProgramMetrics(
        program=program,
        n=sum(m.support for m in per_diagnosis.values()),
        accuracy=accuracy,
        macro_f1=macro_f1,
        invalid_rate=invalid_rate,
        error_rate=0.0,
        latency_p50_ms=latency_p95_ms / 2,
        latency_p95_ms=latency_p95_ms,
        latency_max_ms=latency_p95_ms * 2,
        prompt_tokens=0,
        completion_tokens=0,
        per_diagnosis=per_diagnosis,
        confusion=(),
    )


def make_limits(
    *,
    min_accuracy: float = 0.3,
    max_p95_latency_ms: float = 5000.0,
    default_floor: float = 0.2,
    min_support: int = 5,
    overrides: dict[str, float] | None = None,
) -> ProgramThresholds:
    return ProgramThresholds(
        min_accuracy=min_accuracy,
        min_macro_f1=0.1,
        max_invalid_rate=0.1,
        max_p95_latency_ms=max_p95_latency_ms,
        recall=RecallThresholds(default_floor, min_support, overrides or {}),
    )


def by_metric(checks: list[Check]) -> dict[str, Check]:
    return {check.metric: check for check in checks}


# --- check_program --------------------------------------------------------------------------


def test_check_program_makes_session_checks_then_one_recall_check_per_diagnosis() -> None:
    checks = check_program(make_metrics(), make_limits())
    names = [check.metric for check in checks]
    assert names[:4] == ["accuracy", "macro_f1", "invalid_rate", "latency_p95_ms"]
    assert names[4:] == [f"recall.{slug(diagnosis)}" for diagnosis in DIAGNOSES]
    assert "recall.bronchial_asthma" in names
    assert all(check.program == "knn_few_shot" for check in checks)
    assert not failed_checks(checks)


def test_check_program_compares_values_with_limits() -> None:
    metrics = make_metrics(accuracy=0.25, invalid_rate=0.3, latency_p95_ms=6000)
    checks = by_metric(check_program(metrics, make_limits()))
    assert checks["accuracy"] == Check("knn_few_shot", "accuracy", 0.25, 0.3, "min")
    assert checks["macro_f1"] == Check("knn_few_shot", "macro_f1", 0.55, 0.1, "min")
    assert checks["invalid_rate"] == Check("knn_few_shot", "invalid_rate", 0.3, 0.1, "max")
    assert checks["latency_p95_ms"] == Check("knn_few_shot", "latency_p95_ms", 6000, 5000, "max")
    failed = [check.metric for check in failed_checks(checks.values())]
    assert failed == ["accuracy", "invalid_rate", "latency_p95_ms"]


def test_recall_checks_use_floors_support_and_min_support() -> None:
    metrics = make_metrics(
        support={"migraine": 10, "dengue": 3, "allergy": 0, "typhoid": 5},
        recall={"migraine": 0.4, "dengue": 0.0, "typhoid": 0.0},
    )
    limits = make_limits(default_floor=0.2, min_support=5, overrides={"migraine": 0.6})
    checks = by_metric(check_program(metrics, limits))
    assert "recall.allergy" not in checks
    assert checks["recall.migraine"] == Check(
        "knn_few_shot", "recall.migraine", 0.4, 0.6, "min", enforced=True, support=10
    )
    assert checks["recall.dengue"].limit == 0.2
    assert checks["recall.dengue"].enforced is False
    assert checks["recall.dengue"].support == 3
    assert checks["recall.typhoid"].enforced is True
    failed = {check.metric for check in failed_checks(checks.values())}
    assert failed == {"recall.migraine", "recall.typhoid"}


def test_unlimited_latency_makes_no_latency_check() -> None:
    checks = check_program(make_metrics(), make_limits(max_p95_latency_ms=math.inf))
    assert "latency_p95_ms" not in by_metric(checks)


# --- describe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "line"),
    [
        (
            Check("knn_few_shot", "accuracy", 0.41, 0.5, "min"),
            "knn_few_shot: accuracy 0.41 < min 0.50",
        ),
        (
            Check("zero_shot", "latency_p95_ms", 5210.4, 5000, "max"),
            "zero_shot: latency_p95_ms 5210 > max 5000",
        ),
        (
            Check("zero_shot", "invalid_rate", 0.05, 0.1, "max"),
            "zero_shot: invalid_rate 0.05 <= max 0.10",
        ),
        (
            Check("zero_shot", "macro_f1", 0.5, 0.5, "min"),
            "zero_shot: macro_f1 0.50 >= min 0.50",
        ),
        (
            Check("knn_few_shot", "recall.migraine", 0.4, 0.6, "min", support=10),
            "knn_few_shot: recall 0.40 < floor 0.60 for 'migraine' (n=10)",
        ),
        (
            Check("zero_shot", "recall.bronchial_asthma", 0.7, 0.6, "min", support=9),
            "zero_shot: recall 0.70 >= floor 0.60 for 'bronchial asthma' (n=9)",
        ),
        (
            Check("zero_shot", "accuracy", 0.596, 0.6, "min"),
            "zero_shot: accuracy 0.596 < min 0.600",
        ),
    ],
)
def test_describe(check: Check, line: str) -> None:
    assert describe(check) == line


def test_describe_notes_unenforced_failures() -> None:
    check = Check("zero_shot", "recall.dengue", 0.0, 0.2, "min", enforced=False, support=3)
    expected = "zero_shot: recall 0.00 < floor 0.20 for 'dengue' (n=3)"
    assert describe(check, min_support=5) == (f"{expected} (not enforced: support 3 < min_support 5)")
    assert describe(check) == f"{expected} (not enforced: support 3 < min_support)"


def test_describe_adds_no_note_to_unenforced_passes() -> None:
    check = Check("zero_shot", "recall.dengue", 1.0, 0.2, "min", enforced=False, support=3)
    assert describe(check, min_support=5) == ("zero_shot: recall 1.00 >= floor 0.20 for 'dengue' (n=3)")


# --- diagnosis_failure ----------------------------------------------------------------------


def test_diagnosis_failure_message() -> None:
    limits = make_limits(overrides={"migraine": 0.6})
    assert diagnosis_failure("zero_shot", "migraine", 4, 10, limits) == (
        "recall 0.40 < floor 0.60 for 'migraine' (zero_shot, n=10)"
    )


def test_diagnosis_failure_recall_equal_to_floor_passes() -> None:
    limits = make_limits(overrides={"migraine": 0.6})
    assert diagnosis_failure("zero_shot", "migraine", 6, 10, limits) is None
    assert diagnosis_failure("zero_shot", "migraine", 5, 10, limits) is not None


def test_diagnosis_failure_below_min_support_is_not_enforced() -> None:
    limits = make_limits(default_floor=0.5, min_support=5)
    assert diagnosis_failure("zero_shot", "dengue", 0, 4, limits) is None
    assert diagnosis_failure("zero_shot", "dengue", 0, 5, limits) == (
        "recall 0.00 < floor 0.50 for 'dengue' (zero_shot, n=5)"
    )


def test_diagnosis_failure_without_examples_is_none() -> None:
    limits = make_limits(default_floor=1.0, min_support=0)
    assert diagnosis_failure("zero_shot", "dengue", 0, 0, limits) is None


@given(
    n=st.integers(min_value=1, max_value=200),
    data=st.data(),
    floor=st.floats(min_value=0.0, max_value=1.0),
    min_support=st.integers(min_value=0, max_value=20),
)
def test_diagnosis_failure_agrees_with_recall_and_support(
    n: int, data: st.DataObject, floor: float, min_support: int
) -> None:
    correct = data.draw(st.integers(min_value=0, max_value=n))
    limits = make_limits(default_floor=floor, min_support=min_support)
    failure = diagnosis_failure("zero_shot", "allergy", correct, n, limits)
    assert (failure is not None) == (n >= min_support and correct / n < floor)


# --- verdict --------------------------------------------------------------------------------


def test_verdict_is_json_and_fails_on_enforced_failures_only() -> None:
    checks_by_program = {
        "zero_shot": [
            Check("zero_shot", "accuracy", 0.07, 0.0, "min"),
            Check("zero_shot", "recall.dengue", 0.0, 0.2, "min", enforced=False, support=3),
        ],
        "knn_few_shot": [Check("knn_few_shot", "accuracy", 0.25, 0.3, "min")],
    }
    result = verdict(checks_by_program, min_support={"zero_shot": 5})
    decoded = json.loads(json.dumps(result, allow_nan=False))
    assert decoded == result
    assert result["passed"] is False
    assert result["programs"]["zero_shot"]["passed"] is True
    assert result["programs"]["knn_few_shot"]["passed"] is False
    assert result["programs"]["zero_shot"]["checks"][1] == {
        "metric": "recall.dengue",
        "value": 0.0,
        "limit": 0.2,
        "kind": "min",
        "enforced": False,
        "support": 3,
        "passed": False,
        "message": "zero_shot: recall 0.00 < floor 0.20 for 'dengue' (n=3) (not enforced: support 3 < min_support 5)",
    }
    assert result["programs"]["knn_few_shot"]["checks"][0]["message"] == ("knn_few_shot: accuracy 0.25 < min 0.30")


def test_verdict_passes_when_every_program_passes() -> None:
    checks = check_program(make_metrics(), make_limits())
    result = verdict({"knn_few_shot": checks})
    assert result["passed"] is True
    assert len(result["programs"]["knn_few_shot"]["checks"]) == len(checks)


def test_verdict_turns_non_finite_numbers_into_null() -> None:
    check = Check("zero_shot", "latency_p95_ms", math.nan, math.inf, "max")
    entry = verdict({"zero_shot": [check]})["programs"]["zero_shot"]["checks"][0]
    assert (entry["value"], entry["limit"]) == (None, None)
    json.dumps(entry, allow_nan=False)
