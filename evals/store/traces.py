"""One MLflow trace per evaluated example, written in bulk at upload time.

A trace has the program's span (inputs: the symptoms; outputs: the diagnosis) and one
``CHAT_MODEL`` span per LM call (rendered messages, raw completion, tokens, cost). It is
linked to the program's nested run and carries tags to filter on (``evals.outcome`` is
``correct``, ``wrong``, ``invalid`` or ``error``) and assessments: the expected diagnosis
(expectation), ``correct`` (feedback) and the invalid / error reason where there is one.

Cost stays bounded: spans (with the tags, as ``mlflow.traceTag.*`` root-span attributes)
go in batches through ``log_spans`` — the OTLP endpoint of a server, one transaction on
sqlite — and run links in chunks of 100 (MLflow's limit). MLflow 3.17 has no batch API for
assessments: they travel in one ``start_trace`` per trace (the way MLflow's own exporter
finalises a trace), which costs 10-40 ms each on sqlite, so at most ``MAX_ASSESSED_TRACES``
traces of a session get them — those that were not answered correctly first (what a user
filters to), then the others in order. Every trace carries the tags either way.

Trace ids are derived from (session, program, example); an upload deletes those ids first,
so an upload repeated after a failure (or a re-sync) writes each trace exactly once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evals.calls import LMCall

if TYPE_CHECKING:
    from mlflow import MlflowClient

SPANS_PER_BATCH = 2000
DELETES_PER_CALL = 100
MAX_ASSESSED_TRACES = 500
"""Traces per session that get assessments (one MLflow call each); the rest carry tags only."""
LINKS_PER_CALL = 100
"""MLflow's ``MAX_TRACE_LINKS_PER_REQUEST``."""
ASSESSMENT_SOURCE = "evals.scoring.diagnosis_match"
OUTCOME_TAG = "evals.outcome"


@dataclass(frozen=True)
class TracedExample:
    """What one trace is made from (plain data; the record fields the trace needs).

    Attributes:
        program: The evaluated program.
        example_id: The example's id in its split.
        symptoms: The patient text (already cleaned).
        gold: The true diagnosis.
        predicted: The diagnosis returned, or None.
        error: The error or invalid-answer line, or None.
        latency_ms: Wall time of the whole example.
        started_at: Epoch seconds when the example started.
        calls: The LM calls made (already cleaned), oldest first.
    """

    program: str
    example_id: str
    symptoms: str
    gold: str
    predicted: str | None
    error: str | None
    latency_ms: float
    started_at: float
    calls: tuple[LMCall, ...] = ()

    @property
    def outcome(self) -> str:
        """``correct``, ``wrong``, ``invalid`` (an answer outside the labels) or ``error``."""
        if self.predicted is None:
            return "invalid" if self.error and self.error.startswith("answer outside") else "error"
        return "correct" if self.predicted == self.gold else "wrong"


@dataclass
class UploadStats:
    """What a trace upload cost: MLflow calls by kind."""

    traces: int = 0
    assessed: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def trace_id(session_id: str, program: str, example_id: str) -> str:
    """A stable MLflow trace id (``tr-`` + 32 hex digits) for one example of one session."""
    digest = hashlib.sha256(f"{session_id}\x1f{program}\x1f{example_id}".encode()).hexdigest()
    return "tr-" + digest[:32]


def span_dicts(example: TracedExample, tid: str) -> list[dict[str, Any]]:
    """The example's spans in ``mlflow.entities.Span.from_dict`` form: the program, then each LM call."""
    start = round(example.started_at * 1e9)
    end = start + max(round(example.latency_ms * 1e6), 1000)
    tags = {
        "evals.program": example.program,
        "evals.example_id": example.example_id,
        OUTCOME_TAG: example.outcome,
        "evals.gold": example.gold,
        "evals.predicted": example.predicted or "",
    }
    root_attrs: dict[str, Any] = {
        "mlflow.spanType": "CHAIN",
        "mlflow.spanInputs": {"symptoms": example.symptoms},
        "mlflow.spanOutputs": {"diagnosis": example.predicted} if example.error is None else {"error": example.error},
        **{f"mlflow.traceTag.{key}": value for key, value in tags.items()},
    }
    ok = example.outcome != "error"
    spans = [_span(tid, 1, None, example.program, start, end, root_attrs, ok, example.error)]
    if example.calls:
        share = (end - start) // len(example.calls)
        for index, call in enumerate(example.calls):
            call_start = start + index * share
            spans.append(
                _span(
                    tid,
                    index + 2,
                    1,
                    f"LM {call.model}".strip(),
                    call_start + 1,
                    call_start + share - 1,
                    _call_attrs(call),
                    True,
                    None,
                )
            )
    return spans


def _call_attrs(call: LMCall) -> dict[str, Any]:
    try:
        messages: Any = json.loads(call.messages)
    except ValueError:  # cut short by the size bound: shown as text
        messages = call.messages
    attrs: dict[str, Any] = {
        "mlflow.spanType": "CHAT_MODEL",
        "mlflow.spanInputs": {"messages": messages},
        "mlflow.spanOutputs": call.completion,
        "mlflow.llm.model": call.model,
        "mlflow.chat.tokenUsage": {
            "input_tokens": call.prompt_tokens,
            "output_tokens": call.completion_tokens,
            "total_tokens": call.prompt_tokens + call.completion_tokens,
        },
        "evals.cached": call.cached,
    }
    if call.cost_usd:
        attrs["mlflow.llm.cost"] = {"input_cost": 0.0, "output_cost": 0.0, "total_cost": call.cost_usd}
    return attrs


def _span(
    tid: str,
    span_id: int,
    parent: int | None,
    name: str,
    start: int,
    end: int,
    attrs: dict[str, Any],
    ok: bool,
    message: str | None,
) -> dict[str, Any]:
    attributes = {"mlflow.traceRequestId": json.dumps(tid)}
    attributes.update({key: json.dumps(value, ensure_ascii=False) for key, value in attrs.items()})
    return {
        "trace_id": tid,
        "span_id": f"{span_id:016x}",
        "parent_span_id": f"{parent:016x}" if parent else None,
        "name": name,
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "events": [],
        "status": {"code": "STATUS_CODE_OK" if ok else "STATUS_CODE_ERROR", "message": "" if ok else (message or "")},
        "attributes": attributes,
    }


def assessment_specs(example: TracedExample) -> list[tuple[str, str, Any, str | None]]:
    """(kind, name, value, rationale) of the example's assessments; kind is expectation or feedback."""
    specs: list[tuple[str, str, Any, str | None]] = [
        ("expectation", "expected_diagnosis", example.gold, None),
        (
            "feedback",
            "correct",
            example.outcome == "correct",
            f"predicted {example.predicted!r}, expected {example.gold!r}" if example.predicted else example.error,
        ),
    ]
    if example.outcome in ("invalid", "error"):
        specs.append(("feedback", example.outcome, True, example.error))
    return specs


def _assessments(example: TracedExample, tid: str) -> list[Any]:
    from mlflow.entities.assessment import Expectation, Feedback
    from mlflow.entities.assessment_source import AssessmentSource

    source = AssessmentSource(source_type="CODE", source_id=ASSESSMENT_SOURCE)
    made: list[Any] = []
    for kind, name, value, rationale in assessment_specs(example):
        if kind == "expectation":
            made.append(Expectation(name=name, value=value, source=source, trace_id=tid))
        else:
            made.append(Feedback(name=name, value=value, rationale=rationale, source=source, trace_id=tid))
    return made


def _trace_info(example: TracedExample, tid: str, experiment_id: str, run_id: str) -> Any:
    from mlflow.entities import TraceInfo, TraceLocation, TraceState

    tokens = sum(c.prompt_tokens + c.completion_tokens for c in example.calls)
    return TraceInfo(
        trace_id=tid,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=round(example.started_at * 1000),
        execution_duration=round(example.latency_ms),
        state=TraceState.ERROR if example.outcome == "error" else TraceState.OK,
        request_preview=json.dumps({"symptoms": example.symptoms}, ensure_ascii=False)[:1000],
        response_preview=json.dumps({"diagnosis": example.predicted}, ensure_ascii=False),
        trace_metadata={
            "mlflow.sourceRun": run_id,
            "mlflow.trace_schema.version": "3",
            "mlflow.trace.tokenUsage": json.dumps({"total_tokens": tokens}),
        },
        tags={
            "evals.program": example.program,
            "evals.example_id": example.example_id,
            OUTCOME_TAG: example.outcome,
            "mlflow.traceName": example.program,
        },
        assessments=_assessments(example, tid),
    )


def log_traces(
    client: MlflowClient,
    experiment_id: str,
    session_id: str,
    examples_by_run: Mapping[str, Sequence[TracedExample]],
    limit: int = MAX_ASSESSED_TRACES,
    replace: bool = True,
) -> UploadStats:
    """Write one trace per example, linked to its run id (the program's nested run); idempotent.

    Args:
        client: An MlflowClient on the tracking URI (sqlite or a server).
        experiment_id: The experiment the runs are in.
        session_id: The session id (part of every trace id).
        examples_by_run: Run id -> the examples evaluated in that run.
        limit: The most traces that get assessments.
        replace: Delete traces with the same ids first (a repeated upload); a first upload skips it.

    Returns:
        How many traces were written and how many MLflow calls it took, by kind.
    """
    from mlflow.entities import Span

    stats = UploadStats()
    planned = [
        (run_id, example, trace_id(session_id, example.program, example.example_id))
        for run_id, examples in examples_by_run.items()
        for example in examples
    ]
    tracing = client._tracing_client
    for chunk in _chunks([tid for _, _, tid in planned] if replace else [], DELETES_PER_CALL):
        tracing.delete_traces(experiment_id, trace_ids=list(chunk))
        stats.count("delete_traces")
    spans = [Span.from_dict(d) for _, example, tid in planned for d in span_dicts(example, tid)]
    for batch in _chunks(spans, SPANS_PER_BATCH):
        tracing.log_spans(experiment_id, list(batch))
        stats.count("log_spans")
    for run_id in examples_by_run:
        ids = [tid for run, _, tid in planned if run == run_id]
        for chunk in _chunks(ids, LINKS_PER_CALL):
            client.link_traces_to_run(list(chunk), run_id)
            stats.count("link_traces_to_run")
    for run_id, example, tid in assessed(planned, limit):
        tracing.start_trace(_trace_info(example, tid, experiment_id, run_id))
        stats.count("start_trace")
    stats.traces = len(planned)
    stats.assessed = min(limit, len(planned))
    return stats


def assessed(planned: Sequence[tuple[str, TracedExample, str]], limit: int) -> list[tuple[str, TracedExample, str]]:
    """The traces that get assessments: not-correct ones first, then the rest, in order, at most ``limit``."""
    ranked = sorted(range(len(planned)), key=lambda i: (planned[i][1].outcome == "correct", i))
    return [planned[i] for i in sorted(ranked[: max(limit, 0)])]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
