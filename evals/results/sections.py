"""Rendering of the gates' outcomes: report sections, and the Markdown of the GitHub job summary.

The gates (:mod:`evals.gates`) decide; this module only puts their outcomes into words and tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evals.config.optimizers import split_name
from evals.gates.champion import RegressionOutcome
from evals.gates.drift import DriftOutcome
from evals.gates.robustness import REGRESSIONS_FILE, RobustnessOutcome
from evals.results.report import Section

if TYPE_CHECKING:
    from evals.results.summary import SessionSummary


def optimizer_gains(summary: SessionSummary) -> Section | None:
    """Baseline vs compiled accuracy for every evaluated (program, optimizer) pair."""
    rows = []
    for name, m in summary.metrics.items():
        base, optimizer = split_name(name)
        if optimizer is None:
            continue
        baseline = summary.metrics.get(base)
        params = summary.program_params.get(name, {})
        if params.get("compile.action") == "compiled":
            compile_note = f"compiled: {params['compile.duration_s']} s, {params['compile.lm_calls']} LM calls"
        else:
            compile_note = "from cache"
        rows.append(
            (
                base,
                optimizer,
                f"{baseline.accuracy:.3f}" if baseline else "not run",
                f"{m.accuracy:.3f}",
                f"{m.accuracy - baseline.accuracy:+.3f}" if baseline else "",
                compile_note,
            )
        )
    if not rows:
        return None
    return Section(
        "What the optimizers bought",
        ("program", "optimizer", "baseline accuracy", "compiled accuracy", "delta", "compile"),
        tuple(rows),
        "Accuracy of each compiled program next to its uncompiled baseline, on the same examples.",
    )


def sections(summary: SessionSummary, saved_counterexamples: int = 0) -> list[Section]:
    """The report sections of the session gates, in report order."""
    candidates = (
        optimizer_gains(summary),
        regression_section(summary.regression) if summary.regression else None,
        drift_section(summary.drift) if summary.drift else None,
        robustness_section(summary.robustness, saved_counterexamples) if summary.robustness else None,
    )
    return [section for section in candidates if section is not None]


def regression_section(outcome: RegressionOutcome) -> Section | None:
    """The comparison table of the report, with the gate's result for programs not compared."""
    rows = []
    for program, comparison in outcome.comparisons.items():
        for row in comparison.as_rows():
            if row["verdict"] == "ok" and row["metric"] not in ("accuracy", "macro_f1"):
                continue
            power = _fmt(comparison.min_detectable_drop) if row["metric"] == "accuracy" else ""
            rows.append(
                (
                    program,
                    str(row["metric"]),
                    _fmt(row["champion"]),
                    _fmt(row["candidate"]),
                    _fmt(row["delta"], signed=True),
                    f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
                    _fmt(row["p_value"]),
                    str(row["verdict"]),
                    power,
                )
            )
    missing = {p: g for p, g in outcome.programs.items() if p not in outcome.comparisons and g.status != "skipped"}
    rows += [(program, "(not compared)", "", "", "", "", "", gate.status, "") for program, gate in missing.items()]
    if not rows:
        return None
    baselines = "; ".join(f"{p}: {b}" for p, b in outcome.baselines.items())
    reasons = " ".join(f"{p}: {g.reason}." for p, g in missing.items() if g.reason)
    note = (
        f"Gate: {outcome.status}. Paired on the same examples. Baselines: {baselines or 'none'}. "
        "Detectable drop: the smallest true accuracy drop the gate catches with 80% power on these examples "
        f"(exact McNemar at the observed discordance). {reasons}"
    )
    return Section(
        "Regression against the champion",
        ("program", "metric", "champion", "candidate", "delta", "interval", "p", "verdict", "detectable drop"),
        tuple(rows),
        note.strip(),
    )


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{float(value):+.3f}" if signed else f"{float(value):.3f}"


def gate_markdown(outcome: RegressionOutcome) -> str:
    """The gate's result per program and its warnings, as Markdown (the GitHub job summary)."""
    lines = [f"### Regression gate: {outcome.status}", ""]
    lines += [f"> [!WARNING]\n> {warning}\n" for warning in outcome.warnings]
    for program, gate in outcome.programs.items():
        comparison = outcome.comparisons.get(program)
        power = (
            f" (n={comparison.n}; minimum detectable accuracy drop {comparison.min_detectable_drop:.3f} at 80% power)"
            if comparison
            else ""
        )
        reason = f": {gate.reason}" if gate.reason else ""
        lines.append(f"- **{program}**: {gate.status}{power}{reason}")
    lines += [f"- ⚠️ {line}" for line in outcome.too_weak()]
    if outcome.status == "unavailable":
        lines.append(f"- regression.on_unavailable: {outcome.on_unavailable}; the session cannot be promoted")
    return "\n".join(lines) + "\n"


def comparison_markdown(outcome: RegressionOutcome) -> str:
    """All programs' comparisons as Markdown (the GitHub job summary)."""
    return "\n\n".join(comparison.to_markdown() for comparison in outcome.comparisons.values())


def drift_section(outcome: DriftOutcome) -> Section | None:
    """The drift table of the report."""
    rows = []
    for program, report in outcome.reports.items():
        for row in report.as_rows():
            value = row.get("value")
            shown = f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))
            rows.append(
                (program, str(row.get("check", "")), shown, str(row.get("limit", "")), str(row.get("verdict", "")))
            )
    if not rows:
        return None
    return Section("Drift against recent sessions", ("program", "check", "value", "limit", "verdict"), tuple(rows))


def robustness_section(outcome: RobustnessOutcome, saved: int = 0) -> Section | None:
    """The stability table of the report; ``saved``: new counterexamples written this session."""
    rows = [
        (
            program,
            f"{m.get('stability', 0):.3f}",
            f"{m.get('robust_valid_rate', 0):.3f}",
            str(int(m.get("robust_n", 0))),
        )
        for program, m in outcome.metrics.items()
    ]
    if not rows:
        return None
    note = f"{saved} new counterexample(s) saved to {REGRESSIONS_FILE}." if saved else ""
    return Section(
        "Robustness (meaning-preserving perturbations)", ("program", "stability", "valid rate", "n"), tuple(rows), note
    )
