"""The controller's end of a session: summarise and gate, then write the bundle and log it.

Everything here runs once, on the controller. The bundle directory (:mod:`evals.results.bundle`,
contract in :mod:`evals.store.upload`) is both the local session report and what is uploaded
to MLflow or spooled when MLflow is unreachable; :mod:`evals.results.terminal` prints the results.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.results.bundle import write_bundle
from evals.gates.champion import check_regressions
from evals.gates.drift import check_drift
from evals.errors import EvalsWarning
from evals.gates.thresholds import Check, check_program, describe
from evals.labels import DIAGNOSES
from evals.stats.metrics import ProgramMetrics, aggregate
from evals.records import ExampleRecord
from evals.gates.robustness import check_robustness

if TYPE_CHECKING:
    from evals.harness.session import EvalsSession

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
    from evals.config.thresholds import parse_thresholds

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
    splits = dataset.manifest()["splits"]  # hashes every split: compute it once
    params = {
        **session.lm_spec().params(),
        "dataset.source": dataset.source,
        "dataset.revision": str(dataset.revision),
        "dataset.split": settings["split"],
        "dataset.fingerprint": splits[settings["split"]]["fingerprint"],
        "dataset.train_fingerprint": splits["train"]["fingerprint"],
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
    from evals.gates.drift import FINGERPRINT_PARAM, SAMPLE_PARAM, lm_fingerprint_of, sample_fingerprint
    from programs.optimizers import split_name

    registry, setup = session.registry(), session.optimizer_setup()
    events = session.all_compile_events()
    params = {}
    for name in metrics:
        base, optimizer = split_name(name)
        mine = [r for r in records if r.program == name]
        params[name] = {"program.name": name, "program.base": base, "program.source_hash": registry[base].source_hash(),
                        "program.description": registry[base].description,
                        SAMPLE_PARAM: sample_fingerprint(mine), FINGERPRINT_PARAM: lm_fingerprint_of(session_params, mine)}
        if optimizer is not None:
            params[name].update(setup.optimizers[optimizer].loggable())
            params[name].update(compile_params(name, events))
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


def write_and_log(session: EvalsSession, summary: SessionSummary) -> None:
    """Write the session bundle (the local report), then log it to MLflow or spool it."""
    from evals.store.publish import publishable, scrubber
    from evals.redact import Redactor

    settings = session.settings
    redactor = Redactor.from_config(_redact_patterns(session))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(session.started_at))
    bundle = settings.path("report-dir") / f"{stamp}-{session.session_id[:8]}"
    _write_gate_summary(bundle / "artifacts", summary)
    write_bundle(bundle, session, publishable(summary, redactor), scrubber(redactor))  # nothing secret is written
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


def _write_gate_summary(artifacts: Path, summary: SessionSummary) -> None:
    """The regression gate's result and warnings: artifacts/regression.md, and the GitHub job summary."""
    from evals.results.bundle import _write_markdown
    from evals.gates.champion import gate_markdown

    if summary.regression is None or not summary.regression.programs:
        return
    artifacts.mkdir(parents=True, exist_ok=True)
    _write_markdown(artifacts / "regression.md", gate_markdown(summary.regression))


def _spool(session: EvalsSession, bundle: Path, redactor: Any, reason: str) -> Path:
    from evals.store.spool import spool_bundle

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
    from evals.store.publish import publish_bundle
    from evals.store.upload import TrackingUnavailable, mlflow_errors, run_url_hint

    uri = session.settings["tracking-uri"]
    try:
        published = publish_bundle(bundle, uri, redactor)  # the same as `python -m evals sync` does
        summary.run_id, summary.registered = published.run_id, published.registered
        with mlflow_errors(uri):
            summary.mlflow_hint = run_url_hint(uri, _experiment_id(uri, summary.run_id), summary.run_id)
            if session.settings["promote"]:
                summary.promotions.extend(_promote(session, summary, uri))
    except TrackingUnavailable as exc:
        spooled = _spool(session, bundle, redactor, str(exc))
        message = f"{exc}; session kept in {spooled}; upload it later with: python -m evals sync"
        summary.notes.append(message)
        warnings.warn(EvalsWarning(message), stacklevel=1)


def _promote(session: EvalsSession, summary: SessionSummary, uri: str) -> list[str]:
    from evals.store.champions import promote_session
    from evals.gates.champion import split_policy

    required = split_policy(session.thresholds().regression)[1]
    return promote_session(uri, summary.run_id or "", required, summary.params.get("git.commit", ""))


def _experiment_id(uri: str, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).get_run(run_id).info.experiment_id


