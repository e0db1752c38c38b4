"""Write the session bundle: session.json, artifacts/ and programs/<name>/ (the format in evals.store.schema).

The bundle is both the local session report and what is uploaded to MLflow or spooled. It is
written from plain data only: the session context and its summary.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evals.context import SessionContext
from evals.gates.champion import RegressionOutcome
from evals.gates.thresholds import verdict
from evals.results.html import render_html
from evals.results.html_build import build_report_data, trend_from_sessions, with_current
from evals.results.html_data import ReportData
from evals.results.native import write_native_parts
from evals.results.plots import confusion_png
from evals.results.report import (
    ReportContext,
    misclassified_frame,
    per_diagnosis_frame,
    predictions_frame,
    render_markdown,
)
from evals.results.sections import comparison_markdown, sections
from evals.results.shard import shard_of, write_shard_json
from evals.results.summary import SessionSummary
from evals.stats.metrics import ProgramMetrics, flat_metrics
from evals.stats.reference import GAIN_METRIC
from evals.store.publish import clean_json
from evals.store.schema import (
    BRANCH_TAG,
    COMPILED_ARTIFACT,
    COMPLETE_TAG,
    PROGRAMS_TAG,
    REGRESSION_REASON_TAG,
    REGRESSION_TAG,
    SHARD_TAG,
    TRIGGER_TAG,
    VERDICT_TAG,
    session_json,
    write_session_json,
)

Redact = Callable[[str], str]


def write_bundle(
    bundle: Path, context: SessionContext, summary: SessionSummary, redact: Redact, saved_counterexamples: int = 0
) -> None:
    """Write session.json, artifacts/ and programs/<name>/ (the format in :mod:`evals.store.schema`).

    Args:
        bundle: The directory to write (created).
        context: The session's context (id, start, settings, dataset manifest, program states).
        summary: Its summary, already cleaned of secrets (:func:`evals.results.finish.publishable`).
        redact: The text function applied to patient texts and program states.
        saved_counterexamples: New robustness counterexamples saved this session (a report note).
    """
    artifacts = bundle / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    pngs = {name: confusion_png(m, artifacts / f"confusion_{name}.png") for name, m in summary.metrics.items()}
    _write_tables(artifacts, summary, redact)
    (artifacts / "manifest.json").write_text(json.dumps(context.manifest, indent=2))
    (artifacts / "verdict.json").write_text(json.dumps(_verdict(summary), indent=2))
    if summary.regression and summary.regression.comparisons:
        _write_comparison(artifacts, summary.regression)
    if summary.drift and summary.drift.reports:
        write_markdown(artifacts / "drift.md", "\n\n".join(r.to_markdown() for r in summary.drift.reports.values()))
    report = ReportContext(
        title=f"Symptom-diagnosis eval session {context.session_id[:8]}",
        params=dict(summary.params),
        metrics=summary.metrics,
        checks=summary.checks,
        records=summary.records,
        confusion_pngs=pngs,
        html_path=str(artifacts / "report.html"),
        redact=redact,
        sections=sections(summary, saved_counterexamples),
    )
    (artifacts / "report.md").write_text(render_markdown(report))
    (artifacts / "report.html").write_text(render_html(_report_data(context, summary, report)))
    for name, m in summary.metrics.items():
        _write_program_dir(context, bundle / "programs" / name, name, m, summary, redact, pngs[name])
    write_native_parts(bundle, context, summary, redact)  # traces, models and run inputs for MLflow
    if shard_of(context.settings) is not None:
        write_shard_json(bundle, context, summary, redact)  # what python -m evals merge reads
    write_session_json(bundle, _session_json(context, summary))


def _report_data(context: SessionContext, summary: SessionSummary, report: ReportContext) -> ReportData:
    """What the HTML report shows: the Markdown's content plus the gate, the trend and every example."""
    trends = with_current(trend_from_sessions(summary.recent), context.started_at, summary.metrics)
    return build_report_data(
        title=report.title,
        metrics=summary.metrics,
        checks=summary.checks,
        records=summary.records,
        redact=report.redact,
        error_lines=summary.error_lines,
        notes=[*summary.notes, *(f"incomplete: {reason}" for reason in summary.incomplete)],
        regression=summary.regression,
        references=context.references,
        trends=trends,
        extras=report.sections,
        params=report.params,
    )


def _write_tables(directory: Path, summary: SessionSummary, redact: Redact) -> None:
    import pandas as pd

    predictions = predictions_frame(summary.records, redact)
    predictions.to_parquet(directory / "predictions.parquet", index=False)
    predictions.to_csv(directory / "predictions.csv", index=False)
    misclassified_frame(summary.records, redact).to_csv(directory / "misclassified.csv", index=False)
    per_diagnosis = [per_diagnosis_frame(m).assign(program=name) for name, m in summary.metrics.items()]
    if per_diagnosis:
        pd.concat(per_diagnosis).to_csv(directory / "per_diagnosis.csv", index=False)
    if summary.robustness is not None and summary.robustness.metrics:
        rows = [{"program": p, **m} for p, m in summary.robustness.metrics.items()]
        pd.DataFrame(rows).to_csv(directory / "stability.csv", index=False)


def _write_program_dir(
    context: SessionContext,
    directory: Path,
    name: str,
    m: ProgramMetrics,
    summary: SessionSummary,
    redact: Redact,
    png: Path,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # Demos in the state are patient texts from the train split: cleaned like every other text.
    state = clean_json(dict(context.program_states[name]), redact)
    (directory / COMPILED_ARTIFACT).write_text(json.dumps(state, indent=1))
    records = [r for r in summary.records if r.program == name]
    per_diagnosis_frame(m).to_csv(directory / "per_diagnosis.csv", index=False)
    predictions_frame(records, redact).to_csv(directory / "predictions.csv", index=False)
    misclassified_frame(records, redact).to_csv(directory / "misclassified.csv", index=False)
    (directory / "confusion.png").write_bytes(png.read_bytes())


def _write_comparison(artifacts: Path, regression: RegressionOutcome) -> None:
    """The comparison table (CSV and Markdown); also the GitHub job summary when in Actions."""
    import pandas as pd

    rows = [{"program": p, **row} for p, c in regression.comparisons.items() for row in c.as_rows()]
    pd.DataFrame(rows).to_csv(artifacts / "comparison.csv", index=False)
    write_markdown(artifacts / "comparison.md", comparison_markdown(regression))


def write_markdown(path: Path, markdown: str) -> None:
    """Write a Markdown artifact; inside GitHub Actions also append it to the job summary."""
    path.write_text(markdown)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n\n")


def _verdict(summary: SessionSummary) -> dict[str, Any]:
    result = verdict(summary.checks)
    result["passed"] = summary.passed
    result["incomplete"] = summary.incomplete
    result["regression"] = (
        summary.regression.to_json()
        if summary.regression is not None
        else {"status": "none", "reason": "not run", "programs": {}}
    )
    return result


def _session_json(context: SessionContext, summary: SessionSummary) -> dict[str, Any]:
    settings = context.settings
    overall = "pass" if summary.passed else "fail"
    programs = {name: _program_json(summary, name) for name in _program_names(summary)}
    return session_json(
        session_id=context.session_id,
        experiment=settings["experiment"],
        run_name=f"session-{time.strftime('%Y%m%d-%H%M%S', time.localtime(context.started_at))}",
        started_at=context.started_at,
        finished_at=time.time(),
        status="KILLED" if context.interrupted else "FINISHED",
        params=summary.params,
        tags={
            VERDICT_TAG: overall,
            TRIGGER_TAG: settings.trigger,
            COMPLETE_TAG: str(not summary.incomplete).lower(),
            PROGRAMS_TAG: ",".join(summary.metrics),
            BRANCH_TAG: summary.params.get("git.branch", ""),
            **({SHARD_TAG: str(shard_of(settings))} if shard_of(settings) else {}),
            # The regression gate's own result: `unavailable` keeps a session from promotion even
            # when `regression.on_unavailable: warn` left evals.verdict at pass.
            **(
                summary.regression.tags()
                if summary.regression is not None
                else {REGRESSION_TAG: "none", REGRESSION_REASON_TAG: "not run"}
            ),
        },
        # MLflow metric names allow no '+': "zero_shot+knn_few_shot" is logged as "zero_shot/knn_few_shot".
        metrics={
            f"{name.replace('+', '/')}.{key}": value
            for name, entry in programs.items()
            for key, value in entry["metrics"].items()
            if "." not in key
        },
        programs=programs,
    )


def _program_names(summary: SessionSummary) -> list[str]:
    stable = list(summary.robustness.metrics) if summary.robustness else []
    return list(dict.fromkeys([*summary.metrics, *stable]))


def _program_json(summary: SessionSummary, name: str) -> dict[str, Any]:
    """Params, tags and metrics of one program's nested run."""
    metrics: dict[str, float] = {}
    if name in summary.metrics:
        metrics.update(flat_metrics(summary.metrics[name]))
    if name in summary.gains:
        metrics[GAIN_METRIC] = summary.gains[name]
    for part in (summary.regression, summary.drift):
        if part is not None:
            metrics.update(part.program_metrics(name))
    if summary.robustness is not None:
        metrics.update(summary.robustness.metrics.get(name, {}))
    failed = any(c.failed for c in summary.checks.get(name, []))
    tags = {}
    regression = summary.regression
    gate = regression.programs.get(name) if regression is not None else None
    if regression is not None and gate is not None:
        tags[REGRESSION_TAG] = gate.status
        failed = (
            failed or gate.status == "fail" or (gate.status == "unavailable" and regression.on_unavailable == "fail")
        )
    return {
        "params": dict(summary.program_params.get(name, {"program.name": name})),
        "tags": {VERDICT_TAG: "fail" if failed else "pass", **tags},
        "metrics": metrics,
    }
