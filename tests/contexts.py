"""Hand-built session contexts for the unit tests of the session's end (no pytest session, no MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.config.policies import parse_policies
from evals.config.settings import resolve
from evals.config.thresholds import parse_thresholds
from evals.context import SessionContext
from evals.labels import DIAGNOSES
from evals.records import ExampleRecord
from evals.store.champions import Champion
from evals.store.schema import FINGERPRINT_PARAM, SAMPLE_PARAM, SOURCE_HASH_PARAM

SESSION_ID = "0123456789abcdef0123456789abcdef"


def records(program: str, correct: int, n: int = len(DIAGNOSES)) -> list[ExampleRecord]:
    """``n`` records of ``program``, one per diagnosis in turn; the first ``correct`` are right."""
    out = []
    for i in range(n):
        gold = DIAGNOSES[i % len(DIAGNOSES)]
        predicted = gold if i < correct else DIAGNOSES[(i + 1) % len(DIAGNOSES)]
        out.append(ExampleRecord(program, f"test-{i:04d}", f"symptoms of {gold} number {i}", gold, predicted, 10.0 + i))
    return out


def make_context(
    tmp_path: Path,
    recs: list[ExampleRecord],
    *,
    thresholds: dict[str, Any] | None = None,
    cli: dict[str, Any] | None = None,
    **fields: Any,
) -> SessionContext:
    """A session context over ``recs`` with settings rooted at ``tmp_path`` (``cli``: option dest -> value)."""
    settings = resolve({"evals_report_dir": str(tmp_path / "reports"), **(cli or {})}, {}, {}, tmp_path)
    names = sorted({r.program for r in recs})
    policies = parse_policies(parse_thresholds(thresholds or {"version": 1}, "thresholds.yaml", names))
    params = {"lm.spec": "smollm2", "git.branch": "main", "git.commit": "abc"}
    program_params = {
        name: {
            "program.name": name,
            "program.base": name,
            SOURCE_HASH_PARAM: "hash",
            SAMPLE_PARAM: "sample",
            FINGERPRINT_PARAM: "lm",
        }
        for name in names
    }
    defaults: dict[str, Any] = {
        "session_id": SESSION_ID,
        "started_at": 1_700_000_000.0,
        "settings": settings,
        "policies": policies,
        "records": tuple(sorted(recs, key=lambda r: (r.program, r.example_id))),
        "params": params,
        "program_params": program_params,
        "manifest": {"source": "hand-built", "splits": {}},
        "program_states": {name: {"program": name, "state": {"demos": []}} for name in names},
    }
    return SessionContext(**{**defaults, **fields})


def champion(program: str, recs: list[ExampleRecord]) -> Champion:
    """A champion whose records are ``recs`` (renamed to ``program``)."""
    from dataclasses import replace

    return Champion(program, "3", "run-3", tuple(replace(r, program=program) for r in recs))
