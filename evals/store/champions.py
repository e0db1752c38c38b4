"""Champions in the MLflow model registry: look up, promote (audited) and roll back.

The champion of a program is the registered model version with alias ``champion``.
Its version was registered from a program's nested run, which holds the per-example
predictions a new session is compared with.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

from evals.store.registry import CHAMPION, registered_name
from evals.records import ExampleRecord

PREDICTIONS_ARTIFACT = "predictions.csv"
REGRESSION_TAG = "evals.regression"
"""Session tag: the regression gate's result, pass, fail, unavailable or none (nothing compared)."""
REGRESSION_REASON_TAG = "evals.regression.reason"
TOO_WEAK_TAG = "evals.regression.too_weak"
"""Session tag, set when a comparison could not see the drop ``max_detectable_drop`` requires."""


@dataclass(frozen=True)
class Champion:
    """A program's champion: its model version, the run that evaluated it, and its records."""

    program: str
    version: str
    run_id: str
    records: tuple[ExampleRecord, ...]


def client_for(tracking_uri: str) -> Any:
    from evals.store.client import mlflow_client

    return mlflow_client(tracking_uri)


def find_champion(tracking_uri: str, program: str) -> Champion | None:
    """The current champion of ``program`` with its recorded predictions, or None when it has none.

    Raises:
        Exception: Whatever MLflow raised when the lookup failed for another reason than a
            missing model or alias (server down, HTTP 5xx, a broken database): "no champion"
            must not hide an outage, or a regressed session would pass.
    """
    client = client_for(tracking_uri)
    try:
        version = client.get_model_version_by_alias(registered_name(program), CHAMPION)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    return Champion(program, str(version.version), version.run_id, tuple(run_records(client, version.run_id, program)))


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
    client = client_for(tracking_uri)
    run = client.get_run(run_id)
    if run.data.tags.get("evals.program") != program:
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and tags.`evals.program` = '{program}'",
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
            program=program, example_id=str(row["id"]), symptoms=str(row["symptoms"]), gold=str(row["gold"]),
            predicted=str(row["predicted"]) or None, latency_ms=float(row["latency_ms"] or 0),
            error=str(row["error"]) or None,
        )
        for row in frame.to_dict("records")
    ]


def promotion_blockers(session_tags: dict[str, str], params: dict[str, str], required: dict[str, str]) -> list[str]:
    """Why a session may not be promoted (empty when it may)."""
    blockers = []
    if session_tags.get("evals.complete") != "true":
        blockers.append("the session is incomplete (a worker crashed, it was interrupted or diagnoses were skipped)")
    if session_tags.get("evals.verdict") != "pass":
        blockers.append("a gate failed (thresholds or regression against the champion)")
    if session_tags.get(REGRESSION_TAG) == "unavailable":
        reason = session_tags.get(REGRESSION_REASON_TAG, "")
        blockers.append("the regression gate could not run" + (f" ({reason})" if reason else ""))
    if session_tags.get(TOO_WEAK_TAG):
        blockers.append(session_tags[TOO_WEAK_TAG])
    for key, expected in required.items():
        found = params.get(key)
        if found != expected:
            blockers.append(f"{key} is {found!r}, thresholds.yaml requires {expected!r}")
    return blockers


def promote_session(tracking_uri: str, session_run_id: str, required: dict[str, str], git_commit: str = ""
                    ) -> list[str]:
    """Move ``champion`` to every candidate version registered from this session; return what happened."""
    client = client_for(tracking_uri)
    parent = client.get_run(session_run_id)
    blockers = promotion_blockers(parent.data.tags, parent.data.params, required)
    if blockers:
        return [f"promotion refused for session {session_run_id}: {reason}" for reason in blockers]
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{session_run_id}'")
    lines = []
    for child in children:
        program = child.data.tags.get("evals.program") or child.info.run_name
        version = _version_of_run(client, registered_name(program), child.info.run_id)
        if version is None:
            lines.append(f"{program}: no registered version from this session; not promoted")
            continue
        lines.append(_move_champion(client, program, version, session_run_id, git_commit, action="promoted"))
    return lines


def rollback(tracking_uri: str, program: str, git_commit: str = "") -> str:
    """Restore the champion that the current one replaced."""
    from mlflow.exceptions import MlflowException

    client = client_for(tracking_uri)
    name = registered_name(program)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return f"{program}: no champion to roll back"
    previous = current.tags.get("evals.previous_champion", "")
    if not previous:
        return f"{program}: champion version {current.version} has no previous champion to restore"
    return _move_champion(client, program, previous, current.tags.get("evals.session_run", ""), git_commit,
                          action="rolled back")


def _version_of_run(client: Any, name: str, run_id: str) -> str | None:
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.run_id == run_id:
            return str(version.version)
    return None


def _move_champion(client: Any, program: str, version: str, session_run_id: str, git_commit: str, action: str) -> str:
    from mlflow.exceptions import MlflowException

    name = registered_name(program)
    try:
        previous = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        previous = ""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client.set_registered_model_alias(name, CHAMPION, version)
    audit = {"evals.previous_champion": previous, "evals.promoted_at": when, "evals.git_commit": git_commit,
             "evals.session_run": session_run_id, "evals.action": action}
    for key, value in audit.items():
        if key != "evals.previous_champion" or action == "promoted":
            client.set_model_version_tag(name, version, key, value)
    if session_run_id:
        client.set_tag(session_run_id, f"evals.{action.replace(' ', '_')}.{program.replace('+', '.')}",
                       f"{previous or 'none'} -> {version} at {when}")
    return f"{program}: {action} {name} version {previous or 'none'} -> {version}"

