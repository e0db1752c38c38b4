"""Traces written in bulk straight into a database store (``sqlite:///``, ``postgresql://``, …).

MLflow 3.17 writes a trace's info, tags, metadata and assessments in one ``start_trace`` call
per trace (~37 ms each on sqlite; a server has no other route). When the tracking URI is a
database, the store is MLflow's own ``SqlAlchemyStore`` in this process: :func:`insert_traces`
adds the same rows ``SqlAlchemyStore.start_trace`` adds, and the trace → run links
``link_traces_to_run`` adds (at most 100 per call there), for thousands of traces in one
transaction, through the store's own ORM models and session. Spans follow through
``log_spans``, which finds the traces there and only adds the spans.

This leans on MLflow's store internals (the rows of ``start_trace`` in MLflow 3.17);
:func:`database_store` returns None — and the upload takes the public per-trace path — for a
store that is not exactly ``SqlAlchemyStore`` (e.g. the workspace-aware one) or an MLflow whose
internals are not the ones used here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
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
    # Exactly MLflow's store: a subclass (the workspace-aware one) scopes rows in ways not copied here.
    if type(store) is not SqlAlchemyStore or not hasattr(SqlTraceInfo, "trace_name"):
        return None
    if not hasattr(store, "_get_trace_artifact_location_tag") or not hasattr(store, "ManagedSessionMaker"):
        return None
    return store


def insert_traces(store: Any, experiment_id: str, infos: Sequence[Any], run_ids: Mapping[str, str]) -> None:
    """Add ``infos`` (``TraceInfo`` with tags, metadata and assessments) to ``store`` in one transaction.

    The rows are those of ``SqlAlchemyStore.start_trace`` for a new trace (the trace name in its
    column, analytics columns from the metadata, the artifact-location tag, the finalised mark);
    the trace-metric and assessment rollups of the days touched are queued for rebuild as it does.
    Each trace is linked to its run in ``run_ids`` (trace id -> run id) as
    ``SqlAlchemyStore.link_traces_to_run`` links it (a link already there is kept, not doubled).
    The traces must not exist yet (an upload deletes its trace ids first).
    """
    from mlflow.entities.entity_type import EntityAssociationType
    from mlflow.store.tracking.dbmodels.models import (
        SqlAssessments,
        SqlEntityAssociation,
        SqlTraceInfo,
        SqlTraceMetadata,
        SqlTraceTag,
    )
    from mlflow.store.tracking.utils.sql_trace_rollups import RollupFamily, enqueue_rollup_rebuild_partitions
    from mlflow.store.tracking.utils.trace_analytics import (
        PROMOTED_TRACE_METADATA_KEYS,
        analytics_columns_from_metadata,
        validate_trace_name,
    )
    from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey

    experiment = store.get_experiment(experiment_id)
    trace_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    metadata_rows: list[dict[str, Any]] = []
    assessment_rows: list[dict[str, Any]] = []
    for info in infos:
        tid = info.trace_id
        metadata = dict(info.trace_metadata)
        trace_rows.append(
            {
                "request_id": tid,
                "experiment_id": experiment_id,
                "timestamp_ms": info.request_time,
                "execution_time_ms": info.execution_duration,
                "status": info.state.value,
                "client_request_id": None,
                "request_preview": info.request_preview,
                "response_preview": info.response_preview,
                "trace_name": validate_trace_name(info.tags.get(TraceTagKey.TRACE_NAME)),
                **analytics_columns_from_metadata(metadata),
            }
        )
        location = store._get_trace_artifact_location_tag(experiment, tid)
        tags = {key: value for key, value in info.tags.items() if key != TraceTagKey.TRACE_NAME}
        tags[location.key] = location.value
        tag_rows += [{"request_id": tid, "key": key, "value": value} for key, value in tags.items()]
        for key in PROMOTED_TRACE_METADATA_KEYS:
            metadata.pop(key, None)
        metadata[TraceMetadataKey.TRACE_INFO_FINALIZED] = "true"
        metadata_rows += [{"request_id": tid, "key": key, "value": value} for key, value in sorted(metadata.items())]
        for assessment in info.assessments:
            row = SqlAssessments.from_mlflow_entity(assessment)  # MLflow's own serialisation of the value
            row.trace_id, row.experiment_id, row.trace_timestamp_ms = tid, int(experiment_id), info.request_time
            assessment_rows.append(_columns(row))
    days = sorted({info.request_time for info in infos})
    with store.ManagedSessionMaker(read_only=False) as session:
        enqueue_rollup_rebuild_partitions(
            session,
            [(family, int(experiment_id), days) for family in (RollupFamily.TRACE_METRIC, RollupFamily.ASSESSMENT)],
        )
        session.bulk_insert_mappings(SqlTraceInfo, trace_rows)
        session.bulk_insert_mappings(SqlTraceTag, tag_rows)
        session.bulk_insert_mappings(SqlTraceMetadata, metadata_rows)
        session.bulk_insert_mappings(SqlAssessments, assessment_rows)
        linked = {
            (link.source_id, link.destination_id)
            for link in session.query(SqlEntityAssociation).filter(
                SqlEntityAssociation.source_type == EntityAssociationType.TRACE,
                SqlEntityAssociation.source_id.in_([info.trace_id for info in infos]),
                SqlEntityAssociation.destination_type == EntityAssociationType.RUN,
            )
        }
        session.bulk_insert_mappings(
            SqlEntityAssociation,
            [
                {
                    "association_id": uuid.uuid4().hex,
                    "source_type": EntityAssociationType.TRACE,
                    "source_id": info.trace_id,
                    "destination_type": EntityAssociationType.RUN,
                    "destination_id": run_ids[info.trace_id],
                }
                for info in infos
                if (info.trace_id, run_ids[info.trace_id]) not in linked
            ],
        )


def _columns(row: Any) -> dict[str, Any]:
    """The column values set on an ORM object (unset ones left to their column defaults)."""
    from sqlalchemy import inspect

    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs if attr.key in row.__dict__}
