"""Check aggregated metrics against thresholds (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from evals.config.thresholds import ProgramThresholds
from evals.labels import DIAGNOSES, slug
from evals.stats.metrics import ProgramMetrics
from evals.stats.reference import GAIN_METRIC, base_program


@dataclass(frozen=True)
class Check:
    """One threshold compared with one measured value.

    Attributes:
        program: Program the value belongs to.
        metric: Metric name, e.g. ``"accuracy"`` or ``"recall.migraine"``.
        value: Measured value (0-1 scale, or milliseconds for latency).
        limit: The threshold.
        kind: ``"min"`` when the value must be >= limit, ``"max"`` when <= limit.
        enforced: False for floors reported but not enforced (support below ``min_support``).
        support: Number of examples behind the value, when meaningful.
    """

    program: str
    metric: str
    value: float
    limit: float
    kind: Literal["min", "max"]
    enforced: bool = True
    support: int | None = None

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.kind == "min" else self.value <= self.limit

    @property
    def failed(self) -> bool:
        """True when this check breaks the gate (it failed and is enforced)."""
        return self.enforced and not self.passed


_DIAGNOSIS_BY_SLUG: dict[str, str] = {slug(diagnosis): diagnosis for diagnosis in DIAGNOSES}
_RECALL_PREFIX = "recall."
_SYMBOLS = {("min", True): ">=", ("min", False): "<", ("max", True): "<=", ("max", False): ">"}


def check_program(metrics: ProgramMetrics, limits: ProgramThresholds) -> list[Check]:
    """Compare one program's session metrics with its limits.

    Args:
        metrics: The program's aggregated metrics.
        limits: Its thresholds, already merged with the ``default`` section.

    Returns:
        Checks for accuracy, macro F1, invalid rate, p95 latency (unless unlimited) and one
        ``recall.<slug>`` check per diagnosis seen in the data; recall checks on fewer examples
        than ``min_support`` are marked not enforced.
    """
    program = metrics.program
    checks = [
        Check(program, "accuracy", metrics.accuracy, limits.min_accuracy, "min"),
        Check(program, "macro_f1", metrics.macro_f1, limits.min_macro_f1, "min"),
        Check(program, "invalid_rate", metrics.invalid_rate, limits.max_invalid_rate, "max"),
    ]
    if math.isfinite(limits.max_p95_latency_ms):
        latency = metrics.latency_p95_ms
        checks.append(Check(program, "latency_p95_ms", latency, limits.max_p95_latency_ms, "max"))
    if math.isfinite(limits.max_cost_usd):
        checks.append(Check(program, "cost_usd", metrics.cost_usd, limits.max_cost_usd, "max", support=metrics.n))
    for diagnosis in DIAGNOSES:
        scores = metrics.per_diagnosis.get(diagnosis)
        if scores is None or scores.support == 0:
            continue
        checks.append(
            Check(
                program,
                f"{_RECALL_PREFIX}{slug(diagnosis)}",
                scores.recall,
                limits.recall.floor(diagnosis),
                "min",
                enforced=scores.support >= limits.recall.min_support,
                support=scores.support,
            )
        )
    return checks


def gain_checks(
    limits: Mapping[str, ProgramThresholds], gains: Mapping[str, float], references: Sequence[str]
) -> tuple[dict[str, Check], list[str]]:
    """Check ``min_gain_over_reference`` for every program that sets it.

    Args:
        limits: Program -> its thresholds (merged with ``default``), for every evaluated program.
        gains: Program -> its accuracy gain over the reference (:func:`evals.stats.reference.gains_over_reference`).
        references: The registry's reference programs; they are never checked against themselves.

    Returns:
        Program -> its check, and one line per program whose limit could not be checked because
        no reference program was evaluated (the gate fails closed: add the reference to the session).
    """
    checks: dict[str, Check] = {}
    unchecked: list[str] = []
    for program, limit in limits.items():
        floor = limit.min_gain_over_reference
        if floor is None or base_program(program) in references:
            continue
        if program in gains:
            checks[program] = Check(program, GAIN_METRIC, gains[program], floor, "min")
        else:
            wanted = ", ".join(references) or "none in the registry"
            unchecked.append(
                f"{program}: min_gain_over_reference {floor:.2f} cannot be checked: no reference program was "
                f"evaluated (reference programs: {wanted}); add one to --evals-programs"
            )
    return checks, unchecked


def describe(check: Check, min_support: int | None = None) -> str:
    """Return one readable line for a check, e.g. ``zero_shot: accuracy 0.41 < min 0.50``.

    Args:
        check: The check to describe, passed or failed.
        min_support: The program's ``recall.min_support``, named in the note of an
            unenforced failure when given.
    """
    value, limit = _format_pair(check)
    symbol = _SYMBOLS[(check.kind, check.passed)]
    if check.metric.startswith(_RECALL_PREFIX):
        diagnosis = _diagnosis_of(check.metric)
        support = "" if check.support is None else f" (n={check.support})"
        line = f"{check.program}: recall {value} {symbol} floor {limit} for {diagnosis!r}{support}"
    else:
        line = f"{check.program}: {check.metric} {value} {symbol} {check.kind} {limit}"
    if not check.enforced and not check.passed:
        needed = "" if min_support is None else f" {min_support}"
        line += f" (not enforced: support {check.support} < min_support{needed})"
    return line


def diagnosis_failure(program: str, diagnosis: str, correct: int, n: int, limits: ProgramThresholds) -> str | None:
    """Judge one diagnosis's recall inside a per-diagnosis test.

    Args:
        program: The program evaluated.
        diagnosis: The gold diagnosis of the ``n`` examples.
        correct: How many of them the program got right.
        n: How many examples of ``diagnosis`` there were.
        limits: The program's thresholds.

    Returns:
        None when recall meets the floor, or when ``n`` is 0 or below ``min_support`` (not
        enforced); otherwise ``recall 0.40 < floor 0.60 for 'migraine' (zero_shot, n=10)``.
    """
    if n == 0 or n < limits.recall.min_support:
        return None
    floor = limits.recall.floor(diagnosis)
    check = Check(program, f"{_RECALL_PREFIX}{slug(diagnosis)}", correct / n, floor, "min")
    if check.passed:
        return None
    value, limit = _format_pair(check)
    return f"recall {value} < floor {limit} for {diagnosis!r} ({program}, n={n})"


def failed_checks(checks: Iterable[Check]) -> list[Check]:
    """Return the checks that break the gate (failed and enforced)."""
    return [check for check in checks if check.failed]


def verdict(
    checks_by_program: Mapping[str, Sequence[Check]],
    min_support: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Summarise all checks as a JSON-ready dict.

    Args:
        checks_by_program: Program name -> its checks (from :func:`check_program`).
        min_support: Program name -> ``recall.min_support``, quoted in the messages of
            unenforced failures when given.

    Returns:
        ``{"passed": bool, "programs": {name: {"passed": bool, "checks": [...]}}}`` where each
        check has ``metric``, ``value``, ``limit``, ``kind``, ``enforced``, ``support``,
        ``passed`` and ``message``. Non-finite numbers become ``None`` so strict JSON holds.
    """
    programs: dict[str, Any] = {}
    for name, checks in checks_by_program.items():
        support_needed = None if min_support is None else min_support.get(name)
        programs[name] = {
            "passed": not failed_checks(checks),
            "checks": [_check_json(check, support_needed) for check in checks],
        }
    return {"passed": all(entry["passed"] for entry in programs.values()), "programs": programs}


def _check_json(check: Check, min_support: int | None) -> dict[str, Any]:
    return {
        "metric": check.metric,
        "value": _finite_or_none(check.value),
        "limit": _finite_or_none(check.limit),
        "kind": check.kind,
        "enforced": check.enforced,
        "support": check.support,
        "passed": check.passed,
        "message": describe(check, min_support),
    }


def _format_pair(check: Check) -> tuple[str, str]:
    """Format value and limit: 2 decimals (0 for ms), more when rounding would hide a miss."""
    digits = 0 if check.metric.endswith("_ms") else 2
    while True:
        value, limit = f"{check.value:.{digits}f}", f"{check.limit:.{digits}f}"
        # 0.596 < 0.60 must not read "0.60 < floor 0.60".
        if value != limit or check.passed or digits >= 6:
            return value, limit
        digits += 1


def _diagnosis_of(metric: str) -> str:
    name = metric.removeprefix(_RECALL_PREFIX)
    return _DIAGNOSIS_BY_SLUG.get(name, name)


def _finite_or_none(number: float) -> float | None:
    return float(number) if math.isfinite(number) else None
