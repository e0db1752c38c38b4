"""The controller's end of a session: summarise, gate, write the bundle, log it, print it.

Everything here runs once, on the controller. The bundle directory (see
:mod:`evals.tracking`) is both the local session report and what is uploaded to
MLflow or spooled when MLflow is unreachable.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.champion_gate import check_regressions, comparison_markdown, regression_section
from evals.drift_gate import check_drift, drift_section
from evals.robustness_gate import check_robustness, robustness_section
from evals.errors import EvalsWarning
from evals.gate import Check, check_program, describe, verdict
from evals.labels import DIAGNOSES
from evals.metrics import ProgramMetrics, aggregate, flat_metrics
from evals.records import ExampleRecord

if TYPE_CHECKING:
    from evals.report import Section
    from evals.session import EvalsSession

SESSION_METRICS = ("accuracy", "macro_f1", "invalid_rate", "latency_p95_ms")


@dataclass
class SessionSummary:
    """Aggregates, checks and verdict of one session, plus where it was written and logged."""

    records: list[ExampleRecord]
    metrics: dict[str, ProgramMetrics]
    checks: dict[str, list[Check]]
    error_lines: list[str]
    incomplete: list[str]
    params: dict[str, str]
    program_params: dict[str, dict[str, str]]
    bundle_dir: Path | None = None
    run_id: str | None = None
    mlflow_hint: str | None = None
    notes: list[str] = field(default_factory=list)
    registered: dict[str, str] = field(default_factory=dict)
    regression: Any = None
    drift: Any = None
    robustness: Any = None
    promotions: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.error_lines and not any(c.failed for checks in self.checks.values() for c in checks)


def summarize(session: EvalsSession) -> SessionSummary:
    """Aggregate the gathered records and check them against thresholds.yaml."""
    records = sorted(session.state.records, key=lambda r: (r.program, r.example_id))
    metrics = aggregate(records)
    thresholds, problem = _thresholds_or_defaults(session)
    checks = {name: check_program(m, thresholds.for_program(name)) for name, m in metrics.items()}
    # Per-diagnosis floors already failed their own tests; the session gate adds the aggregates.
    error_lines = [describe(c) for cs in checks.values() for c in cs if c.failed and c.metric in SESSION_METRICS]
    if problem:
        return _unchecked_summary(session, records, metrics, problem)
    regression = check_regressions(session, records)
    params = _session_params(session)
    program_params = _program_params(session, metrics, records, params)
    drift = check_drift(session, records, params, program_params)
    robustness = check_robustness(session, session.state.stability)
    return SessionSummary(
        records=records,
        metrics=metrics,
        checks=checks,
        error_lines=error_lines + regression.error_lines + drift.error_lines + robustness.error_lines,
        incomplete=_incomplete_reasons(session, records),
        params=params,
        program_params=program_params,
        notes=[*regression.notes, *drift.notes],
        regression=regression,
        drift=drift,
        robustness=robustness,
    )


def _thresholds_or_defaults(session: EvalsSession) -> tuple[Any, str | None]:
    """The session's thresholds; when they cannot be read, all-default limits and the reason."""
    from evals.errors import ConfigError
    from evals.thresholds import parse_thresholds

    try:
        return session.thresholds(), None
    except ConfigError as exc:
        return parse_thresholds({"version": 1}, "<defaults>", session.known_program_names()), str(exc)


def _unchecked_summary(session: EvalsSession, records: list[ExampleRecord], metrics: dict[str, ProgramMetrics],
                       problem: str) -> SessionSummary:
    """Keep and report what was gathered even though the gate could not run."""
    params = _session_params(session)
    return SessionSummary(records=records, metrics=metrics, checks={name: [] for name in metrics},
                          error_lines=[problem], incomplete=_incomplete_reasons(session, records), params=params,
                          program_params=_program_params(session, metrics, records, params))


def _incomplete_reasons(session: EvalsSession, records: list[ExampleRecord]) -> list[str]:
    reasons = [f"worker {worker} crashed" for worker in session.state.crashed_workers]
    if session.state.interrupted:
        reasons.append("session interrupted")
    partial = {}
    for program in sorted({r.program for r in records}):
        missing = set(DIAGNOSES) - {r.gold for r in records if r.program == program}
        if missing:
            partial[program] = len(missing)
    if partial:
        reasons.append("diagnoses not evaluated: " + ", ".join(f"{p} {n}/22" for p, n in partial.items()))
    return reasons


def _session_params(session: EvalsSession) -> dict[str, str]:
    from evals.environment import environment_params

    settings = session.settings
    dataset = session.dataset()
    params = {
        **session.lm_spec().params(),
        "dataset.source": dataset.source,
        "dataset.revision": str(dataset.revision),
        "dataset.split": settings["split"],
        "dataset.fingerprint": dataset.manifest()["splits"][settings["split"]]["fingerprint"],
        "dataset.train_fingerprint": dataset.manifest()["splits"]["train"]["fingerprint"],
        "sample.per_diagnosis": str(settings["per-diagnosis"] or "all"),
        "sample.seed": str(settings["seed"]),
        "sample.examples": str(len(session.examples())),
        "thresholds.path": str(settings.path("thresholds")),
        "thresholds.sha256": _thresholds_or_defaults(session)[0].sha256,
        "xdist.workers": str(len(session.state.worker_outputs) or 1),
    }
    params.update(environment_params(settings.rootdir))
    return params


def _program_params(session: EvalsSession, metrics: dict[str, ProgramMetrics], records: list[ExampleRecord],
                    session_params: dict[str, str]) -> dict[str, dict[str, str]]:
    from evals.drift_gate import FINGERPRINT_PARAM, SAMPLE_PARAM, lm_fingerprint_of, sample_fingerprint
    from programs.optimizers import split_name

    registry, setup = session.registry(), session.optimizer_setup()
    params = {}
    for name in metrics:
        base, optimizer = split_name(name)
        mine = [r for r in records if r.program == name]
        params[name] = {"program.name": name, "program.base": base, "program.source_hash": registry[base].source_hash(),
                        "program.description": registry[base].description,
                        SAMPLE_PARAM: sample_fingerprint(mine), FINGERPRINT_PARAM: lm_fingerprint_of(session_params, mine)}
        if optimizer is not None:
            params[name].update(setup.optimizers[optimizer].loggable())
            params[name].update(compile_params(name, session.all_compile_events()))
    return params


def compile_params(program: str, events: list[dict[str, Any]]) -> dict[str, str]:
    """Summarise the compile events of one program: who compiled it, how long, how many LM calls."""
    mine = [e for e in events if e["program"] == program]
    compiled = [e for e in mine if e["action"] == "compiled"]
    source = compiled[0] if compiled else (mine[0] if mine else None)
    if source is None:
        return {}
    return {
        "compile.key": source["key"],
        "compile.action": "compiled" if compiled else "loaded from cache",
        "compile.count": str(len(compiled)),
        "compile.duration_s": f"{source['duration_s']:.1f}",
        "compile.lm_calls": str(source["lm_calls"]),
        "compile.path": source["path"],
    }


def optimizer_gains(summary: SessionSummary) -> Section | None:
    """Baseline vs compiled accuracy for every evaluated (program, optimizer) pair."""
    from evals.report import Section
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


def write_and_log(session: EvalsSession, summary: SessionSummary) -> None:
    """Write the session bundle (the local report), then log it to MLflow or spool it."""
    from evals.redact import Redactor

    settings = session.settings
    redactor = Redactor.from_config(_redact_patterns(session))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(session.started_at))
    bundle = settings.path("report-dir") / f"{stamp}-{session.session_id[:8]}"
    write_bundle(bundle, session, summary, redactor.text)
    summary.bundle_dir = bundle
    if settings["no-mlflow"]:
        return
    if session.state.interrupted:
        # Ctrl-C: keep what was gathered without waiting on MLflow; `python -m evals sync` uploads it.
        spooled = _spool(session, bundle, redactor, "session interrupted")
        summary.notes.append(f"session interrupted: what was gathered is kept in {spooled}; "
                             "upload it with: python -m evals sync")
        return
    _log(session, summary, bundle, redactor)


def _spool(session: EvalsSession, bundle: Path, redactor: Any, reason: str) -> Path:
    from evals.spool import spool_bundle

    return spool_bundle(bundle, session.settings.path("spool-dir"), tracking_uri=session.settings["tracking-uri"],
                        reason=reason, redactor=redactor)


def _redact_patterns(session: EvalsSession) -> dict[str, str]:
    from evals.errors import ConfigError

    patterns = {}
    for line in session.config.getini("evals_redact_patterns"):
        name, sep, regex = line.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"ini key evals_redact_patterns: expected NAME=REGEX, found {line!r}")
        patterns[name.strip()] = regex.strip()
    return patterns


def _log(session: EvalsSession, summary: SessionSummary, bundle: Path, redactor: Any) -> None:
    from evals.model_registry import register_candidates
    from evals.tracking import TrackingUnavailable, mlflow_errors, run_url_hint, upload_bundle

    uri = session.settings["tracking-uri"]
    try:
        summary.run_id = upload_bundle(bundle, uri, redactor=redactor)
        with mlflow_errors(uri):
            summary.mlflow_hint = run_url_hint(uri, _experiment_id(uri, summary.run_id), summary.run_id)
            summary.registered = register_candidates(uri, summary.run_id)
            if session.settings["promote"]:
                summary.promotions.extend(_promote(session, summary, uri))
    except TrackingUnavailable as exc:
        spooled = _spool(session, bundle, redactor, str(exc))
        message = f"{exc}; session kept in {spooled}; upload it later with: python -m evals sync"
        summary.notes.append(message)
        warnings.warn(EvalsWarning(message), stacklevel=1)


def _promote(session: EvalsSession, summary: SessionSummary, uri: str) -> list[str]:
    from evals.champion import promote_session
    from evals.champion_gate import split_policy

    required = split_policy(session.thresholds().regression)[1]
    return promote_session(uri, summary.run_id or "", required, summary.params.get("git.commit", ""))


def _experiment_id(uri: str, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).get_run(run_id).info.experiment_id


def write_bundle(bundle: Path, session: EvalsSession, summary: SessionSummary, redact: Any) -> None:
    """Write session.json, artifacts/ and programs/<name>/ (the contract in evals.tracking)."""
    from evals.plots import confusion_png
    from evals.report import ReportContext, render_html, render_markdown

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

    from evals.report import misclassified_frame, per_diagnosis_frame, predictions_frame

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
    from evals.model_registry import COMPILED_ARTIFACT
    from evals.report import misclassified_frame, per_diagnosis_frame, predictions_frame

    directory.mkdir(parents=True, exist_ok=True)
    (directory / COMPILED_ARTIFACT).write_text(json.dumps(program_state(session, name, summary), indent=1))
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
    return {"params": summary.program_params.get(name, {"program.name": name}),
            "tags": {"evals.verdict": "fail" if failed else "pass"}, "metrics": metrics}


def render_summary(session: EvalsSession, summary: SessionSummary, terminalreporter: Any) -> None:
    """Print the per-program tables, worst diagnoses, checks and where the results are."""
    from rich.console import Console

    from evals.report import ReportContext, render_terminal

    html = summary.bundle_dir / "artifacts" / "report.html" if summary.bundle_dir else None
    context = ReportContext(
        title="symptom-diagnosis evals", params=summary.params, metrics=summary.metrics, checks=summary.checks,
        records=summary.records, confusion_pngs={}, mlflow_hint=summary.mlflow_hint,
        html_path=str(html) if html else None,
    )
    terminalreporter.section("symptom-diagnosis evals")
    for name, params in summary.program_params.items():
        if "compile.action" in params:
            terminalreporter.write_line(
                f"{name}: {params['compile.action']} ({params['compile.duration_s']} s, "
                f"{params['compile.lm_calls']} LM calls; key {params['compile.key']})"
            )
    console = Console(file=terminalreporter._tw._file, width=max(terminalreporter._tw.fullwidth, 100),
                      force_terminal=terminalreporter._tw.hasmarkup)
    render_terminal(context, console)
    for section in sections(summary):
        _render_section(section, console)
    for reason in summary.incomplete:
        terminalreporter.write_line(f"incomplete: {reason}", yellow=True)
    for name, version in summary.registered.items():
        terminalreporter.write_line(f"registered {name} version {version} as 'candidate'")
    for line in summary.promotions:
        terminalreporter.write_line(line, yellow="refused" in line, green="refused" not in line)
    for note in summary.notes:
        terminalreporter.write_line(f"WARNING: {note}", yellow=True)
    for line in summary.error_lines:
        terminalreporter.write_line(f"ERROR: {line}", red=True, bold=True)


def _render_section(section: Section, console: Any) -> None:
    from rich.table import Table

    table = Table(*section.headers, title=section.title, title_justify="left")
    for row in section.rows:
        table.add_row(*row)
    console.print(table)
