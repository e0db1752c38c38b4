"""The regression gate against the champion, run once on the controller after the tests.

For every evaluated program that has a champion (or with ``--evals-baseline-run``, the
given run), the session's records are compared with the champion's on the same examples
(:mod:`evals.regression`). A regression is a red ``ERROR:`` line and a failed session; the
comparison goes into the terminal, the reports (a section) and MLflow (metrics + a table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evals.records import ExampleRecord

if TYPE_CHECKING:
    from evals.regression import Comparison
    from evals.report import Section
    from evals.session import EvalsSession

PROMOTION_KEY = "promote_requires"
"""Key of ``regression:`` in thresholds.yaml: params a session must match to be promoted."""


@dataclass
class RegressionOutcome:
    """Comparisons per program, and the lines a user should read."""

    comparisons: dict[str, Comparison] = field(default_factory=dict)
    baselines: dict[str, str] = field(default_factory=dict)
    error_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def program_metrics(self, program: str) -> dict[str, float]:
        """MLflow metrics of one program's comparison (deltas, interval bounds, McNemar p)."""
        comparison = self.comparisons.get(program)
        if comparison is None:
            return {}
        metrics: dict[str, float] = {}
        for row in comparison.as_rows()[:2]:
            for key in ("delta", "ci_low", "ci_high", "p_value"):
                if row.get(key) is not None:
                    metrics[f"regression.{row['metric']}.{key}"] = float(row[key])
        return metrics


def split_policy(raw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Separate the promotion requirements from the statistical policy of ``regression:``."""
    section = dict(raw or {})
    required = section.pop(PROMOTION_KEY, None) or {}
    return section, {str(k): str(v) for k, v in dict(required).items()}


def check_regressions(session: EvalsSession, records: Sequence[ExampleRecord]) -> RegressionOutcome:
    """Compare each program with its champion (or the explicit baseline run)."""
    from evals.regression import ComparisonRefused, compare, parse_regression_policy

    outcome = RegressionOutcome()
    settings = session.settings
    if settings["no-regression"] or settings["no-mlflow"]:
        return outcome
    thresholds = session.thresholds()
    policy = parse_regression_policy(split_policy(thresholds.regression)[0], thresholds.source)
    for program in sorted({r.program for r in records}):
        baseline = _baseline(session, program, outcome)
        if baseline is None:
            continue
        mine = [r for r in records if r.program == program]
        try:
            comparison = compare(mine, list(baseline.records), policy)
        except ComparisonRefused as exc:
            outcome.error_lines.append(str(exc))
            continue
        outcome.comparisons[program] = comparison
        outcome.baselines[program] = f"version {baseline.version} (run {baseline.run_id})"
        outcome.error_lines.extend(comparison.regressions())
    return outcome


def _baseline(session: EvalsSession, program: str, outcome: RegressionOutcome) -> Any:
    from evals.champion import baseline_from_run, find_champion
    from evals.tracking import TrackingUnavailable, mlflow_errors

    uri = session.settings["tracking-uri"]
    try:
        with mlflow_errors(uri):
            if session.settings["baseline-run"]:
                return baseline_from_run(uri, session.settings["baseline-run"], program)
            return find_champion(uri, program)
    except TrackingUnavailable as exc:
        outcome.notes.append(f"regression gate skipped for {program}: {exc}")
        return None


def regression_section(outcome: RegressionOutcome) -> Section | None:
    """The comparison table of the report."""
    from evals.report import Section

    rows = []
    for program, comparison in outcome.comparisons.items():
        for row in comparison.as_rows():
            if row["verdict"] == "ok" and row["metric"] not in ("accuracy", "macro_f1"):
                continue
            rows.append((program, str(row["metric"]), _fmt(row["champion"]), _fmt(row["candidate"]),
                         _fmt(row["delta"], signed=True), f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
                         _fmt(row["p_value"]), str(row["verdict"])))
    if not rows:
        return None
    baselines = "; ".join(f"{p}: {b}" for p, b in outcome.baselines.items())
    return Section("Regression against the champion",
                   ("program", "metric", "champion", "candidate", "delta", "interval", "p", "verdict"),
                   tuple(rows), f"Paired on the same examples. Baselines: {baselines}.")


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{float(value):+.3f}" if signed else f"{float(value):.3f}"


def comparison_markdown(outcome: RegressionOutcome) -> str:
    """All programs' comparisons as Markdown (the GitHub job summary)."""
    return "\n\n".join(comparison.to_markdown() for comparison in outcome.comparisons.values())
