"""Read past sessions back from MLflow and compare two of them.

:func:`recent_sessions` and :func:`compare` are plain query/compare functions over small
records; :mod:`evals.results.history_tables` renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evals.errors import ConfigError
from evals.store.client import display_uri, mlflow_errors
from evals.store.schema import BRANCH_TAG, PARENT_TAG, PROGRAM_TAG, SESSION_TAG, TRIGGER_TAG, VERDICT_TAG

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

HEADLINE_METRICS = ("accuracy", "macro_f1", "invalid_rate")
"""Compared for every program, changed or not."""

RECALL_PREFIX = "recall."
"""Per-diagnosis recalls (``recall.<slug>``) are compared only where they changed."""

LOWER_IS_BETTER = frozenset({"invalid_rate", "error_rate"})
BRANCH_TAGS = ("evals.git_branch", BRANCH_TAG, "mlflow.source.git.branch")
"""Tags that may hold the git branch, first found wins."""

_EPSILON = 1e-9


@dataclass(frozen=True)
class ProgramResult:
    """The metrics of one program's nested run."""

    program: str
    run_id: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class Session:
    """One complete parent run and its programs."""

    run_id: str
    session_id: str
    started_at: float
    status: str
    tags: dict[str, str]
    programs: dict[str, ProgramResult]

    @property
    def verdict(self) -> str:
        return self.tags.get(VERDICT_TAG, "")

    @property
    def trigger(self) -> str:
        return self.tags.get(TRIGGER_TAG, "")

    @property
    def branch(self) -> str:
        return next((self.tags[name] for name in BRANCH_TAGS if name in self.tags), "")


@dataclass(frozen=True)
class Delta:
    """How one metric of one program moved from a baseline session to a newer one."""

    program: str
    metric: str
    before: float | None
    after: float | None

    @property
    def change(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    @property
    def better(self) -> bool | None:
        """True when it improved, False when it regressed, None when unchanged or unknown."""
        change = self.change
        if change is None or math.isnan(change) or abs(change) <= _EPSILON:
            return None
        return (change < 0) if self.metric in LOWER_IS_BETTER else (change > 0)


def recent_sessions(tracking_uri: str, experiment: str, last: int = 10) -> list[Session]:
    """Return the last ``last`` complete sessions of an experiment, newest first.

    Raises:
        ConfigError: The sqlite database or the experiment does not exist.
        TrackingUnavailable: Talking to MLflow failed.
    """
    _require_database(tracking_uri)
    with mlflow_errors(tracking_uri):
        from evals.store.client import mlflow_client

        client = mlflow_client(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise ConfigError(
                f"experiment {experiment!r} not found at {display_uri(tracking_uri)}; experiments: {names}"
            )
        parents = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{SESSION_TAG}` LIKE '%' AND attributes.status != 'RUNNING'",
            order_by=["attributes.start_time DESC"],
            max_results=last,
        )
        return [_session(client, found.experiment_id, run) for run in parents]


def compare(a: Session, b: Session) -> list[Delta]:
    """Return the deltas from baseline ``a`` to newer ``b``, program by program.

    Every program of either session gets its :data:`HEADLINE_METRICS`; ``recall.<slug>``
    metrics are included only where they changed (or exist on one side only).
    """
    deltas: list[Delta] = []
    for program in sorted(set(a.programs) | set(b.programs)):
        before = a.programs[program].metrics if program in a.programs else {}
        after = b.programs[program].metrics if program in b.programs else {}
        for metric in HEADLINE_METRICS:
            deltas.append(Delta(program, metric, before.get(metric), after.get(metric)))
        recalls = {m for m in (*before, *after) if m.startswith(RECALL_PREFIX)}
        for metric in sorted(recalls):
            delta = Delta(program, metric, before.get(metric), after.get(metric))
            if delta.change is None or delta.better is not None:
                deltas.append(delta)
    return deltas


def _session(client: MlflowClient, experiment_id: str, run: Run) -> Session:
    children = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run.info.run_id}'")
    programs = {
        name: ProgramResult(name, child.info.run_id, dict(child.data.metrics))
        for child in children
        for name in [child.data.tags.get(PROGRAM_TAG) or child.info.run_name]
    }
    return Session(
        run_id=run.info.run_id,
        session_id=run.data.tags.get(SESSION_TAG, ""),
        started_at=run.info.start_time / 1000,
        status=run.info.status,
        tags=dict(run.data.tags),
        programs=programs,
    )


def _require_database(tracking_uri: str) -> None:
    """A report must not create an empty sqlite file where a typo pointed it."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri[len("sqlite:///") :])
        if not database.is_file():
            raise ConfigError(f"no MLflow database at {database} (tracking URI {tracking_uri})")
