"""Traces written in bulk straight into a database store (``sqlite:///``, ``postgresql://``, …).

MLflow 3.17 writes a trace's info, tags, metadata and assessments in one ``start_trace`` call
per trace (~37 ms each on sqlite; a server has no other route). When the tracking URI is a
database, the store is MLflow's own ``SqlAlchemyStore`` in this process: :func:`insert_traces`
adds the same rows ``SqlAlchemyStore.start_trace`` adds, for thousands of traces in one
transaction, through the store's own ORM models and session. Spans follow through
``log_spans``, which finds the traces there and only adds the spans.

This leans on MLflow's store internals (the rows of ``start_trace`` in MLflow 3.17);
:func:`database_store` returns None — and the upload takes the public per-trace path — for a
store that is not a ``SqlAlchemyStore`` or an MLflow whose internals are not the ones used here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def database_store(tracing_client: Any) -> Any:
    """The tracing client's store when it is MLflow's ``SqlAlchemyStore`` with the internals used here, else None."""
    store = getattr(tracing_client, "store", None)
    try:
        from mlflow.store.tracking.dbmodels.models import SqlTraceInfo
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.store.tracking.utils import sql_trace_rollups, trace_analytics  # noqa: F401
    except ImportError:  # a skinny client, or an MLflow before 3.17's layout: the public path
        return None
    if not isinstance(store, SqlAlchemyStore) or not hasattr(SqlTraceInfo, "trace_name"):
        return None
    if not hasattr(store, "_get_trace_artifact_location_tag") or not hasattr(store, "ManagedSessionMaker"):
        return None
    return store


def insert_traces(store: Any, experiment_id: str, infos: Sequence[Any]) -> None:
    """Add ``infos`` (``TraceInfo`` with tags, metadata and assessments) to ``store`` in one transaction.

    The rows are those of ``SqlAlchemyStore.start_trace`` for a new trace (the trace name in its
    column, analytics columns from the metadata, the artifact-location tag, the finalised mark);
    the trace-metric and assessment rollups of the days touched are queued for rebuild as it does.
    The traces must not exist yet (an upload deletes its trace ids first).
    """
    from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlTraceInfo, SqlTraceMetadata, SqlTraceTag
    from mlflow.store.tracking.utils.sql_trace_rollups import RollupFamily, enqueue_rollup_rebuild_partitions
    from mlflow.store.tracking.utils.trace_analytics import (
        PROMOTED_TRACE_METADATA_KEYS,
        analytics_columns_from_metadata,
        validate_trace_name,
    )
    from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey

    experiment = store.get_experiment(experiment_id)
    rows = []
    for info in infos:
        tid = info.trace_id
        metadata = dict(info.trace_metadata)
        row = SqlTraceInfo(
            request_id=tid,
            experiment_id=experiment_id,
            timestamp_ms=info.request_time,
            execution_time_ms=info.execution_duration,
            status=info.state.value,
            client_request_id=None,
            request_preview=info.request_preview,
            response_preview=info.response_preview,
            trace_name=validate_trace_name(info.tags.get(TraceTagKey.TRACE_NAME)),
            **analytics_columns_from_metadata(metadata),
        )
        row.tags = [
            SqlTraceTag(request_id=tid, key=key, value=value)
            for key, value in info.tags.items()
            if key != TraceTagKey.TRACE_NAME
        ] + [store._get_trace_artifact_location_tag(experiment, tid)]
        for key in PROMOTED_TRACE_METADATA_KEYS:
            metadata.pop(key, None)
        metadata[TraceMetadataKey.TRACE_INFO_FINALIZED] = "true"
        row.request_metadata = [
            SqlTraceMetadata(request_id=tid, key=key, value=value) for key, value in sorted(metadata.items())
        ]
        assessments = []
        for assessment in info.assessments:
            sql_assessment = SqlAssessments.from_mlflow_entity(assessment)
            sql_assessment.trace_id = tid
            sql_assessment.experiment_id = int(experiment_id)
            sql_assessment.trace_timestamp_ms = info.request_time
            assessments.append(sql_assessment)
        row.assessments = assessments
        rows.append(row)
    days = sorted({info.request_time for info in infos})
    with store.ManagedSessionMaker(read_only=False) as session:
        enqueue_rollup_rebuild_partitions(
            session,
            [(family, int(experiment_id), days) for family in (RollupFamily.TRACE_METRIC, RollupFamily.ASSESSMENT)],
        )
        session.add_all(rows)
