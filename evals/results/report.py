"""Render aggregated results: terminal summary, Markdown, frames.

The Markdown report is rendered from one list of blocks (headings, tables, images, paragraphs)
built by :func:`_document`; every text goes through :func:`html.escape` (symptom texts come from
users). The HTML report is :mod:`evals.results.html`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from evals.gates.thresholds import Check
from evals.labels import slug
from evals.records import ExampleRecord
from evals.stats.metrics import INVALID, DiagnosisMetrics, ProgramMetrics, worst_diagnoses
from evals.stats.reference import GAIN_METRIC

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

Tone = Literal["", "fail", "warn", "pass"]
_Tones = dict[tuple[str, str], Tone]
MISCLASSIFIED_SHOWN = 20
WORST_SHOWN = 5
_SCORES = ("diagnosis", "support", "predicted", "precision", "recall", "f1")
PREDICTION_COLUMNS = (
    "id",
    "program",
    "symptoms",
    "gold",
    "predicted",
    "correct",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "error",
    "cached",
    "attempts",
)


def identity(text: str) -> str:
    """Return ``text`` unchanged (the default, no-op redaction)."""
    return text


@dataclass(frozen=True)
class Section:
    """An extra table of the report (optimizer gains, regression, drift, robustness)."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class ReportContext:
    """Everything a report shows, gathered once on the controller.

    Attributes:
        title: Heading of the report.
        params: Run parameters (model, split, seed, ...), shown as a table.
        metrics: Metrics per program, in display order.
        checks: Threshold checks per program.
        records: All example records (for the misclassified examples).
        confusion_pngs: Confusion matrix image per program.
        mlflow_hint: One line telling where the MLflow run is, when one was logged.
        html_path: Where the HTML report was written, when it was.
        redact: Applied to every symptom text before it is shown.
        sections: Extra tables (optimizer gains, regression, drift, robustness).
        gains: Program -> its accuracy gain over ``reference`` (a program with no LM).
    """

    title: str
    params: Mapping[str, str]
    metrics: Mapping[str, ProgramMetrics]
    checks: Mapping[str, Sequence[Check]]
    records: Sequence[ExampleRecord]
    confusion_pngs: Mapping[str, Path]
    mlflow_hint: str | None = None
    html_path: str | None = None
    redact: Callable[[str], str] = field(default=identity, repr=False)
    sections: Sequence[Section] = ()
    gains: Mapping[str, float] = field(default_factory=dict)
    reference: str | None = None


def predictions_frame(records: Iterable[ExampleRecord], redact: Callable[[str], str] = identity) -> pd.DataFrame:
    """One row per record, sorted by program then id, with the symptoms redacted."""
    import pandas as pd

    rows = [
        {
            **r.to_dict(),
            "id": r.example_id,
            "symptoms": redact(r.symptoms),
            "correct": r.correct,
            "latency_ms": round(r.latency_ms, 1),
        }
        for r in _sorted(records)
    ]
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


def misclassified_frame(records: Iterable[ExampleRecord], redact: Callable[[str], str] = identity) -> pd.DataFrame:
    """Like :func:`predictions_frame`, keeping only wrong (including invalid) answers."""
    return predictions_frame([r for r in records if not r.correct], redact)


def per_diagnosis_frame(m: ProgramMetrics) -> pd.DataFrame:
    """One row per diagnosis (all 22, in label order) with its counts and scores."""
    import pandas as pd

    return pd.DataFrame([asdict(d) for d in m.per_diagnosis.values()], columns=list(_SCORES))


def _sorted(records: Iterable[ExampleRecord]) -> list[ExampleRecord]:
    return sorted(records, key=lambda r: (r.program, r.example_id))


def _fmt(metric: str, value: float) -> str:
    """Format a value by what its metric measures: milliseconds, counts or a 0-1 score."""
    if metric.endswith("_ms"):
        return f"{value:,.0f} ms"
    if metric.startswith("cost_"):
        return f"${value:,.4f}"
    if metric == GAIN_METRIC:
        return f"{value:+.3f}"
    if metric in ("n", "prompt_tokens", "completion_tokens") or metric.startswith("support."):
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _limit_text(check: Check) -> str:
    return f"{'≥' if check.kind == 'min' else '≤'} {_fmt(check.metric, check.limit)}"


def _verdict(check: Check) -> Literal["PASS", "FAIL", "WARN"]:
    """PASS, FAIL (breaks the gate) or WARN (missed, but not enforced)."""
    if check.passed:
        return "PASS"
    return "FAIL" if check.enforced else "WARN"


def _check_text(check: Check) -> str:
    """One readable line, e.g. ``zero_shot accuracy 0.620, needs ≥ 0.700``."""
    text = f"{check.program} {check.metric} {_fmt(check.metric, check.value)}"
    text += f", needs {_limit_text(check)}"
    if check.support is not None:
        text += f" (support {check.support})"
    return text if check.enforced else f"{text}; not enforced"


def _tones(checks: Mapping[str, Sequence[Check]]) -> _Tones:
    """``(program, metric) -> "fail" | "warn"`` for every check not met."""
    unmet = (c for cs in checks.values() for c in cs if not c.passed)
    return {(c.program, c.metric): "fail" if c.failed else "warn" for c in unmet}


_HEADLINE = ("accuracy", "macro_f1", "invalid_rate", "latency_p50_ms", "latency_p95_ms", "cost_usd")
_STYLE = {"PASS": "bold green", "FAIL": "bold red", "WARN": "yellow"}


def render_terminal(ctx: ReportContext, console: Console) -> None:
    """Print a compact summary (fits in 100 columns) to a rich console.

    One table per program (headline metrics with their checks), then the worst
    diagnoses per program, then every failed or unenforced check, then where the
    MLflow run and HTML report are.
    """
    from rich.markup import escape

    for program, m in ctx.metrics.items():
        console.print(_program_table(m, ctx.checks.get(program, ()), ctx.gains.get(program), ctx.reference))
    if ctx.metrics:
        console.print("[bold]Worst diagnoses[/bold] (recall: hits/support)")
        console.print(_worst_grid(ctx.metrics))
    problems = [c for cs in ctx.checks.values() for c in cs if not c.passed]
    if problems:
        console.print("[bold]Checks not met[/bold]")
    for check in problems:
        console.print(f"  {_verdict_markup(check)} {escape(_check_text(check))}", highlight=False)
    for label, value in (("MLflow", ctx.mlflow_hint), ("HTML report", ctx.html_path)):
        if value:
            console.print(f"{label}: {value}", highlight=False, markup=False)


def _worst_grid(metrics: Mapping[str, ProgramMetrics]) -> Table:
    """Program names on the left, their worst diagnoses wrapping on the right."""
    from rich.markup import escape
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for program, m in metrics.items():
        worst = worst_diagnoses(m, WORST_SHOWN)
        cells = (f"{d.diagnosis} {round(d.recall * d.support)}/{d.support}" for d in worst)
        grid.add_row(f"  {escape(program)}", escape(", ".join(cells)))
    return grid


def _verdict_markup(check: Check) -> str:
    verdict = _verdict(check)
    return f"[{_STYLE[verdict]}]{verdict}[/]"


def _program_table(
    m: ProgramMetrics, checks: Sequence[Check], gain: float | None = None, reference: str | None = None
) -> Table:
    """A rich table: one row per headline or checked session-level metric.

    Per-diagnosis checks (``recall.<slug>`` ...) are folded into one row so the table
    stays short; the ones not met are listed in full after the tables. ``gain`` is the
    accuracy gain over the ``reference`` program (no LM), shown when one ran.
    """
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(m.program)} (n={m.n})", title_justify="left", min_width=60)
    for name in ("metric", "value", "limit", "check"):
        table.add_column(name, justify="left" if name in ("metric", "check") else "right")
    by_metric = {c.metric: c for c in checks if "." not in c.metric}
    headline = (*_HEADLINE, *([GAIN_METRIC] if gain is not None else []))
    for metric in (*headline, *sorted(set(by_metric) - set(headline))):
        check = by_metric.get(metric)
        label = f"gain over {escape(reference or 'reference')}" if metric == GAIN_METRIC else metric
        if check is None:
            value = gain if metric == GAIN_METRIC and gain is not None else float(getattr(m, metric))
            table.add_row(label, _fmt(metric, value), "", "")
        else:
            table.add_row(label, _fmt(metric, check.value), _limit_text(check), _verdict_markup(check))
    per_label = [c for c in checks if "." in c.metric]
    if per_label:
        verdict = max((_verdict(c) for c in per_label), key=("PASS", "WARN", "FAIL").index)
        met = f"{sum(c.passed for c in per_label)}/{len(per_label)} met"
        table.add_row("per-diagnosis", met, "", f"[{_STYLE[verdict]}]{verdict}[/]")
    return table


@dataclass(frozen=True)
class _Cell:
    text: str
    tone: Tone = ""
    numeric: bool = False


@dataclass(frozen=True)
class _Text:
    """A heading of ``level`` 1-3, or a paragraph when ``level`` is 0."""

    text: str
    level: int = 0


@dataclass(frozen=True)
class _Image:
    alt: str
    path: Path


@dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[_Cell, ...], ...]


_Block = _Text | _Image | _Table


def _num(text: str, tone: Tone = "") -> _Cell:
    return _Cell(text, tone, numeric=True)


def _document(ctx: ReportContext) -> list[_Block]:
    """Every block of the report, in order."""
    tones = _tones(ctx.checks)
    blocks: list[_Block] = [_Text(ctx.title, 1)]
    if ctx.params:
        rows = tuple((_Cell(k), _Cell(str(v))) for k, v in ctx.params.items())
        blocks += [_Text("Parameters", 2), _Table(("parameter", "value"), rows)]
    if ctx.mlflow_hint:
        blocks.append(_Text(f"MLflow: {ctx.mlflow_hint}"))
    blocks += [_Text("Summary", 2), _summary_table(ctx.metrics, tones)]
    for section in ctx.sections:
        blocks += [_Text(section.title, 2)] + ([_Text(section.note)] if section.note else [])
        blocks.append(_Table(section.headers, tuple(tuple(_Cell(c) for c in row) for row in section.rows)))
    blocks += [_Text("Checks", 2), *_checks_blocks(ctx.checks)]
    for program, m in ctx.metrics.items():
        blocks += [_Text(f"Program: {program}", 2), _Text("Worst diagnoses", 3)]
        blocks.append(_diagnosis_table(worst_diagnoses(m, WORST_SHOWN), program, tones))
        blocks.append(_Text("Per diagnosis", 3))
        shown = [d for d in m.per_diagnosis.values() if d.support or d.predicted]
        blocks.append(_diagnosis_table(shown, program, tones))
        if program in ctx.confusion_pngs:
            blocks.append(_Text("Confusion matrix", 3))
            blocks.append(_Image(f"confusion matrix of {program}", ctx.confusion_pngs[program]))
        blocks += _misclassified_blocks(ctx, program)
    return blocks


def _summary_table(metrics: Mapping[str, ProgramMetrics], tones: _Tones) -> _Table:
    names = (
        "n",
        "accuracy",
        "macro_f1",
        "invalid_rate",
        "error_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_max_ms",
        "prompt_tokens",
        "completion_tokens",
    )
    rows = tuple(
        (_Cell(p), *(_num(_fmt(k, float(getattr(m, k))), tones.get((p, k), "")) for k in names))
        for p, m in metrics.items()
    )
    return _Table(("program", *names), rows)


def _checks_blocks(checks: Mapping[str, Sequence[Check]]) -> list[_Block]:
    mark: dict[str, tuple[str, Tone]] = {
        "PASS": ("✅", "pass"),
        "FAIL": ("❌", "fail"),
        "WARN": ("❌ not enforced", "warn"),
    }
    rows = []
    for check in (c for cs in checks.values() for c in cs):
        text, tone = mark[_verdict(check)]
        support = "" if check.support is None else str(check.support)
        rows.append(
            (
                _Cell(text, tone),
                _Cell(check.program),
                _Cell(check.metric),
                _num(_fmt(check.metric, check.value), tone),
                _num(_limit_text(check)),
                _num(support),
            )
        )
    if not rows:
        return [_Text("No thresholds were checked.")]
    return [_Table(("", "program", "metric", "value", "limit", "support"), tuple(rows))]


def _diagnosis_table(rows_of: Iterable[DiagnosisMetrics], program: str, tones: _Tones) -> _Table:
    rows = []
    for d in rows_of:
        scores = (
            _num(f"{getattr(d, k):.3f}", tones.get((program, f"{k}.{slug(d.diagnosis)}"), ""))
            for k in ("precision", "recall", "f1")
        )
        rows.append((_Cell(d.diagnosis), _num(str(d.support)), _num(str(d.predicted)), *scores))
    return _Table(_SCORES, tuple(rows))


def _misclassified_blocks(ctx: ReportContext, program: str) -> list[_Block]:
    wrong = [r for r in _sorted(ctx.records) if r.program == program and not r.correct]
    count = len(wrong)
    shown = f"first {MISCLASSIFIED_SHOWN} of {count}" if count > MISCLASSIFIED_SHOWN else str(count)
    heading = _Text(f"Misclassified examples ({shown})", 3)
    if not wrong:
        return [heading, _Text("None.")]
    rows = tuple(
        (
            _Cell(r.example_id),
            _Cell(ctx.redact(r.symptoms)),
            _Cell(r.gold),
            _Cell(r.predicted or INVALID),
            _Cell(r.error or ""),
        )
        for r in wrong[:MISCLASSIFIED_SHOWN]
    )
    return [heading, _Table(("id", "symptoms", "gold", "predicted", "error"), rows)]


def render_markdown(ctx: ReportContext) -> str:
    """Return the report as GitHub-flavoured Markdown.

    Confusion matrices are referenced by file name only, so the Markdown belongs next
    to the PNGs. Failing values are bold.
    """
    out: list[str] = []
    for block in _document(ctx):
        if isinstance(block, _Text):
            out.append(f"{'#' * block.level} {_md(block.text)}".lstrip())
        elif isinstance(block, _Image):
            out.append(f"![{_md(block.alt)}]({block.path.name})")
        else:
            out.append(_md_table(block))
    return "\n\n".join(out) + "\n"


def _md(text: str) -> str:
    """Escape text for a Markdown table cell: no raw HTML, no pipes, one line."""
    escaped = html.escape(text, quote=False).replace("|", "\\|")
    return " ".join(escaped.split())


def _md_table(table: _Table) -> str:
    lines = ["| " + " | ".join(_md(h) for h in table.headers) + " |"]
    numeric = [c.numeric for c in table.rows[0]] if table.rows else [False] * len(table.headers)
    lines.append("|" + "|".join("---:" if right else "---" for right in numeric) + "|")
    for row in table.rows:
        cells = (f"**{_md(c.text)}**" if c.tone == "fail" and c.text else _md(c.text) for c in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
