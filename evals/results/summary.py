"""A session's results: aggregates, checks and gate outcomes, as a pure function of plain data.

:func:`summarize` takes the frozen :class:`~evals.context.SessionContext` and what the store
returned (:class:`~evals.store.view.StoreView`) and runs every gate; it writes nothing and asks
no server. What happens with the summary afterwards (bundle, upload, spool, promotion) is
:mod:`evals.results.finish`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evals.context import SessionContext
from evals.gates.champion import RegressionOutcome, check_regressions
from evals.gates.drift import DriftOutcome, check_drift
from evals.gates.robustness import RobustnessOutcome, check_robustness
from evals.gates.thresholds import Check, check_program, describe, gain_checks
from evals.labels import DIAGNOSES
from evals.records import ExampleRecord
from evals.stats.metrics import ProgramMetrics, aggregate
from evals.stats.reference import GAIN_METRIC, gains_over_reference, reference_of
from evals.store.history import Session
from evals.store.view import StoreView

SESSION_METRICS = ("accuracy", "macro_f1", "invalid_rate", "latency_p95_ms", GAIN_METRIC)


@dataclass(frozen=True)
class SessionSummary:
    """Aggregates, checks and verdict of one session.

    Attributes:
        records: The session's records, sorted by program and example id.
        metrics: Program -> its aggregates.
        checks: Program -> its threshold checks.
        error_lines: Red lines; each fails the session.
        incomplete: Why the session is incomplete (crashed workers, interrupted, diagnoses missing).
        params: The session's params.
        program_params: Program -> its params.
        notes: Yellow ``WARNING:`` lines of the gates.
        regression: The regression gate's outcome (None when it did not run).
        drift: The drift gate's outcome (None when it did not run).
        robustness: The robustness gate's outcome (None when it did not run).
        reference: The reference program (no LM) the gains are measured against, when one ran.
        gains: Program -> its accuracy gain over ``reference``.
        recent: The experiment's last sessions before this one, newest first (the trend chart).
    """

    records: list[ExampleRecord]
    metrics: dict[str, ProgramMetrics]
    checks: dict[str, list[Check]]
    error_lines: list[str]
    incomplete: list[str]
    params: Mapping[str, str]
    program_params: Mapping[str, Mapping[str, str]]
    notes: list[str] = field(default_factory=list)
    regression: RegressionOutcome | None = None
    drift: DriftOutcome | None = None
    robustness: RobustnessOutcome | None = None
    reference: str | None = None
    gains: Mapping[str, float] = field(default_factory=dict)
    recent: tuple[Session, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.error_lines and not any(c.failed for checks in self.checks.values() for c in checks)


def summarize(context: SessionContext, view: StoreView) -> SessionSummary:
    """Aggregate the records and run every gate over the context and what the store returned."""
    records = list(context.records)
    metrics = aggregate(records)
    limits = {name: context.policies.thresholds.for_program(name) for name in metrics}
    checks = {name: check_program(m, limits[name]) for name, m in metrics.items()}
    gains = gains_over_reference(metrics, context.references)
    common: dict[str, Any] = {
        "records": records,
        "metrics": metrics,
        "reference": reference_of(metrics, context.references),
        "gains": gains,
        "recent": view.recent,
        "incomplete": incomplete_reasons(context),
        "params": dict(context.params),
        "program_params": {k: dict(v) for k, v in context.program_params.items()},
    }
    if context.policies_problem:
        # Keep and report what was gathered even though the gate could not run.
        return SessionSummary(checks={name: [] for name in metrics}, error_lines=[context.policies_problem], **common)
    gain_of, unchecked = gain_checks(limits, gains, context.references)
    for name, check in gain_of.items():
        checks[name].append(check)
    # Per-diagnosis floors already failed their own tests; the session gate adds the aggregates.
    error_lines = [describe(c) for cs in checks.values() for c in cs if c.failed and c.metric in SESSION_METRICS]
    error_lines += unchecked
    regression = check_regressions(context, view)
    drift = check_drift(context, view)
    robustness = check_robustness(context)
    return SessionSummary(
        checks=checks,
        error_lines=error_lines + regression.error_lines + drift.error_lines + robustness.error_lines,
        notes=[*regression.notes, *drift.notes],
        regression=regression,
        drift=drift,
        robustness=robustness,
        **common,
    )


def incomplete_reasons(context: SessionContext) -> list[str]:
    """Why the session is incomplete: crashed workers, an interruption, diagnoses not evaluated."""
    reasons = [f"worker {worker} crashed" for worker in context.crashed_workers]
    if context.interrupted:
        reasons.append("session interrupted")
    partial = {}
    for program in context.programs:
        missing = set(DIAGNOSES) - {r.gold for r in context.records_of(program)}
        if missing:
            partial[program] = len(missing)
    if partial:
        reasons.append("diagnoses not evaluated: " + ", ".join(f"{p} {n}/22" for p, n in partial.items()))
    return reasons
