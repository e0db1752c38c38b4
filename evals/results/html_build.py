"""Build a :class:`ReportData` from the session's typed results (pure, no I/O).

This is the one module of the HTML report that knows the project's types (metrics,
checks, records, the regression outcome, MLflow history); the renderer only knows
:mod:`evals.results.html_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from evals.results.html_data import (
    CheckRow,
    Confusion,
    ExampleRow,
    ExtraSection,
    GateRow,
    ProgramRow,
    RecallBar,
    ReportData,
    TrendPoint,
    Verdict,
)
from evals.stats.reference import GAIN_METRIC, base_program, gains_over_reference, reference_of

if TYPE_CHECKING:
    from evals.gates.champion import RegressionOutcome
    from evals.gates.thresholds import Check
    from evals.records import ExampleRecord
    from evals.results.report import Section
    from evals.stats.metrics import ProgramMetrics
    from evals.store.history import Session

RECALL_PREFIX = "recall."
_INVALID = "(invalid)"


def _fmt(metric: str, value: float) -> str:
    if metric.endswith("_ms"):
        return f"{value:,.0f} ms"
    if metric == GAIN_METRIC:
        return f"{value:+.3f}"
    return f"{value:.3f}"


def check_row(check: Check) -> CheckRow:
    """A judged check, formatted for reading."""
    verdict: Verdict = "PASS" if check.passed else "FAIL" if check.enforced else "WARN"
    limit = f"{'>=' if check.kind == 'min' else '<='} {_fmt(check.metric, check.limit)}"
    return CheckRow(check.program, check.metric, _fmt(check.metric, check.value), limit, verdict, check.support)


def program_row(m: ProgramMetrics, failed: bool, gain: float | None, reference: bool) -> ProgramRow:
    return ProgramRow(
        m.program,
        m.n,
        m.accuracy,
        m.macro_f1,
        m.invalid_rate,
        m.error_rate,
        m.latency_p50_ms,
        m.latency_p95_ms,
        m.prompt_tokens,
        m.completion_tokens,
        reference,
        gain,
        failed,
        m.cost_usd,
    )


def recall_bars(m: ProgramMetrics, checks: Sequence[Check]) -> tuple[RecallBar, ...]:
    """Recall per diagnosis (label order); a bar is marked when its enforced floor failed."""
    failed = {c.metric for c in checks if c.failed and c.metric.startswith(RECALL_PREFIX)}
    return tuple(
        RecallBar(
            d.diagnosis,
            round(d.recall * d.support),
            d.support,
            f"{RECALL_PREFIX}{d.diagnosis.replace(' ', '_')}" in failed,
        )
        for d in m.per_diagnosis.values()
    )


def confusion(m: ProgramMetrics) -> Confusion:
    columns = tuple(m.confusion_columns)
    return Confusion(columns[:-1], columns, tuple(tuple(int(x) for x in row) for row in m.confusion))


def example_rows(records: Iterable[ExampleRecord], redact: Callable[[str], str]) -> tuple[ExampleRow, ...]:
    """Every record as an explorer row, sorted by program then id, its text redacted."""
    ordered = sorted(records, key=lambda r: (r.program, r.example_id))
    return tuple(
        ExampleRow(
            r.program,
            r.example_id,
            redact(r.symptoms),
            r.gold,
            r.predicted or _INVALID,
            r.correct,
            r.invalid,
            redact(r.error or ""),
            round(r.latency_ms, 1),
        )
        for r in ordered
    )


def gate_rows(regression: RegressionOutcome | None) -> tuple[GateRow, ...]:
    """The regression gate per program from a ``RegressionOutcome`` (None: not run)."""
    if regression is None:
        return ()
    rows = []
    for program, gate in regression.programs.items():
        c = regression.comparisons.get(program)
        if c is None:
            rows.append(GateRow(program, gate.status, gate.reason))
            continue
        a = c.accuracy
        rows.append(
            GateRow(
                program,
                gate.status,
                gate.reason,
                regression.baselines.get(program, ""),
                c.n,
                a.champion,
                a.candidate,
                a.delta,
                (a.ci_low, a.ci_high),
                a.p_value,
                c.min_detectable_drop,
                c.too_weak() or "",
            )
        )
    return tuple(rows)


def trend_from_sessions(sessions: Iterable[Session]) -> dict[str, tuple[TrendPoint, ...]]:
    """Accuracy per program across sessions read back from MLflow, oldest first.

    Args:
        sessions: Sessions in any order (``evals.history.recent_sessions`` gives newest first).
    """
    trends: dict[str, list[TrendPoint]] = {}
    for session in sorted(sessions, key=lambda s: s.started_at):
        for name, result in session.programs.items():
            accuracy = result.metrics.get("accuracy")
            if accuracy is not None:
                trends.setdefault(name, []).append(TrendPoint(session.started_at, float(accuracy), session.run_id))
    return {name: tuple(points) for name, points in sorted(trends.items())}


def with_current(
    trends: Mapping[str, tuple[TrendPoint, ...]], started_at: float, metrics: Mapping[str, ProgramMetrics]
) -> dict[str, tuple[TrendPoint, ...]]:
    """Append the current session to the history (it is not in MLflow yet when the report is written)."""
    merged = {name: tuple(p for p in points if p.started_at < started_at) for name, points in trends.items()}
    for name, m in metrics.items():
        merged[name] = (*merged.get(name, ()), TrendPoint(started_at, m.accuracy, "this session"))
    return merged


def build_report_data(
    *,
    title: str,
    metrics: Mapping[str, ProgramMetrics],
    checks: Mapping[str, Sequence[Check]],
    records: Sequence[ExampleRecord],
    redact: Callable[[str], str],
    error_lines: Sequence[str] = (),
    notes: Sequence[str] = (),
    regression: RegressionOutcome | None = None,
    references: Sequence[str] = (),
    trends: Mapping[str, tuple[TrendPoint, ...]] | None = None,
    extras: Sequence[Section] = (),
    params: Mapping[str, str] | None = None,
    mlflow_hint: str | None = None,
) -> ReportData:
    """Gather what the HTML report shows from the session's results.

    Args:
        extras: Report sections (objects with ``title``, ``headers``, ``rows``, ``note``); the
            regression section is left out, the gate has its own part of the page.
        references: The registry's reference programs; the first one evaluated is the baseline
            of ``gain_over_reference``.
    """
    gains = gains_over_reference(metrics, references)
    gates = gate_rows(regression)
    failed_gate = {g.program for g in gates if g.status == "fail"}
    all_checks = [c for cs in checks.values() for c in cs]
    programs = tuple(
        program_row(
            m,
            any(c.failed for c in checks.get(name, ())) or name in failed_gate,
            gains.get(name),
            base_program(name) in references,
        )
        for name, m in metrics.items()
    )
    return ReportData(
        title=title,
        passed=not error_lines and not any(c.failed for c in all_checks),
        error_lines=tuple(error_lines),
        notes=tuple(notes),
        checks=tuple(check_row(c) for c in all_checks),
        programs=programs,
        reference=reference_of(metrics, references),
        recalls={name: recall_bars(m, checks.get(name, ())) for name, m in metrics.items()},
        confusions={name: confusion(m) for name, m in metrics.items()},
        gates=gates,
        gate_status=regression.status if regression is not None else "none",
        trends=dict(trends or {}),
        examples=example_rows(records, redact),
        extras=tuple(
            ExtraSection(s.title, tuple(s.headers), tuple(tuple(r) for r in s.rows), s.note)
            for s in extras
            if not s.title.startswith("Regression")
        ),
        params=tuple((str(k), str(v)) for k, v in (params or {}).items()),
        mlflow_hint=mlflow_hint,
    )
