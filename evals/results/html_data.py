"""What the HTML report shows, as plain typed data (no project imports, no I/O).

:func:`evals.results.html.render_html` is a pure function of a :class:`ReportData`; the
bundle builds one with :func:`evals.results.html_build.build_report_data` from the session's metrics,
checks, records, gate outcomes and the MLflow history it read before rendering.
Every text here is already redacted: the renderer only escapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["PASS", "FAIL", "WARN"]


@dataclass(frozen=True)
class CheckRow:
    """One threshold check, already judged.

    Attributes:
        program: Program the value belongs to.
        metric: ``accuracy``, ``recall.migraine``, ``gain_over_reference`` ...
        value: Measured value, formatted for reading (``0.620``, ``1,204 ms``).
        limit: The limit with its direction (``>= 0.700``).
        verdict: PASS, FAIL (breaks the gate) or WARN (missed, not enforced).
        support: Examples behind the value, when meaningful.
    """

    program: str
    metric: str
    value: str
    limit: str
    verdict: Verdict
    support: int | None = None


@dataclass(frozen=True)
class ProgramRow:
    """One line of the summary table.

    Attributes:
        gain_over_reference: Accuracy minus the reference program's, on the same examples;
            None for the reference itself or when no reference ran.
        failed: True when any enforced check or gate of the program failed.
        cost_usd: What its LM calls cost as the provider reported it; 0 when it reported none
            (local models, cache hits).
    """

    name: str
    n: int
    accuracy: float
    macro_f1: float
    invalid_rate: float
    error_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    prompt_tokens: int
    completion_tokens: int
    reference: bool = False
    gain_over_reference: float | None = None
    failed: bool = False
    cost_usd: float = 0.0

    @property
    def cost_per_example_usd(self) -> float:
        return self.cost_usd / self.n if self.n else 0.0


@dataclass(frozen=True)
class RecallBar:
    """Recall of one diagnosis for one program; ``floor_failed`` when its floor was missed."""

    diagnosis: str
    hits: int
    support: int
    floor_failed: bool = False

    @property
    def recall(self) -> float | None:
        return self.hits / self.support if self.support else None


@dataclass(frozen=True)
class Confusion:
    """A confusion matrix: ``counts[i][j]`` examples of gold ``rows[i]`` answered ``columns[j]``."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class GateRow:
    """One program's result against its champion.

    Attributes:
        status: ``pass``, ``fail``, ``unavailable``, ``no champion`` or ``skipped``.
        reason: Why (regression lines, lookup error), may be empty.
        baseline: What it was compared with, in words.
        n: Paired examples; None when nothing was compared.
        champion, candidate, delta: Accuracy of each side and the change.
        ci: The interval of the accuracy change.
        p_value: McNemar's exact p.
        min_detectable_drop: Smallest true accuracy drop caught with 80% power.
        too_weak: The line saying the comparison cannot see ``max_detectable_drop``, or "".
    """

    program: str
    status: str
    reason: str = ""
    baseline: str = ""
    n: int | None = None
    champion: float | None = None
    candidate: float | None = None
    delta: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    min_detectable_drop: float | None = None
    too_weak: str = ""


@dataclass(frozen=True)
class TrendPoint:
    """A program's accuracy in one past (or the current) session."""

    started_at: float
    accuracy: float
    run_id: str = ""


@dataclass(frozen=True)
class ExampleRow:
    """One evaluated example, for the explorer (``symptoms`` already redacted)."""

    program: str
    example_id: str
    symptoms: str
    gold: str
    predicted: str
    correct: bool
    invalid: bool = False
    error: str = ""
    latency_ms: float = 0.0


@dataclass(frozen=True)
class ExtraSection:
    """Another table of the report (optimizer gains, drift, robustness), rendered as given."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class ReportData:
    """Everything the HTML report shows, in the order a reader needs it.

    Attributes:
        title: Heading of the page.
        passed: The session's verdict.
        error_lines: Why it failed, one line each (checks, gates), as the terminal prints them.
        notes: Warnings and incompleteness, one line each.
        checks: Every threshold check (the page leads with the ones not met).
        programs: Summary rows, in display order.
        reference: Name of the reference program (no LM) the gains are measured against.
        recalls: Program -> its recall per diagnosis, in label order.
        confusions: Program -> its confusion matrix.
        gates: The regression gate per program.
        gate_status: The gate's overall result (``pass``, ``fail``, ``unavailable``, ``none``).
        trends: Program -> accuracy per session, oldest first (the current one included).
        examples: Every example for the explorer.
        extras: Further tables (optimizer gains, drift, robustness).
        params: Run parameters, folded at the bottom.
        mlflow_hint: Where the MLflow run is, when one was logged.
    """

    title: str
    passed: bool
    error_lines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    checks: tuple[CheckRow, ...] = ()
    programs: tuple[ProgramRow, ...] = ()
    reference: str | None = None
    recalls: Mapping[str, tuple[RecallBar, ...]] = field(default_factory=dict)
    confusions: Mapping[str, Confusion] = field(default_factory=dict)
    gates: tuple[GateRow, ...] = ()
    gate_status: str = "none"
    trends: Mapping[str, tuple[TrendPoint, ...]] = field(default_factory=dict)
    examples: tuple[ExampleRow, ...] = ()
    extras: tuple[ExtraSection, ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    mlflow_hint: str | None = None

    @property
    def unmet(self) -> tuple[CheckRow, ...]:
        """Checks not met: the failing ones first, then those not enforced."""
        return tuple(sorted((c for c in self.checks if c.verdict != "PASS"), key=lambda c: c.verdict != "FAIL"))
