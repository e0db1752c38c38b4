"""Compiled programs in the MLflow model registry: register candidates, promote (audited), roll back.

One registered model per (program, optimizer).

Each session registers every evaluated program's MLflow model (a pyfunc wrapper around its dspy
JSON state, logged on the program's nested run, :mod:`evals.store.models`) as a new model version
and points the alias ``candidate`` at it. Promotion later moves ``champion``.
"""

from __future__ import annotations

import time
from typing import Any

from evals.store.client import mlflow_client
from evals.store.models import create_model_version, logged_model_of
from evals.store.schema import (
    CANDIDATE,
    CHAMPION,
    COMPILED_ARTIFACT,
    COMPLETE_TAG,
    PARENT_TAG,
    PROGRAM_TAG,
    REGRESSION_REASON_TAG,
    REGRESSION_TAG,
    TOO_WEAK_TAG,
    VERDICT_TAG,
)


def registered_name(program: str) -> str:
    """The registered model name of an evaluated program (``+`` is not allowed there)."""
    return "symptom-diagnosis." + program.replace("+", ".")


def register_candidates(tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """Register the compiled program of every nested run under ``parent_run_id``; idempotent.

    Returns:
        Registered model name -> version that now carries the ``candidate`` alias.
    """
    client = mlflow_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    registered = {}
    for child in children:
        program = child.data.tags.get(PROGRAM_TAG) or child.info.run_name
        if not _has_compiled_artifact(client, child.info.run_id):
            continue
        name = registered_name(program)
        version = _version_for_run(client, name, child, tracking_uri)
        client.set_registered_model_alias(name, CANDIDATE, version)
        registered[name] = version
    return registered


def _has_compiled_artifact(client: Any, run_id: str) -> bool:
    return any(item.path == COMPILED_ARTIFACT for item in client.list_artifacts(run_id))


def _version_for_run(client: Any, name: str, run: Any, tracking_uri: str) -> str:
    """The model version registered from ``run``, created once (a re-sync finds the existing one).

    It points to the program model logged on the run (a pyfunc MLflow can load), or, for runs
    uploaded before programs were logged as models, to the run's ``compiled_program.json``.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Compiled DSPy program (dspy JSON state)")
    except MlflowException:
        pass  # already registered
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.run_id == run.info.run_id:
            return str(version.version)
    source = f"{run.info.artifact_uri.rstrip('/')}/{COMPILED_ARTIFACT}"
    tags = {
        "evals.compile_key": run.data.params.get("compile.key", ""),
        "evals.session_run": run.data.tags.get(PARENT_TAG, ""),
    }
    model_id = logged_model_of(client, run.info.experiment_id, run.info.run_id)
    if model_id is None:
        return str(client.create_model_version(name, source, run_id=run.info.run_id, tags=tags).version)
    return create_model_version(client, tracking_uri, name, model_id, run.info.run_id, tags)


def promotion_blockers(session_tags: dict[str, str], params: dict[str, str], required: dict[str, str]) -> list[str]:
    """Why a session may not be promoted (empty when it may)."""
    blockers = []
    if session_tags.get(COMPLETE_TAG) != "true":
        blockers.append("the session is incomplete (a worker crashed, it was interrupted or diagnoses were skipped)")
    if session_tags.get(VERDICT_TAG) != "pass":
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


def promote_session(
    tracking_uri: str, session_run_id: str, required: dict[str, str], git_commit: str = ""
) -> list[str]:
    """Move ``champion`` to every candidate version registered from this session; return what happened."""
    client = mlflow_client(tracking_uri)
    parent = client.get_run(session_run_id)
    blockers = promotion_blockers(parent.data.tags, parent.data.params, required)
    if blockers:
        return [f"promotion refused for session {session_run_id}: {reason}" for reason in blockers]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{session_run_id}'"
    )
    lines = []
    for child in children:
        program = child.data.tags.get(PROGRAM_TAG) or child.info.run_name
        version = _version_of_run(client, registered_name(program), child.info.run_id)
        if version is None:
            lines.append(f"{program}: no registered version from this session; not promoted")
            continue
        lines.append(_move_champion(client, program, version, session_run_id, git_commit, action="promoted"))
    return lines


def rollback(tracking_uri: str, program: str, git_commit: str = "") -> str:
    """Restore the champion that the current one replaced."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    name = registered_name(program)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return f"{program}: no champion to roll back"
    previous = current.tags.get("evals.previous_champion", "")
    if not previous:
        return f"{program}: champion version {current.version} has no previous champion to restore"
    return _move_champion(
        client, program, previous, current.tags.get("evals.session_run", ""), git_commit, action="rolled back"
    )


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
    audit = {
        "evals.previous_champion": previous,
        "evals.promoted_at": when,
        "evals.git_commit": git_commit,
        "evals.session_run": session_run_id,
        "evals.action": action,
    }
    for key, value in audit.items():
        if key != "evals.previous_champion" or action == "promoted":
            client.set_model_version_tag(name, version, key, value)
    if session_run_id:
        client.set_tag(
            session_run_id,
            f"evals.{action.replace(' ', '_')}.{program.replace('+', '.')}",
            f"{previous or 'none'} -> {version} at {when}",
        )
    return f"{program}: {action} {name} version {previous or 'none'} -> {version}"
