"""The robustness suite's gate: stability per program against the floors of ``robustness:`` (pure).

Saving the unstable cases to ``suites/robustness_regressions.json`` is a side effect of the
session's end (:func:`save_counterexamples`, called by :mod:`evals.results.finish`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.context import SessionContext
from evals.stats.robustness import (
    RegressionCases,
    StabilityRecord,
    case_from_record,
    flat_stability_metrics,
    stability,
)

REGRESSIONS_FILE = Path("suites") / "robustness_regressions.json"


@dataclass
class RobustnessOutcome:
    """Stability metrics per program, the floors' red lines and how many new counterexamples were saved."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    error_lines: list[str] = field(default_factory=list)
    saved: int = 0


def check_robustness(context: SessionContext) -> RobustnessOutcome:
    """Aggregate stability per program and check the floors."""
    outcome = RobustnessOutcome()
    if not context.stability:
        return outcome
    records = [StabilityRecord.from_dict(item["record"]) for item in context.stability]
    policy = context.policies.robustness
    for program, m in stability(records).items():
        outcome.metrics[program] = flat_stability_metrics(m)
        if m.stability < policy.min_stability:
            outcome.error_lines.append(
                f"{program}: stability {m.stability:.2f} < min {policy.min_stability:.2f} (n={m.n} perturbed examples)"
            )
        if m.valid_rate < policy.min_valid_rate:
            outcome.error_lines.append(
                f"{program}: robust valid rate {m.valid_rate:.2f} < min {policy.min_valid_rate:.2f}"
            )
    return outcome


def save_counterexamples(path: Path, items: Sequence[Mapping[str, Any]]) -> int:
    """Add every unstable (or invalid) perturbed text to the regression file; return how many were new."""
    cases = RegressionCases(path)
    before = len(cases.load())
    new = []
    for item in items:
        record = StabilityRecord.from_dict(item["record"])
        if not record.stable:
            new.append(case_from_record(record, item["text"]))
    if not new:
        return 0
    return len(cases.add(new)) - before
