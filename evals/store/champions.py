"""Reads of what earlier sessions left: champions, explicit baseline runs and drift history.

The champion of a program is the registered model version with alias ``champion``.
Its version was registered from a program's nested run, which holds the per-example
predictions a new session is compared with.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, cast

from evals.records import ExampleRecord
from evals.store.client import mlflow_client
from evals.store.registry import registered_name
from evals.store.schema import (
    CHAMPION,
    FINGERPRINT_PARAM,
    PREDICTIONS_ARTIFACT,
    PROGRAM_TAG,
    SAMPLE_PARAM,
    SOURCE_HASH_PARAM,
)


@dataclass(frozen=True)
class Champion:
    """A program's champion: its model version, the run that evaluated it, and its records."""

    program: str
    version: str
    run_id: str
    records: tuple[ExampleRecord, ...]


def find_champion(tracking_uri: str, program: str) -> Champion | None:
    """The current champion of ``program`` with its recorded predictions, or None when it has none.

    Raises:
        Exception: Whatever MLflow raised when the lookup failed for another reason than a
            missing model or alias (server down, HTTP 5xx, a broken database): "no champion"
            must not hide an outage, or a regressed session would pass.
    """
    client = mlflow_client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(registered_name(program), CHAMPION)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    run_id = cast(str, version.run_id)  # a champion is always registered from a run
    return Champion(program, str(version.version), run_id, tuple(run_records(client, run_id, program)))


def is_missing(exc: BaseException) -> bool:
    """True when MLflow answered that the registered model or its alias does not exist."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    # The stores answer a missing alias with INVALID_PARAMETER_VALUE "... alias champion not found".
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc).lower()


def baseline_from_run(tracking_uri: str, run_id: str, program: str) -> Champion | None:
    """An explicit baseline: a session's parent run id (its nested run for ``program``) or a program run id."""
    client = mlflow_client(tracking_uri)
    run = client.get_run(run_id)
    if run.data.tags.get(PROGRAM_TAG) != program:
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and tags.`{PROGRAM_TAG}` = '{program}'",
        )
        if not children:
            return None
        run = children[0]
    return Champion(program, "run", run.info.run_id, tuple(run_records(client, run.info.run_id, program)))


def run_records(client: Any, run_id: str, program: str) -> list[ExampleRecord]:
    """Read a program run's predictions.csv artifact back into records."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, tmp)
        frame = pd.read_csv(path, keep_default_na=False)
    return [
        ExampleRecord(
            program=program,
            example_id=str(row["id"]),
            symptoms=str(row["symptoms"]),
            gold=str(row["gold"]),
            predicted=str(row["predicted"]) or None,
            latency_ms=float(row["latency_ms"] or 0),
            error=str(row["error"]) or None,
        )
        for row in frame.to_dict("records")
    ]


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier session of a program on the same examples (drift mode)."""

    accuracy: float
    lm_fingerprint: str | None
    program_hash: str | None
    records: tuple[ExampleRecord, ...] = ()


def drift_history(tracking_uri: str, experiment: str, program: str, sample_fp: str, window: int) -> list[HistoryEntry]:
    """The most recent runs of ``program`` on the same examples, newest first; the newest with its predictions."""
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{PROGRAM_TAG}` = '{program}' and params.`{SAMPLE_PARAM}` = '{sample_fp}'",
        order_by=["attributes.start_time DESC"],
        max_results=window,
    )
    return [
        HistoryEntry(
            accuracy=float(run.data.metrics.get("accuracy", 0.0)),
            lm_fingerprint=run.data.params.get(FINGERPRINT_PARAM),
            program_hash=run.data.params.get(SOURCE_HASH_PARAM),
            records=tuple(run_records(client, run.info.run_id, program)) if index == 0 else (),
        )
        for index, run in enumerate(runs)
    ]
