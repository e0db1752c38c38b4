"""Print a session's results in pytest's terminal summary."""

from __future__ import annotations

from typing import Any

from evals.results.finish import SessionEnd
from evals.results.report import ReportContext, Section, render_terminal
from evals.results.sections import sections
from evals.results.summary import SessionSummary


def terminal_report(summary: SessionSummary, end: SessionEnd, title: str = "symptom-diagnosis evals") -> ReportContext:
    """What :func:`~evals.results.report.render_terminal` prints of a finished session."""
    html = end.bundle_dir / "artifacts" / "report.html" if end.bundle_dir else None
    return ReportContext(
        title=title,
        params=dict(summary.params),
        metrics=summary.metrics,
        checks=summary.checks,
        records=summary.records,
        confusion_pngs={},
        mlflow_hint=end.mlflow_hint,
        html_path=str(html) if html else None,
        gains=summary.gains,
        reference=summary.reference,
    )


def render_summary(summary: SessionSummary, end: SessionEnd, terminalreporter: Any) -> None:
    """Print the per-program tables, worst diagnoses, checks and where the results are."""
    from rich.console import Console

    context = terminal_report(summary, end)
    terminalreporter.section("symptom-diagnosis evals")
    for name, params in summary.program_params.items():
        if "compile.action" in params:
            terminalreporter.write_line(
                f"{name}: {params['compile.action']} ({params['compile.duration_s']} s, "
                f"{params['compile.lm_calls']} LM calls; key {params['compile.key']})"
            )
    console = Console(
        file=terminalreporter._tw._file,
        width=max(terminalreporter._tw.fullwidth, 100),
        force_terminal=terminalreporter._tw.hasmarkup,
    )
    render_terminal(context, console)
    for section in sections(summary, end.saved_counterexamples):
        _render_section(section, console)
    for reason in summary.incomplete:
        terminalreporter.write_line(f"incomplete: {reason}", yellow=True)
    for name, version in end.registered.items():
        terminalreporter.write_line(f"registered {name} version {version} as 'candidate'")
    for line in summary.regression.info if summary.regression is not None else ():
        terminalreporter.write_line(line, cyan=True)
    for line in end.promotions:
        terminalreporter.write_line(line, yellow="refused" in line, green="refused" not in line)
    for note in [*summary.notes, *end.notes]:
        terminalreporter.write_line(f"WARNING: {note}", yellow=True)
    for line in summary.error_lines:
        terminalreporter.write_line(f"ERROR: {line}", red=True, bold=True)


def _render_section(section: Section, console: Any) -> None:
    from rich.table import Table

    table = Table(title=section.title, title_justify="left")
    for header in section.headers:
        table.add_column(header, overflow="fold")  # a program or metric name wraps whole, never cut to "…"
    for row in section.rows:
        table.add_row(*row)
    console.print(table)
