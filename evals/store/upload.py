"""Upload one session bundle to MLflow: one parent run, one nested run per program.

The bundle is a directory written at the end of a pytest session::

    <bundle>/session.json           session and per-program params, tags and metrics
    <bundle>/artifacts/**           logged to the parent run
    <bundle>/programs/<program>/**  logged to that program's nested run

Exactly once per ``session_id``: the parent run carries the tag ``evals.session_id`` and is
terminated *last*, so a terminated parent is a complete upload; a parent left ``RUNNING`` by an
interrupted upload is deleted and uploaded afresh. Params, tags and metrics go through
``log_batch``, files through ``log_artifacts``; the bundle's traces, program models and run inputs
(``traces/``, ``models/``, ``inputs.json``) through :mod:`evals.store.native`: traces in bulk, a few
calls per thousand examples with every trace's assessments on a database store; through a server,
plus one call per assessed trace up to a cap (:mod:`evals.store.traces`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from evals import secrets
from evals.store.client import display_uri, mlflow_errors
from evals.store.native import delete_run_models, upload_native
from evals.store.schema import PARENT_TAG, PROGRAM_TAG, SESSION_TAG, TERMINAL_STATUSES, Bundle, RunData

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from evals.redact import Redactor

TEXT_SUFFIXES = frozenset({".txt", ".json", ".jsonl", ".csv", ".tsv", ".md", ".html", ".yaml", ".yml", ".log"})
"""Artifacts with these suffixes are scrubbed of secrets before upload; others are copied."""
PROSE_SUFFIXES = frozenset(".txt .md .html .log .jsonl".split())
"""Free-text artifacts, which also pass through the redactor (tables are redacted when written)."""

P = TypeVar("P")
T = TypeVar("T")
M = TypeVar("M")

# MLflow's limits (mlflow.utils.validation), copied so that importing this module stays cheap.
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000


def upload_bundle(bundle: Path, tracking_uri: str, *, redactor: Redactor | None = None) -> str:
    """Log a session bundle to MLflow exactly once and return the parent run id.

    Args:
        bundle: The bundle directory.
        tracking_uri: e.g. ``"sqlite:///mlflow.db"`` or ``"http://127.0.0.1:5000"``.
        redactor: Applied to param and tag values and to text artifacts before upload.
            Param and tag values (and text artifacts) always pass through
            :func:`evals.secrets.scrub` as well.

    Raises:
        ConfigError: The bundle breaks the contract (nothing was sent).
        TrackingUnavailable: Talking to MLflow failed; one readable line.
    """
    from evals.store.client import mlflow_client

    session = Bundle.load(bundle)
    with mlflow_errors(tracking_uri):
        client = mlflow_client(tracking_uri)
        experiment_id = ensure_experiment(client, session.experiment, tracking_uri)
        parents = session_runs(client, experiment_id, session.session_id)
        complete = [run for run in parents if run.info.status in TERMINAL_STATUSES]
        if complete:
            return str(complete[0].info.run_id)
        for incomplete in parents:  # left RUNNING by an interrupted upload
            delete_run_tree(client, experiment_id, incomplete.info.run_id)
        # After an interrupted upload, traces of this session may exist: they are replaced, not doubled.
        return _upload(client, experiment_id, session, redactor, tracking_uri, replace=bool(parents))


def run_url_hint(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Return where a user can look at a run: a UI URL, or the command that starts a UI (no credentials)."""
    tracking_uri = display_uri(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {tracking_uri}  (run {run_id})"


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Return the id of experiment ``name``, creating (or restoring) it when needed.

    A new experiment on a local sqlite store keeps its artifacts in ``mlartifacts/`` next to
    the database file, not in ``./mlruns`` of whatever directory the upload ran from.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(tracking_uri))
        except MlflowException as exc:  # another session created it since: use theirs
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise exc from None
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def session_runs(client: MlflowClient, experiment_id: str, session_id: str) -> list[Run]:
    """Return the active parent runs tagged with a session id, oldest first."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SESSION_TAG}` = '{session_id}'",
        order_by=["attributes.start_time ASC"],
    )
    return [run for run in runs if PARENT_TAG not in run.data.tags]


def delete_run_tree(client: MlflowClient, experiment_id: str, run_id: str) -> None:
    """Delete a parent run and its active nested runs (children first)."""
    children = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'", max_results=1000)
    delete_run_models(client, experiment_id, [child.info.run_id for child in children])
    for child in children:
        client.delete_run(child.info.run_id)
    client.delete_run(run_id)


def _upload(
    client: MlflowClient,
    experiment_id: str,
    session: Bundle,
    redactor: Redactor | None,
    tracking_uri: str,
    *,
    replace: bool = False,
) -> str:
    start_ms, end_ms = _millis(session.started_at), _millis(session.finished_at)
    tags = {SESSION_TAG: session.session_id}
    parent_id = client.create_run(experiment_id, start_ms, tags, session.run_name).info.run_id
    _log_data(client, parent_id, session.session, end_ms, redactor)
    _log_artifact_dir(client, parent_id, session.path / "artifacts", redactor)
    children = {}
    for program, program_data in session.programs.items():
        tags = {PARENT_TAG: parent_id, PROGRAM_TAG: program}
        child_id = client.create_run(experiment_id, start_ms, tags, program).info.run_id
        _log_data(client, child_id, program_data, end_ms, redactor)
        _log_artifact_dir(client, child_id, session.path / "programs" / program, redactor)
        children[program] = child_id
    # Run inputs, program models (after the metrics: they get linked) and per-example traces.
    upload_native(client, tracking_uri, experiment_id, session.path, session.session_id, children, replace=replace)
    for child_id in children.values():
        client.set_terminated(child_id, status=session.status, end_time=end_ms)
    # Last: a terminated parent is the mark of a complete upload.
    client.set_terminated(parent_id, status=session.status, end_time=end_ms)
    return str(parent_id)


def _log_data(client: MlflowClient, run_id: str, data: RunData, timestamp_ms: int, redactor: Redactor | None) -> None:
    """Log params, tags and metrics in batches within MLflow's per-request limits."""
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, v[:MAX_PARAM_LENGTH]) for k, v in _clean(data.params, redactor).items()]
    tags = [RunTag(k, v[:MAX_TAG_LENGTH]) for k, v in _clean(data.tags, redactor).items()]
    metrics = [Metric(k, v, timestamp_ms, 0) for k, v in data.metrics.items()]
    for params_batch, tags_batch, metrics_batch in batches(params, tags, metrics):
        client.log_batch(run_id, metrics=metrics_batch, params=params_batch, tags=tags_batch)


def batches(params: Sequence[P], tags: Sequence[T], metrics: Sequence[M]) -> Iterator[tuple[list[P], list[T], list[M]]]:
    """Split params, tags and metrics into as few ``log_batch`` requests as MLflow allows."""
    p, t, m = list(params), list(tags), list(metrics)
    while p or t or m:
        params_batch, p = p[:MAX_PARAMS_TAGS_PER_BATCH], p[MAX_PARAMS_TAGS_PER_BATCH:]
        tags_batch, t = t[:MAX_PARAMS_TAGS_PER_BATCH], t[MAX_PARAMS_TAGS_PER_BATCH:]
        used = len(params_batch) + len(tags_batch)
        room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - used)
        metrics_batch, m = m[:room], m[room:]
        yield params_batch, tags_batch, metrics_batch


def _clean(values: Mapping[str, str], redactor: Redactor | None) -> dict[str, str]:
    return redactor.mapping(secrets.scrub(values)) if redactor else secrets.scrub(values)


def _log_artifact_dir(client: MlflowClient, run_id: str, source: Path, redactor: Redactor | None) -> None:
    """Log a directory's files (sub-paths kept) after redacting and scrubbing text files."""
    if not source.is_dir() or not any(p.is_file() for p in source.rglob("*")):
        return
    with tempfile.TemporaryDirectory(prefix="evals-artifacts-") as staging:
        target = Path(staging)
        for path in source.rglob("*"):
            if path.is_file():
                _stage(path, target / path.relative_to(source), redactor)
        client.log_artifacts(run_id, str(target))


def _stage(source: Path, target: Path, redactor: Redactor | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = source.read_text("utf-8") if source.suffix.lower() in TEXT_SUFFIXES else None
    except UnicodeDecodeError:
        text = None
    if text is None:
        shutil.copyfile(source, target)
        return
    text = secrets.scrub_text(text)
    # Tables (.csv, .json) were redacted column by column when written: their numbers are not phone numbers.
    prose = source.suffix.lower() in PROSE_SUFFIXES
    target.write_text(redactor.text(text) if redactor is not None and prose else text, encoding="utf-8")


def _artifact_location(tracking_uri: str) -> str | None:
    database = tracking_uri[len("sqlite:///") :]
    if not tracking_uri.startswith("sqlite:///") or database in ("", ":memory:"):
        return None
    return (Path(database).resolve().parent / "mlartifacts").as_uri()


def _millis(epoch_seconds: float) -> int:
    return round(epoch_seconds * 1000)
