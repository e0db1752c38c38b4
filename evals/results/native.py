"""The bundle's parts for MLflow's GenAI pages: traces, program models and run inputs (plain data in, files out).

Written next to the run layout by :func:`evals.results.bundle.write_bundle` from the cleaned
summary (records, with their LM calls, already scrubbed and redacted) and the session context;
uploaded by :func:`evals.store.native.upload_native`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from evals.context import SessionContext
from evals.records import ExampleRecord
from evals.results.summary import SessionSummary
from evals.store.inputs import DatasetInput
from evals.store.models import ModelConfig
from evals.store.native import write_inputs, write_model, write_traces
from evals.store.publish import clean_json
from evals.store.schema import SAMPLE_PARAM
from evals.store.traces import TracedExample

DATASET_NAME = "symptom_to_diagnosis"


def write_native_parts(
    bundle: Path, context: SessionContext, summary: SessionSummary, redact: Callable[[str], str]
) -> None:
    """Write ``traces/``, ``models/`` and ``inputs.json`` for every evaluated program."""
    inputs: dict[str, list[DatasetInput]] = {}
    train_rows = int(context.manifest.get("splits", {}).get("train", {}).get("rows", 0))
    for name in summary.metrics:
        write_traces(bundle, name, [traced(r) for r in summary.records if r.program == name])
        entry = context.program_models.get(name)
        state = context.program_states.get(name)
        if entry is not None and state is not None:
            train = [(redact(s), d) for s, d in entry["train"]]
            shape = [(redact(s), d) for s, d in entry["shape_train"]] if entry.get("shape_train") else None
            write_model(bundle, ModelConfig(**entry["config"]), clean_json(dict(state), redact), train, shape)
        rows = sum(1 for r in summary.records if r.program == name)
        inputs[name] = dataset_inputs(summary.params, summary.program_params.get(name, {}), rows, train_rows)
    write_inputs(bundle, inputs)


def traced(record: ExampleRecord) -> TracedExample:
    """The trace content of one (cleaned) record."""
    return TracedExample(
        program=record.program,
        example_id=record.example_id,
        symptoms=record.symptoms,
        gold=record.gold,
        predicted=record.predicted,
        error=record.error,
        latency_ms=record.latency_ms,
        started_at=record.started_at,
        calls=record.calls,
    )


def dataset_inputs(
    params: Mapping[str, str], program: Mapping[str, str], rows: int, train_rows: int = 0
) -> list[DatasetInput]:
    """The evaluated sample (context ``eval``) and, for a compiled program, the train split (``train``)."""
    source = params.get("dataset.source", "")
    revision = params.get("dataset.revision")
    hub = revision not in (None, "", "None")
    made = []
    fingerprint = program.get(SAMPLE_PARAM) or params.get("dataset.fingerprint")
    if fingerprint:
        made.append(
            DatasetInput(
                f"{DATASET_NAME}.{params.get('dataset.split', 'test')}",
                fingerprint,
                source,
                revision if hub else None,
                rows,
                "eval",
            )
        )
    train = params.get("dataset.train_fingerprint")
    if train and "+" in program.get("program.name", ""):
        made.append(
            DatasetInput(f"{DATASET_NAME}.train", train, source, revision if hub else None, train_rows, "train")
        )
    return made
