"""What a finished test loop leaves behind, as plain frozen data: the session context.

The controller (:mod:`evals.controller`) builds one :class:`SessionContext` after the test loop
from what the workers sent and what its own process loaded; everything after that (reading the
store, the gates, the summary, the bundle, the upload) is a function of this context and of
what the store returned. Unit tests build one by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evals.config.policies import Policies
from evals.config.settings import Settings
from evals.records import ExampleRecord


@dataclass(frozen=True)
class SessionContext:
    """One session after its test loop.

    Attributes:
        session_id: The session's id (shared with the xdist workers).
        started_at: When the controller started (epoch seconds).
        settings: The layered settings of the session.
        policies: thresholds.yaml parsed into typed policies (all defaults when it could not be read).
        policies_problem: Why thresholds.yaml could not be read, or None; the gate does not run then.
        records: Every example record of the session, sorted by program and example id.
        stability: The robustness suite's items (``{"record": ..., "text": ...}``).
        compile_events: The compile events of every process, as dicts.
        crashed_workers: Ids of the xdist workers that died.
        interrupted: True when the loop was cut (Ctrl-C, SIGTERM) before it ended.
        manifest: The dataset manifest (source, revision, per-split fingerprints).
        params: The session's MLflow params.
        program_params: Program -> its nested run's params.
        program_states: Program -> its dspy JSON state (what is registered as the model).
        program_models: Program -> what its MLflow model is built from (:func:`evals.harness.models.program_model`).
        redact_patterns: Extra ``NAME=REGEX`` redaction lines (ini key ``evals_redact_patterns``), unparsed.
        references: The registry's reference programs (no LM), in registry order: every other program's
            accuracy gain over the first one evaluated is reported and may be gated.
    """

    session_id: str
    started_at: float
    settings: Settings
    policies: Policies
    records: tuple[ExampleRecord, ...]
    policies_problem: str | None = None
    stability: tuple[Mapping[str, Any], ...] = ()
    compile_events: tuple[Mapping[str, Any], ...] = ()
    crashed_workers: tuple[str, ...] = ()
    interrupted: bool = False
    manifest: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    program_params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    program_states: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    program_models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    redact_patterns: tuple[str, ...] = ()
    references: tuple[str, ...] = ()

    @property
    def programs(self) -> list[str]:
        """The programs that have records, sorted."""
        return sorted({record.program for record in self.records})

    def records_of(self, program: str) -> list[ExampleRecord]:
        """The records of one program."""
        return [record for record in self.records if record.program == program]
