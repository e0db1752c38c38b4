"""Write the session bundle: session.json, artifacts/ and programs/<name>/ (the contract in evals.store.upload).

The bundle is both the local session report and what is uploaded to MLflow or spooled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.gates.champion import comparison_markdown, regression_section
from evals.gates.drift import drift_section
from evals.gates.thresholds import verdict
from evals.stats.metrics import ProgramMetrics, flat_metrics
from evals.gates.robustness import robustness_section

if TYPE_CHECKING:
    from evals.results.summary import SessionSummary
    from evals.results.report import Section
    from evals.harness.session import EvalsSession


def optimizer_gains(summary: SessionSummary) -> Section | None:
    """Baseline vs compiled accuracy for every evaluated (program, optimizer) pair."""
    from evals.results.report import Section
    from programs.optimizers import split_name

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
        rows.append((base, optimizer, f"{baseline.accuracy:.3f}" if baseline else "not run", f"{m.accuracy:.3f}",
                     f"{m.accuracy - baseline.accuracy:+.3f}" if baseline else "", compile_note))
    if not rows:
        return None
    return Section("What the optimizers bought", ("program", "optimizer", "baseline accuracy", "compiled accuracy",
                                                   "delta", "compile"), tuple(rows),
                   "Accuracy of each compiled program next to its uncompiled baseline, on the same examples.")


def sections(summary: SessionSummary) -> list[Section]:
    candidates = (optimizer_gains(summary), regression_section(summary.regression) if summary.regression else None,
                  drift_section(summary.drift) if summary.drift else None,
                  robustness_section(summary.robustness) if summary.robustness else None)
    return [section for section in candidates if section is not None]



def write_bundle(bundle: Path, session: EvalsSession, summary: SessionSummary, redact: Any) -> None:
    """Write session.json, artifacts/ and programs/<name>/ (the contract in evals.store.upload)."""
    from evals.results.plots import confusion_png
    from evals.results.report import ReportContext, render_html, render_markdown

    artifacts = bundle / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    pngs = {name: confusion_png(m, artifacts / f"confusion_{name}.png") for name, m in summary.metrics.items()}
    _write_tables(artifacts, summary, redact)
    (artifacts / "manifest.json").write_text(json.dumps(session.dataset().manifest(), indent=2))
    (artifacts / "verdict.json").write_text(json.dumps(_verdict(summary), indent=2))
    if summary.regression and summary.regression.comparisons:
        _write_comparison(artifacts, summary.regression)
    if summary.drift and summary.drift.reports:
        _write_markdown(artifacts / "drift.md", "\n\n".join(r.to_markdown() for r in summary.drift.reports.values()))
    context = ReportContext(
        title=f"Symptom-diagnosis eval session {session.session_id[:8]}",
        params=summary.params, metrics=summary.metrics, checks=summary.checks, records=summary.records,
        confusion_pngs=pngs, html_path=str(artifacts / "report.html"), redact=redact, sections=sections(summary),
    )
    (artifacts / "report.md").write_text(render_markdown(context))
    (artifacts / "report.html").write_text(render_html(context))
    for name, m in summary.metrics.items():
        _write_program_dir(session, bundle / "programs" / name, name, m, summary, redact, pngs[name])
    (bundle / "session.json").write_text(json.dumps(_session_json(session, summary), indent=2))


def _write_tables(directory: Path, summary: SessionSummary, redact: Any) -> None:
    import pandas as pd

    from evals.results.report import misclassified_frame, per_diagnosis_frame, predictions_frame

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


def _write_program_dir(session: EvalsSession, directory: Path, name: str, m: ProgramMetrics,
                       summary: SessionSummary, redact: Any, png: Path) -> None:
    from evals.store.registry import COMPILED_ARTIFACT
    from evals.store.publish import clean_json
    from evals.results.report import misclassified_frame, per_diagnosis_frame, predictions_frame

    directory.mkdir(parents=True, exist_ok=True)
    # Demos in the state are patient texts from the train split: cleaned like every other text.
    state = clean_json(program_state(session, name, summary), redact)
    (directory / COMPILED_ARTIFACT).write_text(json.dumps(state, indent=1))
    records = [r for r in summary.records if r.program == name]
    per_diagnosis_frame(m).to_csv(directory / "per_diagnosis.csv", index=False)
    predictions_frame(records, redact).to_csv(directory / "predictions.csv", index=False)
    misclassified_frame(records, redact).to_csv(directory / "misclassified.csv", index=False)
    (directory / "confusion.png").write_bytes(png.read_bytes())


def _write_comparison(artifacts: Path, regression: Any) -> None:
    """The comparison table (CSV and Markdown); also the GitHub job summary when in Actions."""
    import pandas as pd

    rows = [{"program": p, **row} for p, c in regression.comparisons.items() for row in c.as_rows()]
    pd.DataFrame(rows).to_csv(artifacts / "comparison.csv", index=False)
    _write_markdown(artifacts / "comparison.md", comparison_markdown(regression))


def _write_markdown(path: Path, markdown: str) -> None:
    """Write a Markdown artifact; inside GitHub Actions also append it to the job summary."""
    import os

    path.write_text(markdown)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n\n")


def program_state(session: EvalsSession, name: str, summary: SessionSummary) -> dict[str, Any]:
    """The dspy JSON state of an evaluated program: the compile-cache entry, or a fresh build."""
    compiled = summary.program_params.get(name, {}).get("compile.path")
    if compiled and Path(compiled).is_file():
        return dict(json.loads(Path(compiled).read_text()))
    return {"program": name, "state": session.program(name).dump_state()}


def _verdict(summary: SessionSummary) -> dict[str, Any]:
    result = verdict(summary.checks)
    result["passed"] = summary.passed
    result["incomplete"] = summary.incomplete
    result["regression"] = (summary.regression.to_json() if summary.regression is not None
                            else {"status": "none", "reason": "not run", "programs": {}})
    return result


def _session_json(session: EvalsSession, summary: SessionSummary) -> dict[str, Any]:
    settings = session.settings
    overall = "pass" if summary.passed else "fail"
    return {
        "format": 1,
        "session_id": session.session_id,
        "experiment": settings["experiment"],
        "run_name": f"session-{time.strftime('%Y%m%d-%H%M%S', time.localtime(session.started_at))}",
        "started_at": session.started_at,
        "finished_at": time.time(),
        "status": "KILLED" if session.state.interrupted else "FINISHED",
        "params": summary.params,
        "tags": {
            "evals.verdict": overall,
            "evals.trigger": settings.trigger,
            "evals.complete": str(not summary.incomplete).lower(),
            "evals.programs": ",".join(summary.metrics),
            "git.branch": summary.params.get("git.branch", ""),
            # The regression gate's own result: `unavailable` keeps a session from promotion even
            # when `regression.on_unavailable: warn` left evals.verdict at pass.
            **(summary.regression.tags() if summary.regression is not None
               else {"evals.regression": "none", "evals.regression.reason": "not run"}),
        },
        # MLflow metric names allow no '+': "zero_shot+knn_few_shot" is logged as "zero_shot/knn_few_shot".
        "metrics": {f"{name.replace('+', '/')}.{key}": value for name in _program_names(summary)
                    for key, value in _program_json(summary, name)["metrics"].items() if "." not in key},
        "programs": {name: _program_json(summary, name) for name in _program_names(summary)},
    }


def _program_names(summary: SessionSummary) -> list[str]:
    stable = list(summary.robustness.metrics) if summary.robustness else []
    return list(dict.fromkeys([*summary.metrics, *stable]))


def _program_json(summary: SessionSummary, name: str) -> dict[str, Any]:
    """Params, tags and metrics of one program's nested run."""
    metrics: dict[str, float] = {}
    if name in summary.metrics:
        metrics.update(flat_metrics(summary.metrics[name]))
    for part in (summary.regression, summary.drift):
        if part is not None:
            metrics.update(part.program_metrics(name))
    if summary.robustness is not None:
        metrics.update(summary.robustness.metrics.get(name, {}))
    failed = any(c.failed for c in summary.checks.get(name, []))
    tags = {}
    gate = summary.regression.programs.get(name) if summary.regression is not None else None
    if gate is not None:
        tags["evals.regression"] = gate.status
        failed = failed or gate.status == "fail" or (
            gate.status == "unavailable" and summary.regression.on_unavailable == "fail")
    return {"params": summary.program_params.get(name, {"program.name": name}),
            "tags": {"evals.verdict": "fail" if failed else "pass", **tags}, "metrics": metrics}
