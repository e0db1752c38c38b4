"""Nightly drift mode (``--evals-drift``): a pure check over the session context and the store view.

Each program's session is compared with the recent history of the same program on the
same examples, as read back from MLflow by :mod:`evals.store.view`: accuracy against a control band, prediction churn
since the last session, a chi-square test of the predicted-label distribution, and an LM
fingerprint (spec, backend version, answers on fixed probe examples) that tells model
drift from program drift (:mod:`evals.stats.drift`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evals.context import SessionContext
from evals.data import Example, fingerprint
from evals.records import ExampleRecord
from evals.stats.drift import assess, lm_fingerprint
from evals.stats.metrics import aggregate
from evals.store.schema import FINGERPRINT_PARAM, SOURCE_HASH_PARAM
from evals.store.view import StoreView, Unavailable, drift_enabled

PROBE_SIZE = 5


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
        return {
            f"drift.{row['check'].replace(' ', '_')}": float(row["value"])
            for row in report.as_rows()
            if isinstance(row.get("value"), (int, float)) and row.get("value") is not None
        }


def sample_fingerprint(records: Sequence[ExampleRecord]) -> str:
    """Fingerprint of the examples a program was evaluated on (history must match it)."""
    return fingerprint(Example(r.example_id, r.symptoms, r.gold) for r in records)


def lm_fingerprint_of(params: dict[str, str], records: Sequence[ExampleRecord]) -> str:
    """LM fingerprint: spec params, backend version and the answers on the first probe examples."""
    probes = sorted(records, key=lambda r: r.example_id)[:PROBE_SIZE]
    lm_params = {k: v for k, v in params.items() if k.startswith("lm.")}
    backend = params.get("version.llama-cpp-python", "") + "/" + params.get("version.litellm", "")
    return lm_fingerprint(lm_params, backend, [str(r.predicted) for r in probes])


def check_drift(context: SessionContext, view: StoreView) -> DriftOutcome:
    """Assess every program against the history the store returned (drift mode only; pure)."""
    outcome = DriftOutcome()
    if not drift_enabled(context):
        return outcome
    policy = context.policies.drift
    for program, m in aggregate(context.records).items():
        history = view.history.get(program, [])
        if isinstance(history, Unavailable):
            outcome.notes.append(f"drift check skipped for {program}: {history.reason}")
            continue
        previous = history[0] if history else None
        params = context.program_params[program]
        report = assess(
            context.records_of(program),
            list(previous.records) if previous else [],
            [h.accuracy for h in reversed(history)],
            m.accuracy,
            params[FINGERPRINT_PARAM],
            previous.lm_fingerprint if previous else None,
            params[SOURCE_HASH_PARAM],
            previous.program_hash if previous else None,
            policy,
        )
        outcome.reports[program] = report
        outcome.error_lines.extend(f"{program}: {line}" for line in report.alarms())
    return outcome
