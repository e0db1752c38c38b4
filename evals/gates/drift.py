"""Nightly drift mode (``--evals-drift``), run once on the controller after the tests.

Each program's session is compared with the recent history of the same program on the
same examples, read back from MLflow: accuracy against a control band, prediction churn
since the last session, a chi-square test of the predicted-label distribution, and an LM
fingerprint (spec, backend version, answers on fixed probe examples) that tells model
drift from program drift (:mod:`evals.stats.drift`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evals.records import ExampleRecord

if TYPE_CHECKING:
    from evals.results.report import Section
    from evals.harness.session import EvalsSession

PROBE_SIZE = 5
FINGERPRINT_PARAM = "drift.lm_fingerprint"
SAMPLE_PARAM = "sample.fingerprint"


@dataclass
class DriftOutcome:
    """Drift reports per program and the lines a user should read."""

    reports: dict[str, Any] = field(default_factory=dict)
    error_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def program_metrics(self, program: str) -> dict[str, float]:
        report = self.reports.get(program)
        if report is None:
            return {}
        return {f"drift.{row['check'].replace(' ', '_')}": float(row["value"]) for row in report.as_rows()
                if isinstance(row.get("value"), (int, float)) and row.get("value") is not None}


def sample_fingerprint(records: Sequence[ExampleRecord]) -> str:
    """Fingerprint of the examples a program was evaluated on (history must match it)."""
    from evals.data import Example, fingerprint

    return fingerprint(Example(r.example_id, r.symptoms, r.gold) for r in records)


def lm_fingerprint_of(params: dict[str, str], records: Sequence[ExampleRecord]) -> str:
    """LM fingerprint: spec params, backend version and the answers on the first probe examples."""
    from evals.stats.drift import lm_fingerprint

    probes = sorted(records, key=lambda r: r.example_id)[:PROBE_SIZE]
    lm_params = {k: v for k, v in params.items() if k.startswith("lm.")}
    backend = params.get("version.llama-cpp-python", "") + "/" + params.get("version.litellm", "")
    return lm_fingerprint(lm_params, backend, [str(r.predicted) for r in probes])


def check_drift(session: EvalsSession, records: Sequence[ExampleRecord], params: dict[str, str],
                program_params: dict[str, dict[str, str]]) -> DriftOutcome:
    """Assess every program against its history; history is looked up only in drift mode."""
    from evals.stats.drift import assess, parse_drift_policy
    from evals.stats.metrics import aggregate
    from evals.store.upload import TrackingUnavailable, mlflow_errors

    outcome = DriftOutcome()
    if not session.settings["drift"] or session.settings["no-mlflow"]:
        return outcome
    thresholds = session.thresholds()
    policy = parse_drift_policy(thresholds.drift, thresholds.source)
    metrics = aggregate(records)
    uri = session.settings["tracking-uri"]
    for program, m in metrics.items():
        mine = [r for r in records if r.program == program]
        try:
            with mlflow_errors(uri):
                history = _history(uri, session.settings["experiment"], program, sample_fingerprint(mine), policy.window)
        except TrackingUnavailable as exc:
            outcome.notes.append(f"drift check skipped for {program}: {exc}")
            continue
        previous = history[0] if history else None
        report = assess(
            mine, previous["records"] if previous else [], [h["accuracy"] for h in reversed(history)], m.accuracy,
            program_params[program][FINGERPRINT_PARAM], previous["lm_fp"] if previous else None,
            program_params[program]["program.source_hash"], previous["program_hash"] if previous else None, policy,
        )
        outcome.reports[program] = report
        outcome.error_lines.extend(f"{program}: {line}" for line in report.alarms())
    return outcome


def _history(uri: str, experiment: str, program: str, sample_fp: str, window: int) -> list[dict[str, Any]]:
    """The most recent runs of ``program`` on the same examples, newest first, with their predictions."""
    from evals.store.champions import run_records
    from evals.store.client import mlflow_client

    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`evals.program` = '{program}' and params.`{SAMPLE_PARAM}` = '{sample_fp}'",
        order_by=["attributes.start_time DESC"], max_results=window,
    )
    history = []
    for index, run in enumerate(runs):
        history.append({
            "accuracy": float(run.data.metrics.get("accuracy", 0.0)),
            "lm_fp": run.data.params.get(FINGERPRINT_PARAM),
            "program_hash": run.data.params.get("program.source_hash"),
            "records": run_records(client, run.info.run_id, program) if index == 0 else [],
        })
    return history


def drift_section(outcome: DriftOutcome) -> Section | None:
    """The drift table of the report."""
    from evals.results.report import Section

    rows = []
    for program, report in outcome.reports.items():
        for row in report.as_rows():
            value = row.get("value")
            shown = f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))
            rows.append((program, str(row.get("check", "")), shown, str(row.get("limit", "")),
                         str(row.get("verdict", ""))))
    if not rows:
        return None
    return Section("Drift against recent sessions", ("program", "check", "value", "limit", "verdict"), tuple(rows))
