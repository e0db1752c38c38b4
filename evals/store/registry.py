"""Compiled programs in the MLflow model registry: one registered model per (program, optimizer).

Each session that evaluated a compiled program registers its ``compiled_program.json``
(the dspy JSON state, logged on the program's nested run) as a new model version and
points the alias ``candidate`` at it. Promotion later moves ``champion``.
"""

from __future__ import annotations

from typing import Any

COMPILED_ARTIFACT = "compiled_program.json"
CANDIDATE = "candidate"
CHAMPION = "champion"


def registered_name(program: str) -> str:
    """The registered model name of an evaluated program (``+`` is not allowed there)."""
    return "symptom-diagnosis." + program.replace("+", ".")


def register_candidates(tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """Register the compiled program of every nested run under ``parent_run_id``; idempotent.

    Returns:
        Registered model name -> version that now carries the ``candidate`` alias.
    """
    from evals.store.client import mlflow_client

    client = mlflow_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    registered = {}
    for child in children:
        program = child.data.tags.get("evals.program") or child.info.run_name
        if not _has_compiled_artifact(client, child.info.run_id):
            continue
        name = registered_name(program)
        version = _version_for_run(client, name, child)
        client.set_registered_model_alias(name, CANDIDATE, version)
        registered[name] = version
    return registered


def _has_compiled_artifact(client: Any, run_id: str) -> bool:
    return any(item.path == COMPILED_ARTIFACT for item in client.list_artifacts(run_id))


def _version_for_run(client: Any, name: str, run: Any) -> str:
    """The model version registered from ``run``, created once (a re-sync finds the existing one)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Compiled DSPy program (dspy JSON state)")
    except MlflowException:
        pass  # already registered
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.run_id == run.info.run_id:
            return str(version.version)
    source = f"{run.info.artifact_uri.rstrip('/')}/{COMPILED_ARTIFACT}"
    tags = {"evals.compile_key": run.data.params.get("compile.key", ""),
            "evals.session_run": run.data.tags.get("mlflow.parentRunId", "")}
    created = client.create_model_version(name, source, run_id=run.info.run_id, tags=tags)
    return str(created.version)
